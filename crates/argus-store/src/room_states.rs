//! The history of a room's state: what each ingestion observed of the room (name, topic,
//! encryption, room version, retention policy, access rule, external members), appended in
//! the transaction that writes the room's row whenever it differs from the room's latest
//! history row, and read newest first through the room's gate. Rows are never updated or
//! deleted (the database refuses it); they belong to the room's row, so a room moved to
//! another homeserver keeps its history.

use argus_domain::{Page, PageRequest, RoomId, RoomMetadata, RoomSnapshot, from_unix_ms};
use diesel::{
    ExpressionMethods as _, NullableExpressionMethods as _, OptionalExtension as _, QueryDsl as _,
    RunQueryDsl as _,
};
use time::OffsetDateTime;

use crate::{
    Error, Result,
    db::DbConn,
    read::{Gate, Limited, fetch_size, page_of},
    schema::room_states,
};

/// One observed state of a room, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStateRecord {
    /// Storage id: the history's order.
    pub id: i64,
    /// The ingestion run that observed it (the `run_id` of its audit record).
    pub run_id: i64,
    /// When it was observed (the commit that wrote the room).
    pub observed_at: OffsetDateTime,
    /// `m.room.name`.
    pub name: Option<String>,
    /// `m.room.topic`.
    pub topic: Option<String>,
    /// End-to-end encrypted.
    pub encrypted: bool,
    /// Room version, retention, access rule and external members.
    pub metadata: RoomMetadata,
}

/// Position in a room's state history (newest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct RoomStateCursor {
    /// Storage id of the last state returned.
    pub id: i64,
}

impl RoomStateCursor {
    /// The position just after `state`.
    pub fn of(state: &RoomStateRecord) -> Self {
        Self { id: state.id }
    }
}

/// What is compared and kept of one observation, as stored.
#[derive(Debug, PartialEq, Eq, diesel::Queryable, diesel::Selectable, diesel::Insertable)]
#[diesel(table_name = room_states)]
struct Observed {
    name: Option<String>,
    topic: Option<String>,
    encrypted: bool,
    room_version: Option<String>,
    retention_max_lifetime_ms: Option<i64>,
    retention_min_lifetime_ms: Option<i64>,
    access_rule: Option<String>,
    external_member_count: i64,
}

impl Observed {
    /// What `snapshot` says of the room, in the form the room's row stores it.
    fn of(snapshot: &RoomSnapshot) -> Self {
        let meta = &snapshot.metadata;
        let retention = meta.retention.unwrap_or_default();
        let lifetime = |ms: Option<u64>| ms.and_then(|ms| i64::try_from(ms).ok());
        Self {
            name: snapshot.name.clone(),
            topic: snapshot.topic.clone(),
            encrypted: snapshot.encrypted,
            room_version: meta.room_version.clone(),
            retention_max_lifetime_ms: lifetime(retention.max_lifetime_ms),
            retention_min_lifetime_ms: lifetime(retention.min_lifetime_ms),
            access_rule: meta.access_rule.clone(),
            external_member_count: i64::from(meta.external_member_count),
        }
    }
}

/// Appends what `snapshot` says of room `room_pk` of `org`, observed by run `run_id` at `now`
/// (UTC ms), when it differs from the room's latest history row or the room has none; inside
/// the caller's transaction (the one that writes the room's row). Returns whether a row was
/// appended.
pub(crate) fn record(
    conn: &mut DbConn,
    org: &str,
    room_pk: i64,
    run_id: i64,
    snapshot: &RoomSnapshot,
    now: i64,
) -> Result<bool> {
    let observed = Observed::of(snapshot);
    let latest: Option<Observed> = room_states::table
        .filter(room_states::org_id.eq(org))
        .filter(room_states::room_pk.eq(room_pk))
        .order(room_states::id.desc())
        .select(<Observed as diesel::SelectableHelper<_>>::as_select())
        .first(conn)
        .optional()?;
    if latest.as_ref() == Some(&observed) {
        return Ok(false);
    }
    diesel::insert_into(room_states::table)
        .values((
            room_states::org_id.eq(org),
            room_states::room_pk.eq(room_pk),
            room_states::run_id.eq(run_id),
            room_states::observed_at.eq(now),
            observed,
        ))
        .execute(conn)?;
    Ok(true)
}

/// A history row with its place and time.
#[derive(Debug, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = room_states)]
struct HistoryRow {
    id: i64,
    run_id: i64,
    observed_at: i64,
    #[diesel(embed)]
    observed: Observed,
}

impl HistoryRow {
    fn into_domain(self) -> Result<RoomStateRecord> {
        const BAD: Error = Error::Corrupt("a stored room state fails validation");
        let o = self.observed;
        Ok(RoomStateRecord {
            id: self.id,
            run_id: self.run_id,
            observed_at: from_unix_ms(self.observed_at).map_err(|_| BAD)?,
            name: o.name,
            topic: o.topic,
            encrypted: o.encrypted,
            metadata: RoomMetadata {
                room_version: o.room_version,
                retention: argus_domain::Retention::from_stored(
                    o.retention_max_lifetime_ms,
                    o.retention_min_lifetime_ms,
                ),
                access_rule: o.access_rule,
                external_member_count: u32::try_from(o.external_member_count).map_err(|_| BAD)?,
            },
        })
    }
}

/// The state history of the room `room_id` when the gate lets the room through (its
/// organisation and clearance, checked in the statement), newest first; an empty page when the
/// room is absent or withheld (the two look alike).
pub(crate) fn history(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    page: &PageRequest<RoomStateCursor>,
) -> Result<Page<RoomStateRecord>> {
    let (wanted, limit) = fetch_size(page.first);
    let of_room = || {
        room_states::table
            .filter(room_states::org_id.eq(gate.org()))
            .filter(room_states::room_pk.nullable().eq(gate.room_pk(room_id).single_value()))
            .into_boxed()
    };
    let mut query = of_room();
    if let Some(after) = &page.after {
        query = query.filter(room_states::id.lt(after.id));
    }
    let query =
        query.select(<HistoryRow as diesel::SelectableHelper<_>>::as_select()).order(room_states::id.desc());
    let rows: Vec<HistoryRow> = Limited { query, limit }.load(conn)?;
    let items = rows.into_iter().map(HistoryRow::into_domain).collect::<Result<Vec<_>>>()?;
    let total: i64 = of_room().count().get_result(conn)?;
    Ok(page_of(items, wanted, total))
}
