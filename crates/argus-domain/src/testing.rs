//! Fixture builders for tests and benchmarks (feature `testing`), in the manner of
//! matrix-sdk-test's event factory and crates.io's test builders: a room snapshot, a message and
//! a viewer, each starting from plain defaults and changed only where a test cares. Not part of
//! the supported API.
//!
//! Ids are given as text and parsed here: an invalid one is a bug in the fixture, and panics.
//!
//! ```
//! use argus_domain::{Classification, Scope, testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder}};
//!
//! let snapshot = RoomSnapshotBuilder::new("!crise:agent.tchap.gouv.fr")
//!     .name("Cellule de crise")
//!     .messages([MessageRecordBuilder::new("$ev1").body("Bonjour").build()])
//!     .build();
//! assert_eq!(snapshot.messages[0].body.as_deref(), Some("Bonjour"));
//! let analyst = ViewerBuilder::new("dgsi").clearance(Classification::Restricted).scopes([Scope::Read]).build();
//! assert_eq!(analyst.org.as_str(), "dgsi");
//! ```

use std::{fmt::Display, str::FromStr};

use time::OffsetDateTime;

use crate::{Classification, MediaRef, MessageRecord, Redaction, RoomSnapshot, Scope, Viewer};

/// The homeserver a [`RoomSnapshotBuilder`] reads from unless told otherwise.
pub const HOMESERVER: &str = "https://matrix.agent.tchap.gouv.fr";

/// The sender of a [`MessageRecordBuilder`]'s message unless told otherwise.
pub const SENDER: &str = "@jean.dupont:agent.tchap.gouv.fr";

/// The actor of a [`ViewerBuilder`]'s viewer unless told otherwise.
pub const ACTOR: &str = "analyst";

/// Parses a fixture's text, panicking with what it was meant to be.
fn parse<T>(what: &str, text: &str) -> T
where
    T: FromStr,
    T::Err: Display,
{
    text.parse().unwrap_or_else(|e| panic!("fixture: {what} {text:?}: {e}"))
}

/// Builds a [`RoomSnapshot`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct RoomSnapshotBuilder(RoomSnapshot);

impl RoomSnapshotBuilder {
    /// A snapshot of `room_id` read from [`HOMESERVER`]: no name, topic or alias, no member, not
    /// encrypted, no message, edit or redaction, no resume token, the history position
    /// unchanged, no upgrade link and an empty report.
    pub fn new(room_id: &str) -> Self {
        Self(RoomSnapshot::new(parse("room id", room_id), parse("homeserver URL", HOMESERVER)))
    }

    /// Read from `url` instead.
    pub fn homeserver(mut self, url: &str) -> Self {
        self.0.homeserver_url = parse("homeserver URL", url);
        self
    }

    /// With this `m.room.name`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.0.name = Some(name.into());
        self
    }

    /// With this `m.room.topic`.
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.0.topic = Some(topic.into());
        self
    }

    /// With this many joined members.
    pub fn member_count(mut self, count: u32) -> Self {
        self.0.member_count = count;
        self
    }

    /// End-to-end encrypted (`m.room.encryption` state).
    pub fn encrypted(mut self) -> Self {
        self.0.encrypted = true;
        self
    }

    /// Holding these messages, oldest first.
    pub fn messages(mut self, messages: impl IntoIterator<Item = MessageRecord>) -> Self {
        self.0.messages = messages.into_iter().collect();
        self
    }

    /// With this forward resume token.
    pub fn resume_token(mut self, token: impl Into<String>) -> Self {
        self.0.resume_token = Some(token.into());
        self
    }

    /// The snapshot.
    pub fn build(self) -> RoomSnapshot {
        self.0
    }
}

/// Builds a [`MessageRecord`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct MessageRecordBuilder(MessageRecord);

impl MessageRecordBuilder {
    /// A plain `m.text` message `event_id` from [`SENDER`], sent at the Unix epoch, whose body is
    /// `body of <event_id>` (as [`MessageRecord::text`] makes it).
    pub fn new(event_id: &str) -> Self {
        Self(MessageRecord::text(
            parse("event id", event_id),
            parse("user id", SENDER),
            format!("body of {event_id}"),
            OffsetDateTime::UNIX_EPOCH,
        ))
    }

    /// Sent by `sender`.
    pub fn sender(mut self, sender: &str) -> Self {
        self.0.sender = parse("user id", sender);
        self
    }

    /// With this body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.0.body = Some(body.into());
        self
    }

    /// Sent at `sent_at`.
    pub fn sent_at(mut self, sent_at: OffsetDateTime) -> Self {
        self.0.sent_at = sent_at;
        self
    }

    /// Of this msgtype (`m.image`, …).
    pub fn msgtype(mut self, msgtype: &str) -> Self {
        self.0.msgtype = Some(msgtype.to_owned());
        self
    }

    /// Carrying this attachment.
    pub fn media(mut self, media: MediaRef) -> Self {
        self.0.media = Some(media);
        self
    }

    /// A reply to `event_id`.
    pub fn reply_to(mut self, event_id: &str) -> Self {
        self.0.reply_to = Some(parse("event id", event_id));
        self
    }

    /// In the thread rooted at `event_id`.
    pub fn thread_root(mut self, event_id: &str) -> Self {
        self.0.thread_root = Some(parse("event id", event_id));
        self
    }

    /// Redacted by `by` at `at` for `reason`: no msgtype, body or media left.
    pub fn redacted(mut self, by: &str, at: OffsetDateTime, reason: Option<&str>) -> Self {
        let redaction =
            Redaction { redacted_by: parse("user id", by), redacted_at: at, reason: reason.map(Into::into) };
        self.0.redact(Some(redaction));
        self.0.msgtype = None;
        self
    }

    /// An `m.room.encrypted` event left undecrypted: no msgtype and no body.
    pub fn encrypted(mut self) -> Self {
        self.0.encrypted = true;
        self.0.msgtype = None;
        self.0.body = None;
        self.0.sender_trust = crate::SenderTrust::UnknownDevice;
        self
    }

    /// The message.
    pub fn build(self) -> MessageRecord {
        self.0
    }
}

/// Builds a [`Viewer`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until built"]
pub struct ViewerBuilder(Viewer);

impl ViewerBuilder {
    /// [`ACTOR`] of `org`, cleared SECRET, with the `tchap:read` scope.
    pub fn new(org: &str) -> Self {
        Self(Viewer::new(
            parse("actor", ACTOR),
            parse("organisation", org),
            Classification::Secret,
            [Scope::Read],
        ))
    }

    /// Acting as `actor`.
    pub fn actor(mut self, actor: &str) -> Self {
        self.0.actor = parse("actor", actor);
        self
    }

    /// Cleared up to `clearance`.
    pub fn clearance(mut self, clearance: Classification) -> Self {
        self.0.clearance = clearance;
        self
    }

    /// Holding exactly these scopes.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = Scope>) -> Self {
        self.0.scopes = scopes.into_iter().collect();
        self
    }

    /// The viewer.
    pub fn build(self) -> Viewer {
        self.0
    }
}
