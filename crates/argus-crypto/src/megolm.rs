//! Room events encrypted with megolm (`m.megolm.v1.aes-sha2`, Client-Server API "End-to-end
//! encryption"): what an `m.room.encrypted` event holds ([`EncryptedContent`]), what it decrypts
//! into ([`DecryptedEvent`]) or why it does not ([`Undecryptable`]), the [`Decryptor`] a reader
//! of a room is given, and the one this crate provides: the megolm sessions of a run loaded from
//! the key backup ([`SessionKeys`]).

use serde::Deserialize;

mod ratchet;
mod sessions;
mod signatures;

pub use sessions::SessionKeys;

/// The only event encryption algorithm of rooms (megolm).
pub const MEGOLM_ALGORITHM: &str = "m.megolm.v1.aes-sha2";

/// Why an encrypted event stays undecrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Undecryptable {
    /// The backup holds no key for its session.
    NoKeyInBackup,
    /// Its message index is before the first index the backed-up session knows.
    IndexBeforeFirstKnown,
    /// Its MAC or signature does not verify (tampered, or another session's).
    BadMac,
    /// Not `m.megolm.v1.aes-sha2`.
    UnsupportedAlgorithm,
    /// Its content (or the backed-up session) is not what the specification describes.
    Malformed,
    /// It decrypts into an event of another room (a replayed ciphertext).
    WrongRoom,
    /// Its ciphertext (session and message index) was already served as another event.
    Replayed,
    /// It names another sending device than the one the backup records for its session.
    SenderKeyMismatch,
    /// It carries an event of a type this connector does not take from a ciphertext (only
    /// `m.room.message`: a redaction or state inside a ciphertext was never applied by the
    /// homeserver).
    UnsupportedEventType,
}

impl Undecryptable {
    /// Every reason, once (a test holds the list to the enum).
    pub const ALL: [Self; 9] = [
        Self::NoKeyInBackup,
        Self::IndexBeforeFirstKnown,
        Self::BadMac,
        Self::UnsupportedAlgorithm,
        Self::Malformed,
        Self::WrongRoom,
        Self::Replayed,
        Self::SenderKeyMismatch,
        Self::UnsupportedEventType,
    ];

    /// A stable code for reports.
    pub const fn code(self) -> &'static str {
        match self {
            Self::NoKeyInBackup => "NO_KEY_IN_BACKUP",
            Self::IndexBeforeFirstKnown => "INDEX_BEFORE_FIRST_KNOWN",
            Self::BadMac => "BAD_MAC",
            Self::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            Self::Malformed => "MALFORMED",
            Self::WrongRoom => "WRONG_ROOM",
            Self::Replayed => "REPLAYED",
            Self::SenderKeyMismatch => "SENDER_KEY_MISMATCH",
            Self::UnsupportedEventType => "UNSUPPORTED_EVENT_TYPE",
        }
    }
}

/// The `content` of an `m.room.encrypted` event.
#[derive(Debug, Clone, Deserialize)]
pub struct EncryptedContent {
    /// `m.megolm.v1.aes-sha2` for room messages.
    pub algorithm: String,
    /// Base64 megolm message.
    #[serde(default)]
    pub ciphertext: Option<String>,
    /// The megolm session that encrypted it.
    #[serde(default)]
    pub session_id: Option<String>,
    /// The Curve25519 key of the sending device (deprecated in the specification, still sent).
    #[serde(default)]
    pub sender_key: Option<String>,
}

/// What an encrypted event carried.
#[derive(Debug, Clone, PartialEq)]
pub struct DecryptedEvent {
    /// Its event type, e.g. `m.room.message`.
    pub event_type: String,
    /// Its content.
    pub content: serde_json::Value,
    /// Its megolm message index.
    pub message_index: u32,
}

/// One decryption's outcome.
pub type Decrypted = Result<DecryptedEvent, Undecryptable>;

/// Decrypts the `m.room.encrypted` events of one room as a reader meets them: what a reader of a
/// room is given, whatever holds the keys (the sessions of the key backup, [`SessionKeys`]).
///
/// A decryptor is moved into the task that reads the room, hence `Send`.
pub trait Decryptor: Send {
    /// Decrypts `contents` read from the room `room_id`, given oldest first (a megolm session
    /// ratchets forwards cheaply): one outcome per content, in the same order. The event each
    /// outcome carries is checked to belong to `room_id`.
    fn decrypt_all(&mut self, room_id: &str, contents: &[EncryptedContent]) -> Vec<Decrypted>;
}

#[cfg(test)]
mod all_reasons {
    use super::Undecryptable;

    #[test]
    fn the_list_of_reasons_is_the_enum() {
        // A new reason fails to compile here until it has a place, and the list must hold it.
        let place = |u: Undecryptable| match u {
            Undecryptable::NoKeyInBackup => 0,
            Undecryptable::IndexBeforeFirstKnown => 1,
            Undecryptable::BadMac => 2,
            Undecryptable::UnsupportedAlgorithm => 3,
            Undecryptable::Malformed => 4,
            Undecryptable::WrongRoom => 5,
            Undecryptable::Replayed => 6,
            Undecryptable::SenderKeyMismatch => 7,
            Undecryptable::UnsupportedEventType => 8,
        };
        let places: Vec<usize> = Undecryptable::ALL.iter().map(|u| place(*u)).collect();
        assert_eq!(places, (0..Undecryptable::ALL.len()).collect::<Vec<_>>());
    }
}
