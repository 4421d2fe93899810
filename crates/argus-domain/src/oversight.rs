//! Oversight records: the canonical encodings of the transparency log's entries (audit
//! records, accesses, disclosures, held files) and of the message versions a run stored.
//!
//! A log entry's leaf is `SHA-256(0x00 ‖ bytes)` (RFC 9162 §2.1) over the bytes
//! [`LogEntry::canonical`] returns; a run's `eventsRoot` is the RFC 9162 root over the
//! [`VersionLeaf::canonical`] bytes of every version the run stored, in the order it stored them.
//!
//! **The canonical encoding** is JSON as written by `serde_json` from these types: one object, no
//! white space, UTF-8 (characters outside ASCII written as they are; `"`, `\` and control
//! characters escaped as JSON requires), keys in the fixed order of the declarations below
//! (alphabetical), every key present (`null` when there is no value), integers as numbers,
//! times as milliseconds since the Unix epoch (UTC), digests as lowercase hex, classifications by
//! their contract names. Any JSON parser reads it; a verifier never re-encodes: it hashes the
//! bytes it was given and compares the fields it parsed.
//!
//! ```
//! use argus_domain::oversight::{VersionKind, VersionLeaf};
//! let leaf = VersionLeaf {
//!     attachment: None,
//!     body: Some("Bonjour".into()),
//!     event_id: "$e1".into(),
//!     kind: VersionKind::Original,
//!     msgtype: Some("m.text".into()),
//!     reason: None,
//!     room_id: "!r:agent.tchap.gouv.fr".into(),
//!     sender: "@ana:agent.tchap.gouv.fr".into(),
//!     sent_at: 1_700_000_000_000,
//!     target: None,
//!     v: 1,
//! };
//! assert_eq!(
//!     String::from_utf8(leaf.canonical())?,
//!     r#"{"attachment":null,"body":"Bonjour","eventId":"$e1","kind":"ORIGINAL","msgtype":"m.text","reason":null,"roomId":"!r:agent.tchap.gouv.fr","sender":"@ana:agent.tchap.gouv.fr","sentAt":1700000000000,"target":null,"v":1}"#
//! );
//! # Ok::<(), std::string::FromUtf8Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::Classification;

/// The version of the encodings below, written in every entry as `v`.
pub const ENCODING_VERSION: u32 = 1;

/// One entry of an organisation's transparency log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LogEntry {
    /// An audit record of the hash chain: an ingestion (failed or not), a post, a move.
    Audit(AuditEntry),
    /// A read of content, or a disclosure.
    Access(AccessEntry),
    /// A file held as evidence for a message.
    Attachment(AttachmentEntry),
}

impl LogEntry {
    /// The canonical bytes of the entry: the leaf's data.
    pub fn canonical(&self) -> Vec<u8> {
        match self {
            Self::Audit(e) => canonical(e),
            Self::Access(e) => canonical(e),
            Self::Attachment(e) => canonical(e),
        }
    }

    /// Reads an entry from its canonical bytes (any JSON of one of the three shapes).
    pub fn parse(bytes: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(bytes).map_err(|_| crate::Error::InvalidLogEntry)
    }

    /// The entry's kind: `AUDIT`, `ACCESS` or `ATTACHMENT`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Audit(_) => AuditEntry::TYPE,
            Self::Access(_) => AccessEntry::TYPE,
            Self::Attachment(_) => AttachmentEntry::TYPE,
        }
    }
}

fn canonical<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| unreachable!("these types always serialise"))
}

/// A post's evidence as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostFields {
    /// The body's length in bytes.
    pub body_length: i64,
    /// The body's SHA-256, hex.
    pub body_sha256: String,
    /// The event id the homeserver gave, if any.
    pub event_id: Option<String>,
}

/// An audit record (`type: "AUDIT"`): the fields of the hash chain's record, and for a run, the
/// root of the versions it stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEntry {
    /// `INGEST`, `POST` or `REHOME`.
    pub action: String,
    /// Who ran it.
    pub actor: String,
    /// The classification requested.
    pub classification: Classification,
    /// Why it failed.
    pub error: Option<String>,
    /// How many versions the run stored (leaves under `eventsRoot`); `null` when the record is
    /// not a run's.
    pub events_count: Option<u64>,
    /// The RFC 9162 root (hex) over the canonical encodings of the versions the run stored.
    pub events_root: Option<String>,
    /// When it ended (ms).
    pub finished_at: Option<i64>,
    /// The homeserver, as recorded.
    pub homeserver: String,
    /// Messages newly stored.
    pub message_count: i64,
    /// The organisation.
    pub org: String,
    /// `SUCCEEDED` or `FAILED`.
    pub outcome: String,
    /// A post's evidence.
    pub post: Option<PostFields>,
    /// A move's previous homeserver.
    pub previous_homeserver: Option<String>,
    /// The room, as recorded.
    pub room_id: String,
    /// Run by the scheduler.
    pub scheduled: bool,
    /// Its position in the organisation's hash chain.
    pub seq: i64,
    /// When it started (ms).
    pub started_at: i64,
    /// Always `AUDIT`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// [`ENCODING_VERSION`].
    pub v: u32,
}

impl AuditEntry {
    /// The value of `type`.
    pub const TYPE: &'static str = "AUDIT";
}

/// What a read of content was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessAction {
    /// Messages of rooms were read (`tchapMessages`, a room's `messages`).
    ReadMessages,
    /// A full-text search (its query text kept).
    Search,
    /// An attachment was downloaded.
    Download,
    /// A disclosure package was written.
    Disclose,
}

impl AccessAction {
    /// The contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ReadMessages => "READ_MESSAGES",
            Self::Search => "SEARCH",
            Self::Download => "DOWNLOAD",
            Self::Disclose => "DISCLOSE",
        }
    }

    /// Every action, in contract order.
    pub const ALL: [Self; 4] = [Self::ReadMessages, Self::Search, Self::Download, Self::Disclose];
}

impl std::str::FromStr for AccessAction {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or(crate::Error::InvalidLogEntry)
    }
}

/// What a disclosure record adds to its access entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisclosureFields {
    /// Files in the package.
    pub attachment_count: u64,
    /// The clearance the package was limited to.
    pub clearance: Classification,
    /// The start of the range (ms), if one was given.
    pub from: Option<i64>,
    /// SHA-256 (hex) of the package's `data/messages.jsonl`.
    pub messages_sha256: String,
    /// The package id (`External-Identifier`).
    pub package_id: String,
    /// The end of the range (ms), if one was given.
    pub to: Option<i64>,
    /// Versions in the package.
    pub version_count: u64,
}

/// A read of content or a disclosure (`type: "ACCESS"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessEntry {
    /// What was done.
    pub action: AccessAction,
    /// Who (`sub`).
    pub actor: String,
    /// When (ms).
    pub at: i64,
    /// The highest level among what was returned (the lowest when nothing was).
    pub classification: Classification,
    /// For a disclosure, what the package holds.
    pub disclosure: Option<DisclosureFields>,
    /// How many items were returned.
    pub item_count: u64,
    /// The organisation.
    pub org: String,
    /// A search's query text.
    pub query: Option<String>,
    /// The rooms read (sorted, each once).
    pub room_ids: Vec<String>,
    /// Always `ACCESS`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// [`ENCODING_VERSION`].
    pub v: u32,
}

impl AccessEntry {
    /// The value of `type`.
    pub const TYPE: &'static str = "ACCESS";
}

/// A file held as evidence for a message (`type: "ATTACHMENT"`): binds the message's event to
/// the SHA-256 of the bytes held, once fetched (after the run that stored the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttachmentEntry {
    /// When it was recorded (ms).
    pub at: i64,
    /// The message's classification.
    pub classification: Classification,
    /// The message's event id.
    pub event_id: String,
    /// The organisation.
    pub org: String,
    /// The room.
    pub room_id: String,
    /// SHA-256 (hex) of the bytes held (decrypted, for an encrypted file).
    pub sha256: String,
    /// Their length.
    pub size: u64,
    /// Always `ATTACHMENT`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// The `mxc://` URI it was fetched from.
    pub uri: String,
    /// [`ENCODING_VERSION`].
    pub v: u32,
}

impl AttachmentEntry {
    /// The value of `type`.
    pub const TYPE: &'static str = "ATTACHMENT";
}

/// Which kind of version a leaf is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionKind {
    /// The message as sent.
    Original,
    /// An applied edit (`target`: the original's event id).
    Edit,
    /// A redaction (`eventId` and `target`: the redacted message's event id; `sender`: who
    /// redacted; `sentAt`: when; `reason`).
    Redaction,
}

/// The attachment a version carried, as the message declared it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionAttachment {
    /// The SHA-256 (hex) the message declared: an encrypted file's ciphertext digest; `null` for
    /// a plain file (its bytes are bound to the event by an [`AttachmentEntry`] once fetched).
    pub sha256: Option<String>,
    /// The `mxc://` URI.
    pub uri: Option<String>,
}

/// One version of a message a run stored: the leaf data of the run's `eventsRoot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionLeaf {
    /// The attachment the version carried.
    pub attachment: Option<VersionAttachment>,
    /// Its body (`null`: none, or undecrypted).
    pub body: Option<String>,
    /// The event that carried it (for a redaction: the redacted message's).
    pub event_id: String,
    /// What it is.
    pub kind: VersionKind,
    /// Its msgtype.
    pub msgtype: Option<String>,
    /// A redaction's reason.
    pub reason: Option<String>,
    /// The room.
    pub room_id: String,
    /// Who sent it (for a redaction: who redacted).
    pub sender: String,
    /// When (ms).
    pub sent_at: i64,
    /// For an edit or a redaction, the message it applies to.
    pub target: Option<String>,
    /// [`ENCODING_VERSION`].
    pub v: u32,
}

impl VersionLeaf {
    /// The canonical bytes of the version: the leaf's data.
    pub fn canonical(&self) -> Vec<u8> {
        canonical(self)
    }

    /// Reads a version from its canonical bytes.
    pub fn parse(bytes: &[u8]) -> crate::Result<Self> {
        serde_json::from_slice(bytes).map_err(|_| crate::Error::InvalidLogEntry)
    }
}
