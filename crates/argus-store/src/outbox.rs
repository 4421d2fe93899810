//! The fusion outbox: one row per successful ingestion carrying the room as of commit, read in
//! id order by the relay, marked delivered, or parked after too many failed attempts.

use argus_domain::{OrgId, RoomId, StoredRoom, from_unix_ms, to_unix_ms};
use diesel::{
    QueryableByName, RunQueryDsl,
    sql_types::{BigInt, Text},
};
use time::OffsetDateTime;

use crate::{
    Backend, Error, Result,
    db::{DbConn, Sql},
    rows::Count,
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

#[derive(Debug, QueryableByName)]
#[diesel(table_name = crate::schema::outbox)]
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
pub(crate) fn insert(
    conn: &mut DbConn,
    backend: Backend,
    payload: &StoredRoom,
    version: i64,
    now: i64,
) -> Result<()> {
    let json = serde_json::to_string(payload).map_err(|_| Error::Corrupt("a room cannot be serialised"))?;
    let mut sql = Sql::new(backend);
    sql.push("INSERT INTO outbox (org_id, room_id, version, payload, attempts, created_at) VALUES (");
    sql.bind::<Text, _>(payload.org.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(payload.room_id.as_str().to_owned()).push(", ");
    sql.bind::<BigInt, _>(version).push(", ");
    sql.bind::<Text, _>(json).push(", 0, ");
    sql.bind::<BigInt, _>(now).push(")");
    sql.build().execute(conn)?;
    Ok(())
}

fn load(conn: &mut DbConn, sql: Sql<'_>) -> Result<Vec<OutboxRow>> {
    let rows: Vec<Row> = sql.build().load(conn)?;
    rows.into_iter().map(Row::into_domain).collect()
}

/// Rows neither delivered nor parked, oldest first.
pub(crate) fn pending(
    conn: &mut DbConn,
    backend: Backend,
    limit: u32,
    except: &[OrgId],
) -> Result<Vec<OutboxRow>> {
    let mut sql = Sql::new(backend);
    sql.push("SELECT o.* FROM outbox o WHERE o.delivered_at IS NULL AND o.parked_at IS NULL");
    if !except.is_empty() {
        sql.push(" AND o.org_id NOT IN (");
        for (i, org) in except.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind::<Text, _>(org.as_str().to_owned());
        }
        sql.push(")");
    }
    sql.push(" ORDER BY o.id LIMIT ");
    sql.bind::<BigInt, _>(i64::from(limit));
    load(conn, sql)
}

/// Marks several rows delivered in one transaction; returns how many were marked.
pub(crate) fn mark_delivered_batch(conn: &mut DbConn, backend: Backend, ids: &[i64]) -> Result<u64> {
    use diesel::Connection;
    let now = to_unix_ms(OffsetDateTime::now_utc());
    conn.transaction(|conn| {
        let mut marked = 0u64;
        for chunk in ids.chunks(backend.max_binds() - 1) {
            let mut sql = Sql::new(backend);
            sql.push("UPDATE outbox SET delivered_at = ").bind::<BigInt, _>(now);
            sql.push(" WHERE delivered_at IS NULL AND id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind::<BigInt, _>(*id);
            }
            sql.push(")");
            marked += sql.build().execute(conn)? as u64;
        }
        Ok(marked)
    })
}

/// Counts a failed attempt; parks the row once it has failed `park_after_attempts` times.
pub(crate) fn mark_failed(
    conn: &mut DbConn,
    backend: Backend,
    id: i64,
    error: &str,
    park_after_attempts: u32,
) -> Result<bool> {
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
    let mut check = Sql::new(backend);
    check.push("SELECT COUNT(*) AS n FROM outbox o WHERE o.parked_at IS NOT NULL AND o.id = ");
    check.bind::<BigInt, _>(id);
    Ok(check.build().get_result::<Count>(conn)?.n > 0)
}

/// The outbox's gauges, in typed queries over `schema.rs` (the pending count through the
/// partial index of waiting rows).
pub(crate) fn gauges(conn: &mut DbConn) -> Result<OutboxGauges> {
    use diesel::{ExpressionMethods as _, QueryDsl as _, dsl::count_star, dsl::min};

    use crate::schema::outbox;
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

#[derive(Debug, QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    pending: i64,
    #[diesel(sql_type = BigInt)]
    delivered: i64,
    #[diesel(sql_type = BigInt)]
    parked: i64,
}

/// Counts by state, and the parked rows.
pub(crate) fn status(conn: &mut DbConn, backend: Backend) -> Result<OutboxStatus> {
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT CAST(COALESCE(SUM(CASE WHEN o.delivered_at IS NULL AND o.parked_at IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS pending, \
         CAST(COALESCE(SUM(CASE WHEN o.delivered_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS delivered, \
         CAST(COALESCE(SUM(CASE WHEN o.delivered_at IS NULL AND o.parked_at IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) AS parked \
         FROM outbox o",
    );
    let counts: Counts = sql.build().get_result(conn)?;
    let mut rows = Sql::new(backend);
    rows.push(
        "SELECT o.* FROM outbox o WHERE o.delivered_at IS NULL AND o.parked_at IS NOT NULL ORDER BY o.id",
    );
    Ok(OutboxStatus {
        pending: counts.pending,
        delivered: counts.delivered,
        parked: counts.parked,
        parked_rows: load(conn, rows)?,
    })
}
