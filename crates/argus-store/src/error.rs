//! The store's error type: what went wrong, without SQL, file paths or secrets in the message.

/// Result type of the store.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store operation failed.
///
/// Messages are safe to show to an operator: they never contain SQL, file paths, stored
/// content or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The database URL is not one the store understands.
    #[error("invalid database URL: {0}")]
    InvalidDatabaseUrl(&'static str),
    /// The database could not be reached or no connection was available in time.
    #[error("the database is unavailable")]
    Unavailable,
    /// The database was busy (locked, serialisation conflict); retrying may succeed.
    #[error("the database is busy")]
    Busy,
    /// Applying the schema migrations failed.
    #[error("the database schema could not be migrated")]
    Migration,
    /// A query failed; nothing was written by the failed operation.
    #[error("a database query failed")]
    Query,
    /// A stored row does not pass domain validation.
    #[error("stored data is corrupt: {0}")]
    Corrupt(&'static str),
    /// The input was rejected before anything was written.
    #[error("invalid input: {0}")]
    Invalid(#[from] argus_domain::Error),
    /// The room is stored at a classification above the caller's clearance.
    #[error("the room is classified above the caller's clearance")]
    Withheld,
    /// The room is archived from another homeserver than the one the run reads: a stored room
    /// answers only to the homeserver it was archived from (an operator may move it with
    /// `argus-tchap rooms rehome`). Nothing was written.
    #[error("the room is archived from another homeserver")]
    HomeserverMismatch,
    /// A new watch past a bound ([`crate::WatchCaps`]); the message names the bound, never a
    /// count.
    #[error("at most {limit} watched rooms per {per}")]
    TooManyWatches {
        /// Whose bound: `owner` or `organisation`.
        per: &'static str,
        /// The bound.
        limit: u32,
    },
    /// An outbox row that does not exist.
    #[error("no such outbox row")]
    NotFound,
    /// A write under an account watch's lease ([`crate::Store::write_device_items`]) by a
    /// replica that no longer holds it (taken over, expired, renewed, removed or stopped), or
    /// for another account than the watch's. Nothing was written.
    #[error("the account watch's lease is not held")]
    LeaseLost,
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable | Self::Busy)
    }

    /// The stable code the API layers show for this error (`UNAVAILABLE`, `ABOVE_CLEARANCE`,
    /// `INVALID_INPUT`, `HOMESERVER_MISMATCH`, `TOO_MANY_WATCHES`, else `INTERNAL`).
    pub fn code(&self) -> &'static str {
        match self {
            e if e.is_retryable() => "UNAVAILABLE",
            Self::Withheld => "ABOVE_CLEARANCE",
            Self::Invalid(_) => "INVALID_INPUT",
            Self::HomeserverMismatch => "HOMESERVER_MISMATCH",
            Self::TooManyWatches { .. } => "TOO_MANY_WATCHES",
            _ => "INTERNAL",
        }
    }

    /// What a caller (and an audit record) is told: never SQL, a path or a stored value; the
    /// details of an internal error stay in the server log.
    pub fn public_message(&self) -> String {
        match self {
            e if e.is_retryable() => "the service is temporarily unavailable".to_owned(),
            Self::Withheld => "the requested classification exceeds the caller's clearance".to_owned(),
            Self::Invalid(e) => format!("invalid input: {e}"),
            Self::HomeserverMismatch => {
                "the room is archived from another homeserver: it answers only to that one \
                                         (an operator may move it to another with `argus-tchap rooms rehome`)"
                    .to_owned()
            }
            e @ Self::TooManyWatches { .. } => e.to_string(),
            _ => "internal error".to_owned(),
        }
    }

    /// An input rejected by the store's own limits.
    pub(crate) fn invalid(kind: &'static str, reason: &'static str) -> Self {
        Self::Invalid(argus_domain::Error::Invalid { kind, reason })
    }
}

impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error as D};
        if !matches!(e, D::NotFound) {
            // The connection is asked whether it still works before its next use.
            crate::db::note_statement_failure();
        }
        match &e {
            D::DatabaseError(Kind::SerializationFailure, _) => Self::Busy,
            D::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, _) => Self::Unavailable,
            D::DatabaseError(_, info)
                if info.message().contains("database is locked") || info.message().contains("busy") =>
            {
                Self::Busy
            }
            D::DatabaseError(_, info)
                if info.message().contains("deadlock detected")
                    || info.message().contains("lock timeout") =>
            {
                Self::Busy
            }
            D::DeserializationError(_) => Self::Corrupt("a column has an unexpected type"),
            // The database's own text can quote stored values: only the kind is logged.
            D::DatabaseError(kind, _) => {
                tracing::debug!(?kind, "database query failed");
                Self::Query
            }
            _ => {
                tracing::debug!("database query failed");
                Self::Query
            }
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(e: r2d2::Error) -> Self {
        tracing::warn!(error = %e, "no database connection available");
        Self::Unavailable
    }
}

impl From<diesel::ConnectionError> for Error {
    fn from(e: diesel::ConnectionError) -> Self {
        tracing::warn!(error = %e, "database connection failed");
        Self::Unavailable
    }
}
