//! A real Matrix end-to-end encryption client for tests: one device of one user, built on
//! `matrix-sdk-crypto`'s [`OlmMachine`] (in-memory store) and driven over HTTP against the test
//! kit's real Synapse, as Element drives the same state machine.
//!
//! It uploads its device and one-time keys, processes `/sync` (to-device events, device list
//! changes, one-time key counts), tracks a room's members, claims one-time keys, shares megolm
//! room keys with a chosen [`Share`] strategy (all devices, or only devices cross-signed by
//! their owner: Element's "exclude insecure devices"), encrypts and sends `m.room.message`
//! events, decrypts room events, and creates the user's cross-signing identity.
//! [`set_up_cross_signing_in_secret_storage`] sets up an account as Element does for a new user
//! with "secure backup" but no key backup: cross-signing keys in secret storage under a new
//! security key.
//!
//! The public API uses plain types only (`&str`, `String`, [`serde_json::Value`], `bool`): the
//! ruma 0.16 types of `matrix-sdk-crypto` stay inside this module, beside the workspace's ruma.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use argus_testkit::e2ee_client::{E2eeClient, Share};
//! let Some(server) = argus_testkit::synapse::synapse() else { return Ok(()) };
//! let alice = server.register("alice").await?;
//! let room = alice.create_room(Some("Secret"), None, false).await?;
//! let mut client = E2eeClient::new(server, &alice).await?;
//! client.enable_encryption(&room).await?;
//! client.sync_once().await?;
//! let event_id = client.send_text(&room, "hello", Share::AllDevices).await?;
//! # let _ = event_id;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD_NO_PAD};
use matrix_sdk_common::deserialized_responses::{UnableToDecryptReason, VerificationState};
use matrix_sdk_common::ruma::{
    DeviceId, OneTimeKeyAlgorithm, OwnedUserId, RoomId, UInt, UserId,
    api::{
        IncomingResponse,
        client::{
            keys::{claim_keys, get_keys, upload_keys, upload_signatures, upload_signing_keys},
            sync::sync_events::DeviceLists,
            to_device::send_event_to_device,
        },
    },
    events::{AnyMessageLikeEventContent, AnyToDeviceEvent},
    serde::Raw,
};
use matrix_sdk_crypto::{
    CollectStrategy, DecryptionSettings, EncryptionSettings, EncryptionSyncChanges, OlmMachine,
    RoomEventDecryptionResult, TrustRequirement,
    types::requests::{AnyIncomingResponse, AnyOutgoingRequest, ToDeviceRequest},
};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use rand::Rng as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::e2ee::recovery_key_text;
use crate::synapse::{Synapse, TestUser};

/// The secret-storage algorithm of the security keys written here.
const SECRET_STORAGE_ALGORITHM: &str = "m.secret_storage.v1.aes-hmac-sha2";

/// How many rounds of outgoing requests [`E2eeClient`] sends before giving up (each round sends
/// every request the machine has; a round normally leaves none).
const MAX_ROUNDS: usize = 10;

/// With whom a sender shares a room key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Every device of every joined member (`CollectStrategy::AllDevices`; Element's default).
    AllDevices,
    /// Only devices cross-signed by their owner; the others receive a withheld notice
    /// `m.unverified` (`CollectStrategy::IdentityBasedStrategy`: Element's "exclude insecure
    /// devices"). The sender needs its own cross-signing identity: [`E2eeClient`] bootstraps it
    /// on first use when it has none.
    CrossSignedOnly,
}

impl Share {
    fn strategy(self) -> CollectStrategy {
        match self {
            Self::AllDevices => CollectStrategy::AllDevices,
            Self::CrossSignedOnly => CollectStrategy::IdentityBasedStrategy,
        }
    }
}

/// What [`E2eeClient::decrypt`] made of a room event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decryption {
    /// Decrypted.
    Decrypted {
        /// The decrypted event (`type`, `content`, `room_id`, plus the outer event's fields).
        event: Value,
        /// Whether the sending device is cross-signed by a sender this device trusts
        /// (`VerificationState::Verified`).
        sender_verified: bool,
    },
    /// Not decrypted.
    Undecryptable {
        /// The withheld code the sender sent instead of the key (`m.unverified`, …), if any.
        withheld: Option<String>,
        /// The reason `matrix-sdk-crypto` gives, for messages.
        reason: String,
    },
}

/// One device of one user: an [`OlmMachine`] with an in-memory store, logged in with the user's
/// password as a new device, and its own `/sync` position.
///
/// `Debug` leaves out the access token and the password.
pub struct E2eeClient {
    machine: OlmMachine,
    user_id: String,
    device_id: String,
    access_token: String,
    password: String,
    base_url: String,
    http: reqwest::Client,
    since: Option<String>,
}

impl fmt::Debug for E2eeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("E2eeClient")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The parts of a `/sync` answer the crypto machine reads.
#[derive(Deserialize)]
struct SyncAnswer {
    next_batch: String,
    #[serde(default)]
    to_device: ToDeviceEvents,
    #[serde(default)]
    device_lists: DeviceLists,
    #[serde(default)]
    device_one_time_keys_count: BTreeMap<OneTimeKeyAlgorithm, UInt>,
    #[serde(default)]
    device_unused_fallback_key_types: Option<Vec<OneTimeKeyAlgorithm>>,
}

#[derive(Default, Deserialize)]
struct ToDeviceEvents {
    #[serde(default)]
    events: Vec<Raw<AnyToDeviceEvent>>,
}

/// An answer of the homeserver: status and body.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

impl Answer {
    /// The body as JSON after a 2xx status, else an error naming `what`, the status and the
    /// Matrix error body.
    fn json(self, what: &str) -> anyhow::Result<Value> {
        let text = String::from_utf8_lossy(&self.body);
        if !self.status.is_success() {
            bail!("{what}: HTTP {}: {text}", self.status);
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: invalid JSON body"))
    }

    /// The body as the ruma response `R` after a 2xx status.
    fn parse<R: IncomingResponse>(self, what: &str) -> anyhow::Result<R> {
        if !self.status.is_success() {
            bail!("{what}: HTTP {}: {}", self.status, String::from_utf8_lossy(&self.body));
        }
        let response = http::Response::builder().status(self.status.as_u16()).body(self.body)?;
        R::try_from_http_response(response).map_err(|error| anyhow!("{what}: unexpected answer: {error}"))
    }
}

/// One path segment, percent-encoded.
fn segment(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

/// A transaction id unique within the process.
fn transaction_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("argus-e2ee-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// `value` serialized as JSON.
fn to_json(value: &impl serde::Serialize) -> anyhow::Result<Value> {
    serde_json::to_value(value).context("serializing a request body")
}

fn user_id_of(text: &str) -> anyhow::Result<OwnedUserId> {
    UserId::parse(text).with_context(|| format!("invalid user id {text}"))
}

fn room_id_of(text: &str) -> anyhow::Result<&RoomId> {
    <&RoomId>::try_from(text).with_context(|| format!("invalid room id {text}"))
}

impl E2eeClient {
    /// A new device of `user`: logs in again with the user's password (`m.login.password`), so
    /// that the device is this client's alone, and creates its crypto machine. Nothing is
    /// uploaded until [`E2eeClient::sync_once`].
    pub async fn new(server: &Synapse, user: &TestUser) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        let base_url = server.base_url().trim_end_matches('/').to_owned();
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user.user_id },
            "password": user.password(),
            "initial_device_display_name": "Argus test E2EE client",
        });
        let response = http.post(format!("{base_url}/_matrix/client/v3/login")).json(&body).send().await?;
        let status = response.status();
        let login = Answer { status, body: response.bytes().await?.to_vec() }.json("POST /login")?;
        let field = |name: &str| {
            login[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("`{name}` missing from the login answer"))
        };
        let (user_id, device_id, access_token) =
            (field("user_id")?, field("device_id")?, field("access_token")?);
        let machine = OlmMachine::new(&user_id_of(&user_id)?, <&DeviceId>::from(device_id.as_str())).await;
        Ok(Self {
            machine,
            user_id,
            device_id,
            access_token,
            password: user.password().to_owned(),
            base_url,
            http,
            since: None,
        })
    }

    /// The user's id.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// This device's id.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }

    /// This device's access token (for a test that sends under this device's session).
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// This device's Curve25519 identity key (unpadded base64).
    pub fn curve25519_key(&self) -> String {
        self.machine.identity_keys().curve25519.to_base64()
    }

    /// This device's Ed25519 signing key (unpadded base64).
    pub fn ed25519_key(&self) -> String {
        self.machine.identity_keys().ed25519.to_base64()
    }

    /// Sends `method` `/_matrix/client/v3{path}` with `body` under this device's token.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let mut request = self
            .http
            .request(method, format!("{}/_matrix/client/v3{path}", self.base_url))
            .bearer_auth(&self.access_token);
        if !query.is_empty() {
            request = request.query(query);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status();
        Ok(Answer { status, body: response.bytes().await?.to_vec() })
    }

    /// Sends one of the machine's requests and gives it the answer.
    async fn send_request(&self, request_id: &str, request: &AnyOutgoingRequest) -> anyhow::Result<()> {
        let request_id = <&matrix_sdk_common::ruma::TransactionId>::from(request_id);
        match request {
            AnyOutgoingRequest::KeysUpload(upload) => {
                let mut body = Map::new();
                if let Some(device_keys) = &upload.device_keys {
                    body.insert("device_keys".to_owned(), to_json(device_keys)?);
                }
                body.insert("one_time_keys".to_owned(), to_json(&upload.one_time_keys)?);
                body.insert("fallback_keys".to_owned(), to_json(&upload.fallback_keys)?);
                let answer = self.call(Method::POST, "/keys/upload", &[], Some(&Value::Object(body))).await?;
                let response: upload_keys::v3::Response = answer.parse("POST /keys/upload")?;
                self.machine.mark_request_as_sent(request_id, &response).await?;
            }
            AnyOutgoingRequest::KeysQuery(query) => {
                let body = json!({ "device_keys": to_json(&query.device_keys)?, "timeout": 10_000 });
                let answer = self.call(Method::POST, "/keys/query", &[], Some(&body)).await?;
                let response: get_keys::v3::Response = answer.parse("POST /keys/query")?;
                self.machine.mark_request_as_sent(request_id, &response).await?;
            }
            AnyOutgoingRequest::KeysClaim(claim) => {
                let body = json!({ "one_time_keys": to_json(&claim.one_time_keys)?, "timeout": 10_000 });
                let answer = self.call(Method::POST, "/keys/claim", &[], Some(&body)).await?;
                let response: claim_keys::v3::Response = answer.parse("POST /keys/claim")?;
                self.machine.mark_request_as_sent(request_id, &response).await?;
            }
            AnyOutgoingRequest::ToDeviceRequest(to_device) => self.send_to_device(to_device).await?,
            AnyOutgoingRequest::SignatureUpload(signatures) => {
                let body = to_json(&signatures.signed_keys)?;
                let answer = self.call(Method::POST, "/keys/signatures/upload", &[], Some(&body)).await?;
                let response: upload_signatures::v3::Response =
                    answer.parse("POST /keys/signatures/upload")?;
                if !response.failures.is_empty() {
                    bail!("POST /keys/signatures/upload: failures {:?}", response.failures);
                }
                self.machine.mark_request_as_sent(request_id, &response).await?;
            }
            AnyOutgoingRequest::RoomMessage(_) => {
                bail!("in-room verification messages are not supported by this test client")
            }
        }
        Ok(())
    }

    /// Sends a to-device request and marks it sent.
    async fn send_to_device(&self, request: &ToDeviceRequest) -> anyhow::Result<()> {
        let path = format!(
            "/sendToDevice/{}/{}",
            segment(&request.event_type.to_string()),
            segment(request.txn_id.as_str())
        );
        let body = json!({ "messages": to_json(&request.messages)? });
        let answer = self.call(Method::PUT, &path, &[], Some(&body)).await?;
        let response: send_event_to_device::v3::Response = answer.parse("PUT /sendToDevice")?;
        self.machine.mark_request_as_sent(&request.txn_id, &response).await?;
        Ok(())
    }

    /// Sends every outgoing request of the machine, round after round, until none is left.
    async fn send_outgoing(&self) -> anyhow::Result<()> {
        for _ in 0..MAX_ROUNDS {
            let requests = self.machine.outgoing_requests().await?;
            if requests.is_empty() {
                return Ok(());
            }
            for request in requests {
                self.send_request(request.request_id().as_str(), request.request()).await?;
            }
        }
        bail!("the crypto machine still had requests after {MAX_ROUNDS} rounds")
    }

    /// Uploads device and one-time keys, processes one `/sync` (timeout 0: to-device events,
    /// device list changes, one-time key counts) and sends every outgoing request (key uploads,
    /// key queries of changed users, to-device answers) until none is left.
    pub async fn sync_once(&mut self) -> anyhow::Result<()> {
        self.send_outgoing().await?;
        let mut query = vec![("timeout", "0")];
        if let Some(since) = &self.since {
            query.push(("since", since));
        }
        let answer = self.call(Method::GET, "/sync", &query, None).await?;
        if !answer.status.is_success() {
            bail!("GET /sync: HTTP {}: {}", answer.status, String::from_utf8_lossy(&answer.body));
        }
        let sync: SyncAnswer =
            serde_json::from_slice(&answer.body).context("GET /sync: unexpected answer")?;
        self.machine
            .receive_sync_changes(
                EncryptionSyncChanges {
                    to_device_events: sync.to_device.events,
                    changed_devices: &sync.device_lists,
                    one_time_keys_counts: &sync.device_one_time_keys_count,
                    unused_fallback_keys: sync.device_unused_fallback_key_types.as_deref(),
                    next_batch_token: Some(sync.next_batch.clone()),
                },
                &decryption_settings(),
            )
            .await?;
        self.since = Some(sync.next_batch);
        self.send_outgoing().await
    }

    /// Creates the user's cross-signing identity (master, self-signing and user-signing keys),
    /// uploads it and signs this device with it. Synapse accepts a user's first cross-signing
    /// keys without user-interactive authentication; when it asks for it, this answers with
    /// `m.login.password` and the user's password.
    pub async fn bootstrap_cross_signing(&mut self) -> anyhow::Result<()> {
        let requests = self.machine.bootstrap_cross_signing(false).await?;
        if let Some(upload) = &requests.upload_keys_req {
            self.send_request(upload.request_id().as_str(), upload.request()).await?;
        }
        let signing = &requests.upload_signing_keys_req;
        let mut body = Map::new();
        for (name, key) in [
            ("master_key", &signing.master_key),
            ("self_signing_key", &signing.self_signing_key),
            ("user_signing_key", &signing.user_signing_key),
        ] {
            if let Some(key) = key {
                body.insert(name.to_owned(), to_json(key)?);
            }
        }
        let mut body = Value::Object(body);
        let mut answer = self.call(Method::POST, "/keys/device_signing/upload", &[], Some(&body)).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            let challenge: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            body["auth"] = json!({
                "type": "m.login.password",
                "identifier": { "type": "m.id.user", "user": self.user_id },
                "password": self.password,
                "session": challenge["session"],
            });
            answer = self.call(Method::POST, "/keys/device_signing/upload", &[], Some(&body)).await?;
        }
        let response: upload_signing_keys::v3::Response = answer.parse("POST /keys/device_signing/upload")?;
        self.machine
            .mark_request_as_sent(
                <&matrix_sdk_common::ruma::TransactionId>::from("cross-signing-upload"),
                AnyIncomingResponse::SigningKeysUpload(&response),
            )
            .await?;
        let signatures = AnyOutgoingRequest::SignatureUpload(requests.upload_signatures_req.clone());
        self.send_request(&transaction_id(), &signatures).await?;
        self.send_outgoing().await
    }

    /// The private cross-signing keys, as unpadded base64 seeds, to put into secret storage:
    /// `(master, self_signing, user_signing)`. An error before
    /// [`E2eeClient::bootstrap_cross_signing`].
    pub async fn export_cross_signing_keys(&self) -> anyhow::Result<(String, String, String)> {
        let mut export = self
            .machine
            .export_cross_signing_keys()
            .await?
            .ok_or_else(|| anyhow!("this device has no cross-signing identity"))?;
        let key = |key: Option<String>, name: &str| key.ok_or_else(|| anyhow!("the {name} key is missing"));
        Ok((
            key(export.master_key.take(), "master")?,
            key(export.self_signing_key.take(), "self-signing")?,
            key(export.user_signing_key.take(), "user-signing")?,
        ))
    }

    /// Sends `m.room.encryption` (megolm) into `room_id` under this device's session, making the
    /// room encrypted.
    pub async fn enable_encryption(&self, room_id: &str) -> anyhow::Result<()> {
        let path = format!("/rooms/{}/state/m.room.encryption/", segment(room_id));
        let body = json!({ "algorithm": "m.megolm.v1.aes-sha2" });
        self.call(Method::PUT, &path, &[], Some(&body)).await?.json("PUT m.room.encryption")?;
        Ok(())
    }

    /// The joined members of `room_id`.
    async fn joined_members(&self, room_id: &str) -> anyhow::Result<Vec<OwnedUserId>> {
        let path = format!("/rooms/{}/joined_members", segment(room_id));
        let members = self.call(Method::GET, &path, &[], None).await?.json("GET joined_members")?;
        let joined =
            members["joined"].as_object().ok_or_else(|| anyhow!("`joined` missing from joined_members"))?;
        joined.keys().map(|user| user_id_of(user)).collect()
    }

    /// Makes sure every joined member's device of `room_id` that `share` allows has the room's
    /// current megolm key: tracks the members, queries their keys, claims one-time keys for
    /// devices without an Olm session, and sends the room key (or withheld notices) to devices.
    /// [`Share::CrossSignedOnly`] needs the sender's own cross-signing identity, as in Element:
    /// it is bootstrapped first when this device has none.
    async fn share_room_key(&mut self, room_id: &str, share: Share) -> anyhow::Result<()> {
        if share == Share::CrossSignedOnly && !self.machine.cross_signing_status().await.has_master {
            self.bootstrap_cross_signing().await?;
        }
        let members = self.joined_members(room_id).await?;
        self.machine.update_tracked_users(members.iter().map(AsRef::as_ref)).await?;
        self.send_outgoing().await?;
        if let Some((request_id, claim)) =
            self.machine.get_missing_sessions(members.iter().map(AsRef::as_ref)).await?
        {
            self.send_request(request_id.as_str(), &AnyOutgoingRequest::KeysClaim(claim)).await?;
        }
        let settings = EncryptionSettings { sharing_strategy: share.strategy(), ..Default::default() };
        let to_devices = self
            .machine
            .share_room_key(room_id_of(room_id)?, members.iter().map(AsRef::as_ref), settings)
            .await?;
        for request in to_devices {
            self.send_to_device(&request).await?;
        }
        Ok(())
    }

    /// Encrypts `body` as an `m.text` `m.room.message` for `room_id`, after sharing the room key
    /// as [`E2eeClient::send_text`] does, without sending it: the `m.room.encrypted` content,
    /// for a test that sends it under another account (a forged sender).
    pub async fn encrypt_text(&mut self, room_id: &str, body: &str, share: Share) -> anyhow::Result<Value> {
        self.encrypt(room_id, &json!({ "msgtype": "m.text", "body": body }), share).await
    }

    /// Encrypts `content` as an `m.room.message` for `room_id` after sharing the room key.
    pub async fn encrypt(&mut self, room_id: &str, content: &Value, share: Share) -> anyhow::Result<Value> {
        self.share_room_key(room_id, share).await?;
        let raw: Raw<AnyMessageLikeEventContent> = Raw::new(content)?.cast_unchecked();
        let encrypted =
            self.machine.encrypt_room_event_raw(room_id_of(room_id)?, "m.room.message", &raw).await?;
        serde_json::from_str(encrypted.content.json().get()).context("reading the encrypted content")
    }

    /// Sends an encrypted `m.text` message into `room_id` under this device's session: tracks
    /// the room's joined members, queries their keys, claims one-time keys, shares the room key
    /// with `share`, then encrypts and sends. Returns the event id.
    pub async fn send_text(&mut self, room_id: &str, body: &str, share: Share) -> anyhow::Result<String> {
        let content = self.encrypt_text(room_id, body, share).await?;
        self.send_encrypted(room_id, &content).await
    }

    /// Sends an `m.room.encrypted` `content` into `room_id` under this device's session;
    /// returns the event id.
    pub async fn send_encrypted(&self, room_id: &str, content: &Value) -> anyhow::Result<String> {
        let path =
            format!("/rooms/{}/send/m.room.encrypted/{}", segment(room_id), segment(&transaction_id()));
        let sent = self.call(Method::PUT, &path, &[], Some(content)).await?.json("PUT m.room.encrypted")?;
        sent["event_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("`event_id` missing from the send answer"))
    }

    /// Decrypts the room event `event` (the whole event, as `/messages` or `/sync` gives it) of
    /// `room_id` with this device's keys (received through [`E2eeClient::sync_once`]).
    pub async fn decrypt(&self, room_id: &str, event: &Value) -> anyhow::Result<Decryption> {
        let raw = Raw::from_json(serde_json::value::to_raw_value(event)?);
        let result =
            self.machine.try_decrypt_room_event(&raw, room_id_of(room_id)?, &decryption_settings()).await?;
        Ok(match result {
            RoomEventDecryptionResult::Decrypted(decrypted) => Decryption::Decrypted {
                event: serde_json::from_str(decrypted.event.json().get())?,
                sender_verified: matches!(
                    decrypted.encryption_info.verification_state,
                    VerificationState::Verified
                ),
            },
            RoomEventDecryptionResult::UnableToDecrypt(info) => Decryption::Undecryptable {
                withheld: match &info.reason {
                    UnableToDecryptReason::MissingMegolmSession { withheld_code: Some(code) } => {
                        Some(code.as_str().to_owned())
                    }
                    _ => None,
                },
                reason: format!("{:?}", info.reason),
            },
        })
    }

    /// Whether this client sees the device `device_id` of `user_id` as cross-signed by its owner
    /// (its self-signing key signs the device, and the owner's master key signs the
    /// self-signing key). Queries the user's keys first.
    pub async fn verification_of(&self, user_id: &str, device_id: &str) -> anyhow::Result<bool> {
        let user = user_id_of(user_id)?;
        let (request_id, query) = self.machine.query_keys_for_users([user.as_ref()]);
        self.send_request(request_id.as_str(), &AnyOutgoingRequest::KeysQuery(query)).await?;
        let device = self
            .machine
            .get_device(&user, <&DeviceId>::from(device_id), None)
            .await?
            .ok_or_else(|| anyhow!("device {device_id} of {user_id} is unknown"))?;
        Ok(device.is_cross_signed_by_owner())
    }

    /// Logs this device out (`POST /logout`): the homeserver deletes it and its keys.
    pub async fn log_out(self) -> anyhow::Result<()> {
        self.call(Method::POST, "/logout", &[], Some(&json!({}))).await?.json("POST /logout")?;
        Ok(())
    }
}

fn decryption_settings() -> DecryptionSettings {
    DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted }
}

/// Secret storage's encryption of `plaintext` as the secret `name` under `key`, with a random
/// iv (bit 63 cleared, as the specification asks, so that the counter never wraps).
fn secret_storage_encrypt(key: &[u8; 32], name: &str, plaintext: &[u8]) -> Value {
    let mut iv = [0u8; 16];
    rand::thread_rng().fill(&mut iv);
    iv[8] &= 0x7f;
    crate::e2ee::secret_storage_encrypt(key, name, plaintext, iv)
}

/// Sets `user` up as Element does for a new user choosing "secure backup", without a key
/// backup: a new device of the user ([`E2eeClient`]) creates the user's cross-signing identity
/// and signs itself, the three private keys go into secret storage (`m.cross_signing.master`,
/// `m.cross_signing.self_signing`, `m.cross_signing.user_signing`) under a new random security
/// key (`m.secret_storage.key.<id>` with its key check, made `m.secret_storage.default_key`),
/// then the device is logged out. Returns the security key as a user types it (base58 in groups
/// of four).
pub async fn set_up_cross_signing_in_secret_storage(
    server: &Synapse,
    user: &TestUser,
) -> anyhow::Result<String> {
    let mut client = E2eeClient::new(server, user).await?;
    client.sync_once().await?;
    client.bootstrap_cross_signing().await?;
    let (master, self_signing, user_signing) = client.export_cross_signing_keys().await?;
    client.log_out().await?;

    let mut security_key = [0u8; 32];
    rand::thread_rng().fill(&mut security_key);
    let mut key_id_bytes = [0u8; 12];
    rand::thread_rng().fill(&mut key_id_bytes);
    let key_id = STANDARD_NO_PAD.encode(key_id_bytes).replace(['+', '/'], "A");

    let mut description = secret_storage_encrypt(&security_key, "", &[0u8; 32]);
    if let Some(object) = description.as_object_mut() {
        object.remove("ciphertext");
        object.insert("algorithm".to_owned(), json!(SECRET_STORAGE_ALGORITHM));
        object.insert("name".to_owned(), json!("Security key"));
    }
    user.set_account_data(&format!("m.secret_storage.key.{key_id}"), &description).await?;
    user.set_account_data("m.secret_storage.default_key", &json!({ "key": key_id })).await?;
    for (name, seed) in [
        ("m.cross_signing.master", master),
        ("m.cross_signing.self_signing", self_signing),
        ("m.cross_signing.user_signing", user_signing),
    ] {
        let secret = secret_storage_encrypt(&security_key, name, seed.as_bytes());
        user.set_account_data(name, &json!({ "encrypted": { key_id.clone(): secret } })).await?;
    }
    Ok(recovery_key_text(&security_key))
}
