//! What tests and benchmarks of the crates above need beyond the product API (feature
//! `testing`): a whole ingestion in one call, written through the run the product writes.

use std::time::Duration;

use argus_domain::{IngestionRecord, RoomSnapshot, StoredRoom};

use crate::{Error, IngestionRun, Result, Store, StoredCounts, write};

/// The lease of a run of [`Store::record_ingestion`]: it ends within the call.
const LEASE: Duration = Duration::from_secs(600);

/// What [`Store::record_ingestion`] stored: its run's one commit and its audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestionResult {
    /// The room after commit, as the caller sees it.
    pub room: StoredRoom,
    /// The SUCCEEDED audit record.
    pub ingestion: IngestionRecord,
    /// What the commit stored and decided.
    pub counts: StoredCounts,
}

impl Store {
    /// Records a whole ingestion as a run of one commit, as the product writes a run
    /// ([`Store::begin_run`], [`Store::commit_pages`], [`Store::finish_run`]): room
    /// (classification never lowered), new messages, edits and redactions, then the SUCCEEDED
    /// audit record and the outbox row.
    ///
    /// When the commit fails nothing is written (the run is forgotten without a record); the
    /// caller then records the failure with [`Store::record_failure`]. [`Error::Withheld`] means
    /// the room is already stored above the caller's clearance. When the commit went through but
    /// the record could not be appended, the run stays journalled and is audited as interrupted
    /// once its lease expired ([`Store::close_interrupted_runs`]), as a product run would be.
    pub fn record_ingestion(&self, run: &IngestionRun, snapshot: &RoomSnapshot) -> Result<IngestionResult> {
        let ticket = self.begin_run(run, &snapshot.room_id, &snapshot.homeserver_url, LEASE, false)?;
        let counts = match self.commit_pages(&ticket, snapshot) {
            Ok(counts) => counts,
            Err(error) => {
                if let Err(e) = self.conn().and_then(|mut conn| write::abandon_run(&mut conn, &ticket)) {
                    tracing::warn!(error = %e, "a run whose commit failed stays journalled");
                }
                return Err(error);
            }
        };
        let record = self.finish_run(&ticket, None)?;
        Ok(IngestionResult { room: record.room.ok_or(Error::Withheld)?, ingestion: record.ingestion, counts })
    }
}
