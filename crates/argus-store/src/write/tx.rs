//! Write transactions and the locks they hold: `BEGIN IMMEDIATE` on SQLite (one writer at a
//! time), a `pg_advisory_xact_lock` on PostgreSQL, keyed by an organisation's audit chain or by
//! one room of an organisation.

use diesel::{RunQueryDsl as _, sql_types::BigInt};
use sha2::{Digest as _, Sha256};

use crate::{
    Result,
    db::{DbConn, TxMode, in_transaction},
};

/// What a write transaction locks on PostgreSQL (SQLite has one writer for everything).
#[derive(Debug, Clone, Copy)]
pub(super) enum Lock<'a> {
    /// An organisation's audit chain: appends to it are serialised.
    Org(&'a str),
    /// One room of an organisation: the pages of two runs of the room never interleave within
    /// a commit, while other rooms' runs proceed.
    Room {
        /// The organisation.
        org: &'a str,
        /// The Matrix room id.
        room_id: &'a str,
    },
}

impl Lock<'_> {
    /// The advisory lock key.
    fn key(self) -> i64 {
        let name = match self {
            Self::Org(org) => format!("argus-audit:{org}"),
            Self::Room { org, room_id } => format!("argus-audit:room:{org}:{room_id}"),
        };
        let digest = Sha256::digest(name.as_bytes());
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(key)
    }
}

/// Runs `f` in a write transaction holding `lock`; rolls back on any error.
pub(super) fn in_locked_transaction<T>(
    conn: &mut DbConn,
    lock: Lock<'_>,
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    in_transaction_holding(conn, &[lock], f)
}

/// Runs `f` in a write transaction holding one room's lock, then its organisation's (what
/// changes the room and appends to the chain at once); rolls back on any error. No writer takes
/// the two the other way round.
pub(super) fn in_room_and_org_transaction<T>(
    conn: &mut DbConn,
    org: &str,
    room_id: &str,
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    in_transaction_holding(conn, &[Lock::Room { org, room_id }, Lock::Org(org)], f)
}

/// Runs `f` in a write transaction holding `locks`, taken in order; rolls back on any error.
fn in_transaction_holding<T>(
    conn: &mut DbConn,
    locks: &[Lock<'_>],
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    in_transaction(conn, TxMode::Write, |conn| {
        if let DbConn::Postgres(c) = conn {
            for lock in locks {
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<BigInt, _>(lock.key())
                    .execute(c)?;
            }
        }
        f(conn)
    })
}

/// Runs `f` in a write transaction holding the audit locks of `orgs` (taken in sorted order, as
/// no other writer takes two); rolls back on any error.
pub(crate) fn in_orgs_transaction<T>(
    conn: &mut DbConn,
    orgs: &[&str],
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    let mut orgs = orgs.to_vec();
    orgs.sort_unstable();
    orgs.dedup();
    let locks: Vec<Lock<'_>> = orgs.into_iter().map(Lock::Org).collect();
    in_transaction_holding(conn, &locks, f)
}

/// Runs `f` in a write transaction holding `org`'s audit lock; rolls back on any error.
pub(crate) fn in_org_transaction<T>(
    conn: &mut DbConn,
    org: &str,
    f: impl FnOnce(&mut DbConn) -> Result<T>,
) -> Result<T> {
    in_locked_transaction(conn, Lock::Org(org), f)
}

#[cfg(test)]
mod tests {
    use super::Lock;

    /// The keys other processes (and older versions) take: an organisation's and one room's.
    #[test]
    fn lock_keys_are_those_of_the_chain_and_of_the_room() {
        use sha2::Digest as _;
        let key = |name: &str| {
            let digest = sha2::Sha256::digest(name.as_bytes());
            i64::from_be_bytes(digest[..8].try_into().unwrap())
        };
        assert_eq!(Lock::Org("org-a").key(), key("argus-audit:org-a"));
        assert_eq!(
            Lock::Room { org: "org-a", room_id: "!r:x.org" }.key(),
            key("argus-audit:room:org-a:!r:x.org")
        );
    }
}
