//! Account watches (live capture): every joined room of one Matrix account (or the listed ones)
//! kept current by one `/sync` long-poll loop per account. Created, renewed, listed and removed
//! through the gate; claimed by one replica at a time through a lease the loop renews
//! (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one writer). Everything the loop stores
//! (its `/sync` position with the memberships it brought, its filter, its stop) is written only
//! while the loop's replica still holds an unexpired lease and the watch is active, so a loop
//! that lost its watch (taken over, renewed, removed, stopped) writes nothing over its
//! successor.

use std::collections::HashSet;

use argus_domain::{
    AccountWatch, ActorId, FollowedRoom, HomeserverUrl, Membership, NewAccountWatch, OrgId, RoomId,
    SealedToken, UserId, Viewer, WatchStatus, from_unix_ms, policy, to_unix_ms,
};
use diesel::{
    ExpressionMethods as _, QueryDsl as _, QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, SmallInt, Text},
};
use time::OffsetDateTime;

use crate::{
    Backend, Error, MAX_PAGE_SIZE, NewCredential, Result, Store, WatchCaps,
    db::{DbConn, Sql, TxMode, in_transaction},
    read::Gate,
    schema::{account_watch_rooms as awr, account_watches as aw},
    watch::check_sealed,
};

/// The most rooms an account watch may list ([`NewAccountWatch::rooms`]).
pub const MAX_WATCHED_ROOMS: usize = 1_000;

/// The longest long-poll timeout of an account watch, in seconds
/// ([`NewAccountWatch::timeout_secs`], at least 1).
pub const MAX_SYNC_TIMEOUT_SECS: u32 = 3_600;

/// The longest `/sync` position (`next_batch`) stored, in bytes.
pub const MAX_SYNC_TOKEN_LEN: usize = 4_096;

/// The longest stored filter id, in bytes.
pub const MAX_FILTER_ID_LEN: usize = 256;

/// The longest user id stored as who changed a membership ([`FollowedRoom::by`]), in bytes.
const MAX_BY_LEN: usize = 255;

/// The most account watches one claim returns, whatever its caller asks for.
const MAX_CLAIM: u32 = 1_000;

/// Followed rooms written by one statement of [`Store::record_sync`].
const ROOMS_PER_STATEMENT: usize = 200;

/// A claimed account watch: the watch, its sealed token, where its loop resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedAccountWatch {
    /// The watch (its `room_count` counts every joined room: the loop is no viewer).
    pub watch: AccountWatch,
    /// Its owner's credentials, sealed.
    pub token: SealedToken,
    /// Where the next `/sync` resumes (`since`); `None`: never synced.
    pub sync_token: Option<String>,
    /// The stored `/sync` filter's id; `None`: none stored yet.
    pub filter_id: Option<String>,
    /// The account credential holding its refresh-token pair, if any
    /// ([`Store::account_watch_credential`]).
    pub credential_id: Option<i64>,
}

/// What one answered `/sync` changed, stored in one transaction under the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncProgress {
    /// The answer's `next_batch`: where the next `/sync` resumes.
    pub sync_token: String,
    /// When the answer was stored (the watch's `last_sync_at`).
    pub synced_at: OffsetDateTime,
    /// The rooms whose membership or due state changed, each replacing what is stored of that
    /// room (a room given twice: the last one counts).
    pub rooms: Vec<FollowedRoom>,
}

/// An account watch's sealed token, for re-sealing under a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedAccountWatchToken {
    /// The watch's storage id.
    pub id: i64,
    /// Its organisation.
    pub org: OrgId,
    /// Its owner.
    pub owner: ActorId,
    /// Its homeserver.
    pub homeserver_url: String,
    /// The Matrix user it watches.
    pub user_id: String,
    /// The sealed token.
    pub token: SealedToken,
}

const COLUMNS: &str = "w.id, w.org_id, w.owner, w.homeserver_url, w.user_id, w.classification, \
    w.timeout_secs, w.rooms, w.history_since, w.token_key_id, w.token_nonce, w.token_ciphertext, \
    w.decrypts, w.credential_id, w.status, w.status_reason, w.sync_token, w.filter_id, \
    w.last_sync_at, w.created_at";

#[derive(Debug, QueryableByName)]
struct Row {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    org_id: String,
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = Text)]
    homeserver_url: String,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = SmallInt)]
    classification: i16,
    #[diesel(sql_type = BigInt)]
    timeout_secs: i64,
    #[diesel(sql_type = Nullable<Text>)]
    rooms: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    history_since: Option<i64>,
    #[diesel(sql_type = Text)]
    token_key_id: String,
    #[diesel(sql_type = Text)]
    token_nonce: String,
    #[diesel(sql_type = Text)]
    token_ciphertext: String,
    #[diesel(sql_type = Bool)]
    decrypts: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    credential_id: Option<i64>,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    status_reason: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    sync_token: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    filter_id: Option<String>,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_sync_at: Option<i64>,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = BigInt)]
    room_count: i64,
}

impl Row {
    fn into_claimed(self) -> Result<ClaimedAccountWatch> {
        const BAD: Error = Error::Corrupt("a stored account watch fails validation");
        let rooms = self.rooms.as_deref().map(parse_rooms).transpose()?;
        let watch = AccountWatch {
            id: self.id,
            org: self.org_id.parse().map_err(|_| BAD)?,
            owner: self.owner.parse().map_err(|_| BAD)?,
            homeserver_url: self.homeserver_url.parse().map_err(|_| BAD)?,
            user_id: self.user_id,
            classification: crate::rows::rank(self.classification).map_err(|_| BAD)?,
            timeout_secs: u32::try_from(self.timeout_secs).map_err(|_| BAD)?,
            rooms,
            status: WatchStatus::parse(&self.status).ok_or(BAD)?,
            status_reason: self.status_reason,
            last_sync_at: self.last_sync_at.map(from_unix_ms).transpose().map_err(|_| BAD)?,
            room_count: self.room_count,
            created_at: from_unix_ms(self.created_at).map_err(|_| BAD)?,
            decrypts: self.decrypts,
            since: self.history_since.map(from_unix_ms).transpose().map_err(|_| BAD)?,
        };
        let token = SealedToken {
            key_id: self.token_key_id,
            nonce: self.token_nonce,
            ciphertext: self.token_ciphertext,
        };
        Ok(ClaimedAccountWatch {
            watch,
            token,
            sync_token: self.sync_token,
            filter_id: self.filter_id,
            credential_id: self.credential_id,
        })
    }
}

fn parse_rooms(text: &str) -> Result<Vec<RoomId>> {
    const BAD: Error = Error::Corrupt("a stored account watch's rooms fail validation");
    let ids: Vec<String> = serde_json::from_str(text).map_err(|_| BAD)?;
    ids.iter().map(|id| id.parse().map_err(|_| BAD)).collect()
}

/// The listed rooms as stored: a JSON array, each room once, in the order given.
fn rooms_json(rooms: &[RoomId]) -> Result<String> {
    let mut seen = HashSet::new();
    let ids: Vec<&str> = rooms.iter().map(RoomId::as_str).filter(|id| seen.insert(*id)).collect();
    serde_json::to_string(&ids).map_err(|_| Error::Corrupt("rooms cannot be serialised"))
}

fn until(now: OffsetDateTime, lease: std::time::Duration) -> i64 {
    to_unix_ms(now).saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
}

/// `SELECT` of the columns and the room count, up to `WHERE `: the count is of the watch's
/// joined rooms, but those `gate` withholds (stored in the watch's organisation above the
/// clearance); with no gate (the loop's own reads), of every joined room.
fn select(backend: Backend, gate: Option<&Gate>) -> Sql<'static> {
    let mut sql = Sql::new(backend);
    sql.push("SELECT ").push(COLUMNS);
    sql.push(
        ", (SELECT COUNT(*) FROM account_watch_rooms r WHERE r.watch_id = w.id AND r.membership = 'JOIN'",
    );
    if let Some(gate) = gate {
        sql.push(" AND NOT ");
        gate.push_withheld_room(&mut sql, "w.org_id", "r.room_id");
    }
    sql.push(") AS room_count FROM account_watches w WHERE ");
    sql
}

/// Loads the watches `sql` selects through `gate`: the rooms a watch lists that the gate
/// withholds are left out of its list (a watch never names a room its viewer may not see).
fn load_gated(conn: &mut DbConn, gate: &Gate, sql: Sql<'_>) -> Result<Vec<AccountWatch>> {
    let rows: Vec<Row> = sql.build().load(conn)?;
    let mut watches =
        rows.into_iter().map(|r| r.into_claimed().map(|c| c.watch)).collect::<Result<Vec<_>>>()?;
    let listed: HashSet<&str> =
        watches.iter().flat_map(|w| w.rooms.iter().flatten()).map(RoomId::as_str).collect();
    if listed.is_empty() {
        return Ok(watches);
    }
    let withheld = gate.withheld_rooms(conn, &listed.into_iter().collect::<Vec<_>>())?;
    if !withheld.is_empty() {
        for rooms in watches.iter_mut().filter_map(|w| w.rooms.as_mut()) {
            rooms.retain(|room| !withheld.contains(room.as_str()));
        }
    }
    Ok(watches)
}

/// The account watch `id` that `gate` lets through.
fn get(conn: &mut DbConn, gate: &Gate, id: i64) -> Result<Option<AccountWatch>> {
    let mut sql = select(conn.backend(), Some(gate));
    gate.apply(&mut sql, "w");
    sql.push(" AND w.id = ").bind::<BigInt, _>(id);
    Ok(load_gated(conn, gate, sql)?.into_iter().next())
}

#[derive(Debug, QueryableByName)]
struct Existing {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = SmallInt)]
    classification: i16,
}

#[derive(Debug, QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Refuses what must not be written, before anything is.
fn check_new(viewer: &Viewer, new: &NewAccountWatch, credential: Option<&NewCredential>) -> Result<()> {
    check_sealed(&new.token)?;
    if new.org != viewer.org || new.owner != viewer.actor {
        return Err(Error::invalid("account watch", "not the caller's own"));
    }
    if !(1..=MAX_SYNC_TIMEOUT_SECS).contains(&new.timeout_secs) {
        return Err(Error::invalid("account watch", "timeout must be 1 to 3600 seconds"));
    }
    new.user_id.parse::<UserId>()?;
    if let Some(rooms) = &new.rooms
        && (rooms.is_empty() || rooms.len() > MAX_WATCHED_ROOMS)
    {
        return Err(Error::invalid(
            "account watch",
            "rooms must list 1 to 1000 rooms (none: every joined room)",
        ));
    }
    if let Some(credential) = credential {
        if credential.org != viewer.org || credential.owner != viewer.actor {
            return Err(Error::invalid("credential", "not the caller's own"));
        }
        let same_server = credential
            .homeserver_url
            .parse::<HomeserverUrl>()
            .is_ok_and(|url| url.same_server(&new.homeserver_url));
        if credential.user_id != new.user_id || !same_server {
            return Err(Error::invalid("credential", "not the watched account's"));
        }
    }
    policy::check_may_classify(viewer, new.classification)?;
    Ok(())
}

/// Creates or renews the account watch of (`viewer`'s organisation, `new.homeserver_url`,
/// `new.user_id`). See [`Store::upsert_account_sync_watch`].
fn upsert(
    conn: &mut DbConn,
    viewer: &Viewer,
    new: &NewAccountWatch,
    credential: Option<&NewCredential>,
    caps: WatchCaps,
    now: OffsetDateTime,
) -> Result<AccountWatch> {
    check_new(viewer, new, credential)?;
    let rooms = new.rooms.as_deref().map(rooms_json).transpose()?;
    let gate = Gate::of(viewer);
    in_transaction(conn, TxMode::Write, |conn| {
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT id, owner, classification FROM account_watches WHERE org_id = ");
        sql.bind::<Text, _>(viewer.org.as_str().to_owned());
        sql.push(" AND homeserver_url = ").bind::<Text, _>(new.homeserver_url.as_str().to_owned());
        sql.push(" AND user_id = ").bind::<Text, _>(new.user_id.clone());
        let existing: Option<Existing> = sql.build().load(conn)?.into_iter().next();
        if let Some(existing) = &existing
            && !policy::is_visible(viewer, &viewer.org, crate::rows::rank(existing.classification)?)
        {
            return Err(Error::Withheld);
        }
        // The account's pair (the one its caller holds now) replaces the stored one, in the
        // same transaction as the watch that refers to it (undone with it when refused).
        let credential = credential.map(|c| crate::credentials::keep(conn, c, now)).transpose()?;
        let mut sql = Sql::new(conn.backend());
        let id = match existing {
            Some(existing) => {
                if existing.owner != new.owner.as_str() {
                    // Taken over from another owner: a new watch of the caller's.
                    check_cap(conn, viewer, Some(viewer.actor.as_str()), caps.per_owner)?;
                }
                sql.push("UPDATE account_watches SET owner = ")
                    .bind::<Text, _>(new.owner.as_str().to_owned());
                sql.push(", classification = ").bind::<SmallInt, _>(new.classification.rank());
                sql.push(", timeout_secs = ").bind::<BigInt, _>(i64::from(new.timeout_secs));
                sql.push(", rooms = ").bind::<Nullable<Text>, _>(rooms);
                sql.push(", history_since = ").bind::<Nullable<BigInt>, _>(new.since.map(to_unix_ms));
                sql.push(", token_key_id = ").bind::<Text, _>(new.token.key_id.clone());
                sql.push(", token_nonce = ").bind::<Text, _>(new.token.nonce.clone());
                sql.push(", token_ciphertext = ").bind::<Text, _>(new.token.ciphertext.clone());
                sql.push(", decrypts = ").bind::<Bool, _>(new.decrypts);
                sql.push(", credential_id = ").bind::<Nullable<BigInt>, _>(credential);
                // A loop under way with the old token stores nothing more over the renewed
                // watch: its lease is gone, and the watch is claimed again with the new one.
                sql.push(", status = 'ACTIVE', status_reason = NULL, lease_owner = NULL, lease_until = NULL");
                sql.push(" WHERE id = ").bind::<BigInt, _>(existing.id);
                sql.build().execute(conn)?;
                existing.id
            }
            None => {
                check_cap(conn, viewer, Some(viewer.actor.as_str()), caps.per_owner)?;
                check_cap(conn, viewer, None, caps.per_org)?;
                sql.push(
                    "INSERT INTO account_watches (org_id, owner, homeserver_url, user_id, classification, \
                     timeout_secs, rooms, history_since, token_key_id, token_nonce, token_ciphertext, \
                     decrypts, credential_id, status, created_at) VALUES (",
                );
                sql.bind::<Text, _>(viewer.org.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(new.owner.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(new.homeserver_url.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(new.user_id.clone()).push(", ");
                sql.bind::<SmallInt, _>(new.classification.rank()).push(", ");
                sql.bind::<BigInt, _>(i64::from(new.timeout_secs)).push(", ");
                sql.bind::<Nullable<Text>, _>(rooms).push(", ");
                sql.bind::<Nullable<BigInt>, _>(new.since.map(to_unix_ms)).push(", ");
                sql.bind::<Text, _>(new.token.key_id.clone()).push(", ");
                sql.bind::<Text, _>(new.token.nonce.clone()).push(", ");
                sql.bind::<Text, _>(new.token.ciphertext.clone()).push(", ");
                sql.bind::<Bool, _>(new.decrypts).push(", ");
                sql.bind::<Nullable<BigInt>, _>(credential).push(", 'ACTIVE', ");
                sql.bind::<BigInt, _>(to_unix_ms(now)).push(") RETURNING id");
                sql.build().get_result::<Id>(conn)?.id
            }
        };
        crate::credentials::drop_orphans(conn, &viewer.org)?;
        get(conn, &gate, id)?.ok_or(Error::Corrupt("an account watch vanished while it was written"))
    })
}

/// Refuses one more account watch when `viewer` sees `limit` of them already: theirs
/// (`owner`), or their organisation's. Counted over what they may see, so that how many exist
/// above their clearance never decides their answer.
fn check_cap(conn: &mut DbConn, viewer: &Viewer, owner: Option<&str>, limit: u32) -> Result<()> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT COUNT(*) AS n FROM account_watches w WHERE ");
    Gate::of(viewer).apply(&mut sql, "w");
    if let Some(owner) = owner {
        sql.push(" AND w.owner = ").bind::<Text, _>(owner.to_owned());
    }
    if sql.build().get_result::<Count>(conn)?.n >= i64::from(limit) {
        let per = if owner.is_some() { "owner" } else { "organisation" };
        return Err(Error::TooManyWatches { per, limit });
    }
    Ok(())
}

/// Appends the condition of every write the loop makes: the watch `id`, its lease held by
/// `replica` and unexpired at `now`, and the watch active.
pub(crate) fn push_held(sql: &mut Sql<'_>, id: i64, replica: &str, now: OffsetDateTime) {
    sql.push(" WHERE id = ").bind::<BigInt, _>(id);
    sql.push(" AND lease_owner = ").bind::<Text, _>(replica.to_owned());
    sql.push(" AND lease_until >= ").bind::<BigInt, _>(to_unix_ms(now));
    sql.push(" AND status = 'ACTIVE'");
}

/// Claims up to `limit` active account watches whose lease is free, expired or `replica`'s.
fn claim(
    conn: &mut DbConn,
    replica: &str,
    now: OffsetDateTime,
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<ClaimedAccountWatch>> {
    let now_ms = to_unix_ms(now);
    let backend = conn.backend();
    in_transaction(conn, TxMode::Write, |conn| {
        let mut sql = Sql::new(backend);
        // The free rows are chosen once (a materialised CTE: PostgreSQL may otherwise evaluate
        // a `LIMIT … FOR UPDATE SKIP LOCKED` subquery more than once and claim more than
        // `limit`); rows another replica is claiming are skipped, not waited for.
        sql.push(
            "WITH free AS MATERIALIZED (SELECT id FROM account_watches WHERE status = 'ACTIVE' \
             AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until < ",
        );
        sql.bind::<BigInt, _>(now_ms).push(" OR lease_owner = ").bind::<Text, _>(replica.to_owned());
        sql.push(") ORDER BY id LIMIT ").bind::<BigInt, _>(i64::from(limit.min(MAX_CLAIM)));
        if backend == Backend::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") UPDATE account_watches SET lease_owner = ").bind::<Text, _>(replica.to_owned());
        sql.push(", lease_until = ").bind::<BigInt, _>(until(now, lease));
        sql.push(" WHERE id IN (SELECT id FROM free) RETURNING id");
        let ids: Vec<Id> = sql.build().load(conn)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = select(backend, None);
        sql.push("w.id IN (");
        for (i, id) in ids.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind::<BigInt, _>(id.id);
        }
        sql.push(") ORDER BY w.id");
        let rows: Vec<Row> = sql.build().load(conn)?;
        // A row that fails validation stays claimed until its lease runs out (and is logged):
        // it must not keep every other watch from running.
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id = r.id;
                r.into_claimed()
                    .inspect_err(
                        |e| tracing::error!(account_watch = id, error = %e, "a stored account watch fails validation"),
                    )
                    .ok()
            })
            .collect())
    })
}

/// Stores one answered `/sync` under the lease; see [`Store::record_sync`].
fn record_sync(
    conn: &mut DbConn,
    id: i64,
    replica: &str,
    progress: &SyncProgress,
    now: OffsetDateTime,
) -> Result<bool> {
    if progress.sync_token.is_empty() || progress.sync_token.len() > MAX_SYNC_TOKEN_LEN {
        return Err(Error::invalid("sync position", "must be 1 to 4096 bytes"));
    }
    if progress
        .rooms
        .iter()
        .any(|room| room.by.as_ref().is_some_and(|by| by.is_empty() || by.len() > MAX_BY_LEN))
    {
        return Err(Error::invalid("membership", "who changed it must be 1 to 255 bytes"));
    }
    // Each room once, the last given counting (one statement may not write a row twice).
    let mut seen = HashSet::new();
    let mut rooms: Vec<&FollowedRoom> =
        progress.rooms.iter().rev().filter(|room| seen.insert(room.room_id.as_str())).collect();
    rooms.reverse();
    let backend = conn.backend();
    in_transaction(conn, TxMode::Write, |conn| {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE account_watches SET sync_token = ").bind::<Text, _>(progress.sync_token.clone());
        sql.push(", last_sync_at = ").bind::<BigInt, _>(to_unix_ms(progress.synced_at));
        push_held(&mut sql, id, replica, now);
        if sql.build().execute(conn)? != 1 {
            return Ok(false);
        }
        for chunk in rooms.chunks(ROOMS_PER_STATEMENT) {
            let mut sql = Sql::new(backend);
            sql.push(
                "INSERT INTO account_watch_rooms (watch_id, room_id, membership, by_user, changed_at, due) VALUES ",
            );
            for (i, room) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" });
                sql.bind::<BigInt, _>(id).push(", ");
                sql.bind::<Text, _>(room.room_id.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(room.membership.as_str()).push(", ");
                sql.bind::<Nullable<Text>, _>(room.by.clone()).push(", ");
                sql.bind::<BigInt, _>(to_unix_ms(room.changed_at)).push(", ");
                sql.bind::<Bool, _>(room.due).push(")");
            }
            sql.push(
                " ON CONFLICT (watch_id, room_id) DO UPDATE SET membership = excluded.membership, \
                 by_user = excluded.by_user, changed_at = excluded.changed_at, due = excluded.due",
            );
            sql.build().execute(conn)?;
        }
        Ok(true)
    })
}

/// Runs one update of the watch `id` under `replica`'s lease at `now`: `set` is the
/// `UPDATE … SET …` part. Whether the watch was written.
fn update_held(
    conn: &mut DbConn,
    id: i64,
    replica: &str,
    now: OffsetDateTime,
    set: impl FnOnce(&mut Sql<'_>),
    sealed: Option<String>,
) -> Result<bool> {
    let mut sql = Sql::new(conn.backend());
    set(&mut sql);
    push_held(&mut sql, id, replica, now);
    if let Some(ciphertext) = sealed {
        // Only while the watch still holds the credentials the caller was started with.
        sql.push(" AND token_ciphertext = ").bind::<Text, _>(ciphertext);
    }
    Ok(sql.build().execute(conn)? == 1)
}

impl Store {
    /// Creates, or renews, the account watch of `new.user_id` at `new.homeserver_url` for
    /// `viewer`'s organisation (one per account and organisation).
    ///
    /// A renewal replaces the owner, token, classification, timeout, rooms, start date and
    /// `decrypts`; the watch is active again (its reason cleared) and its lease is given up (a
    /// loop running with the old token stores nothing more, and the watch is claimed again). Its
    /// `/sync` position, filter and followed rooms are kept, whatever changed: the loop decides
    /// what a changed list of rooms or classification means for them.
    ///
    /// With `credential`, the account's refresh-token pair replaces the one stored for that
    /// account in `account_credentials` (or is added), and the watch refers to it, in the same
    /// transaction, as [`Store::upsert_account_watch`] does for room watches; without, the
    /// watch refers to none (and a pair no watch refers to any more is removed).
    ///
    /// Refused with nothing written: [`Error::Invalid`] for input out of bounds (a malformed
    /// sealed token or user id, a timeout outside 1 to [`MAX_SYNC_TIMEOUT_SECS`] seconds, an
    /// empty list of rooms or more than [`MAX_WATCHED_ROOMS`], another's watch or credential, a
    /// credential of another account, a classification above the caller's clearance);
    /// [`Error::Withheld`] when the existing watch is above the caller's clearance;
    /// [`Error::TooManyWatches`] when a watch new to its owner would pass `caps`, counted over
    /// the account watches the caller may see (room watches are not counted).
    pub fn upsert_account_sync_watch(
        &self,
        viewer: &Viewer,
        new: &NewAccountWatch,
        credential: Option<&NewCredential>,
        caps: WatchCaps,
    ) -> Result<AccountWatch> {
        upsert(&mut *self.conn()?, viewer, new, credential, caps, OffsetDateTime::now_utc())
    }

    /// The account watches `viewer` may see (their organisation's, at most their clearance),
    /// oldest first, after storage id `after`, at most `first` (and at most
    /// [`MAX_PAGE_SIZE`]). A watch's `room_count` leaves out the rooms stored above the
    /// viewer's clearance, and its `rooms` the listed rooms stored above it.
    pub fn account_watches(
        &self,
        viewer: &Viewer,
        first: u32,
        after: Option<i64>,
    ) -> Result<Vec<AccountWatch>> {
        let gate = Gate::of(viewer);
        let mut conn = self.conn()?;
        let mut sql = select(conn.backend(), Some(&gate));
        gate.apply(&mut sql, "w");
        if let Some(after) = after {
            sql.push(" AND w.id > ").bind::<BigInt, _>(after);
        }
        sql.push(" ORDER BY w.id LIMIT ").bind::<BigInt, _>(i64::from(first.min(MAX_PAGE_SIZE)));
        load_gated(&mut conn, &gate, sql)
    }

    /// How many account watches `viewer` may see.
    pub fn count_account_watches(&self, viewer: &Viewer) -> Result<i64> {
        let mut conn = self.conn()?;
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT COUNT(*) AS n FROM account_watches w WHERE ");
        Gate::of(viewer).apply(&mut sql, "w");
        Ok(sql.build().get_result::<Count>(&mut **conn)?.n)
    }

    /// The account watch `id` as `viewer` may see it; `None` when it is absent, of another
    /// organisation or above their clearance alike.
    pub fn account_watch(&self, viewer: &Viewer, id: i64) -> Result<Option<AccountWatch>> {
        get(&mut *self.conn()?, &Gate::of(viewer), id)
    }

    /// Removes the account watch `id` if `viewer` may see it, with its followed rooms; the
    /// account's credential goes too when no watch of either kind refers to it any more.
    /// Whether there was one.
    pub fn remove_account_watch(&self, viewer: &Viewer, id: i64) -> Result<bool> {
        let gate = Gate::of(viewer);
        in_transaction(&mut *self.conn()?, TxMode::Write, |conn| {
            let Some(watch) = get(conn, &gate, id)? else {
                return Ok(false);
            };
            let mut sql = Sql::new(conn.backend());
            sql.push("DELETE FROM account_watches WHERE id = ").bind::<BigInt, _>(watch.id);
            let removed = sql.build().execute(conn)? == 1;
            crate::credentials::drop_orphans(conn, &watch.org)?;
            Ok(removed)
        })
    }

    /// Claims up to `limit` (at most 1,000) active account watches whose lease is free, expired
    /// at `now`, or already `replica`'s, for `replica` until `now + lease`, oldest first. Replicas
    /// claiming at once get disjoint sets: PostgreSQL skips the rows another transaction holds
    /// (`FOR UPDATE SKIP LOCKED`); SQLite has one writer. A replica that dies leaves its leases
    /// to expire.
    pub fn claim_account_watches(
        &self,
        replica: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedAccountWatch>> {
        claim(&mut *self.conn()?, replica, now, lease, limit)
    }

    /// Extends `replica`'s lease of account watch `id` to `now + lease` while it is still theirs
    /// and the watch active; `false` otherwise (taken over, renewed, removed or stopped).
    pub fn renew_account_watch_lease(
        &self,
        id: i64,
        replica: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
    ) -> Result<bool> {
        let mut conn = self.conn()?;
        let mut sql = Sql::new(conn.backend());
        sql.push("UPDATE account_watches SET lease_until = ").bind::<BigInt, _>(until(now, lease));
        sql.push(" WHERE id = ").bind::<BigInt, _>(id);
        sql.push(" AND lease_owner = ").bind::<Text, _>(replica.to_owned());
        sql.push(" AND status = 'ACTIVE'");
        Ok(sql.build().execute(&mut **conn)? == 1)
    }

    /// Gives back `replica`'s lease of account watch `id` (never another replica's): another
    /// replica may claim it at once.
    pub fn release_account_watch(&self, id: i64, replica: &str) -> Result<()> {
        let mut conn = self.conn()?;
        let mut sql = Sql::new(conn.backend());
        sql.push("UPDATE account_watches SET lease_owner = NULL, lease_until = NULL WHERE id = ");
        sql.bind::<BigInt, _>(id).push(" AND lease_owner = ").bind::<Text, _>(replica.to_owned());
        sql.build().execute(&mut **conn)?;
        Ok(())
    }

    /// Stores what one answered `/sync` changed, in one transaction, only while `replica` holds
    /// an unexpired lease of account watch `id` (by the store's clock) and the watch is active:
    /// the new `/sync` position, `last_sync_at`, and each of `progress.rooms` replacing what is
    /// stored of that room (membership, who, when, due). `false`, with nothing written,
    /// otherwise. [`Error::Invalid`], with nothing written, for a position empty or longer than
    /// [`MAX_SYNC_TOKEN_LEN`] bytes, or a `by` empty or longer than 255 bytes.
    pub fn record_sync(&self, id: i64, replica: &str, progress: &SyncProgress) -> Result<bool> {
        record_sync(&mut *self.conn()?, id, replica, progress, OffsetDateTime::now_utc())
    }

    /// Stores the id of the `/sync` filter of account watch `id`, under `replica`'s lease as
    /// [`Store::record_sync`]; whether it was stored. [`Error::Invalid`] for an id empty or
    /// longer than [`MAX_FILTER_ID_LEN`] bytes.
    pub fn set_account_watch_filter(&self, id: i64, replica: &str, filter_id: &str) -> Result<bool> {
        if filter_id.is_empty() || filter_id.len() > MAX_FILTER_ID_LEN {
            return Err(Error::invalid("filter id", "must be 1 to 256 bytes"));
        }
        let filter_id = filter_id.to_owned();
        update_held(
            &mut *self.conn()?,
            id,
            replica,
            OffsetDateTime::now_utc(),
            |sql| {
                sql.push("UPDATE account_watches SET filter_id = ").bind::<Text, _>(filter_id);
            },
            None,
        )
    }

    /// Stops account watch `id` for `reason` (`CODE: words`, never a token), under `replica`'s
    /// lease as [`Store::record_sync`]: its status is [`WatchStatus::stopped_by`] the reason
    /// (`ACCOUNT_EXPIRED`, `ACCOUNT_LOCKED`, else `PAUSED`), the reason kept (control characters
    /// replaced, cut at 1,024 characters), the lease released. It is not claimed again until it
    /// is given anew. Whether it was stopped.
    ///
    /// Only while the watch still holds `token` (the credentials its loop was started with): a
    /// loop whose watch was given again meanwhile (and claimed anew by the same replica) cannot
    /// stop the renewed watch for the old token's failure.
    pub fn stop_account_watch(
        &self,
        id: i64,
        replica: &str,
        reason: &str,
        token: &SealedToken,
    ) -> Result<bool> {
        let status = WatchStatus::stopped_by(reason);
        let reason = argus_domain::NewIngestion::sanitise(reason, 1024);
        let ciphertext = token.ciphertext.clone();
        let set = |sql: &mut Sql<'_>| {
            sql.push("UPDATE account_watches SET status = ").bind::<Text, _>(status.as_str());
            sql.push(", status_reason = ").bind::<Text, _>(reason);
            sql.push(", lease_owner = NULL, lease_until = NULL");
        };
        update_held(&mut *self.conn()?, id, replica, OffsetDateTime::now_utc(), set, Some(ciphertext))
    }

    /// The rooms account watch `id` follows or followed, by room id (the loop's own read: no
    /// viewer, nothing withheld).
    pub fn followed_rooms(&self, id: i64) -> Result<Vec<FollowedRoom>> {
        const BAD: Error = Error::Corrupt("a stored followed room fails validation");
        let rows: Vec<(String, String, Option<String>, i64, bool)> = awr::table
            .filter(awr::watch_id.eq(id))
            .order(awr::room_id)
            .select((awr::room_id, awr::membership, awr::by_user, awr::changed_at, awr::due))
            .load(&mut **self.conn()?)?;
        rows.into_iter()
            .map(|(room_id, membership, by, changed_at, due)| {
                Ok(FollowedRoom {
                    room_id: room_id.parse().map_err(|_| BAD)?,
                    membership: Membership::parse(&membership).ok_or(BAD)?,
                    by,
                    changed_at: from_unix_ms(changed_at).map_err(|_| BAD)?,
                    due,
                })
            })
            .collect()
    }

    /// Every account watch's sealed token, for re-sealing under a new key.
    pub fn sealed_account_watch_tokens(&self) -> Result<Vec<SealedAccountWatchToken>> {
        const BAD: Error = Error::Corrupt("a stored account watch fails validation");
        type Sealed = (i64, String, String, String, String, String, String, String);
        let rows: Vec<Sealed> = aw::table
            .order(aw::id)
            .select((
                aw::id,
                aw::org_id,
                aw::owner,
                aw::homeserver_url,
                aw::user_id,
                aw::token_key_id,
                aw::token_nonce,
                aw::token_ciphertext,
            ))
            .load(&mut **self.conn()?)?;
        rows.into_iter()
            .map(|(id, org, owner, homeserver_url, user_id, key_id, nonce, ciphertext)| {
                Ok(SealedAccountWatchToken {
                    id,
                    org: org.parse().map_err(|_| BAD)?,
                    owner: owner.parse().map_err(|_| BAD)?,
                    homeserver_url,
                    user_id,
                    token: SealedToken { key_id, nonce, ciphertext },
                })
            })
            .collect()
    }

    /// Replaces account watch `id`'s sealed token with `new` if it is still `old` (the same
    /// token re-sealed under a new key); whether it was replaced.
    pub fn reseal_account_watch_token(&self, id: i64, old: &SealedToken, new: &SealedToken) -> Result<bool> {
        check_sealed(new)?;
        let updated = diesel::update(
            aw::table
                .filter(aw::id.eq(id))
                .filter(aw::token_key_id.eq(&old.key_id))
                .filter(aw::token_ciphertext.eq(&old.ciphertext)),
        )
        .set((
            aw::token_key_id.eq(&new.key_id),
            aw::token_nonce.eq(&new.nonce),
            aw::token_ciphertext.eq(&new.ciphertext),
        ))
        .execute(&mut **self.conn()?)?;
        Ok(updated == 1)
    }
}
