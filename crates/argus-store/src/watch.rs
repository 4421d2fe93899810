//! Watched rooms: created, renewed, listed and removed through the gate; claimed when due by
//! one replica at a time through leases (`FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite has one
//! writer), and released with the outcome of their run.

use argus_domain::{
    NewWatch, OrgId, RoomId, SealedToken, Viewer, Watch, WatchStatus, from_unix_ms, policy, to_unix_ms,
};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Bool, Nullable, SmallInt, Text},
};
use time::OffsetDateTime;

use crate::{
    Backend, Error, NewCredential, Result,
    db::{DbConn, Sql, TxMode, in_transaction},
    read::{self, Gate},
};

/// The most watches one organisation may have, by default ([`WatchCaps`]).
const MAX_WATCHES_PER_ORG: u32 = 10_000;

/// The most watches one owner may have, by default ([`WatchCaps`]).
const MAX_WATCHES_PER_OWNER: u32 = 500;

/// Bounds on new watches, counted over the watches the caller may see: the caller's own, and
/// their organisation's. A refusal never tells the caller about watches above their clearance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCaps {
    /// The most watches one owner may have.
    pub per_owner: u32,
    /// The most watches of one organisation that one caller may see.
    pub per_org: u32,
}

impl Default for WatchCaps {
    fn default() -> Self {
        Self { per_owner: MAX_WATCHES_PER_OWNER, per_org: MAX_WATCHES_PER_ORG }
    }
}

const COLUMNS: &str = "w.id, w.org_id, w.owner, w.room_id, w.homeserver_url, w.classification, \
    w.interval_secs, w.token_key_id, w.token_nonce, w.token_ciphertext, w.status, w.status_reason, \
    w.next_run_at, w.last_run_at, w.last_outcome, w.last_error, w.created_at, w.decrypts, w.history_since";

#[derive(Debug, QueryableByName)]
struct WatchRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    org_id: String,
    #[diesel(sql_type = Text)]
    owner: String,
    #[diesel(sql_type = Text)]
    room_id: String,
    #[diesel(sql_type = Text)]
    homeserver_url: String,
    #[diesel(sql_type = SmallInt)]
    classification: i16,
    #[diesel(sql_type = BigInt)]
    interval_secs: i64,
    #[diesel(sql_type = Text)]
    token_key_id: String,
    #[diesel(sql_type = Text)]
    token_nonce: String,
    #[diesel(sql_type = Text)]
    token_ciphertext: String,
    #[diesel(sql_type = Text)]
    status: String,
    #[diesel(sql_type = Nullable<Text>)]
    status_reason: Option<String>,
    #[diesel(sql_type = BigInt)]
    next_run_at: i64,
    #[diesel(sql_type = Nullable<BigInt>)]
    last_run_at: Option<i64>,
    #[diesel(sql_type = Nullable<Text>)]
    last_outcome: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_error: Option<String>,
    #[diesel(sql_type = BigInt)]
    created_at: i64,
    #[diesel(sql_type = Bool)]
    decrypts: bool,
    #[diesel(sql_type = Nullable<BigInt>)]
    history_since: Option<i64>,
}

impl WatchRow {
    fn into_domain(self) -> Result<(Watch, SealedToken)> {
        const BAD: Error = Error::Corrupt("a stored watch fails validation");
        let watch = Watch {
            id: self.id,
            org: self.org_id.parse().map_err(|_| BAD)?,
            owner: self.owner.parse().map_err(|_| BAD)?,
            room_id: self.room_id.parse().map_err(|_| BAD)?,
            homeserver_url: self.homeserver_url.parse().map_err(|_| BAD)?,
            classification: crate::rows::rank(self.classification).map_err(|_| BAD)?,
            interval_secs: u32::try_from(self.interval_secs).map_err(|_| BAD)?,
            status: WatchStatus::parse(&self.status).ok_or(BAD)?,
            status_reason: self.status_reason,
            next_run_at: from_unix_ms(self.next_run_at).map_err(|_| BAD)?,
            last_run_at: self.last_run_at.map(from_unix_ms).transpose().map_err(|_| BAD)?,
            last_outcome: self.last_outcome,
            last_error: self.last_error,
            created_at: from_unix_ms(self.created_at).map_err(|_| BAD)?,
            decrypts: self.decrypts,
            since: self.history_since.map(from_unix_ms).transpose().map_err(|_| BAD)?,
        };
        let token = SealedToken {
            key_id: self.token_key_id,
            nonce: self.token_nonce,
            ciphertext: self.token_ciphertext,
        };
        Ok((watch, token))
    }
}

/// A due watch claimed by one replica: the watch and its sealed token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedWatch {
    /// The watch.
    pub watch: Watch,
    /// Its owner's token, sealed.
    pub token: SealedToken,
}

/// How a watch's run ended, as the scheduler records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchRun {
    /// When it ran.
    pub ran_at: OffsetDateTime,
    /// When it is due next.
    pub next_run_at: OffsetDateTime,
    /// Why it failed (`None`: it succeeded). Never a token.
    pub error: Option<String>,
    /// Stop the watch, with this reason (`CODE: words`, never a token): its code decides the
    /// status ([`WatchStatus::stopped_by`]): `ACCOUNT_EXPIRED` or `ACCOUNT_LOCKED` for an
    /// account's state, `PAUSED` for anything else (a token the homeserver refused).
    pub pause: Option<String>,
}

/// A watch's sealed token, for re-sealing under a new key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedWatchToken {
    /// The watch's storage id.
    pub id: i64,
    /// Its organisation.
    pub org: OrgId,
    /// Its room.
    pub room_id: RoomId,
    /// Its homeserver.
    pub homeserver_url: String,
    /// Its owner (the token's binding).
    pub owner: argus_domain::ActorId,
    /// The sealed token.
    pub token: SealedToken,
}

pub(crate) fn check_sealed(token: &SealedToken) -> Result<()> {
    let ok = (1..=64).contains(&token.key_id.len())
        && token.nonce.len() <= 64
        && token.ciphertext.len() <= 16_384
        && !token.ciphertext.is_empty();
    if ok { Ok(()) } else { Err(Error::invalid("sealed token", "malformed")) }
}

fn load_one(conn: &mut DbConn, sql: Sql<'_>) -> Result<Option<(Watch, SealedToken)>> {
    let rows: Vec<WatchRow> = sql.build().load(conn)?;
    rows.into_iter().next().map(WatchRow::into_domain).transpose()
}

/// The watch of `room_id` in `org`, whatever its level (the writer's lookup).
fn find(conn: &mut DbConn, org: &OrgId, room_id: &RoomId) -> Result<Option<(Watch, SealedToken)>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT ").push(COLUMNS).push(" FROM watches w WHERE ");
    Gate::whole_org(org).apply(&mut sql, "w");
    sql.push(" AND w.room_id = ").bind::<Text, _>(room_id.as_str().to_owned());
    load_one(conn, sql)
}

/// Creates or renews the watch of `new.room_id` for `viewer`'s organisation: the token, the
/// account credential it refers to (`credential`), the interval and the owner are replaced, a stopped watch (paused, or stopped by its account's
/// state) is active again and due now. The watch's level is at least the room's stored level.
/// [`Error::Withheld`] when the room or an existing watch of it is above the viewer's
/// clearance; [`Error::TooManyWatches`] when a watch new to its owner would pass `caps`,
/// counted over the watches the viewer may see.
pub(crate) fn upsert(
    conn: &mut DbConn,
    viewer: &Viewer,
    new: &NewWatch,
    credential: Option<&NewCredential>,
    caps: WatchCaps,
    now: OffsetDateTime,
) -> Result<Watch> {
    check_sealed(&new.token)?;
    if new.org != viewer.org || new.owner != viewer.actor || new.interval_secs == 0 {
        return Err(Error::invalid("watch", "not the caller's own, or no interval"));
    }
    if credential.is_some_and(|c| c.org != viewer.org || c.owner != viewer.actor) {
        return Err(Error::invalid("credential", "not the caller's own"));
    }
    policy::check_may_classify(viewer, new.classification)?;
    let now_ms = to_unix_ms(now);
    in_transaction(conn, TxMode::Write, |conn| {
        let room = read::room_key(conn, &Gate::whole_org(&viewer.org), &new.room_id)?;
        let room_level = room.map(|r| crate::rows::rank(r.classification)).transpose()?;
        let level = policy::merge_classification(room_level, new.classification);
        if !policy::is_visible(viewer, &viewer.org, level) {
            return Err(Error::Withheld);
        }
        let existing = find(conn, &viewer.org, &new.room_id)?;
        // The account's pair (the one its caller holds now) replaces the stored one, in the
        // same transaction as the watch that refers to it (undone with it when refused).
        let credential = credential.map(|c| crate::credentials::keep(conn, c, now)).transpose()?;
        let mut sql = Sql::new(conn.backend());
        match existing {
            Some((watch, _)) if !policy::is_visible(viewer, &viewer.org, watch.classification) => {
                return Err(Error::Withheld);
            }
            Some((watch, _)) => {
                if watch.owner != new.owner {
                    // Taken over from another owner: a new watch of the caller's, not of the
                    // organisation's.
                    check_owner_cap(conn, viewer, caps.per_owner)?;
                }
                let level = level.max(watch.classification);
                sql.push("UPDATE watches SET owner = ").bind::<Text, _>(new.owner.as_str().to_owned());
                sql.push(", homeserver_url = ").bind::<Text, _>(new.homeserver_url.as_str().to_owned());
                sql.push(", classification = ").bind::<SmallInt, _>(level.rank());
                sql.push(", interval_secs = ").bind::<BigInt, _>(i64::from(new.interval_secs));
                push_token_update(&mut sql, &new.token);
                crate::credentials::push_reference(&mut sql, credential);
                sql.push(", decrypts = ").bind::<Bool, _>(new.decrypts);
                sql.push(", history_since = ").bind::<Nullable<BigInt>, _>(new.since.map(to_unix_ms));
                // A run under way with the old token records nothing over the renewed watch.
                sql.push(", status = 'ACTIVE', status_reason = NULL, lease_owner = NULL, lease_until = NULL");
                sql.push(", next_run_at = ").bind::<BigInt, _>(now_ms);
                sql.push(" WHERE id = ").bind::<BigInt, _>(watch.id);
                sql.build().execute(conn)?;
            }
            None => {
                check_owner_cap(conn, viewer, caps.per_owner)?;
                check_org_cap(conn, viewer, caps.per_org)?;
                sql.push(
                    "INSERT INTO watches (org_id, owner, room_id, homeserver_url, classification, \
                     interval_secs, token_key_id, token_nonce, token_ciphertext, status, next_run_at, created_at, \
                     decrypts, history_since, credential_id) VALUES (",
                );
                sql.bind::<Text, _>(viewer.org.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(new.owner.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(new.room_id.as_str().to_owned()).push(", ");
                sql.bind::<Text, _>(new.homeserver_url.as_str().to_owned()).push(", ");
                sql.bind::<SmallInt, _>(level.rank()).push(", ");
                sql.bind::<BigInt, _>(i64::from(new.interval_secs)).push(", ");
                sql.bind::<Text, _>(new.token.key_id.clone()).push(", ");
                sql.bind::<Text, _>(new.token.nonce.clone()).push(", ");
                sql.bind::<Text, _>(new.token.ciphertext.clone()).push(", 'ACTIVE', ");
                sql.bind::<BigInt, _>(now_ms).push(", ").bind::<BigInt, _>(now_ms).push(", ");
                sql.bind::<Bool, _>(new.decrypts).push(", ");
                sql.bind::<Nullable<BigInt>, _>(new.since.map(to_unix_ms)).push(", ");
                sql.bind::<Nullable<BigInt>, _>(credential).push(")");
                sql.build().execute(conn)?;
            }
        }
        crate::credentials::drop_orphans(conn, &viewer.org)?;
        find(conn, &viewer.org, &new.room_id)?
            .map(|(watch, _)| watch)
            .ok_or(Error::Corrupt("a watch vanished while it was written"))
    })
}

fn push_token_update(sql: &mut Sql<'_>, token: &SealedToken) {
    sql.push(", token_key_id = ").bind::<Text, _>(token.key_id.clone());
    sql.push(", token_nonce = ").bind::<Text, _>(token.nonce.clone());
    sql.push(", token_ciphertext = ").bind::<Text, _>(token.ciphertext.clone());
}

#[derive(Debug, QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The watches `viewer` may see, of `owner` alone or of their whole organisation: what the caps
/// count, so that how many watches exist above their clearance never decides their answer.
fn count_visible(conn: &mut DbConn, viewer: &Viewer, owner: Option<&str>) -> Result<i64> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT COUNT(*) AS n FROM watches w WHERE ");
    Gate::of(viewer).apply_watch(&mut sql, "w");
    if let Some(owner) = owner {
        sql.push(" AND w.owner = ").bind::<Text, _>(owner.to_owned());
    }
    Ok(sql.build().get_result::<Count>(conn)?.n)
}

/// Refuses one more watch of `viewer`'s when they own `limit` already.
fn check_owner_cap(conn: &mut DbConn, viewer: &Viewer, limit: u32) -> Result<()> {
    if count_visible(conn, viewer, Some(viewer.actor.as_str()))? >= i64::from(limit) {
        return Err(Error::TooManyWatches { per: "owner", limit });
    }
    Ok(())
}

/// Refuses one more watch when `viewer`'s organisation, as they see it, has `limit` already.
fn check_org_cap(conn: &mut DbConn, viewer: &Viewer, limit: u32) -> Result<()> {
    if count_visible(conn, viewer, None)? >= i64::from(limit) {
        return Err(Error::TooManyWatches { per: "organisation", limit });
    }
    Ok(())
}

/// The watches `gate` lets through, oldest first, after storage id `after`, at most `first`.
pub(crate) fn list(conn: &mut DbConn, gate: &Gate, first: u32, after: Option<i64>) -> Result<Vec<Watch>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT ").push(COLUMNS).push(" FROM watches w WHERE ");
    gate.apply_watch(&mut sql, "w");
    if let Some(after) = after {
        sql.push(" AND w.id > ").bind::<BigInt, _>(after);
    }
    sql.push(" ORDER BY w.id LIMIT ").bind::<BigInt, _>(i64::from(first));
    let rows: Vec<WatchRow> = sql.build().load(conn)?;
    rows.into_iter().map(|r| r.into_domain().map(|(w, _)| w)).collect()
}

/// The watch of `room_id` that `gate` lets through.
pub(crate) fn get(conn: &mut DbConn, gate: &Gate, room_id: &RoomId) -> Result<Option<Watch>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT ").push(COLUMNS).push(" FROM watches w WHERE ");
    gate.apply_watch(&mut sql, "w");
    sql.push(" AND w.room_id = ").bind::<Text, _>(room_id.as_str().to_owned());
    Ok(load_one(conn, sql)?.map(|(w, _)| w))
}

/// Removes the watch of `room_id` that `gate` lets through; whether there was one.
pub(crate) fn remove(conn: &mut DbConn, gate: &Gate, room_id: &RoomId) -> Result<bool> {
    in_transaction(conn, TxMode::Write, |conn| {
        let Some(watch) = get(conn, gate, room_id)? else {
            return Ok(false);
        };
        let mut sql = Sql::new(conn.backend());
        sql.push("DELETE FROM watches WHERE id = ").bind::<BigInt, _>(watch.id);
        let removed = sql.build().execute(conn)? == 1;
        crate::credentials::drop_orphans(conn, &watch.org)?;
        Ok(removed)
    })
}

/// Claims up to `limit` active watches due at `now` whose lease is free or expired, for
/// `owner` until `now + lease`, most overdue first. Replicas claiming at once get disjoint
/// sets: PostgreSQL skips the rows another transaction holds; SQLite has one writer.
pub(crate) fn claim_due(
    conn: &mut DbConn,
    now: OffsetDateTime,
    owner: &str,
    lease: std::time::Duration,
    limit: u32,
) -> Result<Vec<ClaimedWatch>> {
    let now_ms = to_unix_ms(now);
    let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2));
    let backend = conn.backend();
    in_transaction(conn, TxMode::Write, |conn| {
        let mut sql = Sql::new(backend);
        // The due rows are chosen once (a materialised CTE: PostgreSQL may otherwise evaluate a
        // `LIMIT … FOR UPDATE SKIP LOCKED` subquery more than once and claim more than `limit`);
        // rows another replica is claiming are skipped, not waited for.
        sql.push(
            "WITH due AS MATERIALIZED (SELECT id FROM watches WHERE status = 'ACTIVE' AND next_run_at <= ",
        );
        sql.bind::<BigInt, _>(now_ms).push(" AND (lease_until IS NULL OR lease_until < ");
        sql.bind::<BigInt, _>(now_ms).push(") ORDER BY next_run_at LIMIT ");
        sql.bind::<BigInt, _>(i64::from(limit));
        if backend == Backend::Postgres {
            sql.push(" FOR UPDATE SKIP LOCKED");
        }
        sql.push(") UPDATE watches SET lease_owner = ").bind::<Text, _>(owner.to_owned());
        sql.push(", lease_until = ").bind::<BigInt, _>(until);
        sql.push(" WHERE id IN (SELECT id FROM due) RETURNING ").push(&COLUMNS.replace("w.", ""));
        let rows: Vec<WatchRow> = sql.build().load(conn)?;
        // A row that fails validation stays claimed until its lease runs out (and is logged):
        // it must not keep every other watch from running.
        Ok(rows
            .into_iter()
            .filter_map(|r| {
                let id = r.id;
                r.into_domain()
                    .map(|(watch, token)| ClaimedWatch { watch, token })
                    .inspect_err(
                        |e| tracing::error!(watch = id, error = %e, "a stored watch fails validation"),
                    )
                    .ok()
            })
            .collect())
    })
}

/// Records the run of a watch claimed by `owner` and releases its lease; `false` when the
/// lease was lost (another replica took the watch over, or it was removed).
pub(crate) fn record_run(conn: &mut DbConn, id: i64, owner: &str, run: &WatchRun) -> Result<bool> {
    let mut sql = Sql::new(conn.backend());
    sql.push("UPDATE watches SET lease_owner = NULL, lease_until = NULL, last_run_at = ");
    sql.bind::<BigInt, _>(to_unix_ms(run.ran_at)).push(", next_run_at = ");
    sql.bind::<BigInt, _>(to_unix_ms(run.next_run_at)).push(", last_outcome = ");
    sql.bind::<Text, _>(if run.error.is_some() { "FAILED" } else { "SUCCEEDED" }).push(", last_error = ");
    sql.bind::<Nullable<Text>, _>(run.error.as_deref().map(|e| bounded(e, 1024)));
    if let Some(reason) = &run.pause {
        let status = WatchStatus::stopped_by(reason);
        sql.push(", status = ").bind::<Text, _>(status.as_str());
        sql.push(", status_reason = ").bind::<Text, _>(bounded(reason, 1024));
    }
    sql.push(" WHERE id = ")
        .bind::<BigInt, _>(id)
        .push(" AND lease_owner = ")
        .bind::<Text, _>(owner.to_owned());
    Ok(sql.build().execute(conn)? == 1)
}

/// Extends `owner`'s lease of a watch to `now + lease`; `false` when it is no longer theirs.
pub(crate) fn renew_lease(
    conn: &mut DbConn,
    id: i64,
    owner: &str,
    now: OffsetDateTime,
    lease: std::time::Duration,
) -> Result<bool> {
    let until = to_unix_ms(now).saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2));
    let mut sql = Sql::new(conn.backend());
    sql.push("UPDATE watches SET lease_until = ").bind::<BigInt, _>(until);
    sql.push(" WHERE id = ")
        .bind::<BigInt, _>(id)
        .push(" AND lease_owner = ")
        .bind::<Text, _>(owner.to_owned());
    Ok(sql.build().execute(conn)? == 1)
}

/// Releases a claimed watch without running it (the replica is stopping, or had no room for it
/// now): due again at `next_run_at`.
pub(crate) fn release(conn: &mut DbConn, id: i64, owner: &str, next_run_at: OffsetDateTime) -> Result<bool> {
    let mut sql = Sql::new(conn.backend());
    sql.push("UPDATE watches SET lease_owner = NULL, lease_until = NULL, next_run_at = ");
    sql.bind::<BigInt, _>(to_unix_ms(next_run_at));
    sql.push(" WHERE id = ")
        .bind::<BigInt, _>(id)
        .push(" AND lease_owner = ")
        .bind::<Text, _>(owner.to_owned());
    Ok(sql.build().execute(conn)? == 1)
}

fn bounded(text: &str, max: usize) -> String {
    argus_domain::NewIngestion::sanitise(text, max)
}

/// Every watch's sealed token (for re-sealing under a new key).
pub(crate) fn sealed_tokens(conn: &mut DbConn) -> Result<Vec<SealedWatchToken>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT ").push(COLUMNS).push(" FROM watches w ORDER BY w.id");
    let rows: Vec<WatchRow> = sql.build().load(conn)?;
    rows.into_iter()
        .map(|r| {
            r.into_domain().map(|(w, token)| SealedWatchToken {
                id: w.id,
                org: w.org,
                room_id: w.room_id,
                homeserver_url: w.homeserver_url.as_str().to_owned(),
                owner: w.owner,
                token,
            })
        })
        .collect()
}

/// Replaces a watch's sealed token if it is still `old` (re-sealed under a new key).
pub(crate) fn reseal(conn: &mut DbConn, id: i64, old: &SealedToken, new: &SealedToken) -> Result<bool> {
    check_sealed(new)?;
    let mut sql = Sql::new(conn.backend());
    sql.push("UPDATE watches SET token_key_id = ").bind::<Text, _>(new.key_id.clone());
    sql.push(", token_nonce = ").bind::<Text, _>(new.nonce.clone());
    sql.push(", token_ciphertext = ").bind::<Text, _>(new.ciphertext.clone());
    sql.push(" WHERE id = ").bind::<BigInt, _>(id);
    sql.push(" AND token_ciphertext = ").bind::<Text, _>(old.ciphertext.clone());
    Ok(sql.build().execute(conn)? == 1)
}
