//! Argus Tchap connector: disclosure packages.
//!
//! A disclosure package is a BagIt 1.0 bag (RFC 8493) of one room over an optional time range,
//! limited to what the requester may see, that anyone can check offline with standard tools:
//!
//! ```text
//! bagit.txt  bag-info.txt  manifest-sha512.txt  manifest-sha256.txt  tagmanifest-sha512.txt
//! tagmanifest-sha512.txt.minisig       minisign signature of the tag manifest
//! data/transcript.html                 for a person: every message, version, redaction, file
//! data/messages.jsonl                  one line per message
//! data/attachments/<sha256>            the files held (quarantined ones only on request)
//! data/log/checkpoint                  the signed checkpoint the proofs are against
//! data/log/records/<index>             the exact bytes of each log entry the package relies on
//! data/log/proofs/<index>.tlog-proof   its inclusion proof against data/log/checkpoint
//! data/log/versions/<run>/versions.jsonl  the versions claimed of the run whose AUDIT entry
//!                                      is at index <run>: canonical bytes, one a line
//! data/log/versions/<run>/proofs.txt   line for line: position, inclusion proof in eventsRoot
//! data/verify/verify.py, README.md     how to check everything offline
//! ```
//!
//! [`disclose`] reads the room from the store, checks every version against the log (a row
//! changed in the database refuses the export with [`Error::Mismatch`], writing nothing), writes
//! the bag, journals the disclosure in the log and signs a checkpoint that includes it.
//! [`write_package`] does the same from an [`argus_store::DisclosureSource`] and any [`LogView`], so that the
//! package can be built without a database. [`verify_package`] checks a package in Rust as
//! `verify.py`, bagit-python and minisign do.

mod bag;
mod check;
mod error;
mod hashing;
mod messages;
mod transcript;
mod tree;
mod verify;
mod write;

#[cfg(feature = "testing")]
pub mod testing;

use std::path::Path;

use argus_crypto::{package_signing::PackageSigner, tlog::LogSigner};
use argus_domain::{OrgId, RoomId, Viewer, oversight::AccessEntry};
use argus_store::{Digest, LogEntryRecord, Store, TreeHead};
use time::OffsetDateTime;

pub use self::{
    bag::write_tar,
    error::{Error, Result},
    verify::{VerificationReport, verify_package},
    write::write_package,
};

/// The keys a package is signed with.
#[derive(Debug)]
pub struct Keys {
    /// Signs the log's checkpoint (signed note).
    pub log: LogSigner,
    /// Signs the tag manifest (minisign).
    pub package: PackageSigner,
    /// The log's name: the checkpoint's origin is `<log_name>/<org>`.
    pub log_name: String,
}

/// What to disclose, for whom.
#[derive(Debug, Clone)]
pub struct Request {
    /// The requester: the package holds only what they may see.
    pub viewer: Viewer,
    /// The room.
    pub room_id: RoomId,
    /// The start of the range, if any.
    pub from: Option<OffsetDateTime>,
    /// The end of the range, if any.
    pub to: Option<OffsetDateTime>,
    /// Also package the files the scanner found infected.
    pub include_quarantined: bool,
}

/// What a package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The package id (`External-Identifier`).
    pub package_id: String,
    /// Messages.
    pub messages: u64,
    /// Versions proven against their runs' `eventsRoot`.
    pub versions: u64,
    /// Files.
    pub attachments: u64,
    /// The size of the signed checkpoint the proofs are against.
    pub checkpoint_size: u64,
    /// The log index of the disclosure's own entry.
    pub log_index: u64,
}

/// The part of an organisation's transparency log a package needs: its head, inclusion proofs,
/// entries, and the journaling of the disclosure itself.
pub trait LogView {
    /// The head of `org`'s log.
    fn log_head(&self, org: &OrgId) -> argus_store::Result<TreeHead>;
    /// The inclusion proof of entry `index` in `org`'s log at `size`.
    fn log_inclusion(&self, org: &OrgId, index: u64, size: u64) -> argus_store::Result<Vec<Digest>>;
    /// The entries at `indexes` of `org`'s log.
    fn log_entries(&self, org: &OrgId, indexes: &[u64]) -> argus_store::Result<Vec<LogEntryRecord>>;
    /// Appends an access entry, durable on return; returns its index.
    fn record_access(&self, entry: &AccessEntry) -> argus_store::Result<u64>;
}

impl LogView for Store {
    fn log_head(&self, org: &OrgId) -> argus_store::Result<TreeHead> {
        Store::log_head(self, org)
    }

    fn log_inclusion(&self, org: &OrgId, index: u64, size: u64) -> argus_store::Result<Vec<Digest>> {
        Store::log_inclusion(self, org, index, size)
    }

    fn log_entries(&self, org: &OrgId, indexes: &[u64]) -> argus_store::Result<Vec<LogEntryRecord>> {
        Store::log_entries(self, org, indexes)
    }

    fn record_access(&self, entry: &AccessEntry) -> argus_store::Result<u64> {
        Store::record_access(self, entry)
    }
}

/// Writes the disclosure package of `request` into `out_dir` (which must not exist, or be
/// empty): reads the room through the store's read gate, checks every version against the log,
/// writes the bag beside `out_dir` and moves it into place once complete.
///
/// # Errors
///
/// [`Error::NotFound`] when the room is absent or withheld; [`Error::Mismatch`] when a stored
/// version or file no longer matches the log (nothing is written); store, blob store and I/O
/// failures.
pub async fn disclose(
    store: &Store,
    blobs: &dyn argus_media::BlobStore,
    keys: &Keys,
    request: &Request,
    out_dir: &Path,
) -> Result<Summary> {
    let source = store
        .disclosure_source(&request.viewer, &request.room_id, request.from, request.to)?
        .ok_or(Error::NotFound)?;
    write_package(&source, store, blobs, keys, request, out_dir).await
}
