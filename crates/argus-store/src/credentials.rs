//! Account credentials: the sealed refresh-token pair of one account's Matrix session, kept once
//! per (organisation, owner, homeserver, Matrix user) and referred to by every watch of that
//! account that was given a refresh token (`watches.credential_id`, and an account watch's
//! `account_watches.credential_id`). A renewal holds the row's own short lease (one holder
//! string per renewer) only while it renews, and stores the new pair by compare-and-swap under
//! that lease; every watch and every replica then reads the one pair.

use argus_domain::{ActorId, OrgId, SealedToken, to_unix_ms};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Nullable, Text},
};
use time::OffsetDateTime;

use crate::{
    Error, Result, Store,
    db::{DbConn, Sql},
};

/// One account's sealed token pair, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    /// Storage id (what watches refer to).
    pub id: i64,
    /// The organisation it belongs to.
    pub org: OrgId,
    /// The Argus user who gave it.
    pub owner: ActorId,
    /// The homeserver it is used at.
    pub homeserver_url: String,
    /// The Matrix user id of the session.
    pub user_id: String,
    /// The pair, sealed (its binding is the four above).
    pub token: SealedToken,
}

/// An account's pair to keep: replaces the stored one of the same account, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    /// The organisation.
    pub org: OrgId,
    /// The Argus user who gives it.
    pub owner: ActorId,
    /// The homeserver.
    pub homeserver_url: String,
    /// The Matrix user id the homeserver confirmed (`whoami`).
    pub user_id: String,
    /// The pair, sealed for that account.
    pub token: SealedToken,
}

const COLUMNS: &str =
    "id, org_id, owner, homeserver_url, user_id, token_key_id, token_nonce, token_ciphertext";

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
    #[diesel(sql_type = Text)]
    token_key_id: String,
    #[diesel(sql_type = Text)]
    token_nonce: String,
    #[diesel(sql_type = Text)]
    token_ciphertext: String,
}

impl Row {
    fn into_domain(self) -> Result<StoredCredential> {
        const BAD: Error = Error::Corrupt("a stored credential fails validation");
        Ok(StoredCredential {
            id: self.id,
            org: self.org_id.parse().map_err(|_| BAD)?,
            owner: self.owner.parse().map_err(|_| BAD)?,
            homeserver_url: self.homeserver_url,
            user_id: self.user_id,
            token: SealedToken {
                key_id: self.token_key_id,
                nonce: self.token_nonce,
                ciphertext: self.token_ciphertext,
            },
        })
    }
}

#[derive(Debug, QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

fn until(now: OffsetDateTime, lease: std::time::Duration) -> i64 {
    to_unix_ms(now).saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
}

fn load(conn: &mut DbConn, sql: Sql<'_>) -> Result<Vec<StoredCredential>> {
    let rows: Vec<Row> = sql.build().load(conn)?;
    rows.into_iter().map(Row::into_domain).collect()
}

/// Keeps an account's pair (in the watch's upsert): replaces the stored pair of the same
/// account, or adds it; its storage id.
pub(crate) fn keep(conn: &mut DbConn, new: &NewCredential, now: OffsetDateTime) -> Result<i64> {
    crate::watch::check_sealed(&new.token)?;
    if new.user_id.len() < 3 || new.user_id.len() > 255 || new.homeserver_url.len() > 2048 {
        return Err(Error::invalid("credential", "malformed user id or homeserver"));
    }
    let mut sql = Sql::new(conn.backend());
    sql.push(
        "INSERT INTO account_credentials (org_id, owner, homeserver_url, user_id, token_key_id, \
         token_nonce, token_ciphertext, updated_at) VALUES (",
    );
    sql.bind::<Text, _>(new.org.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(new.owner.as_str().to_owned()).push(", ");
    sql.bind::<Text, _>(new.homeserver_url.clone()).push(", ");
    sql.bind::<Text, _>(new.user_id.clone()).push(", ");
    sql.bind::<Text, _>(new.token.key_id.clone()).push(", ");
    sql.bind::<Text, _>(new.token.nonce.clone()).push(", ");
    sql.bind::<Text, _>(new.token.ciphertext.clone()).push(", ");
    sql.bind::<BigInt, _>(to_unix_ms(now)).push(
        ") ON CONFLICT (org_id, owner, homeserver_url, user_id) DO UPDATE SET \
         token_key_id = excluded.token_key_id, token_nonce = excluded.token_nonce, \
         token_ciphertext = excluded.token_ciphertext, updated_at = excluded.updated_at RETURNING id",
    );
    Ok(sql.build().get_result::<Id>(conn)?.id)
}

/// Removes `org`'s credentials no watch of either kind (room watch, account watch) refers to any
/// more (its last watch removed, or given again without a refresh token): a refresh token is not
/// kept for nothing.
pub(crate) fn drop_orphans(conn: &mut DbConn, org: &OrgId) -> Result<usize> {
    let mut sql = Sql::new(conn.backend());
    sql.push("DELETE FROM account_credentials WHERE org_id = ").bind::<Text, _>(org.as_str().to_owned());
    sql.push(" AND id NOT IN (SELECT credential_id FROM watches WHERE credential_id IS NOT NULL)");
    sql.push(" AND id NOT IN (SELECT credential_id FROM account_watches WHERE credential_id IS NOT NULL)");
    Ok(sql.build().execute(conn)?)
}

impl Store {
    /// The credential `id`, as stored now; `None` when there is none.
    pub fn credential(&self, id: i64) -> Result<Option<StoredCredential>> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT ").push(COLUMNS).push(" FROM account_credentials WHERE id = ").bind::<BigInt, _>(id);
        Ok(load(conn, sql)?.into_iter().next())
    }

    /// The credential watch `watch_id` refers to; `None` when it keeps its own token (or is
    /// gone).
    pub fn watch_credential(&self, watch_id: i64) -> Result<Option<StoredCredential>> {
        self.referred_by("watches", watch_id)
    }

    /// The credential account watch `watch_id` refers to (its account's refresh-token pair);
    /// `None` when it was given none (or is gone).
    pub fn account_watch_credential(&self, watch_id: i64) -> Result<Option<StoredCredential>> {
        self.referred_by("account_watches", watch_id)
    }

    /// The credential the row `watch_id` of `table` (`watches` or `account_watches`) refers to.
    fn referred_by(&self, table: &'static str, watch_id: i64) -> Result<Option<StoredCredential>> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT ").push(COLUMNS).push(" FROM account_credentials WHERE id = ");
        sql.push("(SELECT credential_id FROM ").push(table).push(" WHERE id = ");
        sql.bind::<BigInt, _>(watch_id).push(")");
        Ok(load(conn, sql)?.into_iter().next())
    }

    /// Takes the lease of credential `id` for `holder` until `now + lease` when it is free, ran
    /// out, or already `holder`'s; whether `holder` holds it now.
    pub fn borrow_credential_lease(
        &self,
        id: i64,
        holder: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
    ) -> Result<bool> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        sql.push("UPDATE account_credentials SET lease_owner = ").bind::<Text, _>(holder.to_owned());
        sql.push(", lease_until = ").bind::<BigInt, _>(until(now, lease));
        sql.push(" WHERE id = ").bind::<BigInt, _>(id);
        sql.push(" AND (lease_owner IS NULL OR lease_owner = ").bind::<Text, _>(holder.to_owned());
        sql.push(" OR lease_until < ").bind::<BigInt, _>(to_unix_ms(now)).push(")");
        Ok(sql.build().execute(conn)? == 1)
    }

    /// Gives back `holder`'s lease of credential `id` (never another holder's); whether it was
    /// theirs.
    pub fn return_credential_lease(&self, id: i64, holder: &str) -> Result<bool> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        sql.push("UPDATE account_credentials SET lease_owner = NULL, lease_until = NULL WHERE id = ");
        sql.bind::<BigInt, _>(id).push(" AND lease_owner = ").bind::<Text, _>(holder.to_owned());
        Ok(sql.build().execute(conn)? == 1)
    }

    /// Stores a renewed pair: replaces credential `id`'s sealed pair with `new` only if `holder`
    /// holds its lease at `now` and the stored pair is still `old`, in one statement; whether it
    /// was replaced (`false`: the race was lost, or the pair was re-sealed meanwhile).
    pub fn renew_credential_token(
        &self,
        id: i64,
        holder: &str,
        now: OffsetDateTime,
        old: &SealedToken,
        new: &SealedToken,
    ) -> Result<bool> {
        crate::watch::check_sealed(new)?;
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        push_token(&mut sql, new);
        sql.push(", updated_at = ").bind::<BigInt, _>(to_unix_ms(now));
        sql.push(" WHERE id = ").bind::<BigInt, _>(id);
        sql.push(" AND lease_owner = ").bind::<Text, _>(holder.to_owned());
        sql.push(" AND lease_until >= ").bind::<BigInt, _>(to_unix_ms(now));
        sql.push(" AND token_key_id = ").bind::<Text, _>(old.key_id.clone());
        sql.push(" AND token_ciphertext = ").bind::<Text, _>(old.ciphertext.clone());
        Ok(sql.build().execute(conn)? == 1)
    }

    /// Every credential (for re-sealing under a new key).
    pub fn sealed_credentials(&self) -> Result<Vec<StoredCredential>> {
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        sql.push("SELECT ").push(COLUMNS).push(" FROM account_credentials ORDER BY id");
        load(conn, sql)
    }

    /// Replaces credential `id`'s sealed pair if it is still `old` (the same pair re-sealed
    /// under a new key); whether it was replaced.
    pub fn reseal_credential(&self, id: i64, old: &SealedToken, new: &SealedToken) -> Result<bool> {
        crate::watch::check_sealed(new)?;
        let mut pooled = self.conn()?;
        let conn: &mut DbConn = &mut pooled;
        let mut sql = Sql::new(conn.backend());
        push_token(&mut sql, new);
        sql.push(" WHERE id = ").bind::<BigInt, _>(id);
        sql.push(" AND token_key_id = ").bind::<Text, _>(old.key_id.clone());
        sql.push(" AND token_ciphertext = ").bind::<Text, _>(old.ciphertext.clone());
        Ok(sql.build().execute(conn)? == 1)
    }
}

fn push_token(sql: &mut Sql<'_>, token: &SealedToken) {
    sql.push("UPDATE account_credentials SET token_key_id = ").bind::<Text, _>(token.key_id.clone());
    sql.push(", token_nonce = ").bind::<Text, _>(token.nonce.clone());
    sql.push(", token_ciphertext = ").bind::<Text, _>(token.ciphertext.clone());
}

/// Sets which credential a watch refers to (`None`: it keeps its own token), in the watch's
/// upsert.
pub(crate) fn push_reference(sql: &mut Sql<'_>, credential: Option<i64>) {
    sql.push(", credential_id = ").bind::<Nullable<BigInt>, _>(credential);
}
