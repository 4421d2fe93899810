//! The fusion outbox: one row per successful ingestion carrying the room as of commit, read in
//! id order by the relay, marked delivered, or parked after too many failed attempts.

//!
//! Every statement is a typed Diesel query over `schema.rs` but the update that counts a
//! failure and parks the row in one step.

use argus_domain::{OrgId, RoomId, StoredRoom, from_unix_ms, to_unix_ms};
use diesel::{
    ExpressionMethods as _, QueryDsl as _, RunQueryDsl,
    dsl::{count_star, min},
    sql_types::{BigInt, Text},
};
use time::OffsetDateTime;

use crate::{
    Error, Result,
    db::{DbConn, Sql},
    schema::outbox,
};

/// Longest delivery error kept, in characters.
const MAX_ERROR: usize = 1024;

/// One entity waiting for (or done with) delivery to the fusion platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Storage id; rows are relayed in this order.
    pub id: i64,
    /// The organisation the room belongs to.
    pub org: OrgId,
    /// The Matrix room.
    pub room_id: RoomId,
    /// The audit seq of the ingestion that produced it (increasing per organisation).
    pub version: i64,
    /// The room as of commit, counted over all its messages in that organisation.
    pub payload: StoredRoom,
    /// Failed delivery attempts so far.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the row was written.
    pub created_at: OffsetDateTime,
}

/// What a monitoring scrape shows of the outbox: rows waiting, rows given up on, and when the
/// oldest waiting row was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxGauges {
    /// Rows waiting for delivery.
    pub pending: i64,
    /// Rows parked after too many failures.
    pub parked: i64,
    /// When the oldest waiting row was written.
    pub oldest_pending: Option<OffsetDateTime>,
}

/// Counts of the outbox, and the rows that were given up on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxStatus {
    /// Rows waiting for delivery.
    pub pending: i64,
    /// Rows delivered.
    pub delivered: i64,
    /// Rows parked after too many failures.
    pub parked: i64,
    /// The parked rows, oldest first.
    pub parked_rows: Vec<OutboxRow>,
}

#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = outbox)]
struct Row {
    id: i64,
    org_id: String,
    room_id: String,
    version: i64,
    payload: String,
    attempts: i32,
    last_error: Option<String>,
    created_at: i64,
}

impl Row {
    fn into_domain(self) -> Result<OutboxRow> {
        const BAD: Error = Error::Corrupt("a stored outbox row fails validation");
        Ok(OutboxRow {
            id: self.id,
            org: self.org_id.parse().map_err(|_| BAD)?,
            room_id: self.room_id.parse().map_err(|_| BAD)?,
            version: self.version,
            payload: serde_json::from_str(&self.payload).map_err(|_| BAD)?,
            attempts: self.attempts,
            last_error: self.last_error,
            created_at: from_unix_ms(self.created_at).map_err(|_| BAD)?,
        })
    }
}

/// Writes the row of a successful ingestion (inside its transaction).
pub(crate) fn insert(conn: &mut DbConn, payload: &StoredRoom, version: i64, now: i64) -> Result<()> {
    let json = serde_json::to_string(payload).map_err(|_| Error::Corrupt("a room cannot be serialised"))?;
    diesel::insert_into(outbox::table)
        .values((
            outbox::org_id.eq(payload.org.as_str()),
            outbox::room_id.eq(payload.room_id.as_str()),
            outbox::version.eq(version),
            outbox::payload.eq(json),
            outbox::attempts.eq(0),
            outbox::created_at.eq(now),
        ))
        .execute(conn)?;
    Ok(())
}

/// Rows neither delivered nor parked, oldest first, but those of the organisations `except`.
pub(crate) fn pending(conn: &mut DbConn, limit: u32, except: &[OrgId]) -> Result<Vec<OutboxRow>> {
    let mut query =
        outbox::table.filter(outbox::delivered_at.is_null()).filter(outbox::parked_at.is_null()).into_boxed();
    if !except.is_empty() {
        query = query.filter(outbox::org_id.ne_all(except.iter().map(OrgId::as_str)));
    }
    let rows: Vec<Row> = query
        .select(<Row as diesel::SelectableHelper<_>>::as_select())
        .order(outbox::id)
        .limit(i64::from(limit))
        .load(conn)?;
    rows.into_iter().map(Row::into_domain).collect()
}

/// Marks several rows delivered in one transaction; returns how many were marked.
pub(crate) fn mark_delivered_batch(conn: &mut DbConn, ids: &[i64]) -> Result<u64> {
    let backend = conn.backend();
    use diesel::Connection;
    let now = to_unix_ms(OffsetDateTime::now_utc());
    conn.transaction(|conn| {
        let mut marked = 0u64;
        for chunk in ids.chunks(backend.max_binds() - 1) {
            let rows = diesel::update(outbox::table)
                .filter(outbox::delivered_at.is_null())
                .filter(outbox::id.eq_any(chunk))
                .set(outbox::delivered_at.eq(now))
                .execute(conn)?;
            marked += rows as u64;
        }
        Ok(marked)
    })
}

/// Counts a failed attempt; parks the row once it has failed `park_after_attempts` times.
pub(crate) fn mark_failed(conn: &mut DbConn, id: i64, error: &str, park_after_attempts: u32) -> Result<bool> {
    let backend = conn.backend();
    let error = argus_domain::NewIngestion::sanitise(error, MAX_ERROR);
    let now = to_unix_ms(OffsetDateTime::now_utc());
    let mut sql = Sql::new(backend);
    sql.push("UPDATE outbox SET attempts = attempts + 1, last_error = ").bind::<Text, _>(error);
    sql.push(", parked_at = CASE WHEN attempts + 1 >= ").bind::<BigInt, _>(i64::from(park_after_attempts));
    sql.push(" THEN ").bind::<BigInt, _>(now).push(" ELSE parked_at END WHERE id = ").bind::<BigInt, _>(id);
    sql.push(" AND delivered_at IS NULL");
    if sql.build().execute(conn)? == 0 {
        return Err(Error::NotFound);
    }
    let parked: i64 = outbox::table
        .filter(outbox::parked_at.is_not_null())
        .filter(outbox::id.eq(id))
        .count()
        .get_result(conn)?;
    Ok(parked > 0)
}

/// The outbox's gauges, in typed queries over `schema.rs` (the pending count through the
/// partial index of waiting rows).
pub(crate) fn gauges(conn: &mut DbConn) -> Result<OutboxGauges> {
    let (pending, oldest): (i64, Option<i64>) = outbox::table
        .filter(outbox::delivered_at.is_null())
        .filter(outbox::parked_at.is_null())
        .select((count_star(), min(outbox::created_at)))
        .first(conn)?;
    let parked: i64 = outbox::table
        .filter(outbox::delivered_at.is_null())
        .filter(outbox::parked_at.is_not_null())
        .count()
        .get_result(conn)?;
    let oldest_pending = oldest
        .map(from_unix_ms)
        .transpose()
        .map_err(|_| Error::Corrupt("a stored outbox row fails validation"))?;
    Ok(OutboxGauges { pending, parked, oldest_pending })
}

/// Counts by state, and the parked rows.
pub(crate) fn status(conn: &mut DbConn) -> Result<OutboxStatus> {
    let pending: i64 = outbox::table
        .filter(outbox::delivered_at.is_null())
        .filter(outbox::parked_at.is_null())
        .count()
        .get_result(conn)?;
    let delivered: i64 = outbox::table.filter(outbox::delivered_at.is_not_null()).count().get_result(conn)?;
    let rows: Vec<Row> = outbox::table
        .filter(outbox::delivered_at.is_null())
        .filter(outbox::parked_at.is_not_null())
        .select(<Row as diesel::SelectableHelper<_>>::as_select())
        .order(outbox::id)
        .load(conn)?;
    let parked_rows = rows.into_iter().map(Row::into_domain).collect::<Result<Vec<_>>>()?;
    Ok(OutboxStatus {
        pending,
        delivered,
        parked: i64::try_from(parked_rows.len()).unwrap_or(i64::MAX),
        parked_rows,
    })
}
