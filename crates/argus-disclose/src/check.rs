//! The check made before anything is written: every version the package would claim still
//! hashes to the leaf recorded when it was stored, sits at its place among its run's leaves, and
//! those leaves still make the `eventsRoot` of the run's AUDIT entry; every message not redacted
//! shows the content of its latest proven version ([`latest_content`]); every held file is the
//! one its ATTACHMENT entry names. Whatever differs is named, and the export refused.

use std::collections::{HashMap, HashSet};

use argus_crypto::tlog::{leaf_hash, root_of};
use argus_domain::oversight::{LogEntry, VersionKind, VersionLeaf};
use argus_store::{DisclosureSource, SourceRun, SourceVersion};

use crate::{Error, Result};

/// The `eventsRoot` of a run's AUDIT entry and its count, when the entry is a run's.
pub(crate) fn events_root(bytes: &[u8]) -> Option<([u8; 32], Option<u64>)> {
    match LogEntry::parse(bytes).ok()? {
        LogEntry::Audit(audit) => {
            let root = hex::decode(audit.events_root?).ok()?;
            Some((root.try_into().ok()?, audit.events_count))
        }
        LogEntry::Access(_) | LogEntry::Attachment(_) => None,
    }
}

/// A version by its run and position.
pub(crate) type VersionKey = (i64, u64);

/// A proven version's leaf with where it is stored: its run's log index and its position there.
pub(crate) type Placed<'a> = (&'a VersionLeaf, (u64, u64));

/// What the check found that is not a mismatch.
#[derive(Debug, Default)]
pub(crate) struct Checked {
    /// Versions whose content a logged redaction purged (without legal hold for the requester):
    /// they cannot be re-encoded, so the package lists them as redacted and does not claim them.
    pub(crate) purged: HashSet<VersionKey>,
}

/// Checks `source` against the log; [`Error::Mismatch`] names every row that differs.
///
/// A version of a run the requester may not see (the source leaves its run out) is checked
/// against its recorded leaf only, and not packaged.
pub(crate) fn source(source: &DisclosureSource) -> Result<Checked> {
    let mut rows = Vec::new();
    let runs: HashMap<i64, &SourceRun> = source.runs.iter().map(|run| (run.run_id, run)).collect();
    let mut bad_runs = Vec::new();
    for run in &source.runs {
        let holds = events_root(&run.entry.bytes).is_some_and(|(root, count)| {
            root == root_of(&run.leaves) && count.is_none_or(|c| c == run.leaves.len() as u64)
        });
        if !holds {
            bad_runs.push(run.run_id);
            rows.push(format!("log entry {}", run.entry.index));
        }
    }
    let redacted: HashSet<&str> =
        source.messages.iter().filter(|m| m.message.redacted).map(|m| m.message.event_id.as_str()).collect();
    let sound = |version: &SourceVersion| {
        let placed = runs.get(&version.run_id).is_none_or(|run| {
            usize::try_from(version.position)
                .ok()
                .and_then(|p| run.leaves.get(p))
                .is_some_and(|leaf| *leaf == version.stored_leaf_hash)
        });
        let belongs = version.leaf.event_id == version.message_event_id
            || version.leaf.target.as_deref() == Some(version.message_event_id.as_str());
        placed && belongs && !bad_runs.contains(&version.run_id)
    };
    let hashes = |version: &SourceVersion| leaf_hash(&version.leaf.canonical()) == version.stored_leaf_hash;
    // Messages whose redaction is itself a sound, logged version, and edits withdrawn so (a
    // redaction of an edit targets the edit's event).
    let logged: Vec<&SourceVersion> = source
        .versions
        .iter()
        .filter(|v| v.kind == VersionKind::Redaction && hashes(v) && sound(v))
        .collect();
    let logged_redactions: HashSet<&str> = logged
        .iter()
        .filter(|v| v.leaf.target.as_deref() == Some(v.message_event_id.as_str()))
        .map(|v| v.message_event_id.as_str())
        .collect();
    let withdrawn: HashSet<&str> = logged
        .iter()
        .filter_map(|v| v.leaf.target.as_deref().filter(|target| *target != v.message_event_id))
        .collect();
    let mut checked = Checked::default();
    for version in &source.versions {
        if !sound(version) {
            push_row(&mut rows, version);
            continue;
        }
        if hashes(version) {
            continue;
        }
        let leaf = &version.leaf;
        let purged = version.kind != VersionKind::Redaction
            && leaf.body.is_none()
            && leaf.attachment.is_none()
            && ((redacted.contains(version.message_event_id.as_str())
                && logged_redactions.contains(version.message_event_id.as_str()))
                || (version.kind == VersionKind::Edit && withdrawn.contains(leaf.event_id.as_str())));
        if purged {
            checked.purged.insert((version.run_id, version.position));
        } else {
            push_row(&mut rows, version);
        }
    }
    // The content each message shows is that of its latest version the package proves.
    let order = |v: &SourceVersion| runs.get(&v.run_id).map(|run| (run.entry.index, v.position));
    let mut proven: HashMap<&str, Vec<Placed<'_>>> = HashMap::new();
    for v in &source.versions {
        let claimed = hashes(v) && sound(v) && !checked.purged.contains(&(v.run_id, v.position));
        if let (true, Some(at)) = (claimed, order(v)) {
            proven.entry(v.message_event_id.as_str()).or_default().push((&v.leaf, at));
        }
    }
    for m in source.messages.iter().filter(|m| !m.message.redacted) {
        let eid = m.message.event_id.as_str();
        let Some(versions) = proven.get(eid) else { continue };
        if let Some(latest) = latest_content(versions.iter().copied()) {
            let shown = (m.message.body.as_deref(), m.message.msgtype.as_deref());
            if shown != (latest.body.as_deref(), latest.msgtype.as_deref()) && !rows.iter().any(|r| r == eid)
            {
                rows.push(eid.to_owned());
            }
        }
    }
    let held: HashMap<&str, Option<String>> = source
        .messages
        .iter()
        .map(|m| {
            let digest = m.attachment.as_ref().and_then(|a| a.sha256).map(|d| d.to_hex());
            (m.message.event_id.as_str(), digest)
        })
        .collect();
    for attachment in &source.attachments {
        let Some(entry) = &attachment.entry else { continue };
        let recorded = match LogEntry::parse(&entry.bytes) {
            Ok(LogEntry::Attachment(a)) if a.event_id == attachment.event_id => Some(a.sha256),
            _ => None,
        };
        let stored = held.get(attachment.event_id.as_str()).cloned().flatten();
        if recorded.is_none() || (stored.is_some() && stored != recorded) {
            rows.push(attachment.event_id.clone());
        }
    }
    if rows.is_empty() { Ok(checked) } else { Err(Error::Mismatch { rows }) }
}

/// The version whose content a message not redacted shows, among its proven `versions` (each
/// with its run's log index and its position there): the latest ORIGINAL or EDIT not withdrawn
/// by a redaction of its own event, by its `sentAt`, then an EDIT after an ORIGINAL, then one
/// holding content after one recorded without (a message stored undecrypted, decrypted later),
/// then the later stored. `verify.py` applies the same rule.
pub(crate) fn latest_content<'a>(
    versions: impl Iterator<Item = Placed<'a>> + Clone,
) -> Option<&'a VersionLeaf> {
    let withdrawn: HashSet<&str> = versions
        .clone()
        .filter(|(leaf, _)| leaf.kind == VersionKind::Redaction)
        .filter_map(|(leaf, _)| leaf.target.as_deref())
        .collect();
    versions
        .filter(|(leaf, _)| {
            leaf.kind != VersionKind::Redaction && !withdrawn.contains(leaf.event_id.as_str())
        })
        .max_by_key(|(leaf, at)| {
            let holds = leaf.body.is_some() || leaf.msgtype.is_some() || leaf.attachment.is_some();
            (leaf.sent_at, leaf.kind == VersionKind::Edit, holds, *at)
        })
        .map(|(leaf, _)| leaf)
}

fn push_row(rows: &mut Vec<String>, version: &SourceVersion) {
    let row = row_of(version);
    if !rows.contains(&row) {
        rows.push(row);
    }
}

/// How a version is named in a refusal: its event (an edit's own), or the message's with the
/// kind for its redaction.
fn row_of(version: &SourceVersion) -> String {
    match version.kind {
        VersionKind::Original => version.message_event_id.clone(),
        VersionKind::Edit | VersionKind::Redaction if version.leaf.event_id != version.message_event_id => {
            version.leaf.event_id.clone()
        }
        VersionKind::Edit | VersionKind::Redaction => {
            format!("{} ({})", version.message_event_id, kind_name(version.kind))
        }
    }
}

/// The contract name of a version kind.
pub(crate) fn kind_name(kind: VersionKind) -> &'static str {
    match kind {
        VersionKind::Original => "ORIGINAL",
        VersionKind::Edit => "EDIT",
        VersionKind::Redaction => "REDACTION",
    }
}
