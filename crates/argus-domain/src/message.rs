//! Messages: the normalised form the connector produces and the stored form reads return.

use time::OffsetDateTime;

use crate::{Classification, EventId, RoomId, UserId};

/// A media attachment (m.image, m.file, m.audio, m.video): a reference, never the content.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MediaRef {
    /// The `mxc://` URI of the content (absent for encrypted attachments).
    pub uri: Option<String>,
    /// The MIME type the sender declared.
    pub mimetype: Option<String>,
    /// The size in bytes the sender declared.
    pub size: Option<u64>,
    /// The file name the sender gave (`filename`, else the body of an `m.file`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The `EncryptedFile` of an end-to-end encrypted attachment (known once its message is
    /// decrypted): where the ciphertext is and how to open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<crate::EncryptedFile>,
}

impl MediaRef {
    /// The `mxc://` URI the file is fetched from: the plain one, else the ciphertext's.
    pub fn mxc_uri(&self) -> Option<&str> {
        self.uri.as_deref().or_else(|| self.file.as_ref().map(|f| f.url.as_str()).filter(|u| !u.is_empty()))
    }
}

/// One message event of a room after normalisation.
///
/// Edits are already applied (`body` is the latest version, `edited` is set); a redacted
/// message has no body, no media and `redacted` set; an event that arrived as
/// `m.room.encrypted` has `encrypted` set, and either `decrypted` set and the content it
/// carried, or no msgtype and no body ([`MessageRecord::undecrypted`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRecord {
    /// The event id.
    pub event_id: EventId,
    /// Who sent it.
    pub sender: UserId,
    /// `m.text`, `m.notice`, `m.emote`, `m.image`, `m.file`, `m.audio`, `m.video`,
    /// `m.location`, ...; `None` for events that are not `m.room.message`.
    pub msgtype: Option<String>,
    /// Plain-text body, latest edit applied; `None` when redacted or undecrypted.
    pub body: Option<String>,
    /// `origin_server_ts` of the event.
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// An edit (`m.replace`) was applied.
    pub edited: bool,
    /// The event was redacted; its content is gone.
    pub redacted: bool,
    /// The event arrived as `m.room.encrypted` (end-to-end encrypted), whether it was
    /// decrypted or not: `decrypted` tells which.
    pub encrypted: bool,
    /// The event arrived as `m.room.encrypted` and was decrypted with a key from the account's
    /// key backup; its content is what it carried (`encrypted` is set too).
    #[serde(default)]
    pub decrypted: bool,
    /// Why an encrypted event stayed undecrypted, when a recovery key was given (a stable code:
    /// `NO_KEY_IN_BACKUP`, `INDEX_BEFORE_FIRST_KNOWN`, `BAD_MAC`, `UNSUPPORTED_ALGORITHM`,
    /// `MALFORMED`, `WRONG_ROOM`, `REPLAYED`, `SENDER_KEY_MISMATCH`, `UNSUPPORTED_EVENT_TYPE`).
    #[serde(default)]
    pub undecryptable: Option<String>,
    /// The event this one replies to (`m.in_reply_to`).
    pub reply_to: Option<EventId>,
    /// The root of the thread this event belongs to (`m.thread`).
    pub thread_root: Option<EventId>,
    /// The attachment, for media messages.
    pub media: Option<MediaRef>,
    /// Every version of the message, oldest first, when it was edited: the original as sent,
    /// then each edit applied to it. Empty for a message never edited (its one version is the
    /// message itself). Kept as evidence; `body` and `msgtype` are those of the last one.
    #[serde(default)]
    pub versions: Vec<MessageVersion>,
    /// Who redacted the message, when and why, when `redacted` is set and that is known.
    #[serde(default)]
    pub redaction: Option<Redaction>,
    /// What is known of the device that sent it: [`SenderTrust::NotEncrypted`] for a message
    /// that was never encrypted, [`SenderTrust::UnknownDevice`] for one whose key came from the
    /// key backup or that stayed encrypted, else what the connector's device found.
    #[serde(default)]
    pub sender_trust: SenderTrust,
}

/// What is known of the device that sent a message, as the connector's end-to-end-encryption
/// device found it when it decrypted the message (GraphQL `SenderTrust`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SenderTrust {
    /// The sending device was signed by its owner's cross-signing identity, and that identity
    /// is the one first seen for the owner.
    Verified,
    /// The sending device is the sender's, but their cross-signing identity did not sign it.
    UnverifiedDevice,
    /// The sender's cross-signing identity is not the one first seen for them (pinning).
    IdentityChanged,
    /// The sending device is not known to be the sender's: its key came from the key backup or
    /// another indirect source, the device is unknown, or the key was sent by another user's
    /// device (a forged sender); also what an encrypted message that stayed encrypted is.
    UnknownDevice,
    /// The message was not end-to-end encrypted.
    #[default]
    NotEncrypted,
}

impl SenderTrust {
    /// Every value, once (a test holds the list to the enum).
    pub const ALL: [Self; 5] = [
        Self::Verified,
        Self::UnverifiedDevice,
        Self::IdentityChanged,
        Self::UnknownDevice,
        Self::NotEncrypted,
    ];

    /// A stable code: the GraphQL and stored name.
    ///
    /// ```
    /// use argus_domain::SenderTrust;
    /// for t in SenderTrust::ALL {
    ///     assert_eq!(t.code().parse::<SenderTrust>()?, t);
    /// }
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub const fn code(self) -> &'static str {
        match self {
            Self::Verified => "VERIFIED",
            Self::UnverifiedDevice => "UNVERIFIED_DEVICE",
            Self::IdentityChanged => "IDENTITY_CHANGED",
            Self::UnknownDevice => "UNKNOWN_DEVICE",
            Self::NotEncrypted => "NOT_ENCRYPTED",
        }
    }

    /// What a message recorded without a trust (stored before devices existed) is taken as:
    /// unknown device when it arrived encrypted, else not encrypted.
    pub const fn unrecorded(encrypted: bool) -> Self {
        if encrypted { Self::UnknownDevice } else { Self::NotEncrypted }
    }
}

impl std::fmt::Display for SenderTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl std::str::FromStr for SenderTrust {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL.into_iter().find(|t| t.code() == s).ok_or(crate::Error::Invalid {
            kind: "sender trust",
            reason: "not one of the SenderTrust values",
        })
    }
}

impl MessageRecord {
    /// A plain `m.text` message: not edited, redacted or encrypted, no reply, thread or media.
    ///
    /// ```
    /// use argus_domain::MessageRecord;
    /// let sent_at = time::OffsetDateTime::UNIX_EPOCH;
    /// let m = MessageRecord::text("$ev1".parse()?, "@ana:agent.tchap.gouv.fr".parse()?, "Bonjour", sent_at);
    /// assert_eq!(m.msgtype.as_deref(), Some("m.text"));
    /// assert_eq!(m.body.as_deref(), Some("Bonjour"));
    /// assert!(!m.edited && !m.redacted && !m.encrypted && m.media.is_none());
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn text(event_id: EventId, sender: UserId, body: impl Into<String>, sent_at: OffsetDateTime) -> Self {
        Self {
            event_id,
            sender,
            msgtype: Some("m.text".to_owned()),
            body: Some(body.into()),
            sent_at,
            edited: false,
            redacted: false,
            encrypted: false,
            decrypted: false,
            undecryptable: None,
            reply_to: None,
            thread_root: None,
            media: None,
            versions: Vec::new(),
            redaction: None,
            sender_trust: SenderTrust::NotEncrypted,
        }
    }

    /// Whether the message arrived encrypted and its content is unknown: encrypted and not
    /// decrypted (a record that says `decrypted` was encrypted, whatever its `encrypted` says).
    ///
    /// ```
    /// use argus_domain::MessageRecord;
    /// let sent_at = time::OffsetDateTime::UNIX_EPOCH;
    /// let mut m = MessageRecord::text("$ev1".parse()?, "@ana:agent.tchap.gouv.fr".parse()?, "Bonjour", sent_at);
    /// assert!(!m.undecrypted() && !m.was_encrypted());
    /// m.encrypted = true;
    /// assert!(m.undecrypted() && m.was_encrypted());
    /// m.decrypted = true;
    /// assert!(!m.undecrypted() && m.was_encrypted());
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    pub fn undecrypted(&self) -> bool {
        self.encrypted && !self.decrypted
    }

    /// Whether the message arrived as `m.room.encrypted`, decrypted or not: what `encrypted`
    /// is stored and read as.
    pub fn was_encrypted(&self) -> bool {
        self.encrypted || self.decrypted
    }

    /// Purges the content of a redacted message (its versions' bodies too), keeping who sent
    /// it and when, and who redacted it when that is known.
    pub fn redact(&mut self, redaction: Option<Redaction>) {
        self.redacted = true;
        self.body = None;
        self.media = None;
        for version in &mut self.versions {
            version.msgtype = None;
            version.body = None;
        }
        if redaction.is_some() {
            self.redaction = redaction;
        }
    }
}

/// One version of an edited message: the original as sent, or one edit (`m.replace`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageVersion {
    /// The event that carried this version: the original's id, or the edit's.
    pub event_id: EventId,
    /// Who sent that event (for an applied edit, always the original's sender).
    pub sender: UserId,
    /// `origin_server_ts` of that event.
    #[serde(with = "time::serde::rfc3339")]
    pub sent_at: OffsetDateTime,
    /// The msgtype of this version; `None` once the message was redacted.
    pub msgtype: Option<String>,
    /// The body of this version; `None` once the message was redacted.
    pub body: Option<String>,
}

/// Who redacted a message, when and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Redaction {
    /// The sender of the `m.room.redaction` event.
    pub redacted_by: UserId,
    /// `origin_server_ts` of the redaction.
    #[serde(with = "time::serde::rfc3339")]
    pub redacted_at: OffsetDateTime,
    /// The reason given, if any.
    pub reason: Option<String>,
}

impl Redaction {
    /// Longest reason kept, in characters.
    pub const MAX_REASON: usize = 1024;

    /// A reason as kept: at most [`Redaction::MAX_REASON`] characters, control characters (NUL
    /// among them, which PostgreSQL refuses in text) replaced.
    ///
    /// ```
    /// use argus_domain::Redaction;
    /// assert_eq!(Redaction::bounded_reason("hors\0sujet"), "hors\u{fffd}sujet");
    /// assert_eq!(Redaction::bounded_reason(&"é".repeat(2000)).chars().count(), 1024);
    /// ```
    pub fn bounded_reason(reason: &str) -> String {
        crate::NewIngestion::sanitise(reason, Self::MAX_REASON)
    }
}

/// A redaction whose target was not part of the same fetch (it was stored by an earlier
/// ingestion). The store applies it only when the homeserver confirmed it or it comes from
/// the target's own sender ([`crate::policy::may_redact`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRedaction {
    /// The message being redacted.
    pub target: EventId,
    /// Who, when and why.
    pub redaction: Redaction,
    /// The homeserver serves the target as redacted (`unsigned.redacted_because`).
    pub confirmed: bool,
}

/// An edit whose original message was not part of the same fetch (it was stored by an
/// earlier ingestion). The store applies it to the stored original only when the rule of
/// [`crate::policy::may_edit`] allows, and keeps it as a version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageEdit {
    /// The edit event itself.
    pub event_id: EventId,
    /// Who sent the edit.
    pub sender: UserId,
    /// The message being edited.
    pub target: EventId,
    /// The new msgtype, from `m.new_content`.
    pub msgtype: Option<String>,
    /// The new body, from `m.new_content`.
    pub body: Option<String>,
    /// When the edit was sent; the latest edit wins.
    #[serde(with = "time::serde::rfc3339")]
    pub edited_at: OffsetDateTime,
}

/// A stored message as a read returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Opaque, stable storage id.
    pub id: i64,
    /// The room it belongs to.
    pub room_id: RoomId,
    /// Its classification (that of the ingestion that stored it, never lowered).
    pub classification: Classification,
    /// The message.
    pub message: MessageRecord,
    /// What a redaction made after the message was archived purged from it, kept under legal
    /// hold; only for a reader with [`crate::Scope::Redacted`], `None` for everyone else and
    /// when nothing of the message is held.
    pub held: Option<HeldContent>,
    /// What the archive holds of the file the message carries, when it carries one (gated with
    /// the message; `None` for a message without a file, undecrypted or redacted).
    pub attachment: Option<crate::Attachment>,
}

/// The content of a message as the archive captured it, kept under legal hold (a sealed
/// version) after a redaction that came later purged it: the message's own, when the message
/// was redacted, and that of each version a redaction purged (the message's, or its edit's).
///
/// A message redacted before the archive first read it has nothing held: the homeserver had
/// already purged it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeldContent {
    /// The body the message showed (latest edit applied) when its redaction reached the
    /// archive; `None` when it had none, or when only edits of it were withdrawn.
    pub body: Option<String>,
    /// Its attachment reference then.
    pub media: Option<MediaRef>,
    /// The content of each of its versions a redaction purged, oldest first.
    pub versions: Vec<HeldVersion>,
}

impl HeldContent {
    /// The held content of the version carried by `event_id`, if it was purged and is held.
    pub fn version(&self, event_id: &EventId) -> Option<&HeldVersion> {
        self.versions.iter().find(|v| &v.event_id == event_id)
    }
}

/// One version of a message as captured, held after a redaction purged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldVersion {
    /// The event that carried the version (as in [`MessageVersion::event_id`]).
    pub event_id: EventId,
    /// Its msgtype as captured.
    pub msgtype: Option<String>,
    /// Its body as captured.
    pub body: Option<String>,
}
