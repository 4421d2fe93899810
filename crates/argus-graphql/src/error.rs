//! The error type of the GraphQL crate and its mapping to GraphQL errors with a stable
//! `extensions.code`.

use argus_domain::Scope;
use juniper::{FieldError, IntoFieldError, ScalarValue, graphql_value};

/// Result type of the GraphQL crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a query or the ingestion failed.
///
/// Messages never contain a token, SQL, a file path or anything above the caller's clearance;
/// [`Error::code`] is stable and goes into `extensions.code`.
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
    /// The document asks for more items than one request may return: the product of nested
    /// page sizes, summed over every connection and alias, is above the limit.
    #[error("the request asks for up to {asked} items; the limit is {limit} per request")]
    TooCostly {
        /// Items the document could return.
        asked: u64,
        /// The limit.
        limit: u64,
    },
    /// Too many ingestions are running (on this server, or against this homeserver); try
    /// again shortly.
    #[error("too many ingestions are running on {0}; try again shortly")]
    Busy(&'static str),
    /// The caller started too many ingestions in the last minute.
    #[error("too many ingestions started by this caller; try again in a minute")]
    TooManyRequests,
    /// A note that would leave the archive above the posting ceiling, or come back into it
    /// below its own level.
    #[error("{0}")]
    WriteDown(String),
    /// What the call names is absent, or withheld from the caller (the two look alike).
    #[error("not found: {0}")]
    NotFound(&'static str),
    /// A pagination cursor that this server did not issue for this list and this caller.
    #[error("invalid pagination cursor")]
    BadCursor,
    /// The Matrix connector failed (its own stable code is used).
    #[error("{0}")]
    Connector(#[from] argus_matrix::Error),
    /// The store failed; the details stay in the server log.
    #[error("internal error")]
    Store(#[from] argus_store::Error),
    /// Watched rooms need a key to keep their Matrix tokens, and none is configured.
    #[error("watched rooms are not enabled on this server (no token key is configured)")]
    WatchesDisabled,
    /// A background task failed (panicked or was cancelled).
    #[error("internal error")]
    Internal,
}

impl Error {
    /// The stable code of this error, as found in `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "FORBIDDEN",
            Self::InvalidInput(_) => "INVALID_INPUT",
            Self::AboveClearance => "ABOVE_CLEARANCE",
            Self::BadCursor => "BAD_CURSOR",
            Self::WriteDown(_) => "WRITE_DOWN",
            Self::NotFound(_) => "NOT_FOUND",
            Self::TooCostly { .. } => "LIMIT_EXCEEDED",
            Self::Busy(_) => "BUSY",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::WatchesDisabled => "WATCHES_DISABLED",
            Self::Connector(e) => e.code(),
            Self::Store(e) => e.code(),
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

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connector(e) => e.is_retryable(),
            Self::Store(e) => e.is_retryable(),
            _ => false,
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

impl From<argus_ingest::Error> for Error {
    fn from(e: argus_ingest::Error) -> Self {
        use argus_ingest::Error as E;
        match e {
            E::Forbidden(scope) => Self::Forbidden(scope),
            E::InvalidInput(m) => Self::InvalidInput(m),
            E::AboveClearance => Self::AboveClearance,
            E::Busy(on) => Self::Busy(on),
            E::TooManyRequests => Self::TooManyRequests,
            E::NotFound(what) => Self::NotFound(what),
            E::Connector(e) => Self::Connector(e),
            E::Store(e) => Self::Store(e),
            E::WatchesDisabled => Self::WatchesDisabled,
            _ => Self::Internal,
        }
    }
}

impl<S: ScalarValue> IntoFieldError<S> for Error {
    fn into_field_error(self) -> FieldError<S> {
        if matches!(self, Self::Store(_) | Self::Internal) {
            tracing::error!(error = ?self, "request failed");
        }
        let code = self.code();
        let mut extensions = graphql_value!({ "code": code });
        if self.is_retryable()
            && let Some(object) = extensions.as_mut_object_value()
        {
            object.add_field("retryable", graphql_value!(true));
        }
        FieldError::new(self.public_message(), extensions)
    }
}
