//! Typed configuration: built-in defaults < `argus-tchap.toml` < `ARGUS_*` environment.
//!
//! Every key is documented in `docs/configuration.md`. Unknown keys are rejected so a typo never
//! silently falls back to a default. One module per section (the fusion section is
//! `argus_fusion::FusionConfig`); every key the configuration holds (the audit key, the watch
//! token keys, the cursor key, the development HS256 secret) is resolved by one resolver: a
//! value, a file, or generated once in the data directory.

mod audit;
mod env;
mod evidence;
mod forms;
mod graphql;
mod jwt;
mod key;
mod matrix;
mod media;
mod oauth;
mod oversight;
mod post;
#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail closures return figment::Error")]
mod tests;
mod watch;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Format as _, Toml},
};
use serde::Deserialize;

use argus_store::DatabaseUrl;

pub use audit::AuditConfig;
pub use env::env_key;
pub use evidence::EvidenceConfig;
pub use graphql::{CURSOR_KEY_FILE, GraphqlConfig};
pub use jwt::{DEV_SECRET_FILE, JwtConfig, KeySource};
pub use matrix::MatrixConfig;
pub use media::{ClamdAddress, ContentScannerUrl, MEDIA_DIR, MediaConfig, MediaStore, ScanMode};
pub use oauth::OAuthClientConfig;
pub use oversight::{LOG_SIGNING_KEY_FILE, OversightConfig, PACKAGE_SIGNING_KEY_FILE};
pub use post::PostConfig;
pub use watch::{WATCH_KEY_FILE, WatchConfig};

use crate::{Error, Result};

/// The configuration file read when no other is named.
pub const DEFAULT_CONFIG_FILE: &str = "argus-tchap.toml";

/// The whole configuration of the server and the operator commands. `Debug` leaves out every
/// secret and the database URL's location (a PostgreSQL URL may hold a password).
///
/// A field of a struct type is a section (`[jwt]`, `ARGUS_JWT_*`); any other field is a
/// top-level key (`bind`, `ARGUS_BIND`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// `sqlite://path` (relative or absolute), `sqlite::memory:` or `postgres://…`; parsed when
    /// the configuration is loaded.
    pub database_url: DatabaseUrl,
    /// Where generated files (the development JWT secret) are kept; defaults to the directory
    /// of the SQLite database, or the working directory for PostgreSQL.
    pub data_dir: Option<PathBuf>,
    /// Serve in development mode (no public key or JWKS configured: anyone holding the
    /// generated secret mints tokens) on an address other than loopback. Off by default: such
    /// a server is refused at start-up.
    pub allow_remote_development: bool,
    /// Bearer-token validation.
    pub jwt: JwtConfig,
    /// The identity provider's token endpoint, for `argus-tchap token --client-credentials`.
    pub oauth: OAuthClientConfig,
    /// The Matrix connector.
    pub matrix: MatrixConfig,
    /// The GraphQL endpoint.
    pub graphql: GraphqlConfig,
    /// The fusion relay and its sinks.
    pub fusion: argus_fusion::FusionConfig,
    /// The key of the audit chain.
    pub audit: AuditConfig,
    /// Notes posted into Tchap rooms: the write-down guard and the marking.
    pub post: PostConfig,
    /// Watched rooms and the scheduler that keeps them current.
    pub watch: WatchConfig,
    /// What the archive keeps of messages redacted after their capture.
    pub evidence: EvidenceConfig,
    /// Attachments: the virus scanner, the blob store and the byte caps.
    pub media: MediaConfig,
    /// The transparency log and disclosure packages: the log's name and the signing keys.
    pub oversight: OversightConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: DatabaseUrl::sqlite_file("argus-tchap.db"),
            data_dir: None,
            allow_remote_development: false,
            jwt: JwtConfig::default(),
            oauth: OAuthClientConfig::default(),
            matrix: MatrixConfig::default(),
            graphql: GraphqlConfig::default(),
            fusion: argus_fusion::FusionConfig::default(),
            audit: AuditConfig::default(),
            post: PostConfig::default(),
            watch: WatchConfig::default(),
            evidence: EvidenceConfig::default(),
            media: MediaConfig::default(),
            oversight: OversightConfig::default(),
        }
    }
}

impl Config {
    /// Loads the configuration from the defaults, the file `path` (when it exists) and the
    /// `ARGUS_*` environment.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_figment(Self::figment(path))
    }

    /// The layered providers: file then environment.
    pub fn figment(path: &Path) -> Figment {
        Figment::new().merge(Toml::file(path)).merge(env::provider())
    }

    /// Extracts and checks the configuration from a figment.
    pub fn from_figment(figment: Figment) -> Result<Self> {
        let config: Self = figment.extract().map_err(|e| Error::Config(describe_figment_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what typing alone cannot.
    pub fn validate(&self) -> Result<()> {
        self.post.validate()?;
        self.jwt.validate()?;
        self.oauth.validate()?;
        self.graphql.validate()?;
        self.media.validate()?;
        self.oversight.validate()?;
        self.fusion.validate().map_err(|e| Error::Config(e.to_string()))?;
        self.graphql.validate_key()
    }

    /// Whether no real signing key (public key or JWKS) is configured.
    pub fn is_development(&self) -> bool {
        self.jwt.is_development()
    }

    /// Refuses to serve in development mode on anything but a loopback address, unless
    /// `allow_remote_development` says so.
    pub fn check_bind(&self, addr: SocketAddr) -> Result<()> {
        if self.is_development() && !addr.ip().is_loopback() && !self.allow_remote_development {
            return Err(Error::Config(
                "development mode (no jwt.public_key_file or jwt.jwks_url) serves on loopback only; \
                 configure a real key, or set allow_remote_development = true"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Whether GraphQL introspection is enabled.
    pub fn introspection_enabled(&self) -> bool {
        self.graphql.introspection.unwrap_or_else(|| self.is_development())
    }

    /// Whether the GraphiQL page is served.
    pub fn graphiql_enabled(&self) -> bool {
        self.graphql.graphiql.unwrap_or_else(|| self.is_development())
    }

    /// The path of the SQLite database, when the database is SQLite and a file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.database_url.sqlite_path().map(Path::to_path_buf)
    }

    /// The directory generated files are kept in.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        match self.sqlite_path().as_deref().and_then(Path::parent) {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }

    /// The fusion settings with a relative `fusion.jsonl_path` anchored in the data directory
    /// (not in the directory the process happens to start in).
    pub fn fusion(&self) -> argus_fusion::FusionConfig {
        self.fusion.clone().relative_to(&self.data_dir())
    }

    /// Creates the data directory, and the directory of the SQLite database, owner-only (0700)
    /// when they do not exist yet.
    pub fn prepare_directories(&self) -> Result<()> {
        key::create_private_dir(&self.data_dir())?;
        if let Some(dir) = self.sqlite_path().as_deref().and_then(Path::parent) {
            key::create_private_dir(dir)?;
        }
        Ok(())
    }

    /// Resolves the verification key: reads the PEM file, or reads (or generates on first use)
    /// the development secret in the data directory.
    pub fn key_source(&self) -> Result<KeySource> {
        self.jwt.key_source(&self.data_dir())
    }

    /// The audit chain's key, when one is configured (file or value); a key that cannot be read
    /// or is shorter than 32 bytes is a configuration error, never silently ignored.
    pub fn audit_key(&self) -> Result<Option<argus_store::AuditKey>> {
        self.audit.audit_key()
    }

    /// Store options with the audit key and the legal hold.
    pub fn store_options(&self) -> Result<argus_store::StoreOptions> {
        Ok(argus_store::StoreOptions {
            audit_key: self.audit_key()?,
            keep_redacted: self.evidence.keep_redacted,
            ..argus_store::StoreOptions::default()
        })
    }

    /// The configured cursor key, or the one generated and kept in the data directory (so node
    /// ids stay stable across restarts and replicas sharing the directory).
    pub fn cursor_key_or_generated(&self) -> Result<Vec<u8>> {
        self.graphql.cursor_key_or_generated(&self.data_dir())
    }

    /// The signing keys of oversight (checkpoints, disclosure packages): the configured ones
    /// (value or file) or the ones generated in the data directory on first use.
    pub fn oversight_keys(&self) -> Result<argus_graphql::oversight::Keys> {
        self.oversight.keys(&self.data_dir())
    }

    /// Where disclosure packages are written: `packages/` under the data directory.
    pub fn packages_dir(&self) -> PathBuf {
        self.data_dir().join("packages")
    }

    /// The keys that seal watched rooms' tokens: the configured one (value or file) or the one
    /// generated in the data directory, and the previous ones. A key that cannot be read or is
    /// not 32 bytes is a configuration error.
    pub fn token_keys(&self) -> Result<argus_ingest::TokenKeys> {
        self.watch.token_keys(&self.data_dir())
    }
}

fn describe_figment_error(e: &figment::Error) -> String {
    // figment's messages name the key and, for files, the file; keep the key only.
    let key = e.path.join(".");
    let kind = e.kind.to_string();
    if key.is_empty() {
        format!("invalid configuration: {kind}")
    } else {
        format!("invalid configuration key {key}: {kind}")
    }
}
