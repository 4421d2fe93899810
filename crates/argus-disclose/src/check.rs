//! The check made before anything is written: every version the package would claim still
//! hashes to the leaf recorded when it was stored, sits at its place among its run's leaves, and
//! those leaves still make the `eventsRoot` of the run's AUDIT entry; every held file is the one
//! its ATTACHMENT entry names. Whatever differs is named, and the export refused.

use std::collections::HashMap;

use argus_crypto::tlog::{leaf_hash, root_of};
use argus_domain::oversight::LogEntry;
use argus_store::{DisclosureSource, SourceRun};

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

/// Checks `source` against the log; [`Error::Mismatch`] names every row that differs.
pub(crate) fn source(source: &DisclosureSource) -> Result<()> {
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
    for version in &source.versions {
        let recomputed = leaf_hash(&version.leaf.canonical());
        let placed = runs.get(&version.run_id).is_some_and(|run| {
            usize::try_from(version.position)
                .ok()
                .and_then(|p| run.leaves.get(p))
                .is_some_and(|leaf| *leaf == version.stored_leaf_hash)
        });
        let belongs = version.leaf.event_id == version.message_event_id
            || version.leaf.target.as_deref() == Some(version.message_event_id.as_str());
        if recomputed != version.stored_leaf_hash || !placed || !belongs || bad_runs.contains(&version.run_id)
        {
            let row = version.leaf_event_row();
            if !rows.contains(&row) {
                rows.push(row);
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
    if rows.is_empty() { Ok(()) } else { Err(Error::Mismatch { rows }) }
}

/// How a version is named in a refusal.
trait Row {
    fn leaf_event_row(&self) -> String;
}

impl Row for argus_store::SourceVersion {
    fn leaf_event_row(&self) -> String {
        match self.kind {
            argus_domain::oversight::VersionKind::Original => self.message_event_id.clone(),
            argus_domain::oversight::VersionKind::Edit | argus_domain::oversight::VersionKind::Redaction => {
                if self.leaf.event_id == self.message_event_id {
                    format!("{} ({})", self.message_event_id, kind_name(self.kind))
                } else {
                    self.leaf.event_id.clone()
                }
            }
        }
    }
}

/// The contract name of a version kind.
pub(crate) fn kind_name(kind: argus_domain::oversight::VersionKind) -> &'static str {
    use argus_domain::oversight::VersionKind;
    match kind {
        VersionKind::Original => "ORIGINAL",
        VersionKind::Edit => "EDIT",
        VersionKind::Redaction => "REDACTION",
    }
}
