//! The crate's error type. Messages never contain keys, tokens or host file paths; a failed
//! verification names the package's own item (`data/messages.jsonl`, a log index, an event id).

/// Result type of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a package could not be written or does not verify.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] argus_store::Error),
    /// A signature, a key or a proof was refused.
    #[error(transparent)]
    Crypto(#[from] argus_crypto::Error),
    /// The blob store failed.
    #[error(transparent)]
    Media(#[from] argus_media::Error),
    /// Reading or writing a file failed.
    #[error("file input/output failed: {0}")]
    Io(#[from] std::io::Error),
    /// The room is not stored, or is withheld from the requester.
    #[error("no such room")]
    NotFound,
    /// The output directory already exists and is not empty.
    #[error("the output directory already exists")]
    Exists,
    /// Stored versions (or held files) no longer match what the transparency log recorded: the
    /// export is refused and nothing is written. `rows` names them (event ids, log indexes).
    #[error("stored rows no longer match the transparency log: {}", rows.join(", "))]
    Mismatch {
        /// The rows that differ.
        rows: Vec<String>,
    },
    /// The log answered something inconsistent (a proof that does not verify, a missing entry).
    #[error("the transparency log is inconsistent: {0}")]
    Log(String),
    /// A package does not verify; the message says which check failed.
    #[error("the package does not verify: {0}")]
    Invalid(String),
}

impl Error {
    /// A verification failure.
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::Invalid(what.into())
    }
}
