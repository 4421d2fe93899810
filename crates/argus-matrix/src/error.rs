//! The connector's error type: one variant per way a read can fail, each with a stable code.
//!
//! Messages never contain the access token, and never echo text chosen by the homeserver
//! (which could repeat the token back): only its status, a sanitised `errcode` and our own words.

use std::time::Duration;

/// Result type of the connector.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a read of a room failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The homeserver refused the access token (`M_UNKNOWN_TOKEN`, `M_MISSING_TOKEN`, soft
    /// logout included). Retrying with the same token cannot succeed.
    #[error("the homeserver refused the access token ({errcode}{})", if *soft_logout { ", soft logout" } else { "" })]
    Unauthorized {
        /// The Matrix `errcode` (or `HTTP 401` when the body had none).
        errcode: String,
        /// The homeserver asked for a soft logout (re-login with the same device).
        soft_logout: bool,
    },
    /// The account has expired (`ORG_MATRIX_EXPIRED_ACCOUNT`, HTTP 403: Synapse's account
    /// validity, or Tchap's account-validity module): every request is refused until its
    /// validity is renewed. The token itself is still good.
    #[error(
        "ACCOUNT_EXPIRED: the account has expired on its homeserver (ORG_MATRIX_EXPIRED_ACCOUNT); it is refused until its validity is renewed"
    )]
    AccountExpired,
    /// An administrator locked the account (`M_USER_LOCKED`; Synapse answers 401 with
    /// `soft_logout`): every request is refused until it is unlocked. Not a refused token: no
    /// renewal of the token can help.
    #[error(
        "ACCOUNT_LOCKED: the account is locked by its homeserver's administrator (M_USER_LOCKED); it is refused until unlocked"
    )]
    AccountLocked,
    /// An administrator suspended the account (`M_USER_SUSPENDED`, MSC3823): it still reads,
    /// and is refused whatever changes a room (sending, joining) until reinstated.
    #[error(
        "ACCOUNT_SUSPENDED: the account is suspended by its homeserver's administrator (M_USER_SUSPENDED); it may read but not send"
    )]
    AccountSuspended,
    /// The refresh token could not renew the access token: refused by the homeserver or the
    /// auth server (used already, revoked, soft logout, `invalid_grant`), or no way to renew
    /// it (an OAuth 2.0 token without its client id). Our own words only: the reason never
    /// repeats what the server said.
    #[error("the access token could not be renewed: {0}")]
    TokenRefreshFailed(String),
    /// A token pair could not be renewed and kept now (its storage failed, the holder renewing
    /// it did not finish, or it is sealed under a key this replica lacks): a pair the server
    /// issued is kept in memory unused, and only its storing is tried again; worth trying again.
    #[error("the token pair could not be renewed and kept now; it is tried again")]
    TokenNotKept,
    /// The user may not read the room (`M_FORBIDDEN`, typically not a member).
    #[error("the homeserver forbids reading this room (M_FORBIDDEN)")]
    Forbidden,
    /// The room does not exist or is unknown to the homeserver (`M_NOT_FOUND`).
    #[error("the homeserver does not know this room (M_NOT_FOUND)")]
    NotFound,
    /// The homeserver kept rate limiting (`M_LIMIT_EXCEEDED` / HTTP 429) beyond the retries or
    /// the deadline of the run.
    #[error("rate limited by the homeserver{}", retry_after.map(|d| format!(" (asked to wait {} ms)", d.as_millis())).unwrap_or_default())]
    RateLimited {
        /// How long the homeserver last asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The outbound policy refused the homeserver before any connection: scheme, allow-list,
    /// blocked address, or a redirect that was not followed.
    #[error("outbound policy: {0}")]
    OutboundPolicy(String),
    /// The homeserver could not be reached: DNS, connection, TLS or a reset or timed-out request.
    #[error("homeserver unreachable: {0}")]
    Unreachable(String),
    /// The homeserver answered with an error this connector does not map to another variant.
    #[error("homeserver error: HTTP {status}{}", errcode.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Homeserver {
        /// The HTTP status.
        status: u16,
        /// The Matrix `errcode`, sanitised, if the body had one.
        errcode: Option<String>,
    },
    /// A response body was larger than the configured cap.
    #[error("response body larger than {limit} bytes")]
    ResponseTooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A response was not the JSON the endpoint returns, was truncated, or broke pagination
    /// (a repeated `end` token).
    #[error("malformed response from the homeserver: {0}")]
    MalformedResponse(String),
    /// The run read more timeline events, or more bytes of them, than its budget allows.
    #[error("the room exceeds this run's budget of {limit} {what}")]
    BudgetExceeded {
        /// `events` or `bytes`.
        what: &'static str,
        /// The budget.
        limit: u64,
    },
    /// The run did not finish within its deadline.
    #[error("the read did not finish within its deadline of {} s", .0.as_secs_f64())]
    DeadlineExceeded(Duration),
    /// The caller's input was refused before any request (room id, token form, options).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The account has no key backup.
    #[error("the account has no key backup")]
    NoKeyBackup,
    /// The recovery key, secret storage or the key backup could not be used: a wrong recovery
    /// key, a backup that does not match it, an unsupported algorithm, malformed key material
    /// (its own code and message).
    #[error(transparent)]
    Crypto(#[from] argus_crypto::Error),
    /// The receiver of a streamed read went away: the read stopped.
    #[error("the read was stopped by its receiver")]
    Cancelled,
    /// The homeserver (or the content scanner) does not have the file (`M_NOT_FOUND`).
    #[error("the homeserver does not have this file (M_NOT_FOUND)")]
    MediaNotFound,
    /// The file is larger than the cap: declared so, or met while it streamed.
    #[error("the file is larger than the cap of {cap} bytes")]
    MediaTooLarge {
        /// The cap, in bytes.
        cap: u64,
    },
    /// The content scanner refused to hand the file over (its verdict, not a failure): a caller
    /// records the file as unavailable with this code.
    #[error("the content scanner refused the file ({code})")]
    MediaRefused {
        /// The scanner's reason: `MCS_MEDIA_NOT_CLEAN`, `MCS_MIME_TYPE_FORBIDDEN`,
        /// `MCS_MEDIA_FAILED_TO_DECRYPT` or `MCS_BAD_DECRYPTION`.
        code: &'static str,
    },
    /// A file's body stopped (nothing within the idle timeout) or came slower than the minimum
    /// rate.
    #[error("the file's body stalled or came slower than the minimum rate")]
    MediaStalled,
    /// A start date was given but the homeserver cannot find the event at a time
    /// (`timestamp_to_event`, spec v1.6, answered 404 `M_UNRECOGNIZED` or the like): the room is
    /// not read back to its creation instead.
    #[error("the homeserver cannot find events by date (timestamp_to_event), so a start date cannot be used")]
    TimestampLookupUnsupported,
    /// No usable homeserver was found for the account given: its server's `.well-known` file,
    /// the conventional `https://matrix.<server name>`, or the identity server's lookup gave
    /// none, or a malformed one (the reason in our own words, never the server's text).
    #[error("no usable homeserver for the account: {0}")]
    DiscoveryFailed(String),
    /// The access token belongs to another account than the one given.
    #[error("the access token does not belong to the account given")]
    AccountMismatch,
    /// An e-mail address was given as the account, and no identity server is configured to
    /// look it up (`[matrix] identity_server`).
    #[error("an e-mail address cannot be resolved: no identity server is configured")]
    IdentityServerUnset,
}

impl Error {
    /// Whether the same read may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::RateLimited { .. }
            | Self::Unreachable(_)
            | Self::DeadlineExceeded(_)
            | Self::MediaStalled
            | Self::TokenNotKept => true,
            Self::Homeserver { status, .. } => *status >= 500,
            Self::Unauthorized { .. }
            | Self::AccountExpired
            | Self::AccountLocked
            | Self::AccountSuspended
            | Self::TokenRefreshFailed(_)
            | Self::Forbidden
            | Self::NotFound
            | Self::OutboundPolicy(_)
            | Self::ResponseTooLarge { .. }
            | Self::BudgetExceeded { .. }
            | Self::MalformedResponse(_)
            | Self::InvalidInput(_)
            | Self::NoKeyBackup
            | Self::Crypto(_)
            | Self::Cancelled
            | Self::MediaNotFound
            | Self::MediaTooLarge { .. }
            | Self::MediaRefused { .. }
            | Self::TimestampLookupUnsupported
            | Self::DiscoveryFailed(_)
            | Self::AccountMismatch
            | Self::IdentityServerUnset => false,
        }
    }

    /// A stable code naming the kind of failure, for API layers and audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "HOMESERVER_UNAUTHORIZED",
            Self::AccountExpired => "ACCOUNT_EXPIRED",
            Self::AccountLocked => "ACCOUNT_LOCKED",
            Self::AccountSuspended => "ACCOUNT_SUSPENDED",
            Self::TokenRefreshFailed(_) => "TOKEN_REFRESH_FAILED",
            Self::TokenNotKept => "TOKEN_NOT_KEPT",
            Self::Forbidden => "ROOM_FORBIDDEN",
            Self::NotFound => "ROOM_NOT_FOUND",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::OutboundPolicy(_) => "OUTBOUND_POLICY",
            Self::Unreachable(_) => "HOMESERVER_UNREACHABLE",
            Self::Homeserver { .. } => "HOMESERVER_ERROR",
            Self::ResponseTooLarge { .. } => "RESPONSE_TOO_LARGE",
            Self::BudgetExceeded { .. } => "LIMIT_EXCEEDED",
            Self::MalformedResponse(_) => "MALFORMED_RESPONSE",
            Self::DeadlineExceeded(_) => "DEADLINE_EXCEEDED",
            Self::InvalidInput(_) => "INVALID_INPUT",
            Self::NoKeyBackup => "NO_KEY_BACKUP",
            Self::Crypto(e) => e.code(),
            Self::Cancelled => "CANCELLED",
            Self::MediaNotFound => "MEDIA_NOT_FOUND",
            Self::MediaTooLarge { .. } => "MEDIA_TOO_LARGE",
            Self::MediaRefused { .. } => "MEDIA_REFUSED",
            Self::MediaStalled => "MEDIA_STALLED",
            Self::TimestampLookupUnsupported => "TIMESTAMP_LOOKUP_UNSUPPORTED",
            Self::DiscoveryFailed(_) => "DISCOVERY_FAILED",
            Self::AccountMismatch => "ACCOUNT_MISMATCH",
            Self::IdentityServerUnset => "IDENTITY_SERVER_UNSET",
        }
    }

    pub(crate) fn policy(reason: impl Into<String>) -> Self {
        Self::OutboundPolicy(reason.into())
    }

    pub(crate) fn refresh_failed(reason: impl Into<String>) -> Self {
        Self::TokenRefreshFailed(reason.into())
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        Self::MalformedResponse(reason.into())
    }

    pub(crate) fn discovery(reason: impl Into<String>) -> Self {
        Self::DiscoveryFailed(reason.into())
    }
}

/// Keeps an `errcode` only if it looks like one (`M_FOO`, `ORG.EXAMPLE_FOO`), at most 64 bytes,
/// so a hostile homeserver cannot put arbitrary text into our errors.
pub(crate) fn sanitise_errcode(code: &str) -> Option<String> {
    argus_crypto::printable_name(code).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_retryability() {
        assert_eq!(Error::Forbidden.code(), "ROOM_FORBIDDEN");
        assert!(!Error::Forbidden.is_retryable());
        assert!(Error::Homeserver { status: 502, errcode: None }.is_retryable());
        assert!(!Error::Homeserver { status: 400, errcode: None }.is_retryable());
        assert!(Error::RateLimited { retry_after: None }.is_retryable());
        assert_eq!(
            Error::RateLimited { retry_after: Some(Duration::from_millis(1500)) }.to_string(),
            "rate limited by the homeserver (asked to wait 1500 ms)"
        );
    }

    #[test]
    fn account_states_have_their_codes_in_their_messages_and_are_final() {
        for (error, code, errcode) in [
            (Error::AccountExpired, "ACCOUNT_EXPIRED", "ORG_MATRIX_EXPIRED_ACCOUNT"),
            (Error::AccountLocked, "ACCOUNT_LOCKED", "M_USER_LOCKED"),
            (Error::AccountSuspended, "ACCOUNT_SUSPENDED", "M_USER_SUSPENDED"),
        ] {
            let message = error.to_string();
            assert_eq!(error.code(), code);
            // The audit trail keeps the message only: it names the code and the homeserver's errcode.
            assert!(message.starts_with(&format!("{code}: ")) && message.contains(errcode), "{message}");
            assert!(!error.is_retryable(), "{code}");
        }
    }

    #[test]
    fn key_backup_errors_keep_their_codes_and_messages() {
        let cases = [
            (
                argus_crypto::Error::WrongRecoveryKey,
                "WRONG_RECOVERY_KEY",
                "the recovery key is malformed or is not this account's",
            ),
            (
                argus_crypto::Error::KeyBackupMismatch,
                "KEY_BACKUP_MISMATCH",
                "the key backup does not match the recovery key",
            ),
            (
                argus_crypto::Error::UnsupportedAlgorithm("backup algorithm ".into()),
                "UNSUPPORTED_KEY_BACKUP",
                "unsupported key backup: backup algorithm ",
            ),
            (
                argus_crypto::Error::Malformed("key mac: not base64".into()),
                "MALFORMED_RESPONSE",
                "malformed response from the homeserver: key mac: not base64",
            ),
        ];
        for (crypto, code, message) in cases {
            let error = Error::from(crypto);
            assert_eq!(
                (error.code(), error.to_string().as_str(), error.is_retryable()),
                (code, message, false)
            );
        }
        assert_eq!(Error::NoKeyBackup.code(), "NO_KEY_BACKUP");
    }

    #[test]
    fn errcodes_are_sanitised() {
        assert_eq!(sanitise_errcode("M_FORBIDDEN").as_deref(), Some("M_FORBIDDEN"));
        assert_eq!(sanitise_errcode("syt_secret token"), None);
        assert_eq!(sanitise_errcode(&"M".repeat(65)), None);
    }
}
