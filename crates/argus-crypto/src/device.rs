//! The connector's end-to-end-encryption device: one per watched account, built on
//! `matrix-sdk-crypto`'s `OlmMachine`, its state kept through a [`DeviceStateStore`] (the
//! product's store, sealed) and its requests sent through a [`Transport`] (the homeserver), both
//! given by the caller so that this crate does no I/O of its own. No type of the machine's own
//! Matrix library crosses this boundary: sync changes go in and requests come out as JSON.

use argus_domain::Secret;
use zeroize::Zeroizing;

/// One item of a device's state, in clear (the [`DeviceStateStore`] seals it): its kind (an
/// account, a session, a room key, ...), its key within the kind, and its bytes.
#[derive(Clone)]
pub struct DeviceItem {
    /// The kind of item, a short ASCII name.
    pub kind: String,
    /// Its key within the kind (at most 1,024 bytes).
    pub key: String,
    /// Its serialised value, wiped from memory when dropped.
    pub value: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for DeviceItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceItem").field("kind", &self.kind).field("key", &self.key).finish_non_exhaustive()
    }
}

/// Where a device keeps its state: the caller's store, which seals each item at rest and writes
/// only while the caller may drive the device (the account loop's lease).
#[async_trait::async_trait]
pub trait DeviceStateStore: Send + Sync + std::fmt::Debug {
    /// Every item stored for the device (none for a new device).
    async fn load(&self) -> crate::Result<Vec<DeviceItem>>;
    /// Writes `puts` (replacing items of the same kind and key) and removes `deletes`
    /// (kind, key), all or nothing. Fails with [`crate::Error::DeviceState`] when the caller
    /// may no longer write (its lease is lost) or the store fails.
    async fn write(&self, puts: Vec<DeviceItem>, deletes: Vec<(String, String)>) -> crate::Result<()>;
}

/// One HTTP request of the device to the account's homeserver: method, path with query (from
/// `/_matrix/...`) and JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// `GET`, `POST` or `PUT`.
    pub method: &'static str,
    /// The path and query, starting `/_matrix/`.
    pub path_and_query: String,
    /// The JSON body (empty for a `GET`).
    pub body: Vec<u8>,
}

/// The homeserver's answer to an [`HttpCall`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The body (bounded by the transport).
    pub body: Vec<u8>,
}

/// How a device reaches the account's homeserver, authenticated as the account (the caller's
/// session, which renews its token).
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends `call` and returns the homeserver's answer, whatever its status; fails with
    /// [`crate::Error::DeviceTransport`] only when no answer was had.
    async fn send(&self, call: HttpCall) -> crate::Result<HttpAnswer>;
}

/// The account's private cross-signing keys as secret storage holds them (unpadded base64 of
/// each 32-byte Ed25519 seed); any may be missing.
#[derive(Debug, Default)]
pub struct CrossSigningKeys {
    /// `m.cross_signing.master`.
    pub master: Option<Secret>,
    /// `m.cross_signing.self_signing`: what signs the account's devices.
    pub self_signing: Option<Secret>,
    /// `m.cross_signing.user_signing`.
    pub user_signing: Option<Secret>,
}

/// What one `/sync` answer says to the account's device: its to-device events (each the raw
/// JSON the homeserver sent), whose device lists changed or who no longer shares a room, and
/// how many one-time and fallback keys the homeserver still holds for it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncChanges {
    /// `to_device.events`, each as its JSON text.
    pub to_device: Vec<String>,
    /// `device_lists.changed`: users whose devices changed.
    pub changed_devices: Vec<String>,
    /// `device_lists.left`: users who no longer share an encrypted room with the account.
    pub left_devices: Vec<String>,
    /// `device_one_time_keys_count`, by algorithm.
    pub one_time_keys_counts: std::collections::BTreeMap<String, u64>,
    /// `device_unused_fallback_key_types`, when the homeserver sent it.
    pub unused_fallback_key_types: Option<Vec<String>>,
    /// The answer's `next_batch`.
    pub next_batch: Option<String>,
}

mod driver;
mod persisting;

pub use driver::{Device, DeviceDecryptor, ReceivedKeys};
