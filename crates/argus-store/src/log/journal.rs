//! The access journal's writer: reads of content are journaled by group commit. One thread per
//! store takes every entry queued by concurrent callers, appends them all in one transaction
//! (holding the locks of their organisations' logs), and then answers each caller with its
//! index; a caller returns only after that commit, and every caller of a batch whose write
//! failed gets an error. The thread starts with the first entry and ends with the store.

use std::{
    collections::BTreeSet,
    sync::{OnceLock, mpsc},
};

use argus_domain::{OrgId, oversight::AccessEntry};

use crate::{Error, Result, db::DbPool};

/// Entries appended in one transaction at most.
const MAX_BATCH: usize = 512;

/// Where a caller's answer goes: called once, by the writer, after the commit.
pub(crate) type Reply = Box<dyn FnOnce(Result<u64>) + Send>;

/// One caller's entry and where its answer goes.
struct Request {
    entry: AccessEntry,
    reply: Reply,
}

/// The journal of a store: the queue to its writer thread, started on first use.
pub(crate) struct Journal {
    pool: DbPool,
    /// `pool` is the journal's own (not the store's): its writer may keep a connection.
    own_connection: bool,
    queue: OnceLock<mpsc::Sender<Request>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").finish_non_exhaustive()
    }
}

impl Journal {
    /// The journal of the store whose connections are `pool`.
    pub(crate) fn new(pool: DbPool, own_connection: bool) -> Self {
        Self { pool, own_connection, queue: OnceLock::new() }
    }

    /// Journals `entry` and waits for its commit; returns its index.
    pub(crate) fn record(&self, entry: &AccessEntry) -> Result<u64> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.record_then(
            entry,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        )?;
        answer.recv().map_err(|_| Error::Unavailable)?
    }

    /// Queues `entry` for the writer, which calls `reply` with its index once it is committed
    /// (or with the batch's error); refused at once, `reply` never called, when the entry is
    /// malformed or the writer is gone.
    pub(crate) fn record_then(&self, entry: &AccessEntry, reply: Reply) -> Result<()> {
        check(entry)?;
        let queue = self.queue.get_or_init(|| start(self.pool.clone(), self.own_connection));
        queue.send(Request { entry: entry.clone(), reply }).map_err(|_| Error::Unavailable)
    }
}

/// Refuses an entry that is not an access of a known shape, before it is queued.
fn check(entry: &AccessEntry) -> Result<()> {
    entry.org.parse::<OrgId>()?;
    if entry.r#type != AccessEntry::TYPE || entry.v != argus_domain::oversight::ENCODING_VERSION {
        return Err(Error::invalid("access", "not an access entry of this encoding"));
    }
    if entry.actor.is_empty() || entry.actor.chars().count() > 255 {
        return Err(Error::invalid("access", "the actor must hold 1 to 255 characters"));
    }
    if entry.room_ids.iter().any(|r| r.chars().count() > 255) {
        return Err(Error::invalid("access", "a room id is too long"));
    }
    Ok(())
}

/// Starts the writer thread; it ends when the queue's last sender (the store) is dropped.
fn start(pool: DbPool, own_connection: bool) -> mpsc::Sender<Request> {
    let (queue, requests) = mpsc::channel::<Request>();
    let spawned = std::thread::Builder::new().name("argus-access-journal".to_owned()).spawn(move || {
        let mut held: Option<crate::db::Pooled> = None;
        while let Ok(first) = requests.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(more) => batch.push(more),
                    Err(_) => break,
                }
            }
            // The writer keeps its connection between batches when it has one of its own (an
            // in-memory store's one connection is the store's: taken for each batch).
            let conn = match held.take() {
                Some(conn) => Ok(conn),
                None => pool.get().map_err(Error::from),
            };
            let written = conn.and_then(|mut conn| {
                let written = write(&mut conn, &batch_entries(&batch));
                if own_connection && written.is_ok() {
                    held = Some(conn);
                }
                written
            });
            answer(batch, written);
        }
    });
    if let Err(e) = spawned {
        // Without its thread the receiver is gone: every caller is told the store is unavailable.
        tracing::error!(error = %e, "the access journal's writer could not start");
    }
    queue
}

fn batch_entries(batch: &[Request]) -> Vec<&AccessEntry> {
    batch.iter().map(|r| &r.entry).collect()
}

/// Appends `entries` in one transaction holding their organisations' locks; their indexes.
fn write(conn: &mut crate::db::Pooled, entries: &[&AccessEntry]) -> Result<Vec<u64>> {
    let orgs: BTreeSet<&str> = entries.iter().map(|e| e.org.as_str()).collect();
    let orgs: Vec<&str> = orgs.into_iter().collect();
    crate::write::in_orgs_transaction(conn, &orgs, |conn| {
        // Each organisation's entries appended together, in their order; the indexes put back
        // in the batch's.
        let mut indexes = vec![0u64; entries.len()];
        for org in &orgs {
            let (at, own): (Vec<usize>, Vec<&AccessEntry>) =
                entries.iter().enumerate().filter(|(_, e)| e.org == *org).map(|(i, e)| (i, *e)).unzip();
            for (i, index) in at.into_iter().zip(super::append::append_accesses(conn, org, &own)?) {
                indexes[i] = index;
            }
        }
        Ok(indexes)
    })
}

/// Wakes every caller of `batch`: each with its index, or all with an error.
fn answer(batch: Vec<Request>, written: Result<Vec<u64>>) {
    match written {
        Ok(indexes) => {
            for (request, index) in batch.into_iter().zip(indexes) {
                // A caller gone meanwhile needs no answer: its entry is committed all the same.
                (request.reply)(Ok(index));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, entries = batch.len(), "the access journal could not be written");
            for request in batch {
                (request.reply)(Err(shared(&e)));
            }
        }
    }
}

/// The error each caller of a failed batch gets: retryable when the batch's was.
fn shared(e: &Error) -> Error {
    match e {
        Error::Busy => Error::Busy,
        _ => Error::Unavailable,
    }
}
