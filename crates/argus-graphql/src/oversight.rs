//! Oversight at the API: the access journal written at every read of content (before the
//! answer leaves), and the signing keys and folder of disclosure packages.
//!
//! A read of content (`tchapMessages`, a room's `messages`, `tchapSearch`, an attachment's
//! download, a disclosure) returns nothing before its entry is durable
//! ([`argus_store::Store::record_access`]); when the entry cannot be written the read fails
//! with `UNAVAILABLE`. The entry names the actor, the organisation, the time, the rooms
//! (sorted, each once), a search's query text, how many items were returned and the highest
//! classification among them (the lowest when none was).

use std::path::PathBuf;

use argus_crypto::{package_signing::PackageSigner, tlog::LogSigner};
use argus_domain::{
    Classification, StoredMessage, Viewer,
    oversight::{AccessAction, AccessEntry, ENCODING_VERSION},
};
use argus_store::Store;

/// The signing keys of oversight: the log's signed-note key and the packages' minisign key.
#[derive(Debug)]
pub struct Keys {
    /// Signs checkpoints.
    pub log: LogSigner,
    /// Signs disclosure packages.
    pub package: PackageSigner,
    /// The log's name (checkpoint origins are `<log_name>/<org>`).
    pub log_name: String,
}

/// What disclosures need: the keys and where packages are written.
#[derive(Debug)]
pub struct Oversight {
    /// The signing keys.
    pub keys: Keys,
    /// The folder packages are written in (`<data dir>/packages`).
    pub packages_dir: PathBuf,
}

/// What was read, for one journal entry.
#[derive(Debug, Clone)]
pub struct Read<'a> {
    /// What kind of read.
    pub action: AccessAction,
    /// A search's query text.
    pub query: Option<&'a str>,
    /// The rooms read (any order, repeats allowed).
    pub room_ids: Vec<&'a str>,
    /// How many items were returned.
    pub item_count: u64,
    /// The highest level among what was returned, when anything was.
    pub highest: Option<Classification>,
}

impl<'a> Read<'a> {
    /// A read of `messages` (`READ_MESSAGES`, or `SEARCH` with `query`).
    pub fn of_messages(
        action: AccessAction,
        query: Option<&'a str>,
        messages: impl IntoIterator<Item = &'a StoredMessage>,
    ) -> Self {
        let mut read = Self { action, query, room_ids: Vec::new(), item_count: 0, highest: None };
        for message in messages {
            read.room_ids.push(message.room_id.as_str());
            read.item_count += 1;
            read.highest = read.highest.max(Some(message.classification));
        }
        read
    }

    /// The journal entry of this read by `viewer`, now.
    pub fn entry(&self, viewer: &Viewer) -> AccessEntry {
        let mut room_ids: Vec<String> = self.room_ids.iter().map(|r| (*r).to_owned()).collect();
        room_ids.sort_unstable();
        room_ids.dedup();
        AccessEntry {
            action: self.action,
            actor: viewer.actor.as_str().to_owned(),
            at: argus_domain::to_unix_ms(time::OffsetDateTime::now_utc()),
            classification: self.highest.unwrap_or(Classification::ALL[0]),
            disclosure: None,
            item_count: self.item_count,
            org: viewer.org.as_str().to_owned(),
            query: self.query.map(str::to_owned),
            room_ids,
            r#type: AccessEntry::TYPE.to_owned(),
            v: ENCODING_VERSION,
        }
    }
}

/// Whether reads are journaled; off only in the benchmark that measures the journal's cost
/// ([`crate::bench`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Journal {
    /// Every read of content is journaled.
    On,
    /// Nothing is (benchmarks only).
    Off,
}

/// Journals `entry` (durable on return); any failure to write it is
/// [`argus_store::Error::Unavailable`]: the read it records must fail.
pub(crate) fn record(store: &Store, journal: Journal, entry: &AccessEntry) -> argus_store::Result<()> {
    if journal == Journal::Off {
        return Ok(());
    }
    store.record_access(entry).map(|_| ()).map_err(|e| {
        tracing::error!(error = %e, "the access journal cannot be written: the read is refused");
        argus_store::Error::Unavailable
    })
}
