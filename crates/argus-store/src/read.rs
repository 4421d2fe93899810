//! Reads on behalf of a viewer. Every statement here is built on [`Gate`], the one place that
//! writes `org_id = :org AND classification <= :clearance`; nothing else decides the tenant.
//! The gate also decides whether content held under legal hold is read at all: only for a
//! viewer with `tchap:redacted` ([`Gate::held_columns`]).

use argus_domain::{
    Classification, HeldContent, IngestionRecord, MessageVersion, OrgId, Page, PageRequest, RoomId, Scope,
    Stats, StoredMessage, StoredRoom, Viewer, policy, to_unix_ms,
};
use std::collections::HashMap;

use diesel::{
    BoolExpressionMethods as _, ExpressionMethods as _, NullableExpressionMethods as _, QueryDsl as _,
    RunQueryDsl,
    sql_types::{BigInt, Nullable, SmallInt, Text},
};

use crate::{
    Backend, IngestionCursor, MessageCursor, Result, RoomCursor,
    db::{DbConn, MultiBackend, Sql},
    rows::{HeldRow, IngestionRow, MessageRow, RedactionRow, RoomKey, RoomRow, VersionRow},
    schema::{message_counts, messages, rooms},
};

/// The most items one page returns, whatever the caller asks for.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Follows a bound `LIMIT`: SQLite plans with the value of a bare `LIMIT ?` and then re-prepares
/// the statement whenever a new value is bound, i.e. on every call, which defeats the statement
/// cache; an expression keeps the plan independent of the value.
pub(crate) const LIMIT_NOT_PLANNED: &str = " + 0";

/// Sort key of rooms that have no visible message: below every real timestamp.
const NO_ACTIVITY: i64 = i64::MIN;

/// The tenant and clearance filter every read applies.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    org: String,
    clearance: i16,
    /// The viewer holds `tchap:redacted`: content held under legal hold is read for them.
    held: bool,
    /// The viewer holds `tchap:audit`: the organisation's trails (the access journal) are read
    /// for them.
    audit: bool,
}

impl Gate {
    /// What `viewer` may see.
    pub(crate) fn of(viewer: &Viewer) -> Self {
        Self {
            org: viewer.org.as_str().to_owned(),
            clearance: viewer.clearance.rank(),
            held: viewer.has_scope(Scope::Redacted),
            audit: viewer.has_scope(Scope::Audit),
        }
    }

    /// Everything of one organisation, whatever its classification: the writer's lookup of the
    /// room it records, and the fusion payload. Never content held under legal hold.
    pub(crate) fn whole_org(org: &OrgId) -> Self {
        Self {
            org: org.as_str().to_owned(),
            clearance: Classification::TopSecret.rank(),
            held: false,
            audit: false,
        }
    }

    /// Everything of one organisation with the content held under legal hold: what the writer
    /// reads to hash the versions a run stored as they were captured
    /// ([`crate::log`]); never returned to a reader.
    pub(crate) fn sealing(org: &str) -> Self {
        Self { org: org.to_owned(), clearance: Classification::TopSecret.rank(), held: true, audit: false }
    }

    /// Whether the viewer may read the organisation's trails (`tchap:audit`): a read of the
    /// access journal for anyone else returns nothing.
    pub(crate) fn reads_trails(&self) -> bool {
        self.audit
    }

    /// Appends `alias.column AS column` for each column of content held under legal hold when
    /// the viewer holds `tchap:redacted`, `CAST(NULL AS TEXT) AS column` otherwise: the one
    /// place that decides whether held content leaves the database.
    pub(crate) fn held_columns(&self, sql: &mut Sql<'_>, alias: &str, columns: &[&str]) {
        for (i, column) in columns.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            if self.held {
                sql.push(alias).push(".").push(column);
            } else {
                sql.push("CAST(NULL AS TEXT)");
            }
            sql.push(" AS ").push(column);
        }
    }

    /// The organisation the gate lets through: the full-text search also requires it inside
    /// the index ([`crate::search`]).
    pub(crate) fn org(&self) -> &str {
        &self.org
    }

    /// Appends `alias.org_id = :org AND alias.classification <= :clearance`.
    pub(crate) fn apply(&self, sql: &mut Sql<'_>, alias: &str) {
        sql.push(alias).push(".org_id = ").bind::<Text, _>(self.org.clone());
        sql.push(" AND ").push(alias).push(".classification <= ").bind::<SmallInt, _>(self.clearance);
    }

    /// Appends the gate of watches: `alias.org_id = :org AND alias.classification <=
    /// :clearance`, and no stored room of the watch's above the clearance (a watch never shows
    /// a room the viewer may not see).
    pub(crate) fn apply_watch(&self, sql: &mut Sql<'_>, alias: &str) {
        self.apply(sql, alias);
        sql.push(" AND NOT ");
        self.push_withheld_room(sql, &format!("{alias}.org_id"), &format!("{alias}.room_id"));
    }

    /// Appends `EXISTS (…)`: true when the room `room` (an SQL expression) is stored in the
    /// organisation `org` (an SQL expression) above the clearance. What refers to rooms without
    /// carrying their level (a watch's room, an account watch's followed rooms) is kept from
    /// showing a withheld room by `NOT` this.
    pub(crate) fn push_withheld_room(&self, sql: &mut Sql<'_>, org: &str, room: &str) {
        sql.push("EXISTS (SELECT 1 FROM rooms gr WHERE gr.org_id = ").push(org);
        sql.push(" AND gr.room_id = ").push(room).push(" AND gr.classification > ");
        sql.bind::<SmallInt, _>(self.clearance).push(")");
    }

    /// Which of `room_ids` the organisation stores above the clearance (the rooms listed by an
    /// account watch that a viewer must not be shown).
    pub(crate) fn withheld_rooms(
        &self,
        conn: &mut DbConn,
        room_ids: &[&str],
    ) -> Result<std::collections::HashSet<String>> {
        let mut withheld = std::collections::HashSet::new();
        for chunk in room_ids.chunks(1_000) {
            let found: Vec<String> = rooms::table
                .filter(rooms::org_id.eq(&self.org))
                .filter(rooms::classification.gt(self.clearance))
                .filter(rooms::room_id.eq_any(chunk))
                .select(rooms::room_id)
                .load(conn)?;
            withheld.extend(found);
        }
        Ok(withheld)
    }

    /// The rooms the gate lets through, as a typed query (the columns are checked by the
    /// compiler).
    fn rooms(&self) -> rooms::BoxedQuery<'_, MultiBackend> {
        rooms::table
            .filter(rooms::org_id.eq(&self.org))
            .filter(rooms::classification.le(self.clearance))
            .into_boxed()
    }

    /// The messages the gate lets through, as a typed query.
    fn messages(&self) -> messages::BoxedQuery<'_, MultiBackend> {
        messages::table
            .filter(messages::org_id.eq(&self.org))
            .filter(messages::classification.le(self.clearance))
            .into_boxed()
    }

    /// The message counts the gate lets through, as a typed query.
    fn message_counts(&self) -> message_counts::BoxedQuery<'_, MultiBackend> {
        message_counts::table
            .filter(message_counts::org_id.eq(&self.org))
            .filter(message_counts::classification.le(self.clearance))
            .into_boxed()
    }

    /// The audit records the gate lets through, as a typed query.
    pub(crate) fn ingestions(&self) -> crate::schema::ingestions::BoxedQuery<'_, MultiBackend> {
        use crate::schema::ingestions;
        ingestions::table
            .filter(ingestions::org_id.eq(&self.org))
            .filter(ingestions::classification.le(self.clearance))
            .into_boxed()
    }

    /// The storage id of the room `room_id` when the gate lets it through, as a subquery (NULL
    /// otherwise).
    pub(crate) fn room_pk<'a>(&'a self, room_id: &'a RoomId) -> rooms::BoxedQuery<'a, MultiBackend, BigInt> {
        self.rooms().filter(rooms::room_id.eq(room_id.as_str())).select(rooms::id)
    }

    /// The visible messages of the room `room_id`, when the room is visible.
    fn messages_of_room<'a>(&'a self, room_id: &'a RoomId) -> messages::BoxedQuery<'a, MultiBackend> {
        self.messages().filter(messages::room_pk.nullable().eq(self.room_pk(room_id).single_value()))
    }

    /// The visible message counts of the room `room_id`, when the room is visible.
    fn counts_of_room<'a>(&'a self, room_id: &'a RoomId) -> message_counts::BoxedQuery<'a, MultiBackend> {
        self.message_counts()
            .filter(message_counts::room_pk.nullable().eq(self.room_pk(room_id).single_value()))
    }

    /// Appends `alias.org_id = :org AND alias.message_pk IN (ids)`, for rows that belong to
    /// messages (versions, redactions) and carry no classification of their own: `ids` are those
    /// of messages this gate let through, and the organisation is checked on the rows too.
    pub(crate) fn apply_to_messages(&self, sql: &mut Sql<'_>, alias: &str, ids: &[i64]) {
        sql.push(alias).push(".org_id = ").bind::<Text, _>(self.org.clone());
        sql.push(" AND ").push(alias).push(".message_pk IN ");
        push_ids(sql, ids);
    }

    /// `SELECT` of the content held under legal hold of the messages `ids` (messages this gate
    /// let through, redacted after their capture), through the gate again; `None` when the
    /// viewer may not read held content (nothing is then read at all).
    fn held_messages<'a>(&self, backend: Backend, ids: &[i64]) -> Option<Sql<'a>> {
        if !self.held || ids.is_empty() {
            return None;
        }
        let mut sql = Sql::new(backend);
        sql.push("SELECT m.id, ");
        self.held_columns(&mut sql, "m", &["held_body", "held_media"]);
        sql.push(" FROM messages m WHERE ");
        self.apply(&mut sql, "m");
        sql.push(" AND m.id IN ");
        push_ids(&mut sql, ids);
        sql.push(" AND (m.held_body IS NOT NULL OR m.held_media IS NOT NULL)");
        Some(sql)
    }

    /// `SELECT` of the visible rooms with their visible message counts and newest visible
    /// message time; callers wrap it as `(...) t`. With `room_id`, only that room, found as
    /// [`push_rooms`] finds it.
    ///
    /// `Shape::One` counts per room with correlated subqueries (cheap for one room);
    /// `Shape::All` aggregates the organisation's visible messages in one pass (cheap for all,
    /// on PostgreSQL).
    fn rooms_select(&self, sql: &mut Sql<'_>, shape: Shape, room_id: Option<&RoomId>) {
        const ROOM_COLUMNS: &str = "SELECT r.id, r.org_id, r.room_id, r.homeserver_url, r.name, r.topic, \
             r.canonical_alias, r.member_count, r.encrypted, r.classification, r.first_seen_at, \
             r.last_ingested_at, r.resume_token, r.backfill_token, r.history_complete, \
             r.predecessor_room_id, r.successor_room_id, r.room_version, r.retention_max_lifetime_ms, \
             r.retention_min_lifetime_ms, r.access_rule, r.external_member_count, r.history_since, ";
        sql.push(ROOM_COLUMNS);
        // Whether an active watch the reader may see keeps the room (one above their clearance
        // is not told).
        sql.push("EXISTS (SELECT 1 FROM watches w WHERE ");
        self.apply(sql, "w");
        sql.push(" AND w.room_id = r.room_id AND w.status = 'ACTIVE') AS watched, ");
        // SQLite runs the correlated form fastest either way (measured in the store benchmark);
        // PostgreSQL prefers one aggregate pass when every room is wanted.
        let shape = if sql.backend() == Backend::Sqlite { Shape::One } else { shape };
        match shape {
            Shape::One => {
                sql.push("(SELECT COUNT(*) FROM messages m WHERE ");
                self.apply(sql, "m");
                sql.push(
                    " AND m.room_pk = r.id) AS message_count, (SELECT MAX(m.sent_at) FROM messages m WHERE ",
                );
                self.apply(sql, "m");
                sql.push(" AND m.room_pk = r.id) AS last_activity FROM ");
                push_rooms(sql, room_id.is_some());
                sql.push(" WHERE ");
            }
            Shape::All => {
                sql.push(
                    "COALESCE(a.message_count, 0) AS message_count, a.last_activity AS last_activity FROM ",
                );
                push_rooms(sql, room_id.is_some());
                sql.push(
                    " LEFT JOIN (SELECT m.room_pk, COUNT(*) AS message_count, \
                     MAX(m.sent_at) AS last_activity FROM messages m WHERE ",
                );
                self.apply(sql, "m");
                sql.push(" GROUP BY m.room_pk) a ON a.room_pk = r.id WHERE ");
            }
        }
        self.apply(sql, "r");
        if let Some(room_id) = room_id {
            sql.push(" AND r.room_id = ").bind::<Text, _>(room_id.as_str().to_owned());
        }
    }
}

/// Appends `(:id, :id, …)`.
pub(crate) fn push_ids(sql: &mut Sql<'_>, ids: &[i64]) {
    sql.push("(");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.bind::<BigInt, _>(*id);
    }
    sql.push(")");
}

/// Appends `rooms r`; for a lookup by Matrix room id (`by_room_id`), through
/// `rooms_gate_lookup` (`org_id, room_id, classification`): the gate's classification is then
/// checked inside the index, so a room above the reader's clearance is rejected where a missing
/// one is not found, without reading its row, and the two take the same time. PostgreSQL's
/// planner picks that index by itself; SQLite prefers the unique `(org_id, room_id)` key and is
/// told.
fn push_rooms(sql: &mut Sql<'_>, by_room_id: bool) {
    sql.push("rooms r");
    if by_room_id && sql.backend() == Backend::Sqlite {
        sql.push(" INDEXED BY rooms_gate_lookup");
    }
}

/// How [`Gate::rooms_select`] computes per-room figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One room (or a handful).
    One,
    /// Every visible room.
    All,
}

/// Clamps a page size and returns how many rows to fetch (one more, to learn `has_next_page`).
pub(crate) fn fetch_size(first: u32) -> (usize, i64) {
    let n = first.min(MAX_PAGE_SIZE);
    (n as usize, i64::from(n) + 1)
}

pub(crate) fn page_of<T>(mut items: Vec<T>, wanted: usize, total_count: i64) -> Page<T> {
    let has_next_page = items.len() > wanted;
    items.truncate(wanted);
    Page { items, has_next_page, total_count }
}

/// Visible rooms, most recent activity first (the caller reads page and count in one snapshot).
pub(crate) fn rooms(
    conn: &mut DbConn,
    gate: &Gate,
    page: &PageRequest<RoomCursor>,
) -> Result<Page<StoredRoom>> {
    let backend = conn.backend();
    let (wanted, limit) = fetch_size(page.first);
    let mut sql = Sql::new(backend);
    sql.push("SELECT * FROM (");
    gate.rooms_select(&mut sql, Shape::All, None);
    sql.push(") t");
    if let Some(after) = &page.after {
        let key = after.last_activity_ms.unwrap_or(NO_ACTIVITY);
        sql.push(" WHERE COALESCE(t.last_activity, ").bind::<BigInt, _>(NO_ACTIVITY).push(") < ");
        sql.bind::<BigInt, _>(key);
        sql.push(" OR (COALESCE(t.last_activity, ").bind::<BigInt, _>(NO_ACTIVITY).push(") = ");
        sql.bind::<BigInt, _>(key).push(" AND t.id < ").bind::<BigInt, _>(after.id).push(")");
    }
    sql.push(" ORDER BY COALESCE(t.last_activity, ").bind::<BigInt, _>(NO_ACTIVITY);
    sql.push(") DESC, t.id DESC LIMIT ").bind::<BigInt, _>(limit).push(LIMIT_NOT_PLANNED);
    let rows: Vec<RoomRow> = sql.build_cached().load(conn)?;
    let items = rows.into_iter().map(RoomRow::into_domain).collect::<Result<Vec<_>>>()?;

    let total: i64 = gate.rooms().count().get_result(conn)?;
    Ok(page_of(items, wanted, total))
}

/// One visible room, or `None` when it is absent or withheld.
pub(crate) fn room(conn: &mut DbConn, gate: &Gate, room_id: &RoomId) -> Result<Option<StoredRoom>> {
    let backend = conn.backend();
    let mut sql = Sql::new(backend);
    gate.rooms_select(&mut sql, Shape::One, Some(room_id));
    let row: Option<RoomRow> = sql.build_cached().load(conn)?.into_iter().next();
    row.map(RoomRow::into_domain).transpose()
}

/// Storage id and classification of a room the gate lets through (with [`Gate::whole_org`],
/// the room the writer's organisation holds, whatever its classification).
pub(crate) fn room_key(conn: &mut DbConn, gate: &Gate, room_id: &RoomId) -> Result<Option<RoomKey>> {
    let backend = conn.backend();
    let mut sql = Sql::new(backend);
    sql.push("SELECT r.id, r.classification, r.homeserver_url FROM ");
    push_rooms(&mut sql, true);
    sql.push(" WHERE ");
    gate.apply(&mut sql, "r");
    sql.push(" AND r.room_id = ").bind::<Text, _>(room_id.as_str().to_owned());
    Ok(sql.build_cached().load(conn)?.into_iter().next())
}

/// `CAST(SUM(expr) AS BIGINT)`: a sum of BIGINT counts as a BIGINT on both engines
/// (PostgreSQL's `SUM` of BIGINT is NUMERIC). Unlike a raw SQL fragment, which Diesel never
/// keeps prepared, a statement holding it stays in the connection's statement cache.
#[derive(Debug, Clone, Copy, diesel::query_builder::QueryId)]
struct SumOfCounts<E>(E);

impl<E> diesel::Expression for SumOfCounts<E>
where
    E: diesel::Expression<SqlType = BigInt>,
{
    type SqlType = Nullable<BigInt>;
}

impl<E, QS> diesel::AppearsOnTable<QS> for SumOfCounts<E> where
    E: diesel::AppearsOnTable<QS> + diesel::Expression<SqlType = BigInt>
{
}

impl<E, QS> diesel::SelectableExpression<QS> for SumOfCounts<E> where
    E: diesel::SelectableExpression<QS> + diesel::Expression<SqlType = BigInt>
{
}

impl<E, GB> diesel::expression::ValidGrouping<GB> for SumOfCounts<E> {
    type IsAggregate = diesel::expression::is_aggregate::Yes;
}

impl<E: diesel::query_builder::QueryFragment<MultiBackend>> diesel::query_builder::QueryFragment<MultiBackend>
    for SumOfCounts<E>
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, MultiBackend>,
    ) -> diesel::QueryResult<()> {
        out.push_sql("CAST(SUM(");
        self.0.walk_ast(out.reborrow())?;
        out.push_sql(") AS BIGINT)");
        Ok(())
    }
}

/// A typed query followed by `LIMIT ? + 0` (see [`LIMIT_NOT_PLANNED`]): SQLite re-prepares a
/// statement whose bare `LIMIT ?` is bound again, which Diesel's own `.limit()` gives.
#[derive(Debug)]
pub(crate) struct Limited<Q> {
    pub(crate) query: Q,
    pub(crate) limit: i64,
}

impl<Q: diesel::query_builder::Query> diesel::query_builder::Query for Limited<Q> {
    type SqlType = Q::SqlType;
}

impl<Q> diesel::query_builder::QueryId for Limited<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: diesel::query_builder::QueryFragment<MultiBackend>> diesel::query_builder::QueryFragment<MultiBackend>
    for Limited<Q>
{
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, MultiBackend>,
    ) -> diesel::QueryResult<()> {
        self.query.walk_ast(out.reborrow())?;
        out.push_sql(" LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.limit)?;
        out.push_sql(LIMIT_NOT_PLANNED);
        Ok(())
    }
}

impl<Q, C> RunQueryDsl<C> for Limited<Q> {}

/// The rows of a page of a room's messages, each with the room's count, in one typed statement
/// (so in one snapshot on either engine): the room's storage id and the count are subqueries
/// through the gate.
fn page_rows(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    page: &PageRequest<MessageCursor>,
) -> Result<Vec<(MessageRow, Option<i64>)>> {
    let (_, limit) = fetch_size(page.first);
    let total =
        gate.counts_of_room(room_id).select(SumOfCounts(message_counts::message_count)).single_value();
    let mut query = gate.messages_of_room(room_id);
    if let Some(after) = &page.after {
        query = query.filter(
            messages::sent_at
                .gt(after.sent_at_ms)
                .or(messages::sent_at.eq(after.sent_at_ms).and(messages::id.gt(after.id))),
        );
    }
    let query = query
        .select((<MessageRow as diesel::SelectableHelper<_>>::as_select(), total))
        .order((messages::sent_at, messages::id));
    Ok(Limited { query, limit }.load(conn)?)
}

/// A page of plain messages and the room's count from [`page_rows`] alone, with no transaction
/// around it. `None` when that does not answer the whole request: an empty page (a missing,
/// withheld or empty room, or a cursor past the end: the count then needs its own statement) or
/// a page with edited or redacted messages (their versions and redactions are further
/// statements). The caller then reads in one read transaction ([`messages`]).
pub(crate) fn messages_in_one_statement(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    page: &PageRequest<MessageCursor>,
) -> Result<Option<Page<StoredMessage>>> {
    let (wanted, _) = fetch_size(page.first);
    let rows = page_rows(conn, gate, room_id, page)?;
    let total_count = match rows.first() {
        Some((_, total)) => total.unwrap_or(0),
        None => return Ok(None),
    };
    if rows.iter().any(|(m, _)| m.edited || m.redacted || m.media.is_some()) {
        return Ok(None);
    }
    let items = rows.into_iter().map(|(r, _)| r.into_domain(room_id)).collect::<Result<Vec<_>>>()?;
    Ok(Some(page_of(items, wanted, total_count)))
}

/// Visible messages of a visible room, oldest first, with their versions and redactions (the
/// caller reads the page, its count and its evidence in one snapshot).
pub(crate) fn messages(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    page: &PageRequest<MessageCursor>,
) -> Result<Page<StoredMessage>> {
    let (wanted, _) = fetch_size(page.first);
    let rows = page_rows(conn, gate, room_id, page)?;
    let total_count = match rows.first() {
        Some((_, total)) => total.unwrap_or(0),
        // No row to carry the count: the stored per-classification counts (0 for a room that is
        // missing or withheld), at most five rows whatever the room's size.
        None => gate
            .counts_of_room(room_id)
            .select(SumOfCounts(message_counts::message_count))
            .get_result::<Option<i64>>(conn)?
            .unwrap_or(0),
    };
    let mut items = rows.into_iter().map(|(r, _)| r.into_domain(room_id)).collect::<Result<Vec<_>>>()?;
    attach_evidence(conn, gate, &mut items)?;
    Ok(page_of(items, wanted, total_count))
}

/// The most versions of one message a read returns: the original and the newest edits.
pub const MAX_VERSIONS_READ: i64 = 100;

/// Loads the versions of the edited messages among `items` (messages the gate let through),
/// the redaction of the redacted ones and, for a viewer with `tchap:redacted`, what is held of
/// them under legal hold, one statement each; nothing is read when none was edited or redacted.
/// (The IN lists vary in length: not statements to keep prepared.)
pub(crate) fn attach_evidence(conn: &mut DbConn, gate: &Gate, items: &mut [StoredMessage]) -> Result<()> {
    let backend = conn.backend();
    let edited: Vec<i64> = items.iter().filter(|m| m.message.edited).map(|m| m.id).collect();
    let redacted: Vec<i64> = items.iter().filter(|m| m.message.redacted).map(|m| m.id).collect();
    let mut versions: HashMap<i64, Vec<MessageVersion>> = HashMap::new();
    let mut held: HashMap<i64, HeldContent> = HashMap::new();
    if !edited.is_empty() {
        let mut sql = Sql::new(backend);
        // At most MAX_VERSIONS_READ per message: the original and the newest edits (a sender who
        // edits a message a hundred thousand times must not make every page of its room load
        // them all).
        sql.push("SELECT t.message_pk, t.event_id, t.sender, t.sent_at, t.msgtype, t.body, ");
        gate.held_columns(&mut sql, "t", &["held_msgtype", "held_body"]);
        sql.push(
            " FROM (SELECT v.*, \
             ROW_NUMBER() OVER (PARTITION BY v.message_pk ORDER BY v.sent_at DESC, v.id DESC) AS newest \
             FROM message_versions v WHERE ",
        );
        gate.apply_to_messages(&mut sql, "v", &edited);
        // The original is the version carried by the message's own event, whatever its time.
        sql.push(
            ") t WHERE t.event_id = (SELECT m.event_id FROM messages m WHERE m.id = t.message_pk) OR t.newest < ",
        )
        .bind::<BigInt, _>(MAX_VERSIONS_READ);
        sql.push(" ORDER BY t.message_pk, t.sent_at, t.id");
        for row in sql.build().load::<VersionRow>(conn)? {
            let pk = row.message_pk;
            let (version, sealed) = row.into_domain()?;
            if let Some(sealed) = sealed {
                held.entry(pk).or_default().versions.push(sealed);
            }
            versions.entry(pk).or_default().push(version);
        }
    }
    if let Some(sql) = gate.held_messages(backend, &redacted) {
        for row in sql.build().load::<HeldRow>(conn)? {
            let pk = row.id;
            let (body, media) = row.into_domain()?;
            let entry = held.entry(pk).or_default();
            (entry.body, entry.media) = (body, media);
        }
    }
    let mut redactions = HashMap::new();
    if !redacted.is_empty() {
        let mut sql = Sql::new(backend);
        sql.push(
            "SELECT d.message_pk, d.redacted_by, d.redacted_at, d.reason FROM message_redactions d WHERE ",
        );
        gate.apply_to_messages(&mut sql, "d", &redacted);
        for row in sql.build().load::<RedactionRow>(conn)? {
            redactions.insert(row.message_pk, row.into_domain()?);
        }
    }
    for item in items.iter_mut() {
        item.message.versions = versions.remove(&item.id).unwrap_or_default();
        item.message.redaction = redactions.remove(&item.id);
        item.held = held.remove(&item.id);
    }
    crate::attachments::read::attach(conn, gate, items)
}

/// Aggregates over the visible rooms.
#[derive(Debug, diesel::QueryableByName)]
struct StatsRow {
    #[diesel(sql_type = BigInt)]
    rooms: i64,
    #[diesel(sql_type = BigInt)]
    messages: i64,
    #[diesel(sql_type = BigInt)]
    active: i64,
}

/// Statistics over what the gate lets through: the visible rooms, their visible messages
/// summed from the stored per-classification counts (never counted one by one), and the
/// visible rooms with a visible message newer than 24 hours (one index probe per room).
pub(crate) fn stats(conn: &mut DbConn, gate: &Gate, now: time::OffsetDateTime) -> Result<Stats> {
    let backend = conn.backend();
    let since = to_unix_ms(now - policy::ACTIVE_WINDOW);
    let mut sql = Sql::new(backend);
    sql.push("SELECT (SELECT COUNT(*) FROM rooms r WHERE ");
    gate.apply(&mut sql, "r");
    sql.push(
        ") AS rooms, (SELECT CAST(COALESCE(SUM(c.message_count), 0) AS BIGINT) FROM message_counts c \
         JOIN rooms r ON r.id = c.room_pk WHERE ",
    );
    gate.apply(&mut sql, "c");
    sql.push(" AND ");
    gate.apply(&mut sql, "r");
    sql.push(") AS messages, (SELECT COUNT(*) FROM rooms r WHERE ");
    gate.apply(&mut sql, "r");
    sql.push(" AND EXISTS (SELECT 1 FROM messages m WHERE ");
    gate.apply(&mut sql, "m");
    sql.push(" AND m.room_pk = r.id AND m.sent_at > ").bind::<BigInt, _>(since);
    sql.push(")) AS active");
    let row: StatsRow = sql.build_cached().get_result(conn)?;
    Ok(Stats { total_rooms: row.rooms, total_messages: row.messages, active_rooms_last_24h: row.active })
}

/// The gate's organisation's audit records at or below its clearance, newest first (the caller
/// reads page and count in one snapshot).
pub(crate) fn ingestions(
    conn: &mut DbConn,
    gate: &Gate,
    page: &PageRequest<IngestionCursor>,
) -> Result<Page<IngestionRecord>> {
    use crate::schema::ingestions;
    let (wanted, limit) = fetch_size(page.first);
    let mut query = gate.ingestions();
    if let Some(after) = &page.after {
        query = query.filter(ingestions::seq.lt(after.seq));
    }
    let query = query
        .select(<IngestionRow as diesel::SelectableHelper<_>>::as_select())
        .order(ingestions::seq.desc());
    let rows: Vec<IngestionRow> = Limited { query, limit }.load(conn)?;
    let items = rows.into_iter().map(IngestionRow::into_domain).collect::<Result<Vec<_>>>()?;
    let total: i64 = gate.ingestions().count().get_result(conn)?;
    Ok(page_of(items, wanted, total))
}

/// One visible message of a visible room, by its Matrix event id; `None` when it is absent or
/// withheld (the two look alike). Its attachment is read with it.
pub(crate) fn message(
    conn: &mut DbConn,
    gate: &Gate,
    room_id: &RoomId,
    event_id: &argus_domain::EventId,
) -> Result<Option<StoredMessage>> {
    use diesel::OptionalExtension as _;
    let row: Option<MessageRow> = gate
        .messages_of_room(room_id)
        .filter(messages::event_id.eq(event_id.as_str()))
        .select(<MessageRow as diesel::SelectableHelper<_>>::as_select())
        .first(conn)
        .optional()?;
    let Some(mut message) = row.map(|r| r.into_domain(room_id)).transpose()? else { return Ok(None) };
    crate::attachments::read::attach(conn, gate, std::slice::from_mut(&mut message))?;
    Ok(Some(message))
}
