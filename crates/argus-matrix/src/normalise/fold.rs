//! Folding a batch's edits and redactions into its messages, under the evidence rules of
//! [`policy::may_edit`] and [`policy::may_redact`]; those of messages outside the batch go to
//! the store, which applies the same rules to the stored original.

use std::collections::{HashMap, HashSet};

use argus_domain::{
    EventId, FetchReport, MessageEdit, MessageRecord, MessageRedaction, MessageVersion, UserId, policy,
};

use super::{
    Normalised,
    event::{PendingEdit, PendingRedaction},
};

/// Folds `edits` and `redactions` into `messages` (pushed newest first when `newest_first`,
/// returned oldest first), counting what was applied and ignored in `report`; `seen` holds
/// every event id of the batch (messages or not).
pub(super) fn fold(
    mut messages: Vec<MessageRecord>,
    mut edits: Vec<PendingEdit>,
    redactions: Vec<PendingRedaction>,
    seen: &HashSet<EventId>,
    report: &mut FetchReport,
    newest_first: bool,
) -> Normalised {
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
    let edit_senders: HashMap<&EventId, &UserId> = edits.iter().map(|e| (&e.event_id, &e.sender)).collect();
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
            if !policy::may_edit(&m.sender, m.undecrypted(), m.redacted, &edit.sender) {
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

    report.messages += messages.len() as u64;
    report.encrypted += messages.iter().filter(|m| m.undecrypted()).count() as u64;
    report.redacted += messages.iter().filter(|m| m.redacted).count() as u64;
    Normalised { messages, edits: outside_edits, redactions: outside }
}
