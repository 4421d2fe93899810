//! Normalisation of timeline events into domain records.
//!
//! Events arrive page by page; each is deserialised once into a borrowed view holding only the
//! fields the snapshot needs, then classified as a message, an edit, a redaction or something
//! the snapshot ignores. Edits and redactions are folded into their targets once the whole
//! range is known ([`Normaliser::finish`]). A malformed event is skipped and counted; an event
//! claiming another room is dropped and counted; neither fails the run.

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
};

use argus_domain::{
    EventId, FetchReport, MediaRef, MessageEdit, MessageRecord, MessageRedaction, MessageVersion, Redaction,
    UserId, from_unix_ms, policy,
};
use ruma::{events::AnyTimelineEvent, serde::Raw};
use serde::Deserialize;
use serde_json::value::RawValue;
use time::OffsetDateTime;

/// The fields of a timeline event the snapshot needs. `C` is the content: parsed in the same
/// pass ([`MessageContent`]) on the fast path, kept raw when that pass failed.
#[derive(Deserialize)]
struct EventView<'a, C> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    sender: Cow<'a, str>,
    origin_server_ts: i64,
    #[serde(default, borrow)]
    room_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    redacts: Option<Cow<'a, str>>,
    // A missing `content` is `None` (serde's rule for `Option` fields).
    content: Option<C>,
    #[serde(default, borrow)]
    unsigned: Option<Unsigned<'a>>,
}

#[derive(Deserialize)]
struct Unsigned<'a> {
    #[serde(default, borrow)]
    redacted_because: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MessageContent<'a> {
    #[serde(default, borrow)]
    msgtype: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    body: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    url: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    info: Option<&'a RawValue>,
    #[serde(default, borrow)]
    redacts: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, rename = "m.relates_to", borrow)]
    relates_to: Option<RelatesTo<'a>>,
    #[serde(default, rename = "m.new_content", borrow)]
    new_content: Option<Box<MessageContent<'a>>>,
}

#[derive(Deserialize, Default)]
struct RelatesTo<'a> {
    #[serde(default, borrow)]
    rel_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    event_id: Option<Cow<'a, str>>,
    #[serde(default, rename = "m.in_reply_to", borrow)]
    in_reply_to: Option<InReplyTo<'a>>,
    #[serde(default)]
    is_falling_back: bool,
}

#[derive(Deserialize)]
struct InReplyTo<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
}

/// The redaction event a homeserver puts in `unsigned.redacted_because` of what it redacted.
#[derive(Deserialize)]
struct RedactedBecause<'a> {
    #[serde(borrow)]
    sender: Cow<'a, str>,
    origin_server_ts: i64,
    #[serde(default, borrow)]
    content: Option<ReasonOnly<'a>>,
}

#[derive(Deserialize)]
struct ReasonOnly<'a> {
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
}

/// Who, when and why, from `unsigned.redacted_because`; `None` when it cannot be read (the
/// message is still redacted: the homeserver says so).
pub(crate) fn redaction_of(redacted_because: &RawValue) -> Option<Redaction> {
    let because = serde_json::from_str::<RedactedBecause<'_>>(redacted_because.get()).ok()?;
    Some(Redaction {
        redacted_by: because.sender.parse().ok()?,
        redacted_at: from_unix_ms(because.origin_server_ts).ok()?,
        reason: because.content.and_then(|c| c.reason).map(|r| Redaction::bounded_reason(&r)),
    })
}

/// `info` of a media message; read leniently: a wrong type drops the field, not the message.
#[derive(Deserialize, Default)]
struct MediaInfo {
    #[serde(default)]
    mimetype: Option<String>,
    #[serde(default)]
    size: Option<u64>,
}

const MEDIA_TYPES: &[&str] = &["m.image", "m.file", "m.audio", "m.video"];

/// An edit seen in the range, before folding.
#[derive(Debug)]
struct PendingEdit {
    event_id: EventId,
    target: EventId,
    sender: UserId,
    sent_at: OffsetDateTime,
    msgtype: Option<String>,
    body: Option<String>,
    media: Option<MediaRef>,
}

/// A redaction seen in the range, before folding.
#[derive(Debug)]
struct PendingRedaction {
    target: EventId,
    redaction: Redaction,
}

/// What the folding produced.
#[derive(Debug, Default)]
pub(crate) struct Normalised {
    pub(crate) messages: Vec<MessageRecord>,
    pub(crate) edits: Vec<MessageEdit>,
    /// Redactions of messages outside the range, not yet confirmed with the homeserver.
    pub(crate) redactions: Vec<MessageRedaction>,
}

/// Accumulates the events of one run and folds them into records.
#[derive(Debug)]
pub(crate) struct Normaliser {
    room_id: String,
    messages: Vec<MessageRecord>,
    edits: Vec<PendingEdit>,
    redactions: Vec<PendingRedaction>,
    seen: HashSet<EventId>,
    report: FetchReport,
    /// The room's keys from the account's key backup, when a recovery key was given.
    keys: Option<crate::backup::SessionKeys>,
    /// Whether pages list their events newest first (a backwards read).
    pages_newest_first: bool,
    /// The event each decrypted ciphertext (session, message index) was first served as.
    ciphertexts: HashMap<(String, u32), String>,
    /// Messages handed out in earlier batches ([`Normaliser::take_batch`]).
    messages_taken: usize,
}

/// What became of an `m.room.encrypted` event when keys were given.
#[derive(Debug, Clone, Copy)]
enum Decryption {
    Decrypted,
    Failed(crate::backup::Undecryptable),
}

enum Outcome {
    Message(MessageRecord),
    Edit(PendingEdit),
    Redaction(PendingRedaction),
    Ignored,
}

impl Normaliser {
    /// A normaliser for events of `room_id`.
    pub(crate) fn new(room_id: &str) -> Self {
        Self {
            room_id: room_id.to_owned(),
            messages: Vec::new(),
            edits: Vec::new(),
            redactions: Vec::new(),
            seen: HashSet::new(),
            report: FetchReport::default(),
            keys: None,
            pages_newest_first: true,
            ciphertexts: HashMap::new(),
            messages_taken: 0,
        }
    }

    /// Decrypts `m.room.encrypted` events with `keys` (the room's sessions from the key backup).
    /// `pages_newest_first` tells the order of a page's events (a backwards read lists them
    /// newest first): a page is decrypted oldest first, because a megolm session only ratchets
    /// forwards cheaply (going back to an earlier message restarts from the session's first
    /// known index, up to 255 hashes per message).
    pub(crate) fn with_keys(mut self, keys: crate::backup::SessionKeys, pages_newest_first: bool) -> Self {
        self.keys = Some(keys);
        self.pages_newest_first = pages_newest_first;
        self
    }

    /// Messages kept so far, in every batch (edits and redactions not yet folded).
    pub(crate) fn message_count(&self) -> usize {
        self.messages_taken + self.messages.len()
    }

    /// The report so far: counters of what was received and skipped.
    pub(crate) fn report(&self) -> &FetchReport {
        &self.report
    }

    /// Mutable access to the report, for counters the caller keeps (pages, malformed state).
    pub(crate) fn report_mut(&mut self) -> &mut FetchReport {
        &mut self.report
    }

    /// Takes the events of one page, in the order the homeserver returned them.
    pub(crate) fn push_page(&mut self, chunk: &[Raw<AnyTimelineEvent>]) {
        self.seen.reserve(chunk.len());
        self.messages.reserve(chunk.len());
        let Some(keys) = self.keys.as_mut() else {
            for raw in chunk {
                self.push_one(raw.json().get(), None);
            }
            return;
        };
        // Decrypt oldest first (over the cores), then take the events in the page's order.
        let order: Vec<usize> = if self.pages_newest_first {
            (0..chunk.len()).rev().collect()
        } else {
            (0..chunk.len()).collect()
        };
        let mut decrypted: Vec<Option<Result<String, crate::backup::Undecryptable>>> =
            vec![None; chunk.len()];
        let mut wanted = Vec::new();
        let mut contents = Vec::new();
        for i in order {
            match encrypted_content(chunk[i].json().get()) {
                Some(Ok((content, relates_to))) => {
                    wanted.push((i, relates_to));
                    contents.push(content);
                }
                Some(Err(reason)) => decrypted[i] = Some(Err(reason)),
                None => {}
            }
        }
        let results = keys.decrypt_all(&self.room_id, &contents);
        for (((i, relates_to), content), result) in wanted.into_iter().zip(&contents).zip(results) {
            let json = chunk[i].json().get();
            let result = result.and_then(|event| {
                let full: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(json).map_err(|_| crate::backup::Undecryptable::Malformed)?;
                // A ciphertext is one event: served again under another event id, it is a replay.
                let id =
                    full.get("event_id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
                let slot = (content.session_id.clone().unwrap_or_default(), event.message_index);
                match self.ciphertexts.entry(slot) {
                    std::collections::hash_map::Entry::Occupied(first) if *first.get() != id => {
                        return Err(crate::backup::Undecryptable::Replayed);
                    }
                    std::collections::hash_map::Entry::Occupied(_) => {}
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(id);
                    }
                }
                plain_event(full, event, relates_to)
            });
            decrypted[i] = Some(result);
        }
        for (raw, result) in chunk.iter().zip(decrypted) {
            match result {
                Some(Ok(plain)) => self.push_one(&plain, Some(Decryption::Decrypted)),
                Some(Err(reason)) => self.push_one(raw.json().get(), Some(Decryption::Failed(reason))),
                None => self.push_one(raw.json().get(), None),
            }
        }
    }

    /// Takes one timeline event without keys, given as its JSON text (the tests' entry; pages,
    /// and anything to decrypt, go through [`Normaliser::push_page`]).
    #[cfg(test)]
    pub(crate) fn push(&mut self, json: &str) {
        self.push_one(json, None)
    }

    fn push_one(&mut self, json: &str, decryption: Option<Decryption>) {
        self.report.events_fetched += 1;
        match decryption {
            Some(Decryption::Decrypted) => self.report.decrypted += 1,
            Some(Decryption::Failed(reason)) => {
                *self.report.undecryptable.entry(reason.code().to_owned()).or_default() += 1;
            }
            None => {}
        }
        let view = match serde_json::from_str::<EventView<'_, MessageContent<'_>>>(json) {
            Ok(view) => view,
            Err(_) => {
                // The content did not fit a message: fine for other event types, malformed for
                // message-like ones (or the envelope itself is broken).
                let fallback = serde_json::from_str::<EventView<'_, &RawValue>>(json).ok();
                let id = fallback.as_ref().and_then(|v| v.event_id.parse::<EventId>().ok());
                match (fallback, id) {
                    (Some(v), _) if v.room_id.as_deref().is_some_and(|r| r != self.room_id) => {
                        self.report.foreign_dropped += 1;
                    }
                    (Some(v), Some(id)) if !is_message_like(&v.kind) => {
                        self.seen.insert(id);
                    }
                    _ => self.report.malformed_skipped += 1,
                }
                return;
            }
        };
        if view.room_id.as_deref().is_some_and(|r| r != self.room_id) {
            tracing::debug!(event_id = %view.event_id, "dropped an event claiming another room");
            self.report.foreign_dropped += 1;
            return;
        }
        let Ok(event_id) = view.event_id.parse::<EventId>() else {
            self.report.malformed_skipped += 1;
            return;
        };
        if !self.seen.insert(event_id.clone()) {
            tracing::debug!(event_id = %event_id, "skipped a duplicate event");
            return;
        }
        match classify(view, event_id) {
            Ok(Outcome::Message(mut m)) => {
                match decryption {
                    Some(Decryption::Decrypted) => m.decrypted = true,
                    Some(Decryption::Failed(reason)) => m.undecryptable = Some(reason.code().to_owned()),
                    None => {}
                }
                self.messages.push(m);
            }
            Ok(Outcome::Edit(e)) => self.edits.push(e),
            Ok(Outcome::Redaction(target)) => self.redactions.push(target),
            Ok(Outcome::Ignored) => {}
            Err(Malformed) => self.report.malformed_skipped += 1,
        }
    }

    /// Folds edits and redactions into the messages, puts the messages oldest first (`newest_first`
    /// tells the order they were pushed in) and completes the report.
    ///
    /// An edit is applied only under [`policy::may_edit`], a redaction only under
    /// [`policy::may_redact`] (in the range, the homeserver's confirmation is the target served
    /// redacted); the others are counted as ignored. Every applied edit is kept as a version.
    #[cfg(any(test, feature = "bench"))]
    pub(crate) fn finish(mut self, newest_first: bool) -> (Normalised, FetchReport) {
        self.take_batch(newest_first)
    }

    /// Like [`Normaliser::finish`] for the events pushed since the last batch, keeping the
    /// normaliser for the next pages: the batch's messages, and the edits and redactions of
    /// messages outside it (stored earlier, or, in a backwards read, still to come: the store
    /// keeps those until the batch that stores their original). The report is the run's so far.
    pub(crate) fn take_batch(&mut self, newest_first: bool) -> (Normalised, FetchReport) {
        let mut messages = std::mem::take(&mut self.messages);
        let mut edits = std::mem::take(&mut self.edits);
        let redactions = std::mem::take(&mut self.redactions);
        let seen = std::mem::take(&mut self.seen);
        let report = &mut self.report;
        if newest_first {
            messages.reverse();
        }
        // Only the messages an edit or a redaction points at need to be found by id.
        let wanted: HashSet<&EventId> =
            edits.iter().map(|e| &e.target).chain(redactions.iter().map(|r| &r.target)).collect();
        let index: HashMap<EventId, usize> = if wanted.is_empty() {
            HashMap::new()
        } else {
            messages
                .iter()
                .enumerate()
                .filter(|(_, m)| wanted.contains(&m.event_id))
                .map(|(i, m)| (m.event_id.clone(), i))
                .collect()
        };

        // Redactions: of a message in range, of an edit in range, or of something stored earlier.
        let mut redacted_edits = HashSet::new();
        let mut outside = Vec::new();
        let mut outside_seen = HashSet::new();
        let edit_senders: HashMap<&EventId, &UserId> =
            edits.iter().map(|e| (&e.event_id, &e.sender)).collect();
        for PendingRedaction { target, redaction } in redactions {
            if let Some(&i) = index.get(&target) {
                let m = &mut messages[i];
                if m.redacted {
                    // Served redacted: the homeserver applied it.
                    if m.redaction.is_none() {
                        m.redaction = Some(redaction);
                    }
                } else if policy::may_redact(&m.sender, &redaction.redacted_by, false) {
                    m.redact(Some(redaction));
                } else {
                    report.redactions_ignored += 1;
                }
            } else if let Some(&sender) = edit_senders.get(&target) {
                if policy::may_redact(sender, &redaction.redacted_by, false) {
                    redacted_edits.insert(target);
                } else {
                    report.redactions_ignored += 1;
                }
            } else if !seen.contains(&target) && outside_seen.insert(target.clone()) {
                outside.push(MessageRedaction { target, redaction, confirmed: false });
            }
        }

        // Edits, oldest first: every valid edit of an original in range becomes a version, the
        // latest gives the body; edits of originals outside the range all go to the store,
        // which applies the same rule to the stored original.
        edits.sort_by(|a, b| (a.sent_at, &a.event_id).cmp(&(b.sent_at, &b.event_id)));
        let mut outside_edits = Vec::new();
        for edit in edits {
            if redacted_edits.contains(&edit.event_id) {
                continue;
            }
            if let Some(&i) = index.get(&edit.target) {
                let m = &mut messages[i];
                if !policy::may_edit(&m.sender, m.encrypted, m.redacted, &edit.sender) {
                    report.edits_ignored += 1;
                    continue;
                }
                if m.versions.is_empty() {
                    m.versions.push(MessageVersion {
                        event_id: m.event_id.clone(),
                        sender: m.sender.clone(),
                        sent_at: m.sent_at,
                        msgtype: m.msgtype.clone(),
                        body: m.body.clone(),
                    });
                }
                m.versions.push(MessageVersion {
                    event_id: edit.event_id,
                    sender: edit.sender,
                    sent_at: edit.sent_at,
                    msgtype: edit.msgtype.clone(),
                    body: edit.body.clone(),
                });
                m.edited = true;
                m.body = edit.body;
                m.media = edit.media;
                m.msgtype = edit.msgtype;
                report.edits_applied += 1;
            } else if seen.contains(&edit.target) {
                // The target is in range but is not a message (an edit of an edit, a state event).
                report.edits_ignored += 1;
            } else {
                outside_edits.push(MessageEdit {
                    event_id: edit.event_id,
                    sender: edit.sender,
                    target: edit.target,
                    msgtype: edit.msgtype,
                    body: edit.body,
                    edited_at: edit.sent_at,
                });
            }
        }

        self.messages_taken += messages.len();
        report.messages += messages.len() as u64;
        report.encrypted += messages.iter().filter(|m| m.encrypted).count() as u64;
        report.redacted += messages.iter().filter(|m| m.redacted).count() as u64;
        (Normalised { messages, edits: outside_edits, redactions: outside }, report.clone())
    }
}

struct Malformed;

/// The envelope of an encrypted event, as far as decryption needs it.
#[derive(serde::Deserialize)]
struct EncryptedView {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    content: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The encrypted content of an `m.room.encrypted` event with a ciphertext, and its cleartext
/// `m.relates_to` (the specification has relations outside the ciphertext); `None` for another
/// event (or a redacted one).
fn encrypted_content(
    json: &str,
) -> Option<Result<(crate::backup::EncryptedContent, Option<serde_json::Value>), crate::backup::Undecryptable>>
{
    let view: EncryptedView = serde_json::from_str(json).ok()?;
    if view.kind != "m.room.encrypted" {
        return None;
    }
    let content = view.content.filter(|c| c.contains_key("ciphertext"))?;
    let relates_to = content.get("m.relates_to").cloned();
    Some(
        serde_json::from_value(serde_json::Value::Object(content))
            .map(|c| (c, relates_to))
            .map_err(|_| crate::backup::Undecryptable::Malformed),
    )
}
/// The event `full` (parsed once by the caller) as the decrypted `event` it carried, with its
/// cleartext relation kept.
/// The event `json` as the decrypted `event` it carried, with its cleartext relation kept.
fn plain_event(
    mut full: serde_json::Map<String, serde_json::Value>,
    event: crate::backup::DecryptedEvent,
    relates_to: Option<serde_json::Value>,
) -> Result<String, crate::backup::Undecryptable> {
    use crate::backup::Undecryptable;
    // Only messages: a redaction or state event inside a ciphertext was never applied by the
    // homeserver, and the archive must not apply it either.
    if event.event_type != "m.room.message" {
        return Err(Undecryptable::UnsupportedEventType);
    }
    let mut inner = event.content;
    let object = inner.as_object_mut().ok_or(Undecryptable::Malformed)?;
    // Relations are the cleartext ones, as clients show them; one inside the ciphertext is
    // ignored (it could make the archive apply an edit or a reply no client ever showed).
    object.remove("m.relates_to");
    if let Some(relation) = relates_to {
        object.insert("m.relates_to".to_owned(), relation);
    }
    full.insert("type".to_owned(), serde_json::Value::String(event.event_type));
    full.insert("content".to_owned(), inner);
    Ok(serde_json::Value::Object(full).to_string())
}

fn is_message_like(kind: &str) -> bool {
    matches!(kind, "m.room.message" | "m.room.encrypted" | "m.room.redaction")
}

fn classify(view: EventView<'_, MessageContent<'_>>, event_id: EventId) -> Result<Outcome, Malformed> {
    let kind = &*view.kind;
    if !is_message_like(kind) {
        return Ok(Outcome::Ignored);
    }
    let redacted_because = view.unsigned.as_ref().and_then(|u| u.redacted_because);
    let redacted = redacted_because.is_some();
    let content = match view.content {
        Some(content) => Some(content),
        None if redacted => None,
        None => return Err(Malformed),
    };
    if kind == "m.room.redaction" {
        if redacted {
            return Ok(Outcome::Ignored);
        }
        let target = view.redacts.as_deref().or(content.as_ref().and_then(|c| c.redacts.as_deref()));
        let target = target.ok_or(Malformed)?.parse::<EventId>().map_err(|_| Malformed)?;
        let redaction = Redaction {
            redacted_by: view.sender.parse::<UserId>().map_err(|_| Malformed)?,
            redacted_at: from_unix_ms(view.origin_server_ts).map_err(|_| Malformed)?,
            reason: content.as_ref().and_then(|c| c.reason.as_deref()).map(Redaction::bounded_reason),
        };
        return Ok(Outcome::Redaction(PendingRedaction { target, redaction }));
    }
    let sender = view.sender.parse::<UserId>().map_err(|_| Malformed)?;
    let sent_at = from_unix_ms(view.origin_server_ts).map_err(|_| Malformed)?;
    let encrypted = kind == "m.room.encrypted";
    let mut record = MessageRecord {
        event_id,
        sender,
        msgtype: None,
        body: None,
        sent_at,
        edited: false,
        redacted,
        encrypted,
        decrypted: false,
        undecryptable: None,
        reply_to: None,
        thread_root: None,
        media: None,
        versions: Vec::new(),
        redaction: redacted_because.and_then(redaction_of),
    };
    let Some(mut content) = content.filter(|_| !redacted) else {
        return Ok(Outcome::Message(record));
    };
    let relation = content.relates_to.take().unwrap_or_default();
    if relation.rel_type.as_deref() == Some("m.replace") {
        let target =
            relation.event_id.as_deref().ok_or(Malformed)?.parse::<EventId>().map_err(|_| Malformed)?;
        if encrypted {
            // The new content is encrypted too: nothing can be applied.
            return Ok(Outcome::Ignored);
        }
        let new = content.new_content.take().ok_or(Malformed)?;
        let (msgtype, body) =
            (new.msgtype.as_deref().ok_or(Malformed)?, new.body.as_deref().ok_or(Malformed)?);
        return Ok(Outcome::Edit(PendingEdit {
            event_id: record.event_id,
            target,
            sender: record.sender,
            sent_at,
            msgtype: Some(msgtype.to_owned()),
            body: Some(body.to_owned()),
            media: media_of(msgtype, &new),
        }));
    }
    if relation.rel_type.as_deref() == Some("m.thread") {
        let root = relation.event_id.as_deref().ok_or(Malformed)?;
        record.thread_root = Some(root.parse().map_err(|_| Malformed)?);
    }
    if let Some(reply) = relation.in_reply_to.filter(|_| !relation.is_falling_back) {
        record.reply_to = Some(reply.event_id.parse().map_err(|_| Malformed)?);
    }
    if !encrypted {
        let msgtype = content.msgtype.as_deref().ok_or(Malformed)?;
        let body = content.body.as_deref().ok_or(Malformed)?;
        record.media = media_of(msgtype, &content);
        record.msgtype = Some(msgtype.to_owned());
        record.body = Some(body.to_owned());
    }
    Ok(Outcome::Message(record))
}

/// The attachment of a media message: its `mxc://` URI (absent when encrypted), MIME type and
/// declared size. Fields of the wrong type are dropped rather than failing the message.
fn media_of(msgtype: &str, content: &MessageContent<'_>) -> Option<MediaRef> {
    if !MEDIA_TYPES.contains(&msgtype) {
        return None;
    }
    let info =
        content.info.and_then(|raw| serde_json::from_str::<MediaInfo>(raw.get()).ok()).unwrap_or_default();
    let uri = content.url.as_deref().filter(|u| u.starts_with("mxc://")).map(str::to_owned);
    Some(MediaRef { uri, mimetype: info.mimetype, size: info.size })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const ROOM: &str = "!r:a.fr";

    fn event(kind: &str, id: &str, sender: &str, ts: i64, content: Value) -> String {
        json!({"type": kind, "event_id": id, "sender": sender, "origin_server_ts": ts, "room_id": ROOM, "content": content})
            .to_string()
    }

    fn run(events: &[String]) -> (Normalised, FetchReport) {
        let mut n = Normaliser::new(ROOM);
        for e in events {
            n.push(e);
        }
        n.finish(false)
    }

    #[test]
    fn edits_of_encrypted_or_redacted_originals_are_not_applied() {
        let edit = |id: &str, target: &str| {
            event(
                "m.room.message",
                id,
                "@a:a.fr",
                5,
                json!({"msgtype": "m.text", "body": "* x", "m.new_content": {"msgtype": "m.text", "body": "x"},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": target}}),
            )
        };
        let (n, report) = run(&[
            event(
                "m.room.encrypted",
                "$enc",
                "@a:a.fr",
                1,
                json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "c"}),
            ),
            event("m.room.message", "$red", "@a:a.fr", 2, json!({"msgtype": "m.text", "body": "y"})),
            event("m.room.redaction", "$r", "@a:a.fr", 3, json!({"redacts": "$red"})),
            edit("$e1", "$enc"),
            edit("$e2", "$red"),
        ]);
        assert_eq!(n.messages.len(), 2);
        assert!(n.messages.iter().all(|m| !m.edited && m.body.is_none()));
        assert_eq!(report.edits_applied, 0);
        assert_eq!(report.edits_ignored, 2);
        assert!(n.edits.is_empty());
    }

    #[test]
    fn encrypted_edits_and_thread_links_keep_their_cleartext_relations() {
        let (n, _) = run(&[
            event(
                "m.room.encrypted",
                "$t",
                "@a:a.fr",
                1,
                json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "c", "m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}),
            ),
            event(
                "m.room.encrypted",
                "$ed",
                "@a:a.fr",
                2,
                json!({"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "c", "m.relates_to": {"rel_type": "m.replace", "event_id": "$t"}}),
            ),
        ]);
        assert_eq!(n.messages.len(), 1, "an encrypted edit is not a message");
        assert_eq!(n.messages[0].thread_root.as_ref().map(EventId::as_str), Some("$root"));
    }

    #[test]
    fn a_redaction_of_a_non_message_in_range_is_not_reported_as_outside() {
        let (n, report) = run(&[
            event("m.room.member", "$m", "@a:a.fr", 1, json!({"membership": 7})),
            event(
                "m.reaction",
                "$re",
                "@a:a.fr",
                2,
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x", "key": "👍"}}),
            ),
            event("m.room.redaction", "$r1", "@b:a.fr", 3, json!({"redacts": "$m"})),
            event("m.room.redaction", "$r2", "@b:a.fr", 4, json!({"redacts": "$re"})),
        ]);
        assert!(n.redactions.is_empty());
        assert_eq!(report.malformed_skipped, 0);
    }

    #[test]
    fn every_edit_of_an_outside_original_goes_to_the_store_oldest_first() {
        let edit = |id: &str, ts: i64, body: &str| {
            event(
                "m.room.message",
                id,
                "@a:a.fr",
                ts,
                json!({"msgtype": "m.text", "body": "*", "m.new_content": {"msgtype": "m.notice", "body": body},
                       "m.relates_to": {"rel_type": "m.replace", "event_id": "$old"}}),
            )
        };
        let (n, _) = run(&[edit("$b", 20, "deux"), edit("$a", 10, "un")]);
        // The store checks each against the stored original's sender and keeps each as a
        // version: none is dropped here.
        let edits: Vec<_> = n.edits.iter().map(|e| (e.event_id.as_str(), e.body.as_deref())).collect();
        assert_eq!(edits, [("$a", Some("un")), ("$b", Some("deux"))]);
        assert_eq!(n.edits[1].msgtype.as_deref(), Some("m.notice"));
        assert_eq!(n.edits[1].sender.as_str(), "@a:a.fr");
    }

    #[test]
    fn ciphertexts_are_read_as_clients_show_them() {
        use ruma::serde::Raw;
        use serde_json::value::RawValue;
        use vodozemac::megolm::{GroupSession, InboundGroupSession, SessionConfig};

        let mut out = GroupSession::new(SessionConfig::version_1());
        let mut keys = crate::backup::SessionKeys::default();
        keys.insert(InboundGroupSession::new(&out.session_key(), SessionConfig::version_1()));
        let session = out.session_id();
        let mut enc = |payload: Value| {
            json!({ "algorithm": crate::backup::MEGOLM_ALGORITHM, "session_id": session,
                    "ciphertext": out.encrypt(payload.to_string()).to_base64() })
        };
        let hello = enc(json!({ "type": "m.room.message", "room_id": ROOM,
                                "content": { "msgtype": "m.text", "body": "bonjour" } }));
        // A relation inside the ciphertext is not the one clients show: ignored.
        let hidden_edit = enc(json!({ "type": "m.room.message", "room_id": ROOM, "content": {
            "msgtype": "m.text", "body": "* réécrit", "m.new_content": { "msgtype": "m.text", "body": "réécrit" },
            "m.relates_to": { "rel_type": "m.replace", "event_id": "$1" } } }));
        // A redaction the homeserver never applied.
        let hidden_redaction =
            enc(json!({ "type": "m.room.redaction", "room_id": ROOM, "content": { "redacts": "$1" } }));
        let a = "@a:a.fr";
        let events = [
            event("m.room.encrypted", "$1", a, 1, hello.clone()),
            event("m.room.encrypted", "$2", a, 2, hidden_edit),
            event("m.room.encrypted", "$3", a, 3, hidden_redaction),
            // The first ciphertext served again as another event.
            event("m.room.encrypted", "$4", a, 4, hello.clone()),
            // Not an object at all: refused, never a panic.
            json!(["m.room.encrypted", hello]).to_string(),
        ];
        let raws: Vec<Raw<AnyTimelineEvent>> = events
            .iter()
            .map(|e| Raw::from_json(RawValue::from_string(e.clone()).unwrap_or_else(|e| panic!("{e}"))))
            .collect();
        let mut n = Normaliser::new(ROOM).with_keys(keys, false);
        n.push_page(&raws);
        let (norm, report) = n.finish(false);
        let by = |id: &str| norm.messages.iter().find(|m| m.event_id.as_str() == id).cloned();
        let first = by("$1").unwrap_or_else(|| panic!("$1"));
        assert!(first.decrypted && !first.edited && first.body.as_deref() == Some("bonjour"));
        let second = by("$2").unwrap_or_else(|| panic!("$2"));
        assert!(second.decrypted && second.body.as_deref() == Some("* réécrit"));
        assert_eq!(by("$3").and_then(|m| m.undecryptable).as_deref(), Some("UNSUPPORTED_EVENT_TYPE"));
        assert_eq!(by("$4").and_then(|m| m.undecryptable).as_deref(), Some("REPLAYED"));
        assert_eq!(report.decrypted, 2);
    }
}
