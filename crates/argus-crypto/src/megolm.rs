//! Room events encrypted with megolm (`m.megolm.v1.aes-sha2`, Client-Server API "End-to-end
//! encryption"): what an `m.room.encrypted` event holds ([`EncryptedContent`]), what it decrypts
//! into ([`DecryptedEvent`]) or why it does not ([`Undecryptable`]), the [`Decryptor`] a reader
//! of a room is given, and the one this crate provides: the megolm sessions of a run loaded from
//! the key backup ([`SessionKeys`]).

use argus_domain::SenderTrust;
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
    /// Neither the connector's device received its key nor the key backup holds it.
    NoRoomKey,
    /// Its sender withheld the key from unverified devices (`m.unverified`).
    WithheldUnverified,
    /// Its sender blocked the connector's device (`m.blacklisted`).
    WithheldBlacklisted,
    /// Its sender's device does not share keys with the connector's device (`m.unauthorised`).
    WithheldUnauthorised,
    /// The key was asked for and its holder does not have it (`m.unavailable`).
    WithheldUnavailable,
    /// The sender could not set up a secure channel to the connector's device (`m.no_olm`).
    WithheldNoOlm,
}

impl Undecryptable {
    /// Every reason, once (a test holds the list to the enum).
    pub const ALL: [Self; 15] = [
        Self::NoKeyInBackup,
        Self::IndexBeforeFirstKnown,
        Self::BadMac,
        Self::UnsupportedAlgorithm,
        Self::Malformed,
        Self::WrongRoom,
        Self::Replayed,
        Self::SenderKeyMismatch,
        Self::UnsupportedEventType,
        Self::NoRoomKey,
        Self::WithheldUnverified,
        Self::WithheldBlacklisted,
        Self::WithheldUnauthorised,
        Self::WithheldUnavailable,
        Self::WithheldNoOlm,
    ];

    /// Whether its sender withheld the key (an `m.room_key.withheld` notice).
    pub const fn is_withheld(self) -> bool {
        matches!(
            self,
            Self::WithheldUnverified
                | Self::WithheldBlacklisted
                | Self::WithheldUnauthorised
                | Self::WithheldUnavailable
                | Self::WithheldNoOlm
        )
    }

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
            Self::NoRoomKey => "NO_ROOM_KEY",
            Self::WithheldUnverified => "WITHHELD_UNVERIFIED",
            Self::WithheldBlacklisted => "WITHHELD_BLACKLISTED",
            Self::WithheldUnauthorised => "WITHHELD_UNAUTHORISED",
            Self::WithheldUnavailable => "WITHHELD_UNAVAILABLE",
            Self::WithheldNoOlm => "WITHHELD_NO_OLM",
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
    /// What is known of the device that sent it ([`SenderTrust::UnknownDevice`] for a key
    /// from the backup).
    pub sender_trust: SenderTrust,
}

/// One `m.room.encrypted` event to decrypt: the whole event as read (a device checks its
/// sender, id and time against what the key says) and its parsed content.
#[derive(Debug, Clone)]
pub struct EncryptedEvent<'a> {
    /// The event's JSON, as the homeserver served it.
    pub json: &'a str,
    /// Its content.
    pub content: EncryptedContent,
}

/// One decryption's outcome.
pub type Decrypted = Result<DecryptedEvent, Undecryptable>;

/// Decrypts the `m.room.encrypted` events of one room as a reader meets them: what a reader of a
/// room is given, whatever holds the keys (the sessions of the key backup, [`SessionKeys`]).
///
/// A decryptor is moved into the task that reads the room, hence `Send`.
#[async_trait::async_trait]
pub trait Decryptor: Send {
    /// Decrypts `events` read from the room `room_id`, given oldest first (a megolm session
    /// ratchets forwards cheaply): one outcome per event, in the same order. The event each
    /// outcome carries is checked to belong to `room_id`.
    async fn decrypt_all(&mut self, room_id: &str, events: &[EncryptedEvent<'_>]) -> Vec<Decrypted>;
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
            Undecryptable::NoRoomKey => 9,
            Undecryptable::WithheldUnverified => 10,
            Undecryptable::WithheldBlacklisted => 11,
            Undecryptable::WithheldUnauthorised => 12,
            Undecryptable::WithheldUnavailable => 13,
            Undecryptable::WithheldNoOlm => 14,
        };
        let places: Vec<usize> = Undecryptable::ALL.iter().map(|u| place(*u)).collect();
        assert_eq!(places, (0..Undecryptable::ALL.len()).collect::<Vec<_>>());
    }
}
