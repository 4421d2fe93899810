//! Runs: the journal of streamed ingestions (`ingestion_runs`), from [`begin_run`] through the
//! commits of its pages ([`commit_pages`], under the room's lock) to its one audit record and
//! outbox row ([`finish_run`], under the organisation's lock); runs whose process stopped are
//! audited as interrupted once their lease expired.

use argus_domain::{
    HomeserverUrl, IngestionOutcome, IngestionRecord, NewIngestion, RoomId, RoomSnapshot, StoredRoom, Viewer,
    from_unix_ms, policy, to_unix_ms,
};
use diesel::{ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, RunQueryDsl as _};
use time::OffsetDateTime;

use super::{
    IngestionRun, StoredCounts, now_ms, rooms, store_pages,
    tx::{Lock, in_locked_transaction, in_org_transaction},
    validate::validate,
};
use crate::{
    Error, Result, ahead, audit,
    db::DbConn,
    read::{self, Gate},
    schema::ingestion_runs as r,
};

/// A streamed ingestion under way: its row in `ingestion_runs`, from [`crate::Store::begin_run`]
/// to [`crate::Store::finish_run`]. While the row exists and its lease has not expired, the run is
/// its process's; past the lease, [`crate::Store::close_interrupted_runs`] audits it as
/// interrupted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTicket {
    id: i64,
    scheduled: bool,
    run: IngestionRun,
    room_id: RoomId,
    homeserver_url: HomeserverUrl,
    lease: std::time::Duration,
}

impl RunTicket {
    /// The run: who, at which level, since when.
    pub fn run(&self) -> &IngestionRun {
        &self.run
    }

    /// The room it reads.
    pub fn room_id(&self) -> &RoomId {
        &self.room_id
    }
}

/// How a streamed run ended: its audit record and the room as its caller sees it. Of the
/// [`StoredCounts`] its commits returned, the run's journal keeps the messages stored; the
/// caller that committed the pages holds the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The room after the run (`None`: never stored, or withheld from the caller).
    pub room: Option<StoredRoom>,
    /// Messages the run's committed pages stored.
    pub messages_stored: i64,
    /// The audit record appended.
    pub ingestion: IngestionRecord,
}

fn lease_end(lease: std::time::Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
}

/// Starts a streamed run: its journal row, with a lease of `lease`, under the room's lock.
/// Refused with nothing written when the caller may see the room and it is archived from
/// another homeserver ([`rooms::check_run_source`]; a run begun before the room was stored is
/// checked again by its first commit).
pub(crate) fn begin_run(
    conn: &mut DbConn,
    run: &IngestionRun,
    room_id: &RoomId,
    homeserver: &HomeserverUrl,
    lease: std::time::Duration,
    scheduled: bool,
) -> Result<RunTicket> {
    policy::check_may_classify(&run.viewer, run.classification)?;
    let org = run.viewer.org.as_str();
    let id = in_locked_transaction(conn, Lock::Room { org, room_id: room_id.as_str() }, |conn| {
        rooms::check_run_source(conn, &run.viewer, room_id, homeserver)?;
        let id: i64 = diesel::insert_into(r::table)
            .values((
                r::org_id.eq(org),
                r::actor.eq(run.viewer.actor.as_str()),
                r::room_id.eq(room_id.as_str()),
                r::homeserver_url.eq(NewIngestion::origin_of(homeserver.as_str())),
                r::classification.eq(run.classification.rank()),
                r::started_at.eq(to_unix_ms(run.started_at)),
                r::lease_until.eq(lease_end(lease)),
                r::scheduled.eq(scheduled),
            ))
            .returning(r::id)
            .get_result(conn)?;
        Ok(id)
    })?;
    Ok(RunTicket {
        id,
        scheduled,
        run: run.clone(),
        room_id: room_id.clone(),
        homeserver_url: homeserver.clone(),
        lease,
    })
}

/// Commits some pages of a streamed run with the room's positions, in one transaction holding
/// the room's lock (not the organisation's: runs of other rooms go on), and renews the run's
/// lease. Fails with [`Error::Invalid`] when the run's row is gone (closed as interrupted).
pub(crate) fn commit_pages(
    conn: &mut DbConn,
    helpers: Option<&ahead::Source<'_>>,
    ticket: &RunTicket,
    pages: &RoomSnapshot,
    hold: super::Hold,
) -> Result<StoredCounts> {
    validate(pages)?;
    if pages.room_id != ticket.room_id || pages.homeserver_url != ticket.homeserver_url {
        return Err(Error::invalid("pages", "they belong to another room than the run's"));
    }
    let org = ticket.run.viewer.org.as_str();
    in_locked_transaction(conn, Lock::Room { org, room_id: ticket.room_id.as_str() }, |conn| {
        let before = crate::log::marks(conn)?;
        let stored = store_pages(conn, helpers, ticket.id, &ticket.run, pages, hold)?;
        let renewed = diesel::update(r::table.filter(r::id.eq(ticket.id)).filter(r::org_id.eq(org)))
            .set((
                r::message_count.eq(r::message_count + stored.messages_stored),
                r::lease_until.eq(lease_end(ticket.lease)),
            ))
            .execute(conn)?;
        if renewed == 0 {
            // Its lease expired and another process audited it as interrupted: what it read
            // now belongs to no run, so it is not kept.
            return Err(Error::invalid("ingestion run", "it was closed as interrupted"));
        }
        // The versions this commit stored: the leaves of the run's eventsRoot.
        if let Some(room) = read::room_key(conn, &Gate::whole_org(&ticket.run.viewer.org), &ticket.room_id)? {
            let decrypted: Vec<&str> = pages
                .messages
                .iter()
                .filter(|m| m.decrypted && !m.redacted)
                .map(|m| m.event_id.as_str())
                .collect();
            crate::log::record_run_versions(conn, org, ticket.id, room.id, before, &decrypted)?;
        }
        Ok(stored)
    })
}

/// Ends a streamed run: appends its audit record (SUCCEEDED, or FAILED with `error` and what
/// its committed pages stored) and the outbox row, and removes its journal row; the
/// organisation's lock is held for this transaction only.
pub(crate) fn finish_run(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    ticket: &RunTicket,
    error: Option<String>,
) -> Result<RunRecord> {
    let org = ticket.run.viewer.org.as_str();
    in_org_transaction(conn, org, |conn| {
        let count: Option<i64> =
            diesel::delete(r::table.filter(r::id.eq(ticket.id)).filter(r::org_id.eq(org)))
                .returning(r::message_count)
                .get_result(conn)
                .optional()?;
        let Some(message_count) = count else {
            return Err(Error::invalid("ingestion run", "it was closed as interrupted"));
        };
        let end = RunEnd {
            run_id: ticket.id,
            room_id: ticket.room_id.as_str().to_owned(),
            homeserver_url: ticket.homeserver_url.as_str().to_owned(),
            message_count,
            error,
            scheduled: ticket.scheduled,
        };
        let (room, ingestion) = append_run_record(conn, key, &ticket.run, &end)?;
        Ok(RunRecord { room, messages_stored: message_count, ingestion })
    })
}

/// Forgets a run none of whose pages were committed, without an audit record: what
/// `Store::record_ingestion` does when its one commit failed (its caller then records the
/// failure).
#[cfg(feature = "testing")]
pub(crate) fn abandon_run(conn: &mut DbConn, ticket: &RunTicket) -> Result<()> {
    let org = ticket.run.viewer.org.as_str();
    diesel::delete(r::table.filter(r::id.eq(ticket.id)).filter(r::org_id.eq(org))).execute(conn)?;
    Ok(())
}

/// The error an interrupted run's audit record keeps.
pub const INTERRUPTED: &str =
    "the run was interrupted (its process stopped); the pages it had committed are kept";

/// Audits every run whose lease expired before `now` as FAILED with [`INTERRUPTED`] and what
/// its committed pages stored, and removes it. Two processes closing at once close each run
/// once (the row is deleted in the same transaction as its record is appended).
pub(crate) fn close_interrupted_runs(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    now: OffsetDateTime,
) -> Result<Vec<IngestionRecord>> {
    let expired: Vec<(i64, String)> = r::table
        .filter(r::lease_until.lt(to_unix_ms(now)))
        .select((r::id, r::org_id))
        .order(r::id)
        .limit(1000)
        .load(conn)?;
    let mut closed = Vec::new();
    for (id, org) in expired {
        let record = in_org_transaction(conn, &org, |conn| {
            let row: Option<(String, String, String, i16, i64, i64, bool)> =
                diesel::delete(r::table.filter(r::id.eq(id)).filter(r::lease_until.lt(to_unix_ms(now))))
                    .returning((
                        r::actor,
                        r::room_id,
                        r::homeserver_url,
                        r::classification,
                        r::started_at,
                        r::message_count,
                        r::scheduled,
                    ))
                    .get_result(conn)
                    .optional()?;
            let Some((actor, room_id, homeserver_url, level, started_at, message_count, scheduled)) = row
            else {
                return Ok(None);
            };
            const BAD: Error = Error::Corrupt("an ingestion run fails validation");
            let viewer = Viewer::new(
                actor.parse().map_err(|_| BAD)?,
                org.parse().map_err(|_| BAD)?,
                crate::rows::rank(level).map_err(|_| BAD)?,
                [],
            );
            let run = IngestionRun {
                viewer,
                classification: crate::rows::rank(level).map_err(|_| BAD)?,
                started_at: from_unix_ms(started_at)?,
            };
            let end = RunEnd {
                run_id: id,
                room_id,
                homeserver_url,
                message_count,
                error: Some(INTERRUPTED.to_owned()),
                scheduled,
            };
            append_run_record(conn, key, &run, &end).map(|(_, record)| Some(record))
        });
        // One run that cannot be closed (a corrupt row) must not keep the others open.
        match record {
            Ok(record) => closed.extend(record),
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => tracing::error!(run = id, error = %e, "an interrupted run could not be audited"),
        }
    }
    Ok(closed)
}

/// How a run ended, for its audit record.
#[derive(Debug, Clone)]
struct RunEnd {
    /// The run's storage id.
    run_id: i64,
    /// The room id as requested.
    room_id: String,
    /// The homeserver as requested.
    homeserver_url: String,
    /// Messages its committed pages stored.
    message_count: i64,
    /// Why it failed (`None`: it succeeded).
    error: Option<String>,
    /// Run by the scheduler for a watched room.
    scheduled: bool,
}

/// Appends the audit record of a run that stored pages (SUCCEEDED, or FAILED with what its
/// committed pages stored) and, when the room is stored, the outbox row; inside the caller's
/// transaction, which holds the organisation's lock. Returns the room as the caller sees it.
fn append_run_record(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    run: &IngestionRun,
    end: &RunEnd,
) -> Result<(Option<StoredRoom>, IngestionRecord)> {
    let now = now_ms();
    let room_id = end.room_id.parse::<RoomId>().ok();
    let whole_org = Gate::whole_org(&run.viewer.org);
    let stored = match &room_id {
        Some(id) => read::room(conn, &whole_org, id)?,
        None => None,
    };
    let entry = NewIngestion {
        actor: run.viewer.actor.clone(),
        org: run.viewer.org.clone(),
        room_id: end.room_id.clone(),
        homeserver_url: NewIngestion::origin_of(&end.homeserver_url),
        message_count: end.message_count,
        // Filed at the room's effective level, never below what the room is stored at: a
        // record filed at the level asked for would show a SECRET room's id to anyone
        // cleared for what was asked.
        classification: policy::merge_classification(
            stored.as_ref().map(|r| r.classification),
            run.classification,
        ),
        started_at: from_unix_ms(to_unix_ms(run.started_at))?,
        finished_at: Some(from_unix_ms(now)?),
        outcome: if end.error.is_some() { IngestionOutcome::Failed } else { IngestionOutcome::Succeeded },
        error: end.error.clone(),
        post: None,
        scheduled: end.scheduled,
        rehomed_from: None,
    };
    let events = crate::log::run_events(conn, end.run_id)?;
    let ingestion = audit::append(conn, key, &audit::sanitised(&entry)?, Some(&events))?;
    let Some(payload) = stored else {
        return Ok((None, ingestion));
    };
    // A manual run that stored nothing new may still have changed the room (its state); a
    // failed run, or a scheduled one, that stored nothing changed nothing worth a fusion update
    // (an idle watched room is not announced every interval).
    if end.message_count > 0 || (end.error.is_none() && !end.scheduled) {
        crate::outbox::insert(conn, &payload, ingestion.seq, now)?;
    }
    let room = match &room_id {
        Some(id) => read::room(conn, &Gate::of(&run.viewer), id)?,
        None => None,
    };
    Ok((room, ingestion))
}
