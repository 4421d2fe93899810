//! Audit-only appends: records that store nothing else (a failed ingestion, a note posted into
//! a room), each in its own transaction under the organisation's lock.

use argus_domain::{IngestionOutcome, IngestionRecord, NewIngestion, RoomId, from_unix_ms, policy};

use super::{now_ms, tx::in_org_transaction};
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

/// Appends a sanitised audit record that stores nothing else (a failure, a post): message count
/// 0, the homeserver's origin only, an end time. It is filed at the level of the room it names
/// when the archive holds that room higher (as a run's record is), so that a reader below the
/// room's level does not learn of it from the trail.
fn append_alone(
    conn: &mut DbConn,
    key: Option<&audit::AuditKey>,
    mut entry: NewIngestion,
) -> Result<IngestionRecord> {
    entry.homeserver_url = NewIngestion::origin_of(&entry.homeserver_url);
    entry.message_count = 0;
    if entry.finished_at.is_none() {
        entry.finished_at = Some(from_unix_ms(now_ms())?);
    }
    let org = entry.org.clone();
    in_org_transaction(conn, org.as_str(), |conn| {
        if let Ok(room_id) = entry.room_id.parse::<RoomId>()
            && let Some(key) = read::room_key(conn, &Gate::whole_org(&entry.org), &room_id)?
        {
            let stored = crate::rows::rank(key.classification)?;
            entry.classification = policy::merge_classification(Some(stored), entry.classification);
        }
        audit::append(conn, key, &entry)
    })
}
