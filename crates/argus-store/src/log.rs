//! The transparency log: one RFC 9162 Merkle log per organisation, whose entries are the
//! canonical encodings of [`argus_domain::oversight::LogEntry`] (audit records, accesses and
//! disclosures, held files), appended in the transaction that writes what they record; the
//! hashes of every complete subtree are stored, so that a proof reads `O(log n)` of them in one
//! statement. Also the access journal (group-committed) and what a disclosure reads.

mod access;
mod append;
mod disclosure;
mod journal;
mod proofs;
mod versions;

use argus_domain::{
    OrgId, Page, PageRequest, RoomId, StoredMessage, StoredRoom, Viewer,
    oversight::{AccessEntry, VersionKind, VersionLeaf},
};
use time::OffsetDateTime;

pub(crate) use self::{
    append::{append_attachment, append_audit},
    journal::Journal,
    versions::{marks, record as record_run_versions, run_events},
};
use crate::{Result, Store, read::Gate};

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
        self.snapshot(|conn| proofs::head(conn, org.as_str()))
    }

    /// The inclusion proof of entry `index` in `org`'s log at `size` (its stored hashes read
    /// in one statement). [`crate::Error::Invalid`] when `index` or `size` is outside the log.
    pub fn log_inclusion(&self, org: &OrgId, index: u64, size: u64) -> Result<Vec<Digest>> {
        proofs::inclusion(&mut *self.conn()?, org.as_str(), index, size)
    }

    /// The consistency proof of `org`'s log from `old_size` to `new_size` (its stored hashes
    /// read in one statement). [`crate::Error::Invalid`] when a size is outside the log.
    pub fn log_consistency(&self, org: &OrgId, old_size: u64, new_size: u64) -> Result<Vec<Digest>> {
        proofs::consistency(&mut *self.conn()?, org.as_str(), old_size, new_size)
    }

    /// The entries at `indexes` of `org`'s log (an operator's or the exporter's read), in
    /// index order; indexes past the log are left out.
    pub fn log_entries(&self, org: &OrgId, indexes: &[u64]) -> Result<Vec<LogEntryRecord>> {
        proofs::entries(&mut *self.conn()?, org.as_str(), indexes)
    }

    /// Journals a read of content: durable when this returns (entries of concurrent callers
    /// share one transaction). Returns its log index. When that transaction fails, each of its
    /// callers gets [`crate::Error::Busy`] or [`crate::Error::Unavailable`].
    pub fn record_access(&self, entry: &AccessEntry) -> Result<u64> {
        self.journal.record(entry)
    }

    /// [`Store::record_access`] without waiting: `done` is called with the entry's index once
    /// it is committed (or with the error every caller of its batch gets), from the journal's
    /// writer thread, so it must return at once (send the result somewhere). An entry refused
    /// before it is queued returns its error here and `done` is never called. For async
    /// callers, who then wait without holding a thread.
    pub fn record_access_then(
        &self,
        entry: &AccessEntry,
        done: impl FnOnce(Result<u64>) + Send + 'static,
    ) -> Result<()> {
        self.journal.record_then(entry, Box::new(done))
    }

    /// The access journal of the viewer's organisation at or below their clearance, newest
    /// first (gated like the audit trail; empty for a viewer without `tchap:audit`).
    pub fn access_log(
        &self,
        viewer: &Viewer,
        page: &PageRequest<AccessCursor>,
        filter: &AccessFilter,
    ) -> Result<Page<AccessRecord>> {
        self.snapshot(|conn| access::access_log(conn, &Gate::of(viewer), page, filter))
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
        self.snapshot(|conn| disclosure::source(conn, &Gate::of(viewer), room_id, from, to))
    }
}
