//! `[media]`: attachments as evidence: the virus scanner, the blob store, the byte caps and the
//! media worker's pace.
//!
//! Addresses are checked when the configuration is loaded (a bad scheme is a configuration
//! error naming the key), caps and intervals when it is validated (zero is refused). Without a
//! scanner the server serves no file unless `scan = "off"` says so ([`MediaConfig::serving_allowed`]).

use std::{fmt, path::Path, path::PathBuf, str::FromStr, time::Duration};

use reqwest::Url;
use serde::Deserialize;

use crate::{Error, Result};

/// The folder, in the data directory, of the filesystem blob store (`store = "file"`).
pub use argus_media::MEDIA_DIR;

/// Whether files are scanned before they are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMode {
    /// Every file is scanned by the `clamd` daemon at `media.clamd`; a file is served only
    /// once found clean.
    #[default]
    Clamd,
    /// No scanning: files are served unscanned (logged loudly at start).
    Off,
}

/// A `clamd` daemon's address, `tcp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ClamdAddress {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl ClamdAddress {
    /// `host:port`, as a socket address to connect to (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tcp://{}", self.authority())
    }
}

impl FromStr for ClamdAddress {
    type Err = String;

    /// ```
    /// use argus_server::config::ClamdAddress;
    /// let a: ClamdAddress = "tcp://127.0.0.1:3310".parse()?;
    /// assert_eq!((a.host.as_str(), a.port), ("127.0.0.1", 3310));
    /// assert!("unix:///run/clamd.sock".parse::<ClamdAddress>().is_err());
    /// assert!("tcp://127.0.0.1".parse::<ClamdAddress>().is_err());
    /// # Ok::<(), String>(())
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let refuse = || "expected tcp://host:port".to_owned();
        let url = Url::parse(s).map_err(|_| refuse())?;
        if url.scheme() != "tcp"
            || !url.username().is_empty()
            || url.password().is_some()
            || !matches!(url.path(), "" | "/")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(refuse());
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or_else(refuse)?;
        let port = url.port().ok_or_else(refuse)?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        Ok(Self { host, port })
    }
}

impl TryFrom<String> for ClamdAddress {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// Where the files' bytes are kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "String")]
pub enum MediaStore {
    /// Files under the data directory (`{data_dir}/media`), content-addressed.
    #[default]
    File,
    /// An S3-compatible bucket: `s3://bucket?endpoint=https://host:port&region=…` (credentials
    /// from the usual `AWS_*` environment; plain `http` only to a loopback endpoint).
    S3(argus_media::S3Location),
}

impl FromStr for MediaStore {
    type Err = String;

    /// ```
    /// use argus_server::config::MediaStore;
    /// assert_eq!("file".parse::<MediaStore>()?, MediaStore::File);
    /// let s3: MediaStore = "s3://evidence?endpoint=http://127.0.0.1:9000&region=eu-west-3".parse()?;
    /// let MediaStore::S3(at) = s3 else { panic!() };
    /// assert_eq!((at.bucket.as_str(), at.region.as_str()), ("evidence", "eu-west-3"));
    /// assert!("ftp://evidence".parse::<MediaStore>().is_err());
    /// # Ok::<(), String>(())
    /// ```
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s == "file" {
            return Ok(Self::File);
        }
        argus_media::S3Location::parse(s)
            .map(Self::S3)
            .map_err(|e| format!("expected \"file\" or s3://bucket?endpoint=…: {e}"))
    }
}

impl TryFrom<String> for MediaStore {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

/// An Element matrix-content-scanner's base URL (`http(s)://…`), files fetched through it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ContentScannerUrl(pub Url);

impl TryFrom<String> for ContentScannerUrl {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        let url = Url::parse(&s).map_err(|_| "expected an http(s) URL".to_owned())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() {
            return Err("expected an http(s) base URL without a query".to_owned());
        }
        Ok(Self(url))
    }
}

/// Attachments: fetching, scanning, storing and serving files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// The `clamd` daemon, `tcp://host:port` (`ARGUS_MEDIA_CLAMD`). Without one (and `scan`
    /// not `"off"`) no file is ever served.
    pub clamd: Option<ClamdAddress>,
    /// `"clamd"` (default) or `"off"`.
    pub scan: ScanMode,
    /// `"file"` (default: under the data directory) or `s3://bucket?endpoint=…`.
    pub store: MediaStore,
    /// The S3 access key id (`ARGUS_MEDIA_S3_ACCESS_KEY_ID`); without it, `AWS_ACCESS_KEY_ID`.
    pub s3_access_key_id: Option<String>,
    /// The S3 secret access key (`ARGUS_MEDIA_S3_SECRET_ACCESS_KEY`); without it,
    /// `AWS_SECRET_ACCESS_KEY`. Never logged.
    pub s3_secret_access_key: Option<argus_domain::Secret>,
    /// The largest file fetched, in bytes (`ARGUS_MEDIA_MAX_FILE_BYTES`; default 100 MiB); the
    /// homeserver's `m.upload.size`, when smaller, caps it further. A larger file is
    /// `TOO_LARGE`.
    pub max_file_bytes: u64,
    /// The most bytes one ingestion run fetches (default 1 GiB); what is left waits for the
    /// media worker.
    pub max_run_bytes: u64,
    /// Files fetched at once from one homeserver (default 4).
    pub concurrency_per_homeserver: usize,
    /// An Element matrix-content-scanner to fetch files through, instead of the homeserver's
    /// media routes.
    pub content_scanner: Option<ContentScannerUrl>,
    /// Seconds between the media worker's passes (default 30).
    pub worker_interval_secs: u64,
    /// The longest wait between two attempts at a file, in seconds (default 3600; the wait
    /// doubles from the worker's interval up to it).
    pub retry_max_secs: u64,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            clamd: None,
            scan: ScanMode::Clamd,
            store: MediaStore::File,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            max_file_bytes: 100 * 1024 * 1024,
            max_run_bytes: 1024 * 1024 * 1024,
            concurrency_per_homeserver: 4,
            content_scanner: None,
            worker_interval_secs: 30,
            retry_max_secs: 3600,
        }
    }
}

impl MediaConfig {
    /// Checks what typing alone cannot: no cap, concurrency or interval is zero.
    pub(super) fn validate(&self) -> Result<()> {
        let positive = [
            ("media.max_file_bytes", self.max_file_bytes),
            ("media.max_run_bytes", self.max_run_bytes),
            (
                "media.concurrency_per_homeserver",
                u64::try_from(self.concurrency_per_homeserver).unwrap_or(u64::MAX),
            ),
            ("media.worker_interval_secs", self.worker_interval_secs),
            ("media.retry_max_secs", self.retry_max_secs),
        ];
        match positive.iter().find(|(_, value)| *value == 0) {
            Some((key, _)) => Err(Error::Config(format!("{key} must be greater than 0"))),
            None => Ok(()),
        }
    }

    /// The scanner files go through: the `clamd` address unless `scan = "off"`.
    pub fn scanner(&self) -> Option<&ClamdAddress> {
        match self.scan {
            ScanMode::Clamd => self.clamd.as_ref(),
            ScanMode::Off => None,
        }
    }

    /// Whether the download route may serve files: a scanner is configured, or the operator
    /// turned scanning off explicitly. Otherwise the route answers 503
    /// `MEDIA_SCANNER_NOT_CONFIGURED` (and no file becomes `STORED` anyway).
    pub fn serving_allowed(&self) -> bool {
        self.scan == ScanMode::Off || self.clamd.is_some()
    }

    /// The folder of the filesystem blob store under `data_dir`, when `store = "file"`.
    pub fn file_store_dir(&self, data_dir: &Path) -> Option<PathBuf> {
        matches!(self.store, MediaStore::File).then(|| data_dir.join(MEDIA_DIR))
    }

    /// The media worker's interval.
    pub fn worker_interval(&self) -> Duration {
        Duration::from_secs(self.worker_interval_secs)
    }

    /// The longest wait between two attempts at a file.
    pub fn retry_max(&self) -> Duration {
        Duration::from_secs(self.retry_max_secs)
    }

    /// Logs, once at server start, what an operator must know: files served unscanned
    /// (`scan = "off"`), or no file served for want of a scanner.
    pub fn log_at_start(&self) {
        match (self.scan, &self.clamd) {
            (ScanMode::Off, _) => tracing::warn!(
                "media.scan = \"off\": files are served to analysts WITHOUT any virus scan; \
                 set media.clamd and media.scan = \"clamd\" to scan them"
            ),
            (ScanMode::Clamd, None) => tracing::warn!(
                "media.clamd is not set: files are fetched and held but never scanned, so none is served; \
                 set media.clamd = \"tcp://host:port\" (or media.scan = \"off\" to serve them unscanned)"
            ),
            (ScanMode::Clamd, Some(clamd)) => tracing::info!(%clamd, "files are scanned by clamd"),
        }
    }
}
