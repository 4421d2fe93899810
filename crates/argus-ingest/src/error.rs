//! The error type of the application services, with stable codes and public messages; the
//! API layers wrap it and pass both on.

use argus_domain::Scope;

/// Result type of the application services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an ingestion, a backfill, a watch operation or a post failed.
///
/// Messages never contain a token, SQL, a file path or anything above the caller's clearance;
/// [`Error::code`] is stable: the API layers pass it on as theirs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's token lacks the scope the operation needs.
    #[error("this operation requires the scope {0}")]
    Forbidden(Scope),
    /// An argument or input field was rejected.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The requested classification is above the caller's clearance (or the room is already
    /// stored above it).
    #[error("the requested classification exceeds the caller's clearance")]
    AboveClearance,
    /// Too many ingestions are running (on this server, or against this homeserver); try
    /// again shortly.
    #[error("too many ingestions are running on {0}; try again shortly")]
    Busy(&'static str),
    /// The caller started too many ingestions in the last minute.
    #[error("too many ingestions started by this caller; try again in a minute")]
    TooManyRequests,
    /// The caller already has as many ingestions running as one caller may (the number); try
    /// again when one has ended.
    #[error("this caller already has {0} ingestions running; try again when one has ended")]
    CallerBusy(usize),
    /// A new watch past a bound: per owner, or per organisation as far as the caller may see it
    /// (never a count of what the caller may not see).
    #[error("at most {limit} watched rooms per {per}; remove one first")]
    TooManyWatches {
        /// `owner` or `organisation`.
        per: &'static str,
        /// The bound.
        limit: u32,
    },
    /// A room of a joined-rooms call past the rooms one call takes (the number): not ingested.
    #[error("not ingested: one call takes at most {0} rooms; ingest this one on its own")]
    TooManyRooms(u32),
    /// A note that would leave the archive above the posting ceiling, or come back into it
    /// below its own level.
    #[error("{0}")]
    WriteDown(String),
    /// What the call names is absent, or withheld from the caller (the two look alike).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// The Matrix connector failed (its own stable code is used).
    #[error("{0}")]
    Connector(#[from] argus_matrix::Error),
    /// The room is archived from another homeserver than the one the call names: a stored
    /// room answers only to the homeserver it was archived from (an operator may move it with
    /// `argus-tchap rooms rehome`). Nothing was stored.
    #[error(
        "the room is archived from another homeserver: it answers only to that one \
         (an operator may move it to another with `argus-tchap rooms rehome`)"
    )]
    HomeserverMismatch,
    /// The store failed; the details stay in the server log.
    #[error("internal error")]
    Store(#[source] argus_store::Error),
    /// Watched rooms need a key to keep their Matrix tokens, and none is configured.
    #[error("watched rooms are not enabled on this server (no token key is configured)")]
    WatchesDisabled,
    /// A background task failed (panicked or was cancelled).
    #[error("internal error")]
    Internal,
    /// Fetching, holding or scanning a file failed (its own stable code is used).
    #[error("{0}")]
    Media(#[from] argus_media::Error),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "FORBIDDEN",
            Self::InvalidInput(_) => "INVALID_INPUT",
            Self::AboveClearance => "ABOVE_CLEARANCE",
            Self::WriteDown(_) => "WRITE_DOWN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Busy(_) => "BUSY",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::CallerBusy(_) => "CALLER_BUSY",
            Self::TooManyWatches { .. } => "TOO_MANY_WATCHES",
            Self::TooManyRooms(_) => "TOO_MANY_ROOMS",
            Self::WatchesDisabled => "WATCHES_DISABLED",
            Self::HomeserverMismatch => "HOMESERVER_MISMATCH",
            Self::Connector(e) => e.code(),
            Self::Store(e) => e.code(),
            Self::Media(e) => e.code(),
            Self::Internal => "INTERNAL",
        }
    }

    /// The message shown to the caller (and kept in a FAILED audit record): never a token,
    /// SQL or path.
    pub fn public_message(&self) -> String {
        match self {
            Self::Store(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    /// [`Error::public_message`] with `token` scrubbed should it ever appear: what an audit
    /// record or a log line keeps of a call made with that token.
    pub fn message_without(&self, token: &argus_domain::AccessToken) -> String {
        token.scrub(self.public_message())
    }

    /// Whether the server is at fault (the store, a background task) rather than the call:
    /// worth an error in the server log, where the details are kept.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Store(_) | Self::Internal)
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connector(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<argus_store::Error> for Error {
    fn from(e: argus_store::Error) -> Self {
        match e {
            // Not a fault of the server: the call named another homeserver than the room's.
            argus_store::Error::HomeserverMismatch => Self::HomeserverMismatch,
            // Not a fault either: a bound on the caller's watches.
            argus_store::Error::TooManyWatches { per, limit } => Self::TooManyWatches { per, limit },
            other => Self::Store(other),
        }
    }
}

impl From<argus_domain::Error> for Error {
    fn from(e: argus_domain::Error) -> Self {
        match e {
            argus_domain::Error::AboveClearance { .. } => Self::AboveClearance,
            argus_domain::Error::MissingScope(scope) => Self::Forbidden(scope),
            e @ argus_domain::Error::WriteDown { .. } => Self::WriteDown(e.to_string()),
            other => Self::InvalidInput(other.to_string()),
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl Error {
    /// An error of every variant (the connector's and the store's in a retryable and a final
    /// form), for the API layers' tests that every application error keeps its code there.
    pub fn examples() -> Vec<Self> {
        vec![
            Self::Forbidden(Scope::Ingest),
            Self::InvalidInput("maxMessages must be between 1 and 10".into()),
            Self::AboveClearance,
            Self::Busy("this server"),
            Self::TooManyRequests,
            Self::CallerBusy(2),
            Self::TooManyWatches { per: "owner", limit: 500 },
            Self::TooManyRooms(200),
            Self::WriteDown("a note above the ceiling for posting".into()),
            Self::NotFound("the room"),
            Self::Connector(argus_matrix::Error::Forbidden),
            Self::Connector(argus_matrix::Error::Unreachable("connection refused".into())),
            Self::Connector(argus_matrix::Error::DiscoveryFailed(
                "agent.tchap.gouv.fr has no .well-known file".into(),
            )),
            Self::Connector(argus_matrix::Error::AccountMismatch),
            Self::Connector(argus_matrix::Error::IdentityServerUnset),
            Self::Store(argus_store::Error::Unavailable),
            Self::Store(argus_store::Error::Query),
            Self::WatchesDisabled,
            Self::HomeserverMismatch,
            Self::Internal,
            Self::Media(argus_media::Error::ScannerUnavailable("connection refused".into())),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::Error;

    #[test]
    fn the_examples_cover_every_variant() {
        // Exhaustive: a new variant does not compile until it is numbered here, and this test
        // fails until it has an example.
        let variant = |e: &Error| match e {
            Error::Forbidden(_) => 0,
            Error::InvalidInput(_) => 1,
            Error::AboveClearance => 2,
            Error::Busy(_) => 3,
            Error::TooManyRequests => 4,
            Error::WriteDown(_) => 5,
            Error::NotFound(_) => 6,
            Error::Connector(_) => 7,
            Error::Store(_) => 8,
            Error::WatchesDisabled => 9,
            Error::Internal => 10,
            Error::HomeserverMismatch => 11,
            Error::CallerBusy(_) => 12,
            Error::TooManyWatches { .. } => 13,
            Error::TooManyRooms(_) => 14,
            Error::Media(_) => 15,
        };
        let seen: BTreeSet<usize> = Error::examples().iter().map(variant).collect();
        assert_eq!(seen, (0..=15).collect());
    }

    #[test]
    fn every_code_is_stable_text_and_internal_only_for_server_faults() {
        for e in Error::examples() {
            let code = e.code();
            assert!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{e:?}");
            assert!(code != "INTERNAL" || e.is_internal(), "{e:?} has no code of its own");
        }
    }
}
