//! The transparency log: one RFC 9162 Merkle log per organisation, whose entries are the
//! canonical encodings of [`argus_domain::oversight::LogEntry`] (audit records, accesses and
//! disclosures, held files), appended in the transaction that writes what they record; the
//! hashes of every complete subtree are stored, so that a proof reads `O(log n)` of them in one
//! statement. Also the access journal (group-committed) and what a disclosure reads.

use argus_domain::{
    OrgId, Page, PageRequest, RoomId, StoredMessage, StoredRoom, Viewer,
    oversight::{AccessEntry, VersionKind, VersionLeaf},
};
use time::OffsetDateTime;

use crate::{Error, Result, Store};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// The head of an organisation's log: its size and root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeHead {
    /// Entries in the log.
    pub size: u64,
    /// The RFC 9162 root over them.
    pub root: Digest,
}

/// One stored log entry: its index (from 0) and its exact leaf bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntryRecord {
    /// Its index in the organisation's log.
    pub index: u64,
    /// Its canonical bytes (the leaf's data).
    pub bytes: Vec<u8>,
}

/// An access journal entry as `tchapAccessLog` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Storage id.
    pub id: i64,
    /// Its index in the organisation's log.
    pub index: u64,
    /// What was recorded.
    pub entry: AccessEntry,
}

/// Position in the access journal (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AccessCursor {
    /// Log index of the last entry returned.
    pub index: u64,
}

/// Which access entries to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessFilter {
    /// Only this actor's.
    pub actor: Option<String>,
    /// Only those that read this room.
    pub room_id: Option<String>,
}

/// One stored version of a disclosed message, with what ties it to the run that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceVersion {
    /// The message it belongs to (its event id).
    pub message_event_id: String,
    /// What it is.
    pub kind: VersionKind,
    /// The run that stored it (storage id of its run, [`SourceRun::run_id`]).
    pub run_id: i64,
    /// Its position among that run's leaves.
    pub position: u64,
    /// The leaf hash recorded when it was stored.
    pub stored_leaf_hash: Digest,
    /// The version as the database holds it now (its canonical bytes are recomputed from it).
    pub leaf: VersionLeaf,
}

/// A run that stored disclosed versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRun {
    /// Storage id of the run.
    pub run_id: i64,
    /// Its audit entry in the log (which carries `eventsRoot`).
    pub entry: LogEntryRecord,
    /// Every leaf hash of the run, in order (their root is `eventsRoot`).
    pub leaves: Vec<Digest>,
}

/// A held file's log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceAttachment {
    /// The message's event id.
    pub event_id: String,
    /// Its `ATTACHMENT` entry in the log, when one was recorded.
    pub entry: Option<LogEntryRecord>,
}

/// What a disclosure of one room reads, all of it through the read gate.
#[derive(Debug, Clone, PartialEq)]
pub struct DisclosureSource {
    /// The room.
    pub room: StoredRoom,
    /// Its messages in the range the viewer may see, oldest first, with their versions,
    /// redactions and attachments.
    pub messages: Vec<StoredMessage>,
    /// Their stored versions.
    pub versions: Vec<SourceVersion>,
    /// The runs that stored them.
    pub runs: Vec<SourceRun>,
    /// The log entries of their held files.
    pub attachments: Vec<SourceAttachment>,
}

impl Store {
    /// The head of `org`'s log.
    pub fn log_head(&self, org: &OrgId) -> Result<TreeHead> {
        let _ = org;
        Err(Error::Unavailable)
    }

    /// The inclusion proof of entry `index` in `org`'s log at `size`.
    pub fn log_inclusion(&self, org: &OrgId, index: u64, size: u64) -> Result<Vec<Digest>> {
        let _ = (org, index, size);
        Err(Error::Unavailable)
    }

    /// The consistency proof of `org`'s log from `old_size` to `new_size`.
    pub fn log_consistency(&self, org: &OrgId, old_size: u64, new_size: u64) -> Result<Vec<Digest>> {
        let _ = (org, old_size, new_size);
        Err(Error::Unavailable)
    }

    /// The entries at `indexes` of `org`'s log (an operator's or the exporter's read).
    pub fn log_entries(&self, org: &OrgId, indexes: &[u64]) -> Result<Vec<LogEntryRecord>> {
        let _ = (org, indexes);
        Err(Error::Unavailable)
    }

    /// Journals a read of content: durable when this returns (entries of concurrent callers
    /// share one transaction). Returns its log index.
    pub fn record_access(&self, entry: &AccessEntry) -> Result<u64> {
        let _ = entry;
        Err(Error::Unavailable)
    }

    /// The access journal of the viewer's organisation at or below their clearance, newest
    /// first (gated like the audit trail).
    pub fn access_log(
        &self,
        viewer: &Viewer,
        page: &PageRequest<AccessCursor>,
        filter: &AccessFilter,
    ) -> Result<Page<AccessRecord>> {
        let _ = (viewer, page, filter);
        Err(Error::Unavailable)
    }

    /// What a disclosure of `room_id` over `[from, to]` reads for `viewer`; `None` when the
    /// room is absent or withheld.
    pub fn disclosure_source(
        &self,
        viewer: &Viewer,
        room_id: &RoomId,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
    ) -> Result<Option<DisclosureSource>> {
        let _ = (viewer, room_id, from, to);
        Err(Error::Unavailable)
    }
}
