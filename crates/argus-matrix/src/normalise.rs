//! Normalisation of timeline events into domain records.
//!
//! Events arrive page by page; each is deserialised once into a borrowed view holding only the
//! fields the snapshot needs, then classified as a message, an edit, a redaction or something
//! the snapshot ignores ([`event`]). Encrypted events are decrypted first when the run has keys
//! ([`decrypt`]). Edits and redactions are folded into their targets once the whole range is
//! known ([`Normaliser::finish`], [`fold`]). A malformed event is skipped and counted; an event
//! claiming another room is dropped and counted; neither fails the run.

mod decrypt;
mod event;
mod fold;

use std::collections::HashSet;

use argus_crypto::Decryptor;
use argus_domain::{EventId, FetchReport, MessageEdit, MessageRecord, MessageRedaction};
use ruma::{events::AnyTimelineEvent, serde::Raw};
use serde_json::value::RawValue;

use decrypt::{Decrypting, Decryption};
pub(crate) use event::redaction_of;
use event::{
    EventView, Malformed, MessageContent, Outcome, PendingEdit, PendingRedaction, classify, is_message_like,
};

/// What the folding produced.
#[derive(Debug, Default)]
pub(crate) struct Normalised {
    pub(crate) messages: Vec<MessageRecord>,
    pub(crate) edits: Vec<MessageEdit>,
    /// Redactions of messages outside the range, not yet confirmed with the homeserver.
    pub(crate) redactions: Vec<MessageRedaction>,
}

/// Accumulates the events of one run and folds them into records.
pub(crate) struct Normaliser {
    room_id: String,
    messages: Vec<MessageRecord>,
    edits: Vec<PendingEdit>,
    redactions: Vec<PendingRedaction>,
    seen: HashSet<EventId>,
    report: FetchReport,
    /// The decryption of encrypted events, when the run was given keys.
    decrypting: Option<Decrypting>,
    /// Messages handed out in earlier batches ([`Normaliser::take_batch`]).
    messages_taken: usize,
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
            decrypting: None,
            messages_taken: 0,
        }
    }

    /// Decrypts `m.room.encrypted` events with `keys` (such as the room's sessions from the key
    /// backup).
    /// `pages_newest_first` tells the order of a page's events (a backwards read lists them
    /// newest first): a page is decrypted oldest first, because a megolm session only ratchets
    /// forwards cheaply (going back to an earlier message restarts from the session's first
    /// known index, up to 255 hashes per message).
    pub(crate) fn with_keys(mut self, keys: Box<dyn Decryptor>, pages_newest_first: bool) -> Self {
        self.decrypting = Some(Decrypting::new(keys, pages_newest_first));
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
    pub(crate) async fn push_page(&mut self, chunk: &[Raw<AnyTimelineEvent>]) {
        self.seen.reserve(chunk.len());
        self.messages.reserve(chunk.len());
        let Some(decrypting) = self.decrypting.as_mut() else {
            for raw in chunk {
                self.push_one(raw.json().get(), None);
            }
            return;
        };
        let decrypted = decrypting.decrypt_page(&self.room_id, chunk).await;
        for (raw, result) in chunk.iter().zip(decrypted) {
            match result {
                Some(Ok((plain, trust))) => self.push_one(&plain, Some(Decryption::Decrypted(trust))),
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
            Some(Decryption::Decrypted(_)) => self.report.decrypted += 1,
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
        match classify(view, event_id, decryption) {
            Ok(Outcome::Message(m)) => self.messages.push(m),
            Ok(Outcome::Edit(e)) => self.edits.push(e),
            Ok(Outcome::Redaction(target)) => self.redactions.push(target),
            Ok(Outcome::Ignored) => {}
            Err(Malformed) => self.report.malformed_skipped += 1,
        }
    }

    /// Folds edits and redactions into the messages, puts the messages oldest first (`newest_first`
    /// tells the order they were pushed in) and completes the report.
    ///
    /// An edit is applied only under [`argus_domain::policy::may_edit`], a redaction only under
    /// [`argus_domain::policy::may_redact`] (in the range, the homeserver's confirmation is the target served
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
        let seen = std::mem::take(&mut self.seen);
        let normalised = fold::fold(
            std::mem::take(&mut self.messages),
            std::mem::take(&mut self.edits),
            std::mem::take(&mut self.redactions),
            &seen,
            &mut self.report,
            newest_first,
        );
        self.messages_taken += normalised.messages.len();
        (normalised, self.report.clone())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    pub(super) const ROOM: &str = "!r:a.fr";

    pub(super) fn event(kind: &str, id: &str, sender: &str, ts: i64, content: Value) -> String {
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
}
