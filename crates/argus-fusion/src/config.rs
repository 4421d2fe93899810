//! Typed configuration of the fusion emission (`fusion.*`) and the sinks it builds.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use argus_domain::OrgId;
use reqwest::Url;

use crate::{Error, JsonLinesSink, RelayOptions, Result, Sink, WebhookOptions, WebhookSecret, WebhookSink};

/// The `fusion` section of the server configuration.
///
/// Every field has a default, so an empty section enables the JSON Lines sink only.
///
/// ```
/// use argus_fusion::FusionConfig;
/// let config: FusionConfig = serde_json::from_str(r#"{
///     "jsonl_path": "/var/lib/argus/network-nodes.jsonl",
///     "webhook": { "url": "https://fusion.example/hook", "org_urls": { "dgsi": "https://dgsi.example/hook" } }
/// }"#)?;
/// assert_eq!(config.park_after_attempts, 8);
/// assert!(serde_json::from_str::<FusionConfig>(r#"{ "jsonl": "x" }"#).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FusionConfig {
    /// Whether the server runs the relay in the background.
    pub enabled: bool,
    /// The JSON Lines file entities are appended to; an empty string (or `null`) disables the
    /// file sink. A relative path is taken from the working directory unless
    /// [`FusionConfig::relative_to`] anchors it.
    pub jsonl_path: Option<PathBuf>,
    /// The webhook sink; absent disables it.
    pub webhook: Option<WebhookConfig>,
    /// Failed delivery passes after which a row is parked.
    pub park_after_attempts: u32,
    /// Outbox rows read and delivered per batch (one sync of the file per batch).
    pub batch_size: u32,
    /// Time between two polls of the outbox when it is empty, in milliseconds.
    pub poll_interval_ms: u64,
}

impl Default for FusionConfig {
    fn default() -> Self {
        let relay = RelayOptions::default();
        Self {
            enabled: true,
            jsonl_path: Some(PathBuf::from("network-nodes.jsonl")),
            webhook: None,
            park_after_attempts: relay.park_after_attempts,
            batch_size: relay.batch_size,
            poll_interval_ms: u64::try_from(relay.poll_interval.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// The `fusion.webhook` section. `Debug` leaves the URLs out (they may carry credentials).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// The receiver of organisations without their own URL; `null` sends those nowhere.
    pub url: Option<String>,
    /// Per-organisation receivers, which take precedence over `url`.
    pub org_urls: BTreeMap<OrgId, String>,
    /// Connection timeout in milliseconds.
    pub connect_timeout_ms: u64,
    /// Whole-request timeout in milliseconds.
    pub request_timeout_ms: u64,
    /// Retries of a delivery within one relay pass.
    pub max_retries: usize,
    /// First retry delay in milliseconds, doubled at each retry.
    pub min_backoff_ms: u64,
    /// Upper bound of the retry delay in milliseconds.
    pub max_backoff_ms: u64,
    /// Shared secret for the `X-Argus-Signature` HMAC-SHA256 header; absent: unsigned.
    pub signing_secret: Option<WebhookSecret>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url.as_ref().map(|_| "[redacted]"))
            .field("org_urls", &self.org_urls.keys().collect::<Vec<_>>())
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("max_retries", &self.max_retries)
            .field("min_backoff_ms", &self.min_backoff_ms)
            .field("max_backoff_ms", &self.max_backoff_ms)
            .field("signing_secret", &self.signing_secret)
            .finish()
    }
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let o = WebhookOptions::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            url: None,
            org_urls: BTreeMap::new(),
            connect_timeout_ms: ms(o.connect_timeout),
            request_timeout_ms: ms(o.request_timeout),
            max_retries: o.max_retries,
            min_backoff_ms: ms(o.min_backoff),
            max_backoff_ms: ms(o.max_backoff),
            signing_secret: None,
        }
    }
}

impl FusionConfig {
    /// The relay options of this configuration.
    pub fn relay_options(&self) -> RelayOptions {
        RelayOptions {
            batch_size: self.batch_size,
            park_after_attempts: self.park_after_attempts,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
        }
    }

    /// Anchors a relative `jsonl_path` in `dir` (the server's data directory).
    ///
    /// ```
    /// use std::path::Path;
    /// let config = argus_fusion::FusionConfig::default().relative_to(Path::new("/var/lib/argus"));
    /// assert_eq!(config.jsonl_path.as_deref(), Some(Path::new("/var/lib/argus/network-nodes.jsonl")));
    /// ```
    #[must_use]
    pub fn relative_to(mut self, dir: &Path) -> Self {
        if let Some(path) = &self.jsonl_path
            && !path.as_os_str().is_empty()
            && path.is_relative()
        {
            self.jsonl_path = Some(dir.join(path));
        }
        self
    }

    /// Checks the values a type cannot: non-zero sizes, valid webhook URLs.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Config("fusion.batch_size must be at least 1".to_owned()));
        }
        if self.park_after_attempts == 0 {
            return Err(Error::Config("fusion.park_after_attempts must be at least 1".to_owned()));
        }
        if let Some(webhook) = &self.webhook {
            if webhook.connect_timeout_ms == 0 || webhook.request_timeout_ms == 0 {
                return Err(Error::Config("fusion.webhook timeouts must be at least 1 ms".to_owned()));
            }
            webhook.urls()?;
        }
        Ok(())
    }
}

impl WebhookConfig {
    fn options(&self) -> WebhookOptions {
        WebhookOptions {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            max_retries: self.max_retries,
            min_backoff: Duration::from_millis(self.min_backoff_ms),
            max_backoff: Duration::from_millis(self.max_backoff_ms),
            signing_secret: self.signing_secret.clone(),
        }
    }

    /// Parses the URLs; errors name the organisation, never the URL (it may hold a secret).
    fn urls(&self) -> Result<(Option<Url>, BTreeMap<OrgId, Url>)> {
        let parse = |s: &str, whose: &str| -> Result<Url> {
            let url = Url::parse(s)
                .map_err(|_| Error::Config(format!("the webhook URL {whose} is not a valid URL")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(Error::Config(format!("the webhook URL {whose} must be http or https")));
            }
            Ok(url)
        };
        let default = self.url.as_deref().map(|u| parse(u, "fusion.webhook.url")).transpose()?;
        let per_org = self
            .org_urls
            .iter()
            .map(|(org, u)| Ok((org.clone(), parse(u, &format!("of organisation {org}"))?)))
            .collect::<Result<_>>()?;
        Ok((default, per_org))
    }
}

/// Builds the sinks a configuration names, file first.
///
/// ```
/// let sinks = argus_fusion::build_sinks(&argus_fusion::FusionConfig::default())?;
/// assert_eq!(sinks.iter().map(|s| s.name()).collect::<Vec<_>>(), ["jsonl"]);
/// # Ok::<(), argus_fusion::Error>(())
/// ```
pub fn build_sinks(config: &FusionConfig) -> Result<Vec<Arc<dyn Sink>>> {
    config.validate()?;
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    if let Some(path) = config.jsonl_path.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        sinks.push(Arc::new(JsonLinesSink::new(path.clone())));
    }
    if let Some(webhook) = &config.webhook {
        let (default, per_org) = webhook.urls()?;
        sinks.push(Arc::new(WebhookSink::new(default, per_org, webhook.options())?));
    }
    Ok(sinks)
}
