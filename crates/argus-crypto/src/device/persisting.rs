//! The device's `CryptoStore`: `matrix-sdk-crypto`'s own in-memory store, answering every read,
//! with each change also written through the caller's [`DeviceStateStore`] before the memory
//! takes it, so the device's state survives the process and moves to another replica. At
//! opening, the stored items are put back into a new memory store.
//!
//! What is kept: the Olm account, the private cross-signing identity, Olm sessions (with the
//! hashes of Olm messages already taken, so none is replayed), the room keys received (and
//! which backup version holds each), other users' devices and identities (the first identity
//! seen is the pinned one), withheld notices, the tracked users, the backup version and key,
//! room settings, custom values and the `/sync` position. What is not: outbound room keys (the
//! connector sends no encrypted message: a new one would be made if it did), secret requests
//! and gossiped secrets (the connector asks its other devices for nothing), room key bundles.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures::lock::Mutex;
use matrix_sdk_common::ruma::events::secret::request::SecretName;
use matrix_sdk_common::{
    cross_process_lock::CrossProcessLockGeneration,
    ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, RoomId, TransactionId, UserId},
};
use matrix_sdk_crypto::{
    Account, DeviceData, GossipRequest, SecretInfo, Session, UserIdentityData,
    olm::{
        InboundGroupSession, OlmMessageHash, OutboundGroupSession, PickledAccount,
        PickledCrossSigningIdentity, PickledInboundGroupSession, PickledSession, PrivateCrossSigningIdentity,
        SenderDataType,
    },
    store::{
        CryptoStore, CryptoStoreError, MemoryStore,
        types::{
            BackupDecryptionKey, BackupKeys, Changes, DehydratedDeviceKey, PendingChanges, RoomKeyCounts,
            RoomKeyWithheldEntry, RoomPendingKeyBundleDetails, RoomSettings, StoredRoomKeyBundleData,
            TrackedUser,
        },
    },
    vodozemac::Curve25519PublicKey,
};
use zeroize::Zeroizing;

use super::{DeviceItem, DeviceStateStore};

/// Kinds of stored items.
mod kind {
    pub(super) const ACCOUNT: &str = "account";
    pub(super) const IDENTITY: &str = "private_identity";
    pub(super) const SESSION: &str = "olm_session";
    pub(super) const OLM_HASH: &str = "olm_hash";
    pub(super) const ROOM_KEY: &str = "room_key";
    pub(super) const BACKED_UP: &str = "room_key_backed_up";
    pub(super) const DEVICE: &str = "device";
    pub(super) const USER_IDENTITY: &str = "user_identity";
    pub(super) const WITHHELD: &str = "withheld";
    pub(super) const TRACKED: &str = "tracked_user";
    pub(super) const BACKUP: &str = "backup";
    pub(super) const ROOM_SETTINGS: &str = "room_settings";
    pub(super) const CUSTOM: &str = "custom";
    pub(super) const NEXT_BATCH: &str = "next_batch";
}

/// A store error in the machine's terms (the message names no secret).
fn backend(error: crate::Error) -> CryptoStoreError {
    CryptoStoreError::backend(error)
}

fn json<T: serde::Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, CryptoStoreError> {
    serde_json::to_vec(value).map(Zeroizing::new).map_err(CryptoStoreError::Serialization)
}

/// The stored key of an item whose natural key (a room and session id, a user id, ...) is
/// `natural`: its SHA-256, so that what a homeserver or a sender chooses (a session id of any
/// length or bytes) never makes a key the store refuses. The natural key is kept in the value.
fn key_of(natural: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(natural.as_bytes()))
}

/// What an item's stored value holds: its natural key and its bytes.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    key: String,
    value: String,
}

fn item(kind: &str, natural: impl Into<String>, value: Zeroizing<Vec<u8>>) -> DeviceItem {
    use base64::Engine as _;
    let natural = natural.into();
    let key = key_of(&natural);
    let envelope =
        Envelope { key: natural, value: base64::engine::general_purpose::STANDARD.encode(&*value) };
    let value = Zeroizing::new(serde_json::to_vec(&envelope).unwrap_or_default());
    let Envelope { value: mut encoded, .. } = envelope;
    zeroize::Zeroize::zeroize(&mut encoded);
    DeviceItem { kind: kind.to_owned(), key, value }
}

/// The natural key and bytes of a stored item; `None` when it is not an envelope.
fn opened(item: &DeviceItem) -> Option<(String, Zeroizing<Vec<u8>>)> {
    use base64::Engine as _;
    let mut envelope: Envelope = serde_json::from_slice(&item.value).ok()?;
    let value = base64::engine::general_purpose::STANDARD.decode(&envelope.value).ok().map(Zeroizing::new);
    zeroize::Zeroize::zeroize(&mut envelope.value);
    Some((envelope.key, value?))
}

/// The largest item kept, in bytes (the machine's own items are a few KiB at most).
const MAX_ITEM_BYTES: usize = 1024 * 1024;

/// The most items given to one write of the caller's store.
const MAX_ITEMS_PER_WRITE: usize = 5_000;

/// `matrix-sdk-crypto`'s memory store, with every change written through first.
#[derive(Debug)]
pub(super) struct PersistingStore {
    memory: MemoryStore,
    state: std::sync::Arc<dyn DeviceStateStore>,
    /// Serialises writes: the order the memory takes them is the order they were stored.
    writing: Mutex<()>,
    /// The keys of the `BACKED_UP` items stored (for a reset of the backup state).
    backed_up: std::sync::Mutex<HashSet<String>>,
    /// Whether an Olm account was stored when it opened.
    had_account: bool,
    /// Set when a write failed: the memory may hold what the store does not, so the device
    /// must be opened again from the store.
    failure: Failure,
}

/// Why the device's state could not be written, once a write failed (shared with the device).
pub(super) type Failure = std::sync::Arc<std::sync::Mutex<Option<crate::Error>>>;

impl PersistingStore {
    /// A store holding what `state` has kept of the device (nothing for a new one).
    pub(super) async fn open(
        state: std::sync::Arc<dyn DeviceStateStore>,
        failure: Failure,
    ) -> crate::Result<Self> {
        let items = state.load().await?;
        let memory = MemoryStore::new();
        let broken = |what: &str| crate::Error::DeviceState(format!("a stored {what} does not read"));
        let mut changes = Changes::default();
        let mut room_keys = Vec::new();
        let mut backed_up: HashMap<String, Vec<(OwnedRoomId, String)>> = HashMap::new();
        let mut backed_up_keys = HashSet::new();
        let mut tracked: Vec<(OwnedUserId, bool)> = Vec::new();
        let mut account = None;
        let mut custom = Vec::new();
        let mut sessions = Vec::new();
        for stored in items {
            let Some((key, value)) = opened(&stored) else {
                return Err(broken("item"));
            };
            if key_of(&key) != stored.key {
                return Err(broken("item"));
            }
            match stored.kind.as_str() {
                kind::ACCOUNT => {
                    let pickle: PickledAccount =
                        serde_json::from_slice(&value).map_err(|_| broken("account"))?;
                    account = Some(Account::from_pickle(pickle).map_err(|_| broken("account"))?);
                }
                kind::IDENTITY => {
                    let pickle: PickledCrossSigningIdentity =
                        serde_json::from_slice(&value).map_err(|_| broken("identity"))?;
                    changes.private_identity = Some(
                        PrivateCrossSigningIdentity::from_pickle(pickle).map_err(|_| broken("identity"))?,
                    );
                }
                kind::SESSION => {
                    let pickle: PickledSession =
                        serde_json::from_slice(&value).map_err(|_| broken("session"))?;
                    sessions.push(pickle);
                }
                kind::OLM_HASH => {
                    let hash: OlmMessageHash = serde_json::from_slice(&value).map_err(|_| broken("hash"))?;
                    changes.message_hashes.push(hash);
                }
                kind::ROOM_KEY => {
                    let pickle: PickledInboundGroupSession =
                        serde_json::from_slice(&value).map_err(|_| broken("room key"))?;
                    room_keys.push(InboundGroupSession::from_pickle(pickle).map_err(|_| broken("room key"))?);
                }
                kind::BACKED_UP => {
                    let version = String::from_utf8(value.to_vec()).map_err(|_| broken("backup mark"))?;
                    let (room, session) = key.split_once('\n').ok_or_else(|| broken("backup mark"))?;
                    let room: OwnedRoomId = room.parse().map_err(|_| broken("backup mark"))?;
                    backed_up.entry(version).or_default().push((room, session.to_owned()));
                    backed_up_keys.insert(key);
                }
                kind::DEVICE => {
                    let device: DeviceData = serde_json::from_slice(&value).map_err(|_| broken("device"))?;
                    changes.devices.new.push(device);
                }
                kind::USER_IDENTITY => {
                    let identity: UserIdentityData =
                        serde_json::from_slice(&value).map_err(|_| broken("user identity"))?;
                    changes.identities.new.push(identity);
                }
                kind::WITHHELD => {
                    let entry: RoomKeyWithheldEntry =
                        serde_json::from_slice(&value).map_err(|_| broken("withheld notice"))?;
                    let (room, session) = key.split_once('\n').ok_or_else(|| broken("withheld notice"))?;
                    let room: OwnedRoomId = room.parse().map_err(|_| broken("withheld notice"))?;
                    changes.withheld_session_info.entry(room).or_default().insert(session.to_owned(), entry);
                }
                kind::TRACKED => {
                    let user: OwnedUserId = key.parse().map_err(|_| broken("tracked user"))?;
                    tracked.push((user, value.first() == Some(&1)));
                }
                kind::BACKUP if key == "version" => {
                    changes.backup_version =
                        Some(String::from_utf8(value.to_vec()).map_err(|_| broken("backup version"))?);
                }
                kind::BACKUP if key == "key" => {
                    let key: BackupDecryptionKey =
                        serde_json::from_slice(&value).map_err(|_| broken("backup key"))?;
                    changes.backup_decryption_key = Some(key);
                }
                kind::ROOM_SETTINGS => {
                    let settings: RoomSettings =
                        serde_json::from_slice(&value).map_err(|_| broken("room settings"))?;
                    let room: OwnedRoomId = key.parse().map_err(|_| broken("room settings"))?;
                    changes.room_settings.insert(room, settings);
                }
                kind::CUSTOM => custom.push((key, value.to_vec())),
                kind::NEXT_BATCH => {
                    changes.next_batch_token =
                        Some(String::from_utf8(value.to_vec()).map_err(|_| broken("sync position"))?);
                }
                // An item of a later release is left as it is.
                _ => {}
            }
        }
        let failed = |e: std::convert::Infallible| -> crate::Error { match e {} };
        let had_account = account.is_some();
        // Devices first (the own device among them), then the account: sessions need both.
        let devices = Changes { devices: std::mem::take(&mut changes.devices), ..Changes::default() };
        memory.save_changes(devices).await.map_err(failed)?;
        if let Some(account) = account {
            memory.save_pending_changes(PendingChanges { account: Some(account) }).await.map_err(failed)?;
            let own = memory.get_own_device().await.map_err(failed)?;
            for pickle in sessions {
                changes.sessions.push(
                    Session::from_pickle(own.as_device_keys().clone(), pickle)
                        .map_err(|_| broken("session"))?,
                );
            }
        }
        memory.save_changes(changes).await.map_err(failed)?;
        memory.save_inbound_group_sessions(room_keys, None).await.map_err(failed)?;
        for (version, ids) in &backed_up {
            let ids: Vec<(&RoomId, &str)> = ids.iter().map(|(r, s)| (r.as_ref(), s.as_str())).collect();
            memory.mark_inbound_group_sessions_as_backed_up(version, &ids).await.map_err(failed)?;
        }
        let tracked_refs: Vec<(&UserId, bool)> = tracked.iter().map(|(u, d)| (u.as_ref(), *d)).collect();
        memory.save_tracked_users(&tracked_refs).await.map_err(failed)?;
        for (key, value) in custom {
            memory.set_custom_value(&key, value).await.map_err(failed)?;
        }
        Ok(Self {
            memory,
            state,
            writing: Mutex::new(()),
            backed_up: std::sync::Mutex::new(backed_up_keys),
            had_account,
            failure,
        })
    }

    async fn write(
        &self,
        puts: Vec<DeviceItem>,
        deletes: Vec<(String, String)>,
    ) -> Result<(), CryptoStoreError> {
        if puts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        if let Ok(failed) = self.failure.lock()
            && failed.is_some()
        {
            // Nothing more is written over a state that may have diverged.
            return Err(backend(crate::Error::DeviceState("an earlier write failed".into())));
        }
        // An item far larger than any the machine makes for itself holds what another user or
        // a homeserver chose (a withheld notice's or a device's extra fields): it is not kept
        // (the machine's memory keeps it while the device is open), rather than have the store
        // refuse every write that carries it, again after every reopening.
        let (puts, oversized): (Vec<DeviceItem>, Vec<DeviceItem>) =
            puts.into_iter().partition(|item| item.value.len() <= MAX_ITEM_BYTES);
        for item in &oversized {
            tracing::warn!(kind = %item.kind, bytes = item.value.len(), "an oversized item of the device's state was not kept");
        }
        // Many items (the devices of a user who has thousands) go in several writes.
        let mut result = Ok(());
        if puts.len() + deletes.len() <= MAX_ITEMS_PER_WRITE {
            result = self.state.write(puts, deletes).await;
        } else {
            let mut puts = puts.into_iter().peekable();
            while puts.peek().is_some() && result.is_ok() {
                result =
                    self.state.write(puts.by_ref().take(MAX_ITEMS_PER_WRITE).collect(), Vec::new()).await;
            }
            for chunk in deletes.chunks(MAX_ITEMS_PER_WRITE) {
                if result.is_ok() {
                    result = self.state.write(Vec::new(), chunk.to_vec()).await;
                }
            }
        }
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let reason = match &error {
                    crate::Error::DeviceState(reason) => reason.clone(),
                    other => other.to_string(),
                };
                if let Ok(mut failed) = self.failure.lock() {
                    *failed = Some(crate::Error::DeviceState(reason));
                }
                Err(backend(error))
            }
        }
    }

    /// The items `changes` writes, and the keys it removes.
    async fn items_of(
        changes: &Changes,
    ) -> Result<(Vec<DeviceItem>, Vec<(String, String)>), CryptoStoreError> {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        if let Some(identity) = &changes.private_identity {
            puts.push(item(kind::IDENTITY, "self", json(&identity.pickle().await)?));
        }
        if let Some(version) = &changes.backup_version {
            puts.push(item(kind::BACKUP, "version", Zeroizing::new(version.as_bytes().to_vec())));
        }
        if let Some(key) = &changes.backup_decryption_key {
            puts.push(item(kind::BACKUP, "key", json(key)?));
        }
        for session in &changes.sessions {
            let pickle = session.pickle().await;
            let key = format!("{}\n{}", session.sender_key.to_base64(), session.session_id());
            puts.push(item(kind::SESSION, key, json(&pickle)?));
        }
        for hash in &changes.message_hashes {
            puts.push(item(kind::OLM_HASH, format!("{}\n{}", hash.sender_key, hash.hash), json(hash)?));
        }
        for room_key in &changes.inbound_group_sessions {
            puts.push(Self::room_key_item(room_key).await?);
        }
        for identity in changes.identities.new.iter().chain(&changes.identities.changed) {
            puts.push(item(kind::USER_IDENTITY, identity.user_id().as_str(), json(identity)?));
        }
        for device in changes.devices.new.iter().chain(&changes.devices.changed) {
            puts.push(item(kind::DEVICE, device_key(device.user_id(), device.device_id()), json(device)?));
        }
        for device in &changes.devices.deleted {
            deletes
                .push((kind::DEVICE.to_owned(), key_of(&device_key(device.user_id(), device.device_id()))));
        }
        for (room, sessions) in &changes.withheld_session_info {
            for (session, entry) in sessions {
                puts.push(item(kind::WITHHELD, format!("{room}\n{session}"), json(entry)?));
            }
        }
        for (room, settings) in &changes.room_settings {
            puts.push(item(kind::ROOM_SETTINGS, room.as_str(), json(settings)?));
        }
        if let Some(token) = &changes.next_batch_token {
            puts.push(item(kind::NEXT_BATCH, "self", Zeroizing::new(token.as_bytes().to_vec())));
        }
        Ok((puts, deletes))
    }

    async fn room_key_item(room_key: &InboundGroupSession) -> Result<DeviceItem, CryptoStoreError> {
        let pickle = room_key.pickle().await;
        Ok(item(kind::ROOM_KEY, format!("{}\n{}", room_key.room_id(), room_key.session_id()), json(&pickle)?))
    }
}

/// The key of a device item: its user and device id.
fn device_key(user: &UserId, device: &DeviceId) -> String {
    format!("{user}\n{device}")
}

#[async_trait]
impl CryptoStore for PersistingStore {
    type Error = CryptoStoreError;

    async fn load_account(&self) -> Result<Option<Account>, Self::Error> {
        Ok(self.memory.load_account().await?)
    }

    async fn load_identity(&self) -> Result<Option<PrivateCrossSigningIdentity>, Self::Error> {
        Ok(self.memory.load_identity().await?)
    }

    async fn save_changes(&self, changes: Changes) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        let (puts, deletes) = Self::items_of(&changes).await?;
        self.write(puts, deletes).await?;
        Ok(self.memory.save_changes(changes).await?)
    }

    async fn save_pending_changes(&self, changes: PendingChanges) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        if let Some(account) = &changes.account {
            self.write(vec![item(kind::ACCOUNT, "self", json(&account.pickle())?)], Vec::new()).await?;
        }
        Ok(self.memory.save_pending_changes(changes).await?)
    }

    async fn save_inbound_group_sessions(
        &self,
        sessions: Vec<InboundGroupSession>,
        backed_up_to_version: Option<&str>,
    ) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        let mut puts = Vec::with_capacity(sessions.len() * 2);
        let mut marks = Vec::new();
        for session in &sessions {
            puts.push(Self::room_key_item(session).await?);
            if let Some(version) = backed_up_to_version {
                let key = format!("{}\n{}", session.room_id(), session.session_id());
                marks.push(key.clone());
                puts.push(item(kind::BACKED_UP, key, Zeroizing::new(version.as_bytes().to_vec())));
            }
        }
        self.write(puts, Vec::new()).await?;
        self.note_backed_up(marks);
        Ok(self.memory.save_inbound_group_sessions(sessions, backed_up_to_version).await?)
    }

    async fn get_sessions(&self, sender_key: &str) -> Result<Option<Vec<Session>>, Self::Error> {
        Ok(self.memory.get_sessions(sender_key).await?)
    }

    async fn get_inbound_group_session(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<InboundGroupSession>, Self::Error> {
        Ok(self.memory.get_inbound_group_session(room_id, session_id).await?)
    }

    async fn get_withheld_info(
        &self,
        room_id: &RoomId,
        session_id: &str,
    ) -> Result<Option<RoomKeyWithheldEntry>, Self::Error> {
        Ok(self.memory.get_withheld_info(room_id, session_id).await?)
    }

    async fn get_withheld_sessions_by_room_id(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<RoomKeyWithheldEntry>, Self::Error> {
        Ok(self.memory.get_withheld_sessions_by_room_id(room_id).await?)
    }

    async fn get_inbound_group_sessions(&self) -> Result<Vec<InboundGroupSession>, Self::Error> {
        Ok(self.memory.get_inbound_group_sessions().await?)
    }

    async fn inbound_group_session_counts(
        &self,
        backup_version: Option<&str>,
    ) -> Result<RoomKeyCounts, Self::Error> {
        Ok(self.memory.inbound_group_session_counts(backup_version).await?)
    }

    async fn get_inbound_group_sessions_by_room_id(
        &self,
        room_id: &RoomId,
    ) -> Result<Vec<InboundGroupSession>, Self::Error> {
        Ok(self.memory.get_inbound_group_sessions_by_room_id(room_id).await?)
    }

    async fn get_inbound_group_sessions_for_device_batch(
        &self,
        curve_key: Curve25519PublicKey,
        sender_data_type: SenderDataType,
        after_session_id: Option<String>,
        limit: usize,
    ) -> Result<Vec<InboundGroupSession>, Self::Error> {
        Ok(self
            .memory
            .get_inbound_group_sessions_for_device_batch(curve_key, sender_data_type, after_session_id, limit)
            .await?)
    }

    async fn inbound_group_sessions_for_backup(
        &self,
        backup_version: &str,
        limit: usize,
    ) -> Result<Vec<InboundGroupSession>, Self::Error> {
        Ok(self.memory.inbound_group_sessions_for_backup(backup_version, limit).await?)
    }

    async fn mark_inbound_group_sessions_as_backed_up(
        &self,
        backup_version: &str,
        room_and_session_ids: &[(&RoomId, &str)],
    ) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        let marks: Vec<String> = room_and_session_ids.iter().map(|(r, s)| format!("{r}\n{s}")).collect();
        let puts = marks
            .iter()
            .map(|key| item(kind::BACKED_UP, key.clone(), Zeroizing::new(backup_version.as_bytes().to_vec())))
            .collect();
        self.write(puts, Vec::new()).await?;
        self.note_backed_up(marks);
        Ok(self.memory.mark_inbound_group_sessions_as_backed_up(backup_version, room_and_session_ids).await?)
    }

    async fn reset_backup_state(&self) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        let marks: Vec<String> = self.backed_up_marks();
        let deletes = marks.iter().map(|k| (kind::BACKED_UP.to_owned(), key_of(k))).collect();
        self.write(Vec::new(), deletes).await?;
        if let Ok(mut held) = self.backed_up.lock() {
            held.clear();
        }
        Ok(self.memory.reset_backup_state().await?)
    }

    async fn load_backup_keys(&self) -> Result<BackupKeys, Self::Error> {
        Ok(self.memory.load_backup_keys().await?)
    }

    async fn load_dehydrated_device_pickle_key(&self) -> Result<Option<DehydratedDeviceKey>, Self::Error> {
        Ok(self.memory.load_dehydrated_device_pickle_key().await?)
    }

    async fn delete_dehydrated_device_pickle_key(&self) -> Result<(), Self::Error> {
        Ok(self.memory.delete_dehydrated_device_pickle_key().await?)
    }

    async fn get_outbound_group_session(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<OutboundGroupSession>, Self::Error> {
        Ok(self.memory.get_outbound_group_session(room_id).await?)
    }

    async fn load_tracked_users(&self) -> Result<Vec<TrackedUser>, Self::Error> {
        Ok(self.memory.load_tracked_users().await?)
    }

    async fn save_tracked_users(&self, users: &[(&UserId, bool)]) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        let puts = users
            .iter()
            .map(|(user, dirty)| item(kind::TRACKED, user.as_str(), Zeroizing::new(vec![u8::from(*dirty)])))
            .collect();
        self.write(puts, Vec::new()).await?;
        Ok(self.memory.save_tracked_users(users).await?)
    }

    async fn get_device(
        &self,
        user_id: &UserId,
        device_id: &DeviceId,
    ) -> Result<Option<DeviceData>, Self::Error> {
        Ok(self.memory.get_device(user_id, device_id).await?)
    }

    async fn get_user_devices(
        &self,
        user_id: &UserId,
    ) -> Result<HashMap<OwnedDeviceId, DeviceData>, Self::Error> {
        Ok(self.memory.get_user_devices(user_id).await?)
    }

    async fn get_own_device(&self) -> Result<DeviceData, Self::Error> {
        Ok(self.memory.get_own_device().await?)
    }

    async fn get_user_identity(&self, user_id: &UserId) -> Result<Option<UserIdentityData>, Self::Error> {
        Ok(self.memory.get_user_identity(user_id).await?)
    }

    async fn is_message_known(&self, message_hash: &OlmMessageHash) -> Result<bool, Self::Error> {
        Ok(self.memory.is_message_known(message_hash).await?)
    }

    async fn get_outgoing_secret_requests(
        &self,
        request_id: &TransactionId,
    ) -> Result<Option<GossipRequest>, Self::Error> {
        Ok(self.memory.get_outgoing_secret_requests(request_id).await?)
    }

    async fn get_secret_request_by_info(
        &self,
        secret_info: &SecretInfo,
    ) -> Result<Option<GossipRequest>, Self::Error> {
        Ok(self.memory.get_secret_request_by_info(secret_info).await?)
    }

    async fn get_unsent_secret_requests(&self) -> Result<Vec<GossipRequest>, Self::Error> {
        Ok(self.memory.get_unsent_secret_requests().await?)
    }

    async fn delete_outgoing_secret_requests(&self, request_id: &TransactionId) -> Result<(), Self::Error> {
        Ok(self.memory.delete_outgoing_secret_requests(request_id).await?)
    }

    async fn get_secrets_from_inbox(
        &self,
        secret_name: &SecretName,
    ) -> Result<Vec<Zeroizing<String>>, Self::Error> {
        Ok(self.memory.get_secrets_from_inbox(secret_name).await?)
    }

    async fn delete_secrets_from_inbox(&self, secret_name: &SecretName) -> Result<(), Self::Error> {
        Ok(self.memory.delete_secrets_from_inbox(secret_name).await?)
    }

    async fn get_room_settings(&self, room_id: &RoomId) -> Result<Option<RoomSettings>, Self::Error> {
        Ok(self.memory.get_room_settings(room_id).await?)
    }

    async fn get_received_room_key_bundle_data(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
    ) -> Result<Option<StoredRoomKeyBundleData>, Self::Error> {
        Ok(self.memory.get_received_room_key_bundle_data(room_id, user_id).await?)
    }

    async fn get_pending_key_bundle_details_for_room(
        &self,
        room_id: &RoomId,
    ) -> Result<Option<RoomPendingKeyBundleDetails>, Self::Error> {
        Ok(self.memory.get_pending_key_bundle_details_for_room(room_id).await?)
    }

    async fn get_all_rooms_pending_key_bundles(
        &self,
    ) -> Result<Vec<RoomPendingKeyBundleDetails>, Self::Error> {
        Ok(self.memory.get_all_rooms_pending_key_bundles().await?)
    }

    async fn has_downloaded_all_room_keys(&self, room_id: &RoomId) -> Result<bool, Self::Error> {
        Ok(self.memory.has_downloaded_all_room_keys(room_id).await?)
    }

    async fn get_custom_value(&self, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.memory.get_custom_value(key).await?)
    }

    async fn set_custom_value(&self, key: &str, value: Vec<u8>) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        self.write(vec![item(kind::CUSTOM, key, Zeroizing::new(value.clone()))], Vec::new()).await?;
        Ok(self.memory.set_custom_value(key, value).await?)
    }

    async fn remove_custom_value(&self, key: &str) -> Result<(), Self::Error> {
        let _writing = self.writing.lock().await;
        self.write(Vec::new(), vec![(kind::CUSTOM.to_owned(), key_of(key))]).await?;
        Ok(self.memory.remove_custom_value(key).await?)
    }

    async fn try_take_leased_lock(
        &self,
        lease_duration_ms: u32,
        key: &str,
        holder: &str,
    ) -> Result<Option<CrossProcessLockGeneration>, Self::Error> {
        // One process drives the device at a time (the account loop's lease): its own lock.
        Ok(self.memory.try_take_leased_lock(lease_duration_ms, key, holder).await?)
    }

    async fn next_batch_token(&self) -> Result<Option<String>, Self::Error> {
        Ok(self.memory.next_batch_token().await?)
    }

    async fn close(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn reopen(&self) -> Result<(), Self::Error> {
        Ok(())
    }

    async fn get_size(&self) -> Result<Option<usize>, Self::Error> {
        Ok(None)
    }
}

impl PersistingStore {
    /// Whether the store held an Olm account (a device opened before), rather than none (a
    /// device to make).
    pub(super) fn has_account(&self) -> bool {
        self.had_account
    }

    fn note_backed_up(&self, marks: Vec<String>) {
        if let Ok(mut held) = self.backed_up.lock() {
            held.extend(marks);
        }
    }

    fn backed_up_marks(&self) -> Vec<String> {
        self.backed_up.lock().map(|held| held.iter().cloned().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use matrix_sdk_common::ruma::OwnedUserId;
    use matrix_sdk_crypto::store::CryptoStore as _;

    use super::{DeviceItem, DeviceStateStore, Failure, MAX_ITEMS_PER_WRITE, PersistingStore};

    /// The caller's store, refusing a write of more items than the product's store takes.
    #[derive(Debug, Default)]
    struct Kept {
        items: Mutex<Vec<DeviceItem>>,
        writes: Mutex<usize>,
    }

    #[async_trait::async_trait]
    impl DeviceStateStore for Kept {
        async fn load(&self) -> crate::Result<Vec<DeviceItem>> {
            Ok(self.items.lock().map(|i| i.clone()).unwrap_or_default())
        }

        async fn write(&self, puts: Vec<DeviceItem>, deletes: Vec<(String, String)>) -> crate::Result<()> {
            if puts.len() + deletes.len() > 10_000 {
                return Err(crate::Error::DeviceState("too many items".into()));
            }
            *self.writes.lock().unwrap_or_else(|e| panic!("{e}")) += 1;
            self.items.lock().unwrap_or_else(|e| panic!("{e}")).extend(puts);
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_oversized_item_is_not_kept_and_the_store_still_takes_writes() {
        let kept = Arc::new(Kept::default());
        let store =
            PersistingStore::open(kept.clone(), Failure::default()).await.unwrap_or_else(|e| panic!("{e}"));
        store.set_custom_value("big", vec![7; 2 * 1024 * 1024]).await.unwrap_or_else(|e| panic!("{e:?}"));
        store.set_custom_value("small", vec![7; 16]).await.unwrap_or_else(|e| panic!("{e:?}"));
        let items = kept.items.lock().unwrap_or_else(|e| panic!("{e}")).clone();
        assert_eq!(items.len(), 1, "only the small value is kept");
        // The memory still answers for the big one while the device is open.
        assert!(store.get_custom_value("big").await.unwrap_or_else(|e| panic!("{e:?}")).is_some());
    }

    #[tokio::test]
    async fn thousands_of_items_go_in_several_writes() {
        let kept = Arc::new(Kept::default());
        let store =
            PersistingStore::open(kept.clone(), Failure::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let users: Vec<OwnedUserId> = (0..12_000)
            .map(|n| format!("@u{n}:tchap.test").parse().unwrap_or_else(|e| panic!("{e}")))
            .collect();
        let tracked: Vec<_> = users.iter().map(|u| (u.as_ref(), true)).collect();
        store.save_tracked_users(&tracked).await.unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(kept.items.lock().unwrap_or_else(|e| panic!("{e}")).len(), 12_000);
        assert_eq!(
            *kept.writes.lock().unwrap_or_else(|e| panic!("{e}")),
            12_000usize.div_ceil(MAX_ITEMS_PER_WRITE)
        );
        // And they come back when the store is opened again.
        let again = PersistingStore::open(kept, Failure::default()).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again.load_tracked_users().await.unwrap_or_else(|e| panic!("{e:?}")).len(), 12_000);
    }
}
