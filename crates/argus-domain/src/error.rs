//! The error type of the domain crate: rejected input and policy violations.

/// Result type of the domain crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a value was rejected or an action refused by the policy.
///
/// Messages name the kind of value and the rule it broke; they never echo secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not the canonical encoding of a transparency log entry or version.
    #[error("not a log entry or version of this encoding")]
    InvalidLogEntry,
    /// A classification name that is neither a contract name nor a known French marking.
    #[error("unknown classification {0:?}")]
    UnknownClassification(String),
    /// A classification rank outside 0..=4.
    #[error("unknown classification rank {0}")]
    UnknownClassificationRank(i64),
    /// An identifier or field that does not have the required form.
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// What kind of value was rejected ("room id", "organisation id", ...).
        kind: &'static str,
        /// Which rule it broke.
        reason: &'static str,
    },
    /// A scope name that the connector does not know.
    #[error("unknown scope {0:?}")]
    UnknownScope(String),
    /// A timestamp outside the representable range.
    #[error("timestamp {0} ms is out of range")]
    InvalidTimestamp(i64),
    /// The caller tried to classify material above their own clearance.
    #[error("classification {requested} exceeds the caller's clearance {clearance}")]
    AboveClearance {
        /// The level asked for.
        requested: crate::Classification,
        /// The caller's clearance.
        clearance: crate::Classification,
    },
    /// A search query that does not follow the query language, or is too long or too complex.
    #[error("invalid search query: {0}")]
    InvalidSearch(String),
    /// A note that would leave the archive, or come back into it, below its own level.
    #[error("a note classified {level} exceeds {what} ({limit})")]
    WriteDown {
        /// The note's level.
        level: crate::Classification,
        /// The level it exceeds.
        limit: crate::Classification,
        /// What that level is.
        what: &'static str,
    },
    /// The caller lacks the scope an action requires.
    #[error("missing scope {0}")]
    MissingScope(crate::Scope),
}

impl Error {
    pub(crate) fn invalid(kind: &'static str, reason: &'static str) -> Self {
        Self::Invalid { kind, reason }
    }
}
