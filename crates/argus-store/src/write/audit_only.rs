//! Audit-only appends: records that store nothing else (a failed ingestion, a note posted into
//! a room), each in its own transaction under the organisation's lock; and the record of a room
//! moved to another homeserver, appended in the transaction that moves it.

use argus_domain::{
    ActorId, HomeserverUrl, IngestionOutcome, IngestionRecord, NewIngestion, OrgId, RoomId, from_unix_ms,
    policy,
};

use super::{
    now_ms, rooms,
    tx::{in_org_transaction, in_room_and_org_transaction},
};
use crate::{
    Error, Result, audit,
    db::DbConn,
    read::{self, Gate},
};

/// Appends a FAILED audit record (message count 0), and nothing else.
pub(crate) fn record_failure(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    entry: &NewIngestion,
) -> Result<IngestionRecord> {
    let mut entry = audit::sanitised(entry)?;
    entry.outcome = IngestionOutcome::Failed;
    append_alone(conn, key, entry)
}

/// Appends the audit record of a note posted into a room (sent or refused): filed, like
/// [`record_failure`], at the level of the room it names.
pub(crate) fn record_post(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    entry: &NewIngestion,
) -> Result<IngestionRecord> {
    if entry.post.is_none() {
        return Err(Error::invalid("audit record", "a post record needs its evidence"));
    }
    append_alone(conn, key, audit::sanitised(entry)?)
}

/// Moves a stored room of `org` to `homeserver` ([`rooms::rehome`]) and appends the REHOME
/// record naming the homeserver it leaves and the one it answers to from now on (both as
/// `scheme://host[:port]`), filed at the room's level, in one transaction holding the room's
/// lock (no commit of its pages meanwhile) and the organisation's. `None` when `org` holds no
/// such room: nothing is written.
pub(crate) fn record_rehome(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    actor: &ActorId,
    org: &OrgId,
    room_id: &RoomId,
    homeserver: &HomeserverUrl,
) -> Result<Option<IngestionRecord>> {
    let now = from_unix_ms(now_ms())?;
    in_room_and_org_transaction(conn, org.as_str(), room_id.as_str(), |conn| {
        let Some(moved) = rooms::rehome(conn, org, room_id, homeserver)? else {
            return Ok(None);
        };
        let entry = NewIngestion {
            actor: actor.clone(),
            org: org.clone(),
            room_id: room_id.as_str().to_owned(),
            homeserver_url: homeserver.as_str().to_owned(),
            message_count: 0,
            classification: moved.classification,
            started_at: now,
            finished_at: Some(now),
            outcome: IngestionOutcome::Succeeded,
            error: None,
            post: None,
            scheduled: false,
            rehomed_from: Some(NewIngestion::origin_of(moved.from.as_str())),
        };
        append_within(conn, key, audit::sanitised(&entry)?).map(Some)
    })
}

/// Appends a sanitised audit record that stores nothing else (a failure, a post) in its own
/// transaction, under the organisation's lock ([`append_within`]).
fn append_alone(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    entry: NewIngestion,
) -> Result<IngestionRecord> {
    let org = entry.org.clone();
    in_org_transaction(conn, org.as_str(), |conn| append_within(conn, key, entry))
}

/// Appends a sanitised audit record that stores nothing else inside the caller's transaction,
/// which holds the organisation's lock: message count 0, the homeserver's origin only, an end
/// time. It is filed at the level of the room it names when the archive holds that room higher
/// (as a run's record is), so that a reader below the room's level does not learn of it from
/// the trail.
fn append_within(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    mut entry: NewIngestion,
) -> Result<IngestionRecord> {
    entry.homeserver_url = NewIngestion::origin_of(&entry.homeserver_url);
    entry.message_count = 0;
    if entry.finished_at.is_none() {
        entry.finished_at = Some(from_unix_ms(now_ms())?);
    }
    if let Ok(room_id) = entry.room_id.parse::<RoomId>()
        && let Some(key) = read::room_key(conn, &Gate::whole_org(&entry.org), &room_id)?
    {
        let stored = crate::rows::rank(key.classification)?;
        entry.classification = policy::merge_classification(Some(stored), entry.classification);
    }
    audit::append(conn, key, &entry, None)
}
