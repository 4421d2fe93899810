//! The HTTP webhook sink: POST each entity as JSON with an `Idempotency-Key`, retrying with
//! bounded exponential backoff.

use std::{collections::BTreeMap, fmt, time::Duration};

use argus_domain::OrgId;
use backon::{ExponentialBuilder, Retryable};
use hmac::{Hmac, Mac};
use reqwest::{Client, Url, header};
use sha2::Sha256;

use super::{Sink, SinkFuture};
use crate::{Error, NetworkNode, Result};

/// The header carrying the HMAC-SHA256 of the timestamp and the body when a signing secret is
/// configured.
pub const SIGNATURE_HEADER: &str = "X-Argus-Signature";

/// The header carrying the time the request was signed (Unix seconds); the signature covers
/// it, so a receiver that refuses old timestamps refuses replays.
pub const TIMESTAMP_HEADER: &str = "X-Argus-Timestamp";

/// The shared secret a [`WebhookSink`] signs bodies with; never shown by `Debug`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct WebhookSecret(argus_domain::Secret);

impl WebhookSecret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(argus_domain::Secret::new(secret))
    }

    /// `sha256=<lowercase hex HMAC-SHA256 of "<timestamp>.<body>">`, the value of
    /// [`SIGNATURE_HEADER`] for a request sent with `X-Argus-Timestamp: <timestamp>`.
    ///
    /// ```
    /// use argus_fusion::WebhookSecret;
    /// // HMAC-SHA256("Jefe", "what do ya want for nothing.?"), as any HMAC library computes it.
    /// let signature = WebhookSecret::new("Jefe").sign("what do ya want for nothing", b"?");
    /// assert_eq!(signature, "sha256=155919e0daf8bec124e0c77ab84649a9c91a9649077c7265f11c47b37dee5783");
    /// // Another timestamp, another signature: a replay shows its age.
    /// assert_ne!(signature, WebhookSecret::new("Jefe").sign("1", b"?"));
    /// ```
    pub fn sign(&self, timestamp: &str, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so this never fails.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }
}

/// Timeouts, retry policy and signing of a [`WebhookSink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookOptions {
    /// Time allowed to establish a connection.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request, connection included.
    pub request_timeout: Duration,
    /// Retries after the first attempt (so at most `max_retries + 1` requests per delivery).
    pub max_retries: usize,
    /// Delay before the first retry; doubled at every retry.
    pub min_backoff: Duration,
    /// Upper bound of the delay between two retries.
    pub max_backoff: Duration,
    /// When set, every request carries [`SIGNATURE_HEADER`] so receivers can authenticate it.
    pub signing_secret: Option<WebhookSecret>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            max_retries: 4,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            signing_secret: None,
        }
    }
}

/// POSTs each entity as JSON to the webhook of its organisation.
///
/// The URL is the organisation's own one if configured, else the default one; an entity of
/// an organisation with neither is not sent anywhere by this sink (it counts as delivered), so
/// entities never go to another organisation's receiver. Every request carries
/// `Idempotency-Key: <entity id>:<version>`, and, with a signing secret,
/// `X-Argus-Timestamp: <unix seconds>` and `X-Argus-Signature: sha256=<HMAC-SHA256 of
/// "<timestamp>.<body>">` (a receiver refusing stale timestamps refuses replays). Proxy
/// variables of the environment are ignored. Timeouts, network errors, 5xx, 408 and 429 are
/// retried with exponential backoff; other answers fail the delivery at once. Redirects are
/// not followed.
#[derive(Clone)]
pub struct WebhookSink {
    client: Client,
    default_url: Option<Url>,
    org_urls: BTreeMap<OrgId, Url>,
    options: WebhookOptions,
}

impl fmt::Debug for WebhookSink {
    // URLs may embed credentials: show only how many are configured.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("default_url", &self.default_url.as_ref().map(|_| "[configured]"))
            .field("org_urls", &self.org_urls.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish()
    }
}

impl WebhookSink {
    /// A sink posting to `default_url` for every organisation not in `org_urls`.
    ///
    /// Fails with [`Error::Config`] if a URL is not `http` or `https`, or the HTTP client cannot
    /// be built.
    pub fn new(
        default_url: Option<Url>,
        org_urls: BTreeMap<OrgId, Url>,
        options: WebhookOptions,
    ) -> Result<Self> {
        for url in default_url.iter().chain(org_urls.values()) {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Config("webhook URLs must be http or https".to_owned()));
            }
        }
        let client = Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            // Entities go straight to the configured receiver, never through a proxy that an
            // environment variable names.
            .no_proxy()
            .user_agent(concat!("argus-fusion/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|_| Error::Config("the webhook HTTP client could not be built".to_owned()))?;
        Ok(Self { client, default_url, org_urls, options })
    }

    /// The URL entities of `org` are posted to, if any.
    pub fn url_for(&self, org: &OrgId) -> Option<&Url> {
        self.org_urls.get(org).or(self.default_url.as_ref())
    }

    async fn post_once(&self, url: &Url, body: &[u8], key: &str) -> Result<()> {
        let mut request = self
            .client
            .post(url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key);
        if let Some(secret) = &self.options.signing_secret {
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
                .to_string();
            request = request
                .header(SIGNATURE_HEADER, secret.sign(&timestamp, body))
                .header(TIMESTAMP_HEADER, timestamp);
        }
        let response = request.body(body.to_vec()).send().await.map_err(|e| Error::from_reqwest(&e))?;
        let status = response.status();
        // The body is never read: only the status matters, and dropping it bounds what we take.
        if status.is_success() { Ok(()) } else { Err(Error::WebhookStatus(status.as_u16())) }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn deliver<'a>(&'a self, entity: &'a NetworkNode) -> SinkFuture<'a> {
        Box::pin(async move {
            let Some(url) = self.url_for(&entity.organisation) else {
                tracing::debug!(org = %entity.organisation, "no webhook configured for organisation");
                return Ok(());
            };
            let body = serde_json::to_vec(entity)?;
            let key = entity.idempotency_key();
            let backoff = ExponentialBuilder::default()
                .with_min_delay(self.options.min_backoff)
                .with_max_delay(self.options.max_backoff)
                .with_max_times(self.options.max_retries)
                .with_jitter();
            (|| self.post_once(url, &body, &key))
                .retry(backoff)
                .sleep(tokio::time::sleep)
                .when(Error::is_retryable)
                .notify(|err, after| {
                    tracing::warn!(
                        org = %entity.organisation,
                        entity = %entity.id,
                        version = entity.version,
                        error = %err,
                        retry_in_ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
                        "webhook delivery failed, retrying"
                    );
                })
                .await
        })
    }
}
