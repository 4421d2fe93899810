//! `TchapMessage`: one stored message with its versions, and the connection of a room's
//! messages (its edges resolved in one pass when their selection is plain: `plain_edges`).

use argus_domain::{
    HeldVersion, MessageVersion, PageRequest, RoomId, StoredMessage, Viewer, oversight::AccessAction,
};
use argus_store::{MessageCursor, Store};
use juniper::{GraphQLObject, ID, graphql_object};

use super::{
    attachment::TchapAttachment,
    paging::{PageInfo, connection},
    scalars::{DateTime, GqlClassification, GqlSenderTrust, opaque_id},
    sync_list::SyncList,
};
use crate::{Context, CursorKind, Result, oversight::Read};

/// One stored message.
#[derive(Debug, Clone)]
pub struct TchapMessage(pub StoredMessage);

#[graphql_object(context = Context)]
impl TchapMessage {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapMessage", self.0.id)
    }

    /// The Matrix event id.
    fn event_id(&self) -> &str {
        self.0.message.event_id.as_str()
    }

    /// The Matrix room id.
    fn room_id(&self) -> &str {
        self.0.room_id.as_str()
    }

    /// The Matrix user id of the sender.
    fn sender(&self) -> &str {
        self.0.message.sender.as_str()
    }

    /// m.text, m.notice, m.emote, m.image, m.file, ...; null for events that are not m.room.message (e.g. encrypted).
    fn msgtype(&self) -> Option<&str> {
        self.0.message.msgtype.as_deref()
    }

    /// Plain-text body; the latest edit applied; null when redacted or undecryptable.
    fn body(&self) -> Option<&str> {
        self.0.message.body.as_deref()
    }

    /// origin_server_ts of the event.
    fn sent_at(&self) -> DateTime {
        DateTime(self.0.message.sent_at)
    }

    /// The message's classification.
    fn classification(&self) -> GqlClassification {
        self.0.classification.into()
    }

    /// An edit (m.replace) was applied.
    fn edited(&self) -> bool {
        self.0.message.edited
    }

    /// The event was redacted; its content is gone.
    fn redacted(&self) -> bool {
        self.0.message.redacted
    }

    /// The event was end-to-end encrypted (it arrived as m.room.encrypted), whether it was decrypted or not: `decrypted` tells which.
    fn encrypted(&self) -> bool {
        self.0.message.was_encrypted()
    }

    /// The event arrived as m.room.encrypted and was decrypted, with a key the connector's device received or one from the account's key backup.
    fn decrypted(&self) -> bool {
        self.0.message.decrypted
    }

    /// Why the event stayed encrypted (when a recovery key was given or the connector's device received keys): `NO_KEY_IN_BACKUP`, `INDEX_BEFORE_FIRST_KNOWN`, `BAD_MAC`, `UNSUPPORTED_ALGORITHM`, `MALFORMED`, `WRONG_ROOM`, `REPLAYED`, `SENDER_KEY_MISMATCH`, `UNSUPPORTED_EVENT_TYPE`, `NO_ROOM_KEY` (the device holds no key for it), or the sender withheld the key: `WITHHELD_UNVERIFIED`, `WITHHELD_BLACKLISTED`, `WITHHELD_UNAUTHORISED`, `WITHHELD_UNAVAILABLE`, `WITHHELD_NO_OLM`.
    fn undecryptable_reason(&self) -> Option<&str> {
        self.0.message.undecryptable.as_deref()
    }

    /// What is known of the device that sent it: NOT_ENCRYPTED for a message that was not encrypted; UNKNOWN_DEVICE for one that stayed encrypted or whose key came from the key backup (unless the device is known); else what the connector's device found when it decrypted it.
    fn sender_trust(&self) -> GqlSenderTrust {
        self.0.message.sender_trust.into()
    }

    /// The event id this message replies to.
    fn reply_to(&self) -> Option<&str> {
        self.0.message.reply_to.as_ref().map(|e| e.as_str())
    }

    /// The event id of the root of the thread this message belongs to.
    fn thread_root(&self) -> Option<&str> {
        self.0.message.thread_root.as_ref().map(|e| e.as_str())
    }

    /// The mxc:// URI of a media attachment (never its content).
    fn media_uri(&self) -> Option<&str> {
        self.0.message.media.as_ref().and_then(|m| m.uri.as_deref())
    }

    /// The declared MIME type of a media attachment.
    fn media_mimetype(&self) -> Option<&str> {
        self.0.message.media.as_ref().and_then(|m| m.mimetype.as_deref())
    }

    /// The file this message carries, as the archive holds it; null when it carries none.
    fn attachment(&self) -> Option<TchapAttachment> {
        self.0.attachment.clone().map(TchapAttachment)
    }

    /// Every version of an edited message, oldest first: the original as sent, then each edit
    /// its sender made (edits by anyone else are never applied); past 100, the original and the
    /// 99 newest. Empty when never edited. Bodies are null once the message was redacted.
    fn versions(&self) -> Vec<TchapMessageVersion> {
        let held = self.0.held.as_ref();
        self.0
            .message
            .versions
            .iter()
            .map(|v| TchapMessageVersion {
                held: held.and_then(|h| h.version(&v.event_id)).cloned(),
                version: v.clone(),
            })
            .collect()
    }

    /// Who redacted the message (the sender of the redaction), when known.
    fn redacted_by(&self) -> Option<&str> {
        self.0.message.redaction.as_ref().map(|r| r.redacted_by.as_str())
    }

    /// When the message was redacted, when known.
    fn redacted_at(&self) -> Option<DateTime> {
        self.0.message.redaction.as_ref().map(|r| r.redacted_at).map(DateTime)
    }

    /// The reason the redaction gave, if any.
    fn redaction_reason(&self) -> Option<&str> {
        self.0.message.redaction.as_ref().and_then(|r| r.reason.as_deref())
    }

    /// Legal hold: the body this message had when the archive captured it, kept after a later redaction purged it. Only for a caller with scope tchap:redacted; null for everyone else, and when nothing was held (a message redacted before it was captured).
    fn held_body(&self) -> Option<&str> {
        self.0.held.as_ref().and_then(|h| h.body.as_deref())
    }

    /// Legal hold: the mxc:// URI of the attachment this message had when the archive captured it, kept after a later redaction purged it. Only for a caller with scope tchap:redacted.
    fn held_media_uri(&self) -> Option<&str> {
        self.0.held.as_ref().and_then(|h| h.media.as_ref()).and_then(|m| m.uri.as_deref())
    }

    /// Legal hold: the declared MIME type of that attachment. Only for a caller with scope tchap:redacted.
    fn held_media_mimetype(&self) -> Option<&str> {
        self.0.held.as_ref().and_then(|h| h.media.as_ref()).and_then(|m| m.mimetype.as_deref())
    }
}

/// One version of an edited message, with what is held of it for a caller who may read it.
#[derive(Debug, Clone)]
pub struct TchapMessageVersion {
    /// The version as everyone reads it.
    pub version: MessageVersion,
    /// Its content as captured, when a redaction purged it and the caller may read it.
    pub held: Option<HeldVersion>,
}

#[graphql_object(context = Context)]
impl TchapMessageVersion {
    /// The event that carried this version: the original's id, or the edit's.
    fn event_id(&self) -> &str {
        self.version.event_id.as_str()
    }

    /// Who sent it.
    fn sender(&self) -> &str {
        self.version.sender.as_str()
    }

    /// origin_server_ts of that event.
    fn sent_at(&self) -> DateTime {
        DateTime(self.version.sent_at)
    }

    /// The msgtype of this version; null once the message was redacted.
    fn msgtype(&self) -> Option<&str> {
        self.version.msgtype.as_deref()
    }

    /// The body of this version; null once the message was redacted.
    fn body(&self) -> Option<&str> {
        self.version.body.as_deref()
    }

    /// Legal hold: the msgtype of this version as captured, kept after a later redaction (of the message, or of this edit) purged it. Only for a caller with scope tchap:redacted.
    fn held_msgtype(&self) -> Option<&str> {
        self.held.as_ref().and_then(|h| h.msgtype.as_deref())
    }

    /// Legal hold: the body of this version as captured, kept after a later redaction (of the message, or of this edit) purged it. Only for a caller with scope tchap:redacted.
    fn held_body(&self) -> Option<&str> {
        self.held.as_ref().and_then(|h| h.body.as_deref())
    }
}

/// An edge to one message.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapMessageEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The message.
    pub node: TchapMessage,
}

/// A page of messages.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapMessageConnection {
    /// The edges of this page.
    // Resolved synchronously: every field of an edge and its message is a plain accessor.
    pub edges: SyncList<TchapMessageEdge>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many messages the whole list has, as the caller may see it.
    pub total_count: i32,
}

impl TchapMessageConnection {
    /// The caller's page of a room's messages.
    pub(crate) async fn load(
        context: &Context,
        room_id: RoomId,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Self> {
        let kind = CursorKind::Messages(room_id.as_str());
        let room = room_id.clone();
        // The one place the page is known: its entry is made there, and journaled (durable)
        // before the connection is returned, so before anything of it is answered.
        let entry = std::sync::Arc::new(std::sync::Mutex::new(None));
        let made = std::sync::Arc::clone(&entry);
        let read = move |store: &Store, viewer: &Viewer, request: &PageRequest<MessageCursor>| {
            let page = store.messages(viewer, &room, request)?;
            let read = Read::of_messages(AccessAction::ReadMessages, None, &page.items);
            if let Ok(mut slot) = made.lock() {
                *slot = Some(read.entry(viewer));
            }
            Ok(page)
        };
        let connection =
            connection(context, kind, first, after, read, MessageCursor::of, TchapMessage).await?;
        let entry = entry.lock().ok().and_then(|mut slot| slot.take());
        let entry = entry.ok_or(crate::Error::Service(argus_ingest::Error::Internal))?;
        context.services().journal_entry(entry).await?;
        Ok(connection)
    }
}

super::paging::relay_connection!(TchapMessageConnection, TchapMessageEdge, TchapMessage);
