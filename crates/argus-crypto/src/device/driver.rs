//! The device: an `OlmMachine` over the persisting store, its requests sent through the
//! caller's [`Transport`], and decryption that tells what is known of the sending device.

use std::{collections::BTreeMap, sync::Arc};

use argus_domain::SenderTrust;
use matrix_sdk_common::{
    deserialized_responses::{
        DeviceLinkProblem, UnableToDecryptReason, VerificationLevel, VerificationState, WithheldCode,
    },
    ruma::{
        self, OneTimeKeyAlgorithm, OwnedDeviceId, OwnedUserId, RoomId, UInt,
        api::{
            IncomingResponse, SupportedVersions,
            auth_scheme::{AccessToken, SendAccessToken},
            client::{
                backup::add_backup_keys,
                keys::{claim_keys, get_keys, upload_keys, upload_signatures},
                message::send_message_event,
                sync::sync_events::DeviceLists,
                to_device::send_event_to_device,
            },
            path_builder::VersionHistory,
        },
        events::AnyToDeviceEvent,
        serde::Raw,
    },
};
use matrix_sdk_crypto::{
    DecryptionSettings, EncryptionSyncChanges, OlmMachine, RoomEventDecryptionResult, TrustRequirement,
    backups::MegolmV1BackupKey,
    store::types::CrossSigningKeyExport,
    types::requests::{AnyIncomingResponse, AnyOutgoingRequest, OutgoingRequest},
};
use serde_json::value::RawValue;

use super::{
    CrossSigningKeys, DeviceStateStore, HttpCall, SyncChanges, Transport,
    persisting::{Failure, PersistingStore},
};
use crate::{
    Error, Result,
    megolm::{Decrypted, DecryptedEvent, Decryptor, EncryptedEvent, SessionKeys, Undecryptable},
};

/// At most this many rounds of outgoing requests per flush (each answer may ask for more).
const MAX_ROUNDS: usize = 16;

/// What a `/sync` answer brought the device.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReceivedKeys {
    /// Room keys received (room id, session id).
    pub room_keys: Vec<(String, String)>,
    /// To-device events taken.
    pub to_device: usize,
}

/// One device of the connector for one account: `matrix-sdk-crypto`'s `OlmMachine`, its state
/// kept by the caller's store, its requests sent by the caller's transport. Only the process
/// holding the account loop's lease opens it (the store refuses writes otherwise).
pub struct Device {
    machine: OlmMachine,
    transport: Arc<dyn Transport>,
    /// Set once a write of the state failed: every call then fails, the device must be opened
    /// again from the store.
    failure: Failure,
    /// The event each decrypted ciphertext (session, message index) was first served as, while
    /// this device is open (at most [`MAX_SERVED`]): a ciphertext served again as another
    /// event is a replay.
    served: std::sync::Mutex<std::collections::HashMap<(String, u32), String>>,
}

/// The most ciphertexts remembered for replays (then the memory starts again).
const MAX_SERVED: usize = 50_000;

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("user_id", &self.machine.user_id().as_str())
            .field("device_id", &self.machine.device_id().as_str())
            .finish_non_exhaustive()
    }
}

fn device_error(error: impl std::fmt::Display) -> Error {
    Error::Device(error.to_string())
}

/// The failure to keep the state when a write failed, else `error` of the machine.
fn failure_or(failure: &Failure, error: impl std::fmt::Display) -> Error {
    let reason = match failure.lock() {
        Ok(failed) => match failed.as_ref() {
            Some(Error::DeviceState(reason)) => Some(reason.clone()),
            Some(_) => Some("a write failed".to_owned()),
            None => None,
        },
        Err(_) => Some("a write failed".to_owned()),
    };
    match reason {
        Some(reason) => Error::DeviceState(reason),
        None => device_error(error),
    }
}

/// The device's own keys as the homeserver holds them, when it holds any: a device that
/// already has keys is a client's session, not the connector's to take.
async fn published_keys(transport: &dyn Transport, user: &ruma::UserId, device: &str) -> Result<bool> {
    let body = serde_json::json!({ "device_keys": { user.as_str(): [device] } });
    let call = HttpCall {
        method: "POST",
        path_and_query: "/_matrix/client/v3/keys/query".to_owned(),
        body: serde_json::to_vec(&body).map_err(device_error)?,
    };
    let answer = transport.send(call).await?;
    if !(200..300).contains(&answer.status) {
        return Err(Error::DeviceTransport(format!("the keys query answered {}", answer.status)));
    }
    let answer: serde_json::Value = serde_json::from_slice(&answer.body)
        .map_err(|_| Error::DeviceTransport("malformed keys query answer".into()))?;
    Ok(answer
        .pointer(&format!("/device_keys/{}/{}", escape(user.as_str()), escape(device)))
        .is_some_and(|k| !k.is_null()))
}

/// `part` as one JSON pointer segment.
fn escape(part: &str) -> String {
    part.replace('~', "~0").replace('/', "~1")
}

impl Device {
    /// Opens the device `device_id` of `user_id` (the device of the account's access token)
    /// from what `state` kept of it, or makes it anew when nothing was kept. Requests are sent
    /// only by [`Device::flush`] and the calls that say so.
    pub async fn open(
        user_id: &str,
        device_id: &str,
        state: Arc<dyn DeviceStateStore>,
        transport: Arc<dyn Transport>,
    ) -> Result<Self> {
        let user: OwnedUserId = user_id.parse().map_err(|_| Error::Device("not a Matrix user id".into()))?;
        let device: OwnedDeviceId = device_id.into();
        let failure = Failure::default();
        let store = PersistingStore::open(state, Arc::clone(&failure)).await?;
        // A device made now must not take over one a client already published keys for (an
        // analyst's session whose token was given): its keys would replace the client's.
        if !store.has_account() && published_keys(&*transport, &user, device_id).await? {
            return Err(Error::DeviceInUse);
        }
        let machine = OlmMachine::with_store(&user, &device, store, None).await.map_err(|e| match e {
            matrix_sdk_crypto::store::CryptoStoreError::MismatchedAccount { .. } => {
                Error::Device("the stored device belongs to another user or device".into())
            }
            other => failure_or(&failure, other),
        })?;
        Ok(Self { machine, transport, failure, served: std::sync::Mutex::default() })
    }

    /// `error` of the machine, or the failure to keep the state when there was one.
    fn failed(&self, error: impl std::fmt::Display) -> Error {
        failure_or(&self.failure, error)
    }

    /// The device's Curve25519 and Ed25519 identity keys (unpadded base64).
    pub fn identity_keys(&self) -> (String, String) {
        let keys = self.machine.identity_keys();
        (keys.curve25519.to_base64(), keys.ed25519.to_base64())
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        self.machine.device_id().as_str()
    }

    /// Takes what a `/sync` answer says to the device (to-device events, in order: room keys,
    /// withheld notices; device list changes; key counts), then sends what that asks for.
    /// The caller stores the answer's position only after this returned.
    pub async fn receive_sync(&self, changes: &SyncChanges) -> Result<ReceivedKeys> {
        let to_device: Vec<Raw<AnyToDeviceEvent>> = changes
            .to_device
            .iter()
            .filter_map(|json| RawValue::from_string(json.clone()).ok().map(Raw::from_json))
            .collect();
        let taken = to_device.len();
        let mut lists = DeviceLists::new();
        lists.changed = changes.changed_devices.iter().filter_map(|u| u.parse().ok()).collect();
        lists.left = changes.left_devices.iter().filter_map(|u| u.parse().ok()).collect();
        let counts: BTreeMap<OneTimeKeyAlgorithm, UInt> = changes
            .one_time_keys_counts
            .iter()
            .map(|(k, v)| (OneTimeKeyAlgorithm::from(k.as_str()), UInt::try_from(*v).unwrap_or(UInt::MAX)))
            .collect();
        let fallback: Option<Vec<OneTimeKeyAlgorithm>> = changes
            .unused_fallback_key_types
            .as_ref()
            .map(|types| types.iter().map(|t| OneTimeKeyAlgorithm::from(t.as_str())).collect());
        let sync = EncryptionSyncChanges {
            to_device_events: to_device,
            changed_devices: &lists,
            one_time_keys_counts: &counts,
            unused_fallback_keys: fallback.as_deref(),
            next_batch_token: changes.next_batch.clone(),
        };
        let (_events, room_keys) =
            self.machine.receive_sync_changes(sync, &settings()).await.map_err(|e| self.failed(e))?;
        // The keys are kept: requests that fail now (key uploads, queries) go with the next
        // flush, unless the state itself could not be kept.
        match self.flush().await {
            Ok(()) => {}
            Err(error @ Error::DeviceState(_)) => return Err(error),
            Err(error) => tracing::warn!(code = error.code(), "the device's requests failed"),
        }
        Ok(ReceivedKeys {
            room_keys: room_keys.into_iter().map(|k| (k.room_id.to_string(), k.session_id)).collect(),
            to_device: taken,
        })
    }

    /// Sends every request the device has (its keys to upload, key queries, key claims,
    /// to-device messages, backups), each answer given back to it, until none is left or
    /// 16 rounds were sent.
    pub async fn flush(&self) -> Result<()> {
        for _ in 0..MAX_ROUNDS {
            let requests = self.machine.outgoing_requests().await.map_err(|e| self.failed(e))?;
            if requests.is_empty() {
                return Ok(());
            }
            for request in &requests {
                self.send(request).await?;
            }
        }
        Ok(())
    }

    /// Starts tracking the devices of `users` (the senders of encrypted events read) and
    /// queries their keys now, so that a decryption can tell whose device sent an event.
    pub async fn track(&self, users: &[String]) -> Result<()> {
        let parsed: Vec<OwnedUserId> = users.iter().filter_map(|u| u.parse().ok()).collect();
        let known = self.machine.tracked_users().await.map_err(|e| self.failed(e))?;
        let new: Vec<&ruma::UserId> =
            parsed.iter().filter(|u| !known.contains(*u)).map(|u| u.as_ref()).collect();
        if new.is_empty() {
            return Ok(());
        }
        self.machine.update_tracked_users(new).await.map_err(|e| self.failed(e))?;
        self.flush().await
    }

    /// Signs this device with the account's self-signing key taken from secret storage, as a
    /// client does when a new session is verified with the security key: the account's own
    /// identity is read first and the keys must be its identity's; the signature is uploaded.
    /// Nothing is done when the device is already signed by its owner.
    pub async fn sign_self(&self, keys: &CrossSigningKeys) -> Result<()> {
        if keys.self_signing.is_none() {
            return Err(Error::NoCrossSigningKeys);
        }
        let own = self.machine.user_id().to_owned();
        let (id, query) = self.machine.query_keys_for_users([own.as_ref()]);
        self.send_keys_query(&id, &query).await?;
        if self.is_cross_signed().await? {
            return Ok(());
        }
        // Only the self-signing key, which signs devices: the master and user-signing keys are
        // never kept by the connector.
        let export = CrossSigningKeyExport {
            master_key: None,
            self_signing_key: keys.self_signing.as_ref().map(|k| k.expose_secret().to_owned()),
            user_signing_key: None,
        };
        let status = self.machine.import_cross_signing_keys(export).await.map_err(|e| match e {
            matrix_sdk_crypto::SecretImportError::MismatchedPublicKeys { .. }
            | matrix_sdk_crypto::SecretImportError::Key { .. } => Error::CrossSigningMismatch,
            other => device_error(other),
        })?;
        if !status.has_self_signing {
            return Err(Error::NoCrossSigningKeys);
        }
        let device = self
            .machine
            .get_device(&own, self.machine.device_id(), None)
            .await
            .map_err(|e| self.failed(e))?
            .ok_or_else(|| Error::Device("the account's own device is not known".into()))?;
        let upload = device.verify().await.map_err(|e| self.failed(e))?;
        let http = into_http(upload)?;
        let answer = self.transport.send(http).await?;
        if !(200..300).contains(&answer.status) {
            return Err(Error::DeviceTransport(format!("signature upload answered {}", answer.status)));
        }
        let parsed = upload_signatures::v3::Response::try_from_http_response(http_response(answer)?)
            .map_err(|_| Error::DeviceTransport("malformed signature upload answer".into()))?;
        if !parsed.failures.is_empty() {
            return Err(Error::CrossSigningMismatch);
        }
        // Read the identity again: the signature is now the homeserver's.
        let (id, query) = self.machine.query_keys_for_users([own.as_ref()]);
        self.send_keys_query(&id, &query).await?;
        Ok(())
    }

    /// Whether this device is signed by its owner's cross-signing identity (as the device keys
    /// last read from the homeserver say).
    pub async fn is_cross_signed(&self) -> Result<bool> {
        let device = self
            .machine
            .get_device(self.machine.user_id(), self.machine.device_id(), None)
            .await
            .map_err(|e| self.failed(e))?;
        Ok(device.is_some_and(|d| d.is_cross_signed_by_owner()))
    }

    /// Saves every room key the device receives into the key backup `version` whose public key
    /// is `public_key` (unpadded base64), as the sending clients' own devices do; keys are sent
    /// by [`Device::back_up`].
    pub async fn enable_backup(&self, version: &str, public_key: &str) -> Result<()> {
        let key = MegolmV1BackupKey::from_base64(public_key)
            .map_err(|_| Error::malformed("the key backup's public key"))?;
        key.set_version(version.to_owned());
        self.machine.backup_machine().enable_backup_v1(key).await.map_err(|e| self.failed(e))
    }

    /// Sends the room keys not yet in the key backup to it; returns how many were sent.
    pub async fn back_up(&self) -> Result<usize> {
        let mut sent = 0;
        for _ in 0..MAX_ROUNDS {
            let Some((id, request)) =
                self.machine.backup_machine().backup().await.map_err(|e| self.failed(e))?
            else {
                break;
            };
            sent += request.rooms.values().map(|r| r.sessions.len()).sum::<usize>();
            let http =
                into_http(add_backup_keys::v3::Request::new(request.version.clone(), request.rooms.clone()))?;
            let answer = self.checked(http).await?;
            let parsed = add_backup_keys::v3::Response::try_from_http_response(http_response(answer)?)
                .map_err(|_| Error::DeviceTransport("malformed key backup answer".into()))?;
            self.machine.mark_request_as_sent(&id, &parsed).await.map_err(|e| self.failed(e))?;
        }
        Ok(sent)
    }

    /// Whether `event` (decrypted at `message_index`) is the first event its ciphertext was
    /// served as while this device is open (the same event served again is).
    fn first_served(&self, event: &EncryptedEvent<'_>, message_index: u32) -> bool {
        #[derive(serde::Deserialize)]
        struct Id {
            event_id: String,
        }
        let Some(session) = event.content.session_id.clone() else { return true };
        let id = serde_json::from_str::<Id>(event.json).map(|i| i.event_id).unwrap_or_default();
        let Ok(mut served) = self.served.lock() else { return true };
        if served.len() >= MAX_SERVED {
            served.clear();
        }
        served.entry((session, message_index)).or_insert_with(|| id.clone()) == &id
    }

    /// How many room keys the device holds.
    pub async fn room_key_count(&self) -> Result<usize> {
        let counts = self.machine.backup_machine().room_key_counts().await.map_err(|e| self.failed(e))?;
        Ok(counts.total)
    }

    /// Decrypts one `m.room.encrypted` event of `room_id` (its whole JSON): the event it carried
    /// and what is known of its sending device, or why it stays encrypted (`None`: the device
    /// holds no key and was told nothing: another source may have it).
    pub async fn decrypt(&self, room_id: &str, event_json: &str) -> Result<Option<Decrypted>> {
        self.decrypt_with(room_id, event_json, &mut Identities::default()).await
    }

    /// [`Device::decrypt`] with the senders' identities already looked at (a page's events
    /// share few senders: each identity is read once).
    async fn decrypt_with(
        &self,
        room_id: &str,
        event_json: &str,
        identities: &mut Identities,
    ) -> Result<Option<Decrypted>> {
        let room: &RoomId =
            <&RoomId>::try_from(room_id).map_err(|_| Error::Device("not a room id".into()))?;
        let Ok(raw) = RawValue::from_string(event_json.to_owned()) else {
            return Ok(Some(Err(Undecryptable::Malformed)));
        };
        let raw = Raw::from_json(raw);
        let result =
            self.machine.try_decrypt_room_event(&raw, room, &settings()).await.map_err(|e| self.failed(e))?;
        match result {
            RoomEventDecryptionResult::Decrypted(decrypted) => {
                let info = &decrypted.encryption_info;
                // Its key came from a device of another user than the event's sender (a
                // ciphertext copied under another name): its content is not the sender's.
                if info.verification_state
                    == VerificationState::Unverified(VerificationLevel::MismatchedSender)
                {
                    return Ok(Some(Err(Undecryptable::SenderKeyMismatch)));
                }
                let payload: Payload = match decrypted.event.deserialize_as_unchecked() {
                    Ok(p) => p,
                    Err(_) => return Ok(Some(Err(Undecryptable::Malformed))),
                };
                let mut trust = self.trust_of(&info.sender, &info.verification_state, identities).await?;
                let signed = match info.session_id() {
                    Some(session_id) if trust == SenderTrust::Verified => {
                        match identities.sessions.get(session_id) {
                            Some(signed) => *signed,
                            None => {
                                let signed = self
                                    .session_signed_by_current_identity(room, session_id, &info.sender)
                                    .await?;
                                identities.sessions.insert(session_id.to_owned(), signed);
                                signed
                            }
                        }
                    }
                    _ => true,
                };
                if !signed {
                    // The identity that vouched for the key's device when the key arrived is not
                    // the sender's pinned identity now (a homeserver swapping identities).
                    trust = SenderTrust::IdentityChanged;
                }
                Ok(Some(Ok(DecryptedEvent {
                    event_type: payload.event_type,
                    content: payload.content,
                    message_index: message_index(event_json).unwrap_or(0),
                    sender_trust: trust,
                })))
            }
            RoomEventDecryptionResult::UnableToDecrypt(info) => Ok(match info.reason {
                UnableToDecryptReason::MissingMegolmSession { withheld_code: None } => None,
                UnableToDecryptReason::MissingMegolmSession { withheld_code: Some(code) } => {
                    Some(Err(withheld(&code)))
                }
                UnableToDecryptReason::UnknownMegolmMessageIndex => {
                    Some(Err(Undecryptable::IndexBeforeFirstKnown))
                }
                UnableToDecryptReason::MegolmDecryptionFailure => Some(Err(Undecryptable::BadMac)),
                UnableToDecryptReason::MismatchedIdentityKeys => Some(Err(Undecryptable::SenderKeyMismatch)),
                _ => Some(Err(Undecryptable::Malformed)),
            }),
        }
    }

    /// Whether the room key `session_id` of `room` was received from a device signed by the
    /// master key `sender`'s identity has now (the one pinned, when the caller found it
    /// unchanged).
    async fn session_signed_by_current_identity(
        &self,
        room: &RoomId,
        session_id: &str,
        sender: &ruma::UserId,
    ) -> Result<bool> {
        use matrix_sdk_crypto::olm::SenderData;
        let session = self
            .machine
            .store()
            .get_inbound_group_session(room, session_id)
            .await
            .map_err(|e| self.failed(e))?;
        let recorded = match session.as_ref().map(|s| &s.sender_data) {
            Some(SenderData::SenderUnverified(known) | SenderData::SenderVerified(known)) => {
                known.master_key.clone()
            }
            _ => return Ok(false),
        };
        let identity = self.machine.get_identity(sender, None).await.map_err(|e| self.failed(e))?;
        let current = identity.and_then(|i| match i {
            matrix_sdk_crypto::UserIdentity::Other(other) => other.master_key().get_first_key(),
            matrix_sdk_crypto::UserIdentity::Own(own) => own.master_key().get_first_key(),
        });
        Ok(current.is_some_and(|key| key == *recorded))
    }

    /// The trust of a decrypted event from `sender` whose verification the machine found.
    async fn trust_of(
        &self,
        sender: &ruma::UserId,
        state: &VerificationState,
        identities: &mut Identities,
    ) -> Result<SenderTrust> {
        Ok(match state {
            VerificationState::Verified => SenderTrust::Verified,
            VerificationState::Unverified(VerificationLevel::UnverifiedIdentity) => {
                // Signed by its owner's identity: pinned at first sight, so a changed identity
                // shows as such.
                let changed = match identities.changed.get(sender) {
                    Some(changed) => *changed,
                    None => {
                        let identity =
                            self.machine.get_identity(sender, None).await.map_err(|e| self.failed(e))?;
                        let changed = identity
                            .and_then(|i| i.other())
                            .is_some_and(|other| other.identity_needs_user_approval());
                        identities.changed.insert(sender.to_owned(), changed);
                        changed
                    }
                };
                if changed { SenderTrust::IdentityChanged } else { SenderTrust::Verified }
            }
            VerificationState::Unverified(VerificationLevel::VerificationViolation) => {
                SenderTrust::IdentityChanged
            }
            VerificationState::Unverified(VerificationLevel::UnsignedDevice) => SenderTrust::UnverifiedDevice,
            VerificationState::Unverified(
                VerificationLevel::None(DeviceLinkProblem::MissingDevice | DeviceLinkProblem::InsecureSource)
                | VerificationLevel::MismatchedSender,
            ) => SenderTrust::UnknownDevice,
        })
    }

    /// Sends `request` and gives its answer back to the machine.
    async fn send(&self, request: &OutgoingRequest) -> Result<()> {
        let id = request.request_id();
        match request.request() {
            AnyOutgoingRequest::KeysUpload(r) => {
                let answer = self.checked(into_http(r.clone())?).await?;
                let parsed = upload_keys::v3::Response::try_from_http_response(http_response(answer)?)
                    .map_err(|_| Error::DeviceTransport("malformed keys upload answer".into()))?;
                self.mark(id, &parsed).await
            }
            AnyOutgoingRequest::KeysQuery(r) => {
                let mut query = get_keys::v3::Request::new();
                query.device_keys = r.device_keys.clone();
                query.timeout = r.timeout;
                self.send_query(id, query).await
            }
            AnyOutgoingRequest::KeysClaim(r) => {
                let answer = self.checked(into_http(r.clone())?).await?;
                let parsed = claim_keys::v3::Response::try_from_http_response(http_response(answer)?)
                    .map_err(|_| Error::DeviceTransport("malformed keys claim answer".into()))?;
                self.mark(id, &parsed).await
            }
            AnyOutgoingRequest::ToDeviceRequest(r) => {
                let send = send_event_to_device::v3::Request::new_raw(
                    r.event_type.clone(),
                    r.txn_id.clone(),
                    r.messages.clone(),
                );
                let answer = self.checked(into_http(send)?).await?;
                let parsed =
                    send_event_to_device::v3::Response::try_from_http_response(http_response(answer)?)
                        .map_err(|_| Error::DeviceTransport("malformed to-device answer".into()))?;
                self.mark(id, &parsed).await
            }
            AnyOutgoingRequest::SignatureUpload(r) => {
                let answer = self.checked(into_http(r.clone())?).await?;
                let parsed = upload_signatures::v3::Response::try_from_http_response(http_response(answer)?)
                    .map_err(|_| Error::DeviceTransport("malformed signature upload answer".into()))?;
                self.mark(id, &parsed).await
            }
            AnyOutgoingRequest::RoomMessage(_) => {
                // In-room verification messages: the connector starts no verification and sends
                // nothing into a room it archives; the request is dropped as answered.
                let empty = send_message_event::v3::Response::new(
                    "$none:none".try_into().map_err(|e| self.failed(e))?,
                );
                self.mark(id, &empty).await
            }
        }
    }

    async fn mark<'a>(
        &self,
        id: &ruma::TransactionId,
        answer: impl Into<AnyIncomingResponse<'a>>,
    ) -> Result<()> {
        self.machine.mark_request_as_sent(id, answer).await.map_err(|e| self.failed(e))
    }

    async fn send_keys_query(
        &self,
        id: &ruma::TransactionId,
        r: &matrix_sdk_crypto::types::requests::KeysQueryRequest,
    ) -> Result<()> {
        let mut query = get_keys::v3::Request::new();
        query.device_keys = r.device_keys.clone();
        query.timeout = r.timeout;
        self.send_query(id, query).await
    }

    async fn send_query(&self, id: &ruma::TransactionId, query: get_keys::v3::Request) -> Result<()> {
        let answer = self.checked(into_http(query)?).await?;
        let parsed = get_keys::v3::Response::try_from_http_response(http_response(answer)?)
            .map_err(|_| Error::DeviceTransport("malformed keys query answer".into()))?;
        self.mark(id, &parsed).await
    }

    /// Sends `call`; an answer that is not a success is an error naming its status only.
    async fn checked(&self, call: HttpCall) -> Result<super::HttpAnswer> {
        let answer = self.transport.send(call).await?;
        if (200..300).contains(&answer.status) {
            Ok(answer)
        } else {
            Err(Error::DeviceTransport(format!("the homeserver answered {}", answer.status)))
        }
    }
}

/// What one page's decryption looked at once: whether each sender's identity changed since
/// first seen, and whether each session's key came from a device signed by its sender's
/// current identity.
#[derive(Default)]
struct Identities {
    changed: std::collections::HashMap<OwnedUserId, bool>,
    sessions: std::collections::HashMap<String, bool>,
}

/// The decryption settings: every event is decrypted whatever its sender's trust, which is
/// recorded instead of deciding.
fn settings() -> DecryptionSettings {
    DecryptionSettings { sender_device_trust_requirement: TrustRequirement::Untrusted }
}

fn withheld(code: &WithheldCode) -> Undecryptable {
    match code {
        WithheldCode::Unverified => Undecryptable::WithheldUnverified,
        WithheldCode::Blacklisted => Undecryptable::WithheldBlacklisted,
        WithheldCode::Unauthorised => Undecryptable::WithheldUnauthorised,
        WithheldCode::NoOlm => Undecryptable::WithheldNoOlm,
        _ => Undecryptable::WithheldUnavailable,
    }
}

/// The megolm message index of an encrypted event's ciphertext.
fn message_index(event_json: &str) -> Option<u32> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        content: Content,
    }
    #[derive(serde::Deserialize)]
    struct Content {
        ciphertext: String,
    }
    let envelope: Envelope = serde_json::from_str(event_json).ok()?;
    vodozemac::megolm::MegolmMessage::from_base64(&envelope.content.ciphertext)
        .ok()
        .map(|m| m.message_index())
}

/// What a decrypted event carried.
#[derive(serde::Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    event_type: String,
    content: serde_json::Value,
}

/// `request` as an HTTP call, without any credential (the transport adds the session's).
fn into_http<R>(request: R) -> Result<HttpCall>
where
    R: ruma::api::OutgoingRequest<Authentication = AccessToken, PathBuilder = VersionHistory>,
{
    let versions =
        SupportedVersions { versions: [ruma::api::MatrixVersion::V1_1].into(), features: Default::default() };
    let http: http::Request<Vec<u8>> = request
        .try_into_http_request(
            "https://homeserver.invalid",
            SendAccessToken::Always("-"),
            std::borrow::Cow::Owned(versions),
        )
        .map_err(|_| Error::Device("a request of the device could not be built".into()))?;
    let path_and_query = http
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| http.uri().path().to_owned());
    let method = match *http.method() {
        http::Method::GET => "GET",
        http::Method::PUT => "PUT",
        _ => "POST",
    };
    Ok(HttpCall { method, path_and_query, body: http.into_body() })
}

fn http_response(answer: super::HttpAnswer) -> Result<http::Response<Vec<u8>>> {
    http::Response::builder()
        .status(answer.status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(answer.body)
        .map_err(|_| Error::DeviceTransport("an answer with an invalid status".into()))
}

/// Decrypts a room's events with the connector's device first, then, for an event whose key
/// the device never received, the sessions of the key backup (whose senders stay
/// [`SenderTrust::UnknownDevice`]). The senders of the events are tracked and their keys
/// queried before decrypting, so that the device can tell whose device sent each.
pub struct DeviceDecryptor {
    device: Arc<Device>,
    backup: Option<SessionKeys>,
}

impl DeviceDecryptor {
    /// Decrypts with `device`, then `backup` when given.
    pub fn new(device: Arc<Device>, backup: Option<SessionKeys>) -> Self {
        Self { device, backup }
    }
}

#[async_trait::async_trait]
impl Decryptor for DeviceDecryptor {
    async fn decrypt_all(&mut self, room_id: &str, events: &[EncryptedEvent<'_>]) -> Vec<Decrypted> {
        #[derive(serde::Deserialize)]
        struct Sender {
            sender: String,
        }
        let mut senders: Vec<String> = events
            .iter()
            .filter_map(|e| serde_json::from_str::<Sender>(e.json).ok().map(|s| s.sender))
            .collect();
        senders.sort();
        senders.dedup();
        if let Err(error) = self.device.track(&senders).await {
            tracing::warn!(code = error.code(), "the senders' device keys could not be read");
        }
        let mut results = Vec::with_capacity(events.len());
        // Events the device did not decrypt, with its reason when it had one.
        let mut fallback: Vec<(usize, Option<Undecryptable>)> = Vec::new();
        let mut identities = Identities::default();
        for (i, event) in events.iter().enumerate() {
            match self.device.decrypt_with(room_id, event.json, &mut identities).await {
                Ok(Some(Ok(decrypted))) => match self.device.first_served(event, decrypted.message_index) {
                    true => results.push(Ok(decrypted)),
                    false => results.push(Err(Undecryptable::Replayed)),
                },
                // A key from another user's device, or a ciphertext served twice, is refused
                // whatever the backup holds (the device saves what it receives there too).
                Ok(Some(Err(reason @ (Undecryptable::SenderKeyMismatch | Undecryptable::Replayed)))) => {
                    results.push(Err(reason));
                }
                Ok(Some(Err(reason))) => {
                    results.push(Err(reason));
                    fallback.push((i, Some(reason)));
                }
                Ok(None) => {
                    results.push(Err(Undecryptable::NoRoomKey));
                    fallback.push((i, None));
                }
                Err(error) => {
                    tracing::warn!(code = error.code(), "the device could not decrypt an event");
                    results.push(Err(Undecryptable::NoRoomKey));
                    fallback.push((i, None));
                }
            }
        }
        // The key backup may hold what the device lacks (keys its other clients received
        // before the device existed): a key from it decrypts, else the device's reason stays.
        if let Some(backup) = self.backup.as_mut()
            && !fallback.is_empty()
        {
            let contents: Vec<_> = fallback.iter().map(|&(i, _)| events[i].content.clone()).collect();
            for (&(i, device_reason), result) in fallback.iter().zip(backup.decrypt_all(room_id, &contents)) {
                results[i] = match (result, device_reason) {
                    (Ok(decrypted), _) => Ok(decrypted),
                    (Err(_), Some(reason)) => Err(reason),
                    (Err(Undecryptable::NoKeyInBackup), None) => Err(Undecryptable::NoRoomKey),
                    (Err(reason), None) => Err(reason),
                };
            }
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::BTreeMap,
        sync::{Arc, Mutex},
    };

    use super::*;
    use crate::device::{DeviceItem, HttpAnswer};

    /// The caller's store, in memory; `refuse` makes every write fail (a lost lease).
    #[derive(Debug, Default)]
    struct Kept {
        items: Mutex<BTreeMap<(String, String), Vec<u8>>>,
        refuse: Mutex<bool>,
    }

    #[async_trait::async_trait]
    impl DeviceStateStore for Kept {
        async fn load(&self) -> Result<Vec<DeviceItem>> {
            let items = self.items.lock().map_err(|_| Error::DeviceState("poisoned".into()))?;
            Ok(items
                .iter()
                .map(|((kind, key), value)| DeviceItem {
                    kind: kind.clone(),
                    key: key.clone(),
                    value: zeroize::Zeroizing::new(value.clone()),
                })
                .collect())
        }

        async fn write(&self, puts: Vec<DeviceItem>, deletes: Vec<(String, String)>) -> Result<()> {
            if *self.refuse.lock().map_err(|_| Error::DeviceState("poisoned".into()))? {
                return Err(Error::DeviceState("the lease is lost".into()));
            }
            let mut items = self.items.lock().map_err(|_| Error::DeviceState("poisoned".into()))?;
            for item in puts {
                items.insert((item.kind, item.key), item.value.to_vec());
            }
            for key in deletes {
                items.remove(&key);
            }
            Ok(())
        }
    }

    /// A homeserver that answers key queries only (with `keys` for every device asked, or none)
    /// and is unreachable for anything else.
    struct Offline {
        keys: bool,
    }

    #[expect(non_upper_case_globals, reason = "reads as the unit struct it stands for")]
    const Offline: Offline = Offline { keys: false };

    #[async_trait::async_trait]
    impl Transport for Offline {
        async fn send(&self, call: HttpCall) -> Result<HttpAnswer> {
            if call.path_and_query != "/_matrix/client/v3/keys/query" {
                return Err(Error::DeviceTransport("offline".into()));
            }
            let asked: serde_json::Value = serde_json::from_slice(&call.body).unwrap_or_default();
            let body = match self.keys {
                true => serde_json::json!({ "device_keys": { "@service:tchap.test": {
                    "ARGUSDEV": { "user_id": "@service:tchap.test", "device_id": "ARGUSDEV" } } } }),
                false => serde_json::json!({ "device_keys": {} }),
            };
            assert!(asked["device_keys"]["@service:tchap.test"].is_array(), "{asked}");
            Ok(HttpAnswer { status: 200, body: serde_json::to_vec(&body).unwrap_or_default() })
        }
    }

    #[tokio::test]
    async fn a_device_whose_keys_a_client_published_is_not_taken_over() {
        let kept = Arc::new(Kept::default());
        let opened =
            Device::open("@service:tchap.test", "ARGUSDEV", kept.clone(), Arc::new(Offline { keys: true }))
                .await;
        assert!(matches!(opened, Err(Error::DeviceInUse)), "{opened:?}");
        assert!(kept.items.lock().unwrap_or_else(|e| panic!("{e}")).is_empty(), "nothing made, nothing kept");
        // A device the connector made and kept is its own, whatever the homeserver holds.
        Device::open("@service:tchap.test", "ARGUSDEV", kept.clone(), Arc::new(Offline))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Device::open("@service:tchap.test", "ARGUSDEV", kept, Arc::new(Offline { keys: true }))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[tokio::test]
    async fn a_failed_write_makes_every_later_call_a_state_failure() {
        let kept = Arc::new(Kept::default());
        let device = Device::open("@service:tchap.test", "ARGUSDEV", kept.clone(), Arc::new(Offline))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        *kept.refuse.lock().unwrap_or_else(|e| panic!("{e}")) = true;
        let tracked = device.track(&["@ana:tchap.test".to_owned()]).await;
        assert!(matches!(tracked, Err(Error::DeviceState(_))), "{tracked:?}");
        *kept.refuse.lock().unwrap_or_else(|e| panic!("{e}")) = false;
        // The store takes writes again, but the device's memory may have diverged: it stays failed.
        let again = device.track(&["@bob:tchap.test".to_owned()]).await;
        assert!(matches!(again, Err(Error::DeviceState(_))), "{again:?}");
    }

    #[tokio::test]
    async fn a_device_reopened_from_its_kept_state_is_the_same_device() {
        let kept = Arc::new(Kept::default());
        let first = Device::open("@service:tchap.test", "ARGUSDEV", kept.clone(), Arc::new(Offline))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = first.identity_keys();
        drop(first);
        assert!(
            kept.items.lock().unwrap_or_else(|e| panic!("{e}")).keys().any(|(kind, _)| kind == "account")
        );
        let again = Device::open("@service:tchap.test", "ARGUSDEV", kept.clone(), Arc::new(Offline))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.identity_keys(), keys, "the same identity keys: not a new device");
        // Another device id is refused over the same state rather than silently replaced.
        let other = Device::open("@service:tchap.test", "OTHERDEV", kept, Arc::new(Offline)).await;
        assert!(matches!(other, Err(Error::Device(_))), "{other:?}");
    }

    #[tokio::test]
    async fn a_device_whose_state_cannot_be_kept_does_not_open() {
        let kept = Arc::new(Kept::default());
        *kept.refuse.lock().unwrap_or_else(|e| panic!("{e}")) = true;
        let opened = Device::open("@service:tchap.test", "ARGUSDEV", kept.clone(), Arc::new(Offline)).await;
        assert!(matches!(opened, Err(Error::DeviceState(_))), "{opened:?}");
        assert!(kept.items.lock().unwrap_or_else(|e| panic!("{e}")).is_empty());
    }

    #[tokio::test]
    async fn a_stored_item_that_does_not_read_is_refused_in_our_own_words() {
        let kept = Arc::new(Kept::default());
        kept.items
            .lock()
            .unwrap_or_else(|e| panic!("{e}"))
            .insert(("account".into(), "self".into()), b"not a pickle".to_vec());
        let opened = Device::open("@service:tchap.test", "ARGUSDEV", kept, Arc::new(Offline)).await;
        let Err(error) = opened else { panic!("a broken account opened") };
        assert_eq!(error.to_string(), "the device's state could not be kept: a stored item does not read");
    }

    #[tokio::test]
    async fn flushing_without_a_homeserver_fails_with_a_transport_error() {
        let kept = Arc::new(Kept::default());
        let device = Device::open("@service:tchap.test", "ARGUSDEV", kept, Arc::new(Offline))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A new device has its keys to upload.
        let flushed = device.flush().await;
        assert!(matches!(flushed, Err(Error::DeviceTransport(_))), "{flushed:?}");
    }

    #[test]
    fn requests_are_built_without_credentials_on_the_stable_paths() {
        let query = get_keys::v3::Request::new();
        let call = into_http(query).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(call.method, "POST");
        assert_eq!(call.path_and_query, "/_matrix/client/v3/keys/query");
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap_or_else(|e| panic!("{e}"));
        assert!(body.get("device_keys").is_some(), "{body}");
    }
}
