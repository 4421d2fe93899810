//! The state of the connector's end-to-end-encryption devices: one device per watched account
//! (organisation, homeserver, Matrix user, device id), its state kept as items (an Olm account,
//! sessions, room keys, ...), each sealed at rest by the caller with a key held outside the
//! database, like a watch's token.
//!
//! Items are written only under the account watch's lease, checked in the writing transaction
//! with the predicate [`Store::record_sync`] uses (the lease held by the writing replica,
//! unexpired by the store's clock, the watch active) and for the watch's own account: a loop
//! that lost its watch (taken over, expired, renewed, removed, stopped) writes nothing over the
//! device its successor drives. Every write of a call is one transaction: all or nothing.
//! Re-sealing after a key rotation compares the stored seal, as the watch tokens' does.

use std::collections::HashSet;

use argus_domain::{OrgId, SealedToken, to_unix_ms};
use diesel::{
    QueryableByName, RunQueryDsl as _,
    sql_types::{BigInt, Text},
};
use time::OffsetDateTime;

use crate::{
    Error, Result, Store,
    db::{DbConn, Sql, TxMode, in_transaction},
};

/// The most items (puts and deletes together) one [`Store::write_device_items`] takes.
pub const MAX_DEVICE_ITEMS_PER_WRITE: usize = 10_000;

/// The longest kind of a device item, in bytes (at least 1).
pub const MAX_DEVICE_ITEM_KIND_LEN: usize = 64;

/// The longest key of a device item, in bytes (at least 1).
pub const MAX_DEVICE_ITEM_KEY_LEN: usize = 1_024;

/// The longest sealed value (base64 ciphertext) of a device item, in bytes: 8 MiB.
pub const MAX_DEVICE_ITEM_CIPHERTEXT_LEN: usize = 8 * 1024 * 1024;

/// The longest homeserver URL of a device, in bytes.
const MAX_HOMESERVER_URL_LEN: usize = 2_048;

/// The longest Matrix user id or device id of a device, in bytes.
const MAX_ID_LEN: usize = 255;

/// Items written by one statement, at most.
const ROWS_PER_STATEMENT: usize = 200;

/// Bytes of sealed values written by one statement, at most (one item may exceed it alone).
const BYTES_PER_STATEMENT: usize = 16 * 1024 * 1024;

/// Which device: organisation, homeserver, Matrix user and device id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceRef<'a> {
    /// The organisation whose account watch drives the device.
    pub org: &'a OrgId,
    /// The account's homeserver, as its account watch stores it.
    pub homeserver_url: &'a str,
    /// The account's Matrix user id.
    pub user_id: &'a str,
    /// The device id.
    pub device_id: &'a str,
}

/// Owned form of [`DeviceRef`]: organisation, homeserver, Matrix user and device id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceIdentity {
    /// The organisation whose account watch drives the device.
    pub org: OrgId,
    /// The account's homeserver.
    pub homeserver_url: String,
    /// The account's Matrix user id.
    pub user_id: String,
    /// The device id.
    pub device_id: String,
}

impl DeviceIdentity {
    /// The borrowed form, for the store's calls.
    pub fn to_ref(&self) -> DeviceRef<'_> {
        DeviceRef {
            org: &self.org,
            homeserver_url: &self.homeserver_url,
            user_id: &self.user_id,
            device_id: &self.device_id,
        }
    }
}

impl From<DeviceRef<'_>> for DeviceIdentity {
    fn from(device: DeviceRef<'_>) -> Self {
        Self {
            org: device.org.clone(),
            homeserver_url: device.homeserver_url.to_owned(),
            user_id: device.user_id.to_owned(),
            device_id: device.device_id.to_owned(),
        }
    }
}

/// One sealed item of a device's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedDeviceItem {
    /// The kind of item (1 to [`MAX_DEVICE_ITEM_KIND_LEN`] bytes).
    pub kind: String,
    /// Its key within the kind (1 to [`MAX_DEVICE_ITEM_KEY_LEN`] bytes).
    pub key: String,
    /// Its value, sealed by the caller.
    pub sealed: SealedToken,
}

#[derive(Debug, QueryableByName)]
struct ItemRow {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Text)]
    item_key: String,
    #[diesel(sql_type = Text)]
    key_id: String,
    #[diesel(sql_type = Text)]
    nonce: String,
    #[diesel(sql_type = Text)]
    ciphertext: String,
}

impl ItemRow {
    fn into_item(self) -> SealedDeviceItem {
        SealedDeviceItem {
            kind: self.kind,
            key: self.item_key,
            sealed: SealedToken { key_id: self.key_id, nonce: self.nonce, ciphertext: self.ciphertext },
        }
    }
}

#[derive(Debug, QueryableByName)]
struct ResealRow {
    #[diesel(sql_type = Text)]
    org_id: String,
    #[diesel(sql_type = Text)]
    homeserver_url: String,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    device_id: String,
    #[diesel(embed)]
    item: ItemRow,
}

#[derive(Debug, QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Refuses a device reference out of bounds.
fn check_device(device: DeviceRef<'_>) -> Result<()> {
    let ok = (1..=MAX_HOMESERVER_URL_LEN).contains(&device.homeserver_url.len())
        && (1..=MAX_ID_LEN).contains(&device.user_id.len())
        && (1..=MAX_ID_LEN).contains(&device.device_id.len());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("device", "homeserver, user id or device id empty or too long"))
    }
}

/// Refuses an item's kind or key out of bounds.
fn check_kind_key(kind: &str, key: &str) -> Result<()> {
    if !(1..=MAX_DEVICE_ITEM_KIND_LEN).contains(&kind.len()) {
        return Err(Error::invalid("device item", "kind must be 1 to 64 bytes"));
    }
    if !(1..=MAX_DEVICE_ITEM_KEY_LEN).contains(&key.len()) {
        return Err(Error::invalid("device item", "key must be 1 to 1024 bytes"));
    }
    Ok(())
}

/// Refuses a malformed sealed value.
fn check_sealed(sealed: &SealedToken) -> Result<()> {
    let ok = (1..=64).contains(&sealed.key_id.len())
        && sealed.nonce.len() <= 64
        && (1..=MAX_DEVICE_ITEM_CIPHERTEXT_LEN).contains(&sealed.ciphertext.len());
    if ok { Ok(()) } else { Err(Error::invalid("device item", "sealed value malformed or too long")) }
}

/// Appends the condition naming `device`'s row (alias `d`).
fn push_device(sql: &mut Sql<'_>, device: DeviceRef<'_>) {
    sql.push("d.org_id = ").bind::<Text, _>(device.org.as_str().to_owned());
    sql.push(" AND d.homeserver_url = ").bind::<Text, _>(device.homeserver_url.to_owned());
    sql.push(" AND d.user_id = ").bind::<Text, _>(device.user_id.to_owned());
    sql.push(" AND d.device_id = ").bind::<Text, _>(device.device_id.to_owned());
}

/// The storage id of `device`, if it is stored.
fn device_pk(conn: &mut DbConn, device: DeviceRef<'_>) -> Result<Option<i64>> {
    let mut sql = Sql::new(conn.backend());
    sql.push("SELECT d.id AS id FROM e2ee_devices d WHERE ");
    push_device(&mut sql, device);
    Ok(sql.build().load::<Id>(conn)?.into_iter().next().map(|r| r.id))
}

/// Holds account watch `watch_id` for the rest of the transaction, while `replica` holds its
/// lease at `now` (see [`crate::account_watch::push_held`]) and it watches `device`'s account;
/// [`Error::LeaseLost`] otherwise.
fn hold_lease(
    conn: &mut DbConn,
    watch_id: i64,
    replica: &str,
    device: DeviceRef<'_>,
    now: OffsetDateTime,
) -> Result<()> {
    let mut sql = Sql::new(conn.backend());
    // An update that changes nothing: it takes the row's lock (PostgreSQL), so that no claim
    // takes the watch over before this transaction ends.
    sql.push("UPDATE account_watches SET lease_until = lease_until");
    crate::account_watch::push_held(&mut sql, watch_id, replica, now);
    sql.push(" AND org_id = ").bind::<Text, _>(device.org.as_str().to_owned());
    sql.push(" AND homeserver_url = ").bind::<Text, _>(device.homeserver_url.to_owned());
    sql.push(" AND user_id = ").bind::<Text, _>(device.user_id.to_owned());
    if sql.build().execute(conn)? == 1 { Ok(()) } else { Err(Error::LeaseLost) }
}

/// Writes `puts` and removes `deletes` of `device` under the lease; see
/// [`Store::write_device_items`].
fn write(
    conn: &mut DbConn,
    watch_id: i64,
    replica: &str,
    device: DeviceRef<'_>,
    puts: &[SealedDeviceItem],
    deletes: &[(String, String)],
    now: OffsetDateTime,
) -> Result<()> {
    check_device(device)?;
    if puts.len().saturating_add(deletes.len()) > MAX_DEVICE_ITEMS_PER_WRITE {
        return Err(Error::invalid("device items", "at most 10000 items in one write"));
    }
    for item in puts {
        check_kind_key(&item.kind, &item.key)?;
        check_sealed(&item.sealed)?;
    }
    for (kind, key) in deletes {
        check_kind_key(kind, key)?;
    }
    // Each item once, the last given counting (one statement may not write a row twice).
    let mut seen = HashSet::new();
    let mut puts: Vec<&SealedDeviceItem> =
        puts.iter().rev().filter(|item| seen.insert((item.kind.as_str(), item.key.as_str()))).collect();
    puts.reverse();
    let backend = conn.backend();
    let now_ms = to_unix_ms(now);
    in_transaction(conn, TxMode::Write, |conn| {
        hold_lease(conn, watch_id, replica, device, now)?;
        let mut sql = Sql::new(backend);
        sql.push(
            "INSERT INTO e2ee_devices (org_id, homeserver_url, user_id, device_id, created_at) VALUES (",
        );
        sql.bind::<Text, _>(device.org.as_str().to_owned()).push(", ");
        sql.bind::<Text, _>(device.homeserver_url.to_owned()).push(", ");
        sql.bind::<Text, _>(device.user_id.to_owned()).push(", ");
        sql.bind::<Text, _>(device.device_id.to_owned()).push(", ");
        sql.bind::<BigInt, _>(now_ms);
        sql.push(") ON CONFLICT (org_id, homeserver_url, user_id, device_id) DO NOTHING");
        sql.build().execute(conn)?;
        let pk = device_pk(conn, device)?.ok_or(Error::Corrupt("a device vanished while it was written"))?;

        let mut rest = puts.as_slice();
        while !rest.is_empty() {
            // Up to ROWS_PER_STATEMENT rows and BYTES_PER_STATEMENT bytes (at least one row).
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && n < ROWS_PER_STATEMENT {
                bytes += rest[n].sealed.ciphertext.len();
                if n > 0 && bytes > BYTES_PER_STATEMENT {
                    break;
                }
                n += 1;
            }
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut sql = Sql::new(backend);
            sql.push(
                "INSERT INTO e2ee_device_items (device_pk, kind, item_key, key_id, nonce, ciphertext, \
                 updated_at) VALUES ",
            );
            for (i, item) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" });
                sql.bind::<BigInt, _>(pk).push(", ");
                sql.bind::<Text, _>(item.kind.clone()).push(", ");
                sql.bind::<Text, _>(item.key.clone()).push(", ");
                sql.bind::<Text, _>(item.sealed.key_id.clone()).push(", ");
                sql.bind::<Text, _>(item.sealed.nonce.clone()).push(", ");
                sql.bind::<Text, _>(item.sealed.ciphertext.clone()).push(", ");
                sql.bind::<BigInt, _>(now_ms).push(")");
            }
            sql.push(
                " ON CONFLICT (device_pk, kind, item_key) DO UPDATE SET key_id = excluded.key_id, \
                 nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = excluded.updated_at",
            );
            sql.build().execute(conn)?;
        }

        for chunk in deletes.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(backend);
            sql.push("DELETE FROM e2ee_device_items WHERE device_pk = ").bind::<BigInt, _>(pk);
            sql.push(" AND (");
            for (i, (kind, key)) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(kind = " } else { " OR (kind = " });
                sql.bind::<Text, _>(kind.clone()).push(" AND item_key = ");
                sql.bind::<Text, _>(key.clone()).push(")");
            }
            sql.push(")");
            sql.build().execute(conn)?;
        }
        Ok(())
    })
}

impl Store {
    /// Every item of `device`, by kind then key (empty when the device is unknown).
    /// [`Error::Invalid`] for a device reference out of bounds.
    pub fn device_items(&self, device: DeviceRef<'_>) -> Result<Vec<SealedDeviceItem>> {
        check_device(device)?;
        let mut conn = self.conn()?;
        let mut sql = Sql::new(conn.backend());
        sql.push(
            "SELECT i.kind, i.item_key, i.key_id, i.nonce, i.ciphertext FROM e2ee_device_items i \
             JOIN e2ee_devices d ON d.id = i.device_pk WHERE ",
        );
        push_device(&mut sql, device);
        sql.push(" ORDER BY i.kind, i.item_key");
        let rows: Vec<ItemRow> = sql.build().load(&mut **conn)?;
        Ok(rows.into_iter().map(ItemRow::into_item).collect())
    }

    /// Writes the state of `device` under the lease of account watch `watch_id` held by
    /// `replica`, in one transaction: creates the device when it is missing, writes each of
    /// `puts` (replacing the item of the same kind and key; an item given twice: the last one
    /// counts), then removes each of `deletes` (kind, key; an item both put and deleted is
    /// removed, an absent one is no error).
    ///
    /// The lease is checked in the same transaction, as [`Store::record_sync`] checks it:
    /// `replica` holds an unexpired lease of the watch (by the store's clock) and the watch is
    /// active; the watch must also be of the device's account (the same organisation,
    /// homeserver URL as the watch stores it, and user id). Otherwise nothing is written and
    /// [`Error::LeaseLost`] is returned.
    ///
    /// Refused with nothing written: [`Error::Invalid`] for a device reference out of bounds, a
    /// kind empty or longer than [`MAX_DEVICE_ITEM_KIND_LEN`] bytes, a key empty or longer than
    /// [`MAX_DEVICE_ITEM_KEY_LEN`] bytes, a malformed sealed value (one longer than
    /// [`MAX_DEVICE_ITEM_CIPHERTEXT_LEN`] bytes included), or more than
    /// [`MAX_DEVICE_ITEMS_PER_WRITE`] items (puts and deletes together).
    pub fn write_device_items(
        &self,
        watch_id: i64,
        replica: &str,
        device: DeviceRef<'_>,
        puts: &[SealedDeviceItem],
        deletes: &[(String, String)],
    ) -> Result<()> {
        write(&mut *self.conn()?, watch_id, replica, device, puts, deletes, OffsetDateTime::now_utc())
    }

    /// Items sealed under a key other than `current_key_id`, at most `limit` (and at most
    /// [`MAX_DEVICE_ITEMS_PER_WRITE`]), with their device's identity so the caller can rebuild
    /// what binds the seal to its item; for re-sealing after a key rotation with
    /// [`Store::reseal_device_item`] (call again until none is left).
    pub fn device_items_to_reseal(
        &self,
        current_key_id: &str,
        limit: usize,
    ) -> Result<Vec<(DeviceIdentity, SealedDeviceItem)>> {
        const BAD: Error = Error::Corrupt("a stored device fails validation");
        let limit = i64::try_from(limit.min(MAX_DEVICE_ITEMS_PER_WRITE)).unwrap_or(0);
        let mut conn = self.conn()?;
        let mut sql = Sql::new(conn.backend());
        sql.push(
            "SELECT d.org_id, d.homeserver_url, d.user_id, d.device_id, i.kind, i.item_key, i.key_id, \
             i.nonce, i.ciphertext FROM e2ee_device_items i JOIN e2ee_devices d ON d.id = i.device_pk \
             WHERE i.key_id <> ",
        );
        sql.bind::<Text, _>(current_key_id.to_owned());
        sql.push(" ORDER BY i.device_pk, i.kind, i.item_key LIMIT ").bind::<BigInt, _>(limit);
        let rows: Vec<ResealRow> = sql.build().load(&mut **conn)?;
        rows.into_iter()
            .map(|r| {
                let device = DeviceIdentity {
                    org: r.org_id.parse().map_err(|_| BAD)?,
                    homeserver_url: r.homeserver_url,
                    user_id: r.user_id,
                    device_id: r.device_id,
                };
                Ok((device, r.item.into_item()))
            })
            .collect()
    }

    /// Replaces the sealed value of `device`'s item (`kind`, `key`) with `new` if it still
    /// holds `old` (the same key id and nonce: the same value, not written again since it was
    /// read); whether it was replaced. Not under a lease: the value is the same, re-sealed.
    /// [`Error::Invalid`] for input out of bounds.
    pub fn reseal_device_item(
        &self,
        device: DeviceRef<'_>,
        kind: &str,
        key: &str,
        old: &SealedToken,
        new: &SealedToken,
    ) -> Result<bool> {
        check_device(device)?;
        check_kind_key(kind, key)?;
        check_sealed(new)?;
        let mut conn = self.conn()?;
        let mut sql = Sql::new(conn.backend());
        sql.push("UPDATE e2ee_device_items SET key_id = ").bind::<Text, _>(new.key_id.clone());
        sql.push(", nonce = ").bind::<Text, _>(new.nonce.clone());
        sql.push(", ciphertext = ").bind::<Text, _>(new.ciphertext.clone());
        sql.push(", updated_at = ").bind::<BigInt, _>(to_unix_ms(OffsetDateTime::now_utc()));
        sql.push(" WHERE device_pk = (SELECT d.id FROM e2ee_devices d WHERE ");
        push_device(&mut sql, device);
        sql.push(") AND kind = ").bind::<Text, _>(kind.to_owned());
        sql.push(" AND item_key = ").bind::<Text, _>(key.to_owned());
        sql.push(" AND key_id = ").bind::<Text, _>(old.key_id.clone());
        sql.push(" AND nonce = ").bind::<Text, _>(old.nonce.clone());
        Ok(sql.build().execute(&mut **conn)? == 1)
    }

    /// Removes `device` and its items, in one transaction; how many items were removed (0 for
    /// an unknown device). [`Error::Invalid`] for a device reference out of bounds.
    pub fn forget_device(&self, device: DeviceRef<'_>) -> Result<u64> {
        check_device(device)?;
        in_transaction(&mut *self.conn()?, TxMode::Write, |conn| {
            let Some(pk) = device_pk(conn, device)? else { return Ok(0) };
            let mut sql = Sql::new(conn.backend());
            sql.push("DELETE FROM e2ee_device_items WHERE device_pk = ").bind::<BigInt, _>(pk);
            let removed = sql.build().execute(conn)?;
            let mut sql = Sql::new(conn.backend());
            sql.push("DELETE FROM e2ee_devices WHERE id = ").bind::<BigInt, _>(pk);
            sql.build().execute(conn)?;
            Ok(removed as u64)
        })
    }
}
