//! The error type of the GraphQL crate and its mapping to GraphQL errors with a stable
//! `extensions.code`.
//!
//! The application's errors ([`argus_ingest::Error`]) are wrapped, not copied: their code, public
//! message and retryability are theirs, so an application error added later reaches the caller
//! with its own code. Only what the API alone decides (the cost of a document, its cursors) has
//! a variant here.

use juniper::{FieldError, IntoFieldError, ScalarValue, graphql_value};

/// Result type of the GraphQL crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a query or a mutation failed.
///
/// Messages never contain a token, SQL, a file path or anything above the caller's clearance;
/// [`Error::code`] is stable and goes into `extensions.code`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The application refused or failed the call (scope, input, clearance, admission, the
    /// connector, the store, ...): its own code and public message are used.
    #[error(transparent)]
    Service(#[from] argus_ingest::Error),
    /// The document asks for more items than one request may return: the product of nested
    /// page sizes and list lengths, summed over every connection, list and alias, is above the
    /// limit.
    #[error("the request asks for up to {asked} items; the limit is {limit} per request")]
    TooCostly {
        /// Items the document could return.
        asked: u64,
        /// The limit.
        limit: u64,
    },
    /// The document runs more searches than one request may: each ranks up to
    /// [`argus_store::RANK_WINDOW`] matches whatever its page.
    #[error(
        "the request runs {asked} searches; the limit is {limit} per request (each ranks up to {} matches)",
        argus_store::RANK_WINDOW
    )]
    TooManySearches {
        /// Searches the document runs.
        asked: u64,
        /// The limit.
        limit: u64,
    },
    /// A pagination cursor that this server did not issue for this list and this caller.
    #[error("invalid pagination cursor")]
    BadCursor,
    /// Stored versions (or held files) of the room no longer match what the transparency log
    /// recorded of them: the disclosure is refused and nothing is written. `rows` names them
    /// (event ids, log indexes).
    #[error("the stored evidence no longer matches the transparency log: {}", rows.join(", "))]
    EvidenceMismatch {
        /// The rows that differ.
        rows: Vec<String>,
    },
    /// This server has no oversight keys or blob store, so it writes no disclosure package.
    #[error("disclosure packages are not enabled on this server")]
    DisclosuresDisabled,
    /// Writing a disclosure package failed; the details stay in the server log.
    #[error("internal error")]
    Disclosure(#[source] argus_disclose::Error),
    /// The caller's token expired while a subscription was open: it ends (a new token opens
    /// another).
    #[error("the token has expired")]
    TokenExpired,
    /// The caller already has the most subscriptions open at once.
    #[error("at most {limit} subscriptions per caller may be open at once; close one first")]
    TooManySubscriptions {
        /// The bound.
        limit: usize,
    },
}

impl Error {
    /// An argument or input field the API rejected (`INVALID_INPUT`).
    pub(crate) fn invalid_input(message: String) -> Self {
        Self::Service(argus_ingest::Error::InvalidInput(message))
    }

    /// The stable code of this error, as found in `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Service(e) => e.code(),
            Self::TooCostly { .. } | Self::TooManySearches { .. } => "LIMIT_EXCEEDED",
            Self::BadCursor => "BAD_CURSOR",
            Self::EvidenceMismatch { .. } => "EVIDENCE_MISMATCH",
            Self::DisclosuresDisabled => "DISCLOSURES_DISABLED",
            Self::Disclosure(_) => "INTERNAL",
            Self::TokenExpired => "UNAUTHENTICATED",
            Self::TooManySubscriptions { .. } => "TOO_MANY_SUBSCRIPTIONS",
        }
    }

    /// The message shown to the caller: never a token, SQL or path.
    pub fn public_message(&self) -> String {
        match self {
            Self::Service(e) => e.public_message(),
            other => other.to_string(),
        }
    }

    /// Whether retrying the same request later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Service(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<argus_disclose::Error> for Error {
    fn from(e: argus_disclose::Error) -> Self {
        match e {
            argus_disclose::Error::NotFound => Self::Service(argus_ingest::Error::NotFound(
                "the room is not in the archive, or not visible to the caller",
            )),
            argus_disclose::Error::Mismatch { rows } => Self::EvidenceMismatch { rows },
            argus_disclose::Error::Store(e) => Self::Service(e.into()),
            argus_disclose::Error::Media(e) => Self::Service(e.into()),
            other => Self::Disclosure(other),
        }
    }
}

impl From<argus_domain::Error> for Error {
    fn from(e: argus_domain::Error) -> Self {
        Self::Service(e.into())
    }
}

impl<S: ScalarValue> IntoFieldError<S> for Error {
    fn into_field_error(self) -> FieldError<S> {
        if matches!(&self, Self::Service(e) if e.is_internal()) || matches!(self, Self::Disclosure(_)) {
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

#[cfg(test)]
mod tests {
    use juniper::{DefaultScalarValue, FieldError, IntoFieldError as _, graphql_value};

    use super::Error;

    #[test]
    fn every_application_error_has_its_own_code_in_the_api() {
        for app in argus_ingest::Error::examples() {
            let (code, message, retryable) = (app.code(), app.public_message(), app.is_retryable());
            assert!(code != "INTERNAL" || app.is_internal(), "{app:?} reaches the API without a code");
            let api = Error::from(app);
            assert_eq!(
                (api.code(), api.public_message(), api.is_retryable()),
                (code, message.clone(), retryable)
            );
            let field: FieldError<DefaultScalarValue> = api.into_field_error();
            assert_eq!(field.message(), message);
            let expected = if retryable {
                graphql_value!({ "code": code, "retryable": true })
            } else {
                graphql_value!({ "code": code })
            };
            assert_eq!(field.extensions(), &expected);
        }
    }
}
