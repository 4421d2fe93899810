//! The error type of the fusion crate: entity, sink, configuration and relay failures.

/// Result type of the fusion crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an entity could not be built, delivered or relayed.
///
/// Messages name what failed and why; they never contain webhook URLs (which may embed
/// secrets), file paths or SQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Writing to or syncing the JSON Lines file failed.
    #[error("JSON Lines sink I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// An entity could not be serialised to JSON.
    #[error("entity serialisation failed: {0}")]
    Serialise(#[from] serde_json::Error),
    /// The webhook did not answer within the configured timeout.
    #[error("webhook request timed out")]
    WebhookTimeout,
    /// The webhook could not be reached (connection refused, DNS, TLS, reset, ...).
    #[error("webhook unreachable: {0}")]
    WebhookUnreachable(&'static str),
    /// The webhook answered with a status other than 2xx.
    #[error("webhook answered HTTP {0}")]
    WebhookStatus(u16),
    /// The fusion configuration is invalid.
    #[error("invalid fusion configuration: {0}")]
    Config(String),
    /// An outbox row whose organisation or room disagrees with its payload.
    #[error("outbox row {0} is inconsistent with its payload")]
    InconsistentRow(i64),
    /// The store failed.
    #[error("store error: {0}")]
    Store(#[from] argus_store::Error),
    /// A blocking store task panicked or was cancelled.
    #[error("store task failed")]
    Join,
}

impl Error {
    /// Whether retrying the same delivery may succeed: timeouts, network errors, HTTP 5xx,
    /// 408 and 429. Other 4xx answers and invalid entities are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::WebhookTimeout | Self::WebhookUnreachable(_) | Self::Io(_) => true,
            Self::WebhookStatus(code) => *code >= 500 || *code == 408 || *code == 429,
            _ => false,
        }
    }

    /// Maps a reqwest error to a variant without its URL.
    pub(crate) fn from_reqwest(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Self::WebhookTimeout
        } else if let Some(status) = e.status() {
            Self::WebhookStatus(status.as_u16())
        } else if e.is_connect() {
            Self::WebhookUnreachable("connection failed")
        } else if e.is_request() || e.is_body() {
            Self::WebhookUnreachable("request failed")
        } else {
            Self::WebhookUnreachable("transport error")
        }
    }
}
