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

use argus_domain::{
    Classification, StoredMessage, Viewer,
    oversight::{AccessAction, AccessEntry, ENCODING_VERSION},
};

/// The signing keys of oversight: the log's signed-note key, the packages' minisign key and
/// the log's name (one type with the disclosure packages').
pub use argus_disclose::Keys;

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

/// What the server keeps next to a disclosure package's `.tar` (`<id>.json`): who may download
/// it (its organisation, at the clearance it was limited to) and what it is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PackageRecord {
    /// The package id (`External-Identifier`).
    pub id: String,
    /// The organisation that made it: the only one that may download it.
    pub org: String,
    /// The clearance it was limited to: a caller below it may not download it.
    pub clearance: Classification,
    /// Who made it.
    pub actor: String,
    /// SHA-512 of the `.tar`, hex.
    pub sha512: String,
    /// Size of the `.tar` in bytes.
    pub size: u64,
    /// The room it discloses (journaled with each download).
    pub room_id: String,
    /// It holds content kept under legal hold after a redaction (made by a caller holding
    /// `tchap:redacted`): only such a caller may download it.
    pub held: bool,
}

impl PackageRecord {
    /// Whether `id` can name a package: 1 to 128 of `A-Z a-z 0-9 . _ -`, not starting with a dot
    /// (so that it never names a path outside the packages' folder).
    ///
    /// ```
    /// use argus_graphql::oversight::PackageRecord;
    /// assert!(PackageRecord::is_valid_id("pkg-2026-05-26_01.a"));
    /// assert!(!PackageRecord::is_valid_id("../secret"));
    /// assert!(!PackageRecord::is_valid_id(".hidden"));
    /// ```
    pub fn is_valid_id(id: &str) -> bool {
        !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    }

    /// The `.tar` of package `id` in `dir`.
    pub fn tar_path(dir: &std::path::Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.tar"))
    }

    /// The record of package `id` in `dir`.
    pub fn record_path(dir: &std::path::Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Reads the record of package `id` in `dir`; `None` when there is none (or `id` cannot
    /// name one).
    pub fn read(dir: &std::path::Path, id: &str) -> std::io::Result<Option<Self>> {
        if !Self::is_valid_id(id) {
            return Ok(None);
        }
        match std::fs::read(Self::record_path(dir, id)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the record into `dir` (after the `.tar`: a package is served once its record
    /// exists).
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let path = Self::record_path(dir, &self.id);
        let partial = dir.join(format!(".{}.json.partial", self.id));
        std::fs::write(&partial, bytes)?;
        std::fs::rename(partial, path)
    }

    /// Whether `viewer` may download it: of its organisation, cleared for its level, and holding
    /// `tchap:redacted` when it holds content kept under legal hold.
    pub fn may_download(&self, viewer: &Viewer) -> bool {
        self.org == viewer.org.as_str()
            && self.clearance <= viewer.clearance
            && (!self.held || viewer.has_scope(argus_domain::Scope::Redacted))
    }
}
