//! Writes: the pages of an ingestion committed in one transaction each (room, messages, edits
//! and redactions, positions), a run's audit record and outbox row at its end, and audit
//! records that store nothing else.
//!
//! Every write runs under a lock ([`tx`]): `BEGIN IMMEDIATE` on SQLite (one writer at a time);
//! on PostgreSQL a `pg_advisory_xact_lock` keyed by the room for a commit of pages, by the
//! organisation for an audit append. Appends are therefore serialised per chain, and two runs
//! of one room cannot interleave within a commit.
//!
//! One module per stored thing: [`validate`] checks the input before anything is written,
//! [`rooms`] upserts the room (only from the homeserver it was archived from) and keeps its
//! counts, [`messages`] inserts them (per backend), [`evidence`] applies edits, versions and
//! redactions, [`pending`] keeps those whose target is not stored yet, [`runs`] journals
//! streamed runs and appends their records, [`audit_only`] appends failures and posts, and
//! moves a room to another homeserver with its record. [`store_pages`] here ties the first five
//! together.

mod audit_only;
mod evidence;
mod messages;
mod pending;
mod rooms;
mod runs;
mod tx;
mod validate;

use argus_domain::{Classification, RoomSnapshot, Viewer, policy, to_unix_ms};
use time::OffsetDateTime;

#[cfg(feature = "testing")]
pub(crate) use self::runs::abandon_run;
pub use self::runs::{INTERRUPTED, RunRecord, RunTicket};
pub(crate) use self::{
    audit_only::{record_failure, record_post, record_rehome},
    evidence::Hold,
    runs::{begin_run, close_interrupted_runs, commit_pages, finish_run},
    tx::in_orgs_transaction,
};
use crate::{Error, Result, ahead, db::DbConn};

/// One ingestion to record: who ran it, at which classification, since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionRun {
    /// The caller; the room is stored in their organisation.
    pub viewer: Viewer,
    /// The classification requested (at most the caller's clearance).
    pub classification: Classification,
    /// When the run started.
    pub started_at: OffsetDateTime,
}

/// What the store did with pages it was given: the counts of one commit
/// ([`crate::Store::commit_pages`]), summed by whoever holds several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredCounts {
    /// Messages newly stored (those already stored are not counted again).
    pub messages_stored: i64,
    /// Edits of earlier-stored messages applied.
    pub edits_applied: u64,
    /// Edits the store refused ([`policy::may_edit`]): not from the original's sender, or of
    /// an undecrypted or redacted original.
    pub edits_ignored: u64,
    /// Redactions of earlier-stored messages the store refused ([`policy::may_redact`]).
    pub redactions_ignored: u64,
}

impl std::ops::AddAssign for StoredCounts {
    fn add_assign(&mut self, more: Self) {
        self.messages_stored += more.messages_stored;
        self.edits_applied += more.edits_applied;
        self.edits_ignored += more.edits_ignored;
        self.redactions_ignored += more.redactions_ignored;
    }
}

/// Now, at the millisecond precision the store keeps.
fn now_ms() -> i64 {
    to_unix_ms(OffsetDateTime::now_utc())
}

/// Writes the room, its new messages, the edits and redactions and the pagination positions of
/// `snapshot` (some pages of a run), inside the caller's transaction; the room's state is added
/// to its history when run `run_id` observed it changed ([`crate::room_states`]). `helpers`:
/// see [`messages::insert_messages`]; `hold`: what its redactions do with content stored
/// earlier.
fn store_pages(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    run_id: i64,
    run: &IngestionRun,
    snapshot: &RoomSnapshot,
    hold: Hold,
) -> Result<StoredCounts> {
    let org = run.viewer.org.as_str();
    // A room stored from another homeserver is refused here, before anything is written.
    // The room's row is written before any message: the transaction then holds its id before
    // it takes a message id, which the readers of new messages rely on (`crate::AddedCursor`).
    let now = now_ms();
    let (room_pk, merged) = rooms::upsert_room(conn, run, snapshot, now)?;
    if !policy::is_visible(&run.viewer, &run.viewer.org, merged) {
        return Err(Error::Withheld);
    }
    crate::room_states::record(conn, org, room_pk, run_id, snapshot, now)?;
    let messages_stored = messages::insert_messages(conn, helpers, org, room_pk, merged, &snapshot.messages)?;
    if messages_stored == snapshot.messages.len() as i64 {
        // Every message was new, at `merged`: the counts only grow.
        rooms::add_message_count(conn, org, room_pk, merged, messages_stored)?;
    } else {
        // Some were stored already and may have been raised: count the room again.
        rooms::recount_messages(conn, org, room_pk)?;
    }
    let mut stored = StoredCounts { messages_stored, ..StoredCounts::default() };
    // Edits and redactions that waited for these messages first, then the batch's own.
    pending::apply(conn, org, room_pk, &snapshot.messages, &mut stored, hold)?;
    evidence::apply_edits_and_redactions(conn, org, room_pk, snapshot, &mut stored, hold)?;
    // The references of the files these messages now carry (new, decrypted or edited).
    let with_files: Vec<&str> =
        snapshot.messages.iter().filter(|m| m.media.is_some()).map(|m| m.event_id.as_str()).collect();
    if !with_files.is_empty() {
        crate::attachments::sync_room(conn, org, room_pk, &with_files)?;
    }
    Ok(stored)
}
