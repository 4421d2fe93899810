//! Typed configuration: built-in defaults < `argus-tchap.toml` < `ARGUS_*` environment.
//!
//! Every key is documented in `docs/configuration.md`. Unknown keys are rejected so a typo never
//! silently falls back to a default.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use base64::Engine as _;
use figment::{
    Figment,
    providers::{Env, Format as _, Toml},
};
use serde::{Deserialize, Deserializer};

use argus_domain::Secret;
use argus_store::DatabaseUrl;

use crate::{Error, Result};

/// The configuration file read when no other is named.
pub const DEFAULT_CONFIG_FILE: &str = "argus-tchap.toml";

/// The file, in the data directory, that keeps the generated development HS256 secret.
pub const DEV_SECRET_FILE: &str = "argus-tchap.jwt-secret";

/// The file, in the data directory, that keeps the generated cursor and node-id key when
/// `graphql.cursor_key` is not configured.
pub const CURSOR_KEY_FILE: &str = "argus-tchap.cursor-key";

/// Top-level sections whose keys come from `ARGUS_<SECTION>_<KEY>`.
const SECTIONS: [&str; 8] = ["jwt", "oauth", "matrix", "graphql", "fusion", "audit", "post", "watch"];

/// Top-level keys that come from `ARGUS_<KEY>`.
const TOP_LEVEL_KEYS: [&str; 4] = ["bind", "database_url", "data_dir", "allow_remote_development"];

/// The whole configuration of the server and the operator commands. `Debug` leaves out every
/// secret and the database URL's location (a PostgreSQL URL may hold a password).
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
}

/// The name of the file, in the data directory, holding the generated key that seals watched
/// rooms' tokens when `watch.token_key` / `watch.token_key_file` is not configured.
pub const WATCH_KEY_FILE: &str = "argus-tchap.watch-key";

/// Watched rooms (`watchTchapRoom`) and the scheduler inside `serve`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchConfig {
    /// Run the scheduler inside `serve` (every replica may: they share the due watches).
    pub scheduler: bool,
    /// A file holding the key that seals watched rooms' Matrix tokens, base64 (32 bytes once
    /// decoded). Default: generated in the data directory.
    pub token_key_file: Option<PathBuf>,
    /// The key itself, base64 (for the environment: `ARGUS_WATCH_TOKEN_KEY`).
    pub token_key: Option<Secret>,
    /// Earlier keys, still opening what they sealed until `argus-tchap keys rotate` re-sealed
    /// every token under the current one.
    #[serde(deserialize_with = "paths_or_list")]
    pub previous_token_key_files: Vec<PathBuf>,
    /// The shortest interval a watch may have, in seconds.
    pub min_interval_secs: u32,
    /// Seconds between the scheduler's cycles.
    pub tick_secs: u64,
    /// Scheduled runs at once against one homeserver.
    pub per_homeserver_concurrency: usize,
    /// Scheduled runs at once in all.
    pub max_concurrent: usize,
    /// Seconds a replica holds a claimed watch; past it (the replica died), another takes it.
    pub lease_secs: u64,
    /// Messages one scheduled run reads at most.
    pub max_messages_per_run: u32,
    /// Watches one owner may have; more are refused with `TOO_MANY_WATCHES`.
    pub max_per_owner: u32,
    /// Watches of one organisation, counted over those the caller may see; more are refused
    /// with `TOO_MANY_WATCHES`.
    pub max_per_organisation: u32,
}

impl Default for WatchConfig {
    fn default() -> Self {
        let options = argus_ingest::scheduler::SchedulerOptions::default();
        let limits = argus_ingest::WatchLimits::default();
        Self {
            scheduler: true,
            token_key_file: None,
            token_key: None,
            previous_token_key_files: Vec::new(),
            min_interval_secs: limits.min_interval_secs,
            tick_secs: options.tick.as_secs(),
            per_homeserver_concurrency: options.per_homeserver,
            max_concurrent: options.max_concurrent,
            lease_secs: options.lease.as_secs(),
            max_messages_per_run: options.max_messages_per_run,
            max_per_owner: limits.max_per_owner,
            max_per_organisation: limits.max_per_org,
        }
    }
}

impl WatchConfig {
    /// The scheduler's options.
    pub fn scheduler_options(&self) -> argus_ingest::scheduler::SchedulerOptions {
        argus_ingest::scheduler::SchedulerOptions {
            tick: std::time::Duration::from_secs(self.tick_secs.max(1)),
            lease: std::time::Duration::from_secs(self.lease_secs.max(10)),
            per_homeserver: self.per_homeserver_concurrency.max(1),
            max_concurrent: self.max_concurrent.max(1),
            max_messages_per_run: self.max_messages_per_run.max(1),
            ..argus_ingest::scheduler::SchedulerOptions::default()
        }
    }
}

/// Notes posted into Tchap rooms (`postTchapMessage`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostConfig {
    /// The highest classification a note may carry out of the archive; Tchap is accredited up
    /// to RESTRICTED (*Diffusion Restreinte*), the default.
    pub max_classification: argus_domain::Classification,
    /// Put in front of every note: `{marking}` becomes the French protection marking
    /// (`DIFFUSION RESTREINTE`), `{level}` the contract name (`RESTRICTED`). Default
    /// `[{marking}] `.
    pub marking: String,
}

impl Default for PostConfig {
    fn default() -> Self {
        let policy = argus_domain::PostPolicy::default();
        Self { max_classification: policy.ceiling, marking: policy.marking }
    }
}

impl PostConfig {
    /// The policy the use-case applies.
    pub fn policy(&self) -> argus_domain::PostPolicy {
        argus_domain::PostPolicy { ceiling: self.max_classification, marking: self.marking.clone() }
    }
}

/// The key that keys the audit chain (HMAC-SHA256), held outside the database so that someone
/// who can write the database cannot rewrite the trail and hash it again. Give it by file or by
/// environment, never in the database.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// A file holding the key, base64 (at least 32 bytes once decoded).
    pub key_file: Option<PathBuf>,
    /// The key itself, base64 (for the environment: `ARGUS_AUDIT_KEY`).
    pub key: Option<Secret>,
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
        }
    }
}

/// How bearer tokens are validated and mapped to a viewer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// Required `iss`.
    #[serde(deserialize_with = "scalar_string")]
    pub issuer: String,
    /// Required `aud` (the token's `aud` must contain it).
    #[serde(deserialize_with = "scalar_string")]
    pub audience: String,
    /// Shared HS256 secret (development). Generated and kept in the data directory when no key
    /// is configured at all.
    pub hs256_secret: Option<Secret>,
    /// PEM file with an RSA or EC (P-256) public key.
    pub public_key_file: Option<PathBuf>,
    /// URL of the identity provider's JSON Web Key Set.
    pub jwks_url: Option<String>,
    /// Accepted algorithms; empty = derived from the key.
    #[serde(deserialize_with = "string_or_list")]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// Minimum time between two fetches of the JWKS on an unknown `kid`, in seconds.
    pub jwks_refresh_seconds: u64,
    /// Longest time a fetched JWKS is used before it is fetched again, in seconds (shorter when
    /// the identity provider's `Cache-Control: max-age` says so): a withdrawn key stops
    /// verifying within this time.
    pub jwks_max_age_seconds: u64,
    /// Refuse tokens whose lifetime (`exp - iat`) exceeds this many seconds; such tokens must
    /// then carry `iat`. `None`: no limit.
    pub max_token_lifetime_seconds: Option<u64>,
    /// Refuse tokens whose header `typ` is not this (e.g. `at+jwt`, RFC 9068; compared without
    /// case, with or without `application/`). `None`: any.
    pub required_typ: Option<String>,
    /// Claim holding the actor.
    #[serde(deserialize_with = "scalar_string")]
    pub sub_claim: String,
    /// Claim holding the organisation.
    #[serde(deserialize_with = "scalar_string")]
    pub org_claim: String,
    /// Claim holding the clearance level.
    #[serde(deserialize_with = "scalar_string")]
    pub clearance_claim: String,
    /// Claim holding the space-delimited scopes.
    #[serde(deserialize_with = "scalar_string")]
    pub scope_claim: String,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            issuer: "argus-dev".to_owned(),
            audience: "argus-tchap".to_owned(),
            hs256_secret: None,
            public_key_file: None,
            jwks_url: None,
            algorithms: Vec::new(),
            leeway_seconds: 30,
            jwks_refresh_seconds: 60,
            jwks_max_age_seconds: 3_600,
            max_token_lifetime_seconds: None,
            required_typ: None,
            sub_claim: "sub".to_owned(),
            org_claim: "org".to_owned(),
            clearance_claim: "clearance".to_owned(),
            scope_claim: "scope".to_owned(),
        }
    }
}

/// An OAuth 2.0 client registered at the identity provider, used by operators and scripts to
/// obtain bearer tokens with the client-credentials grant (RFC 6749 §4.4) when a real signing key
/// is configured and development tokens are refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthClientConfig {
    /// The identity provider's token endpoint.
    pub token_url: Option<String>,
    /// The client id.
    #[serde(deserialize_with = "scalar_string")]
    pub client_id: String,
    /// The client secret (prefer `ARGUS_OAUTH_CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// Scopes requested when none are named on the command line.
    #[serde(deserialize_with = "string_or_list")]
    pub scopes: Vec<String>,
}

/// The Matrix connector's outbound policy and limits.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MatrixConfig {
    /// Homeservers ingestions may reach; empty = any public host.
    #[serde(deserialize_with = "string_or_list")]
    pub allowed_homeservers: Vec<String>,
    /// Private addresses (IPs or CIDR ranges) that may be reached anyway, e.g. `127.0.0.1`.
    #[serde(deserialize_with = "string_or_list")]
    pub allow_private_addresses: Vec<String>,
    /// Ingestions running at once on this server; more are refused with `BUSY`.
    pub max_concurrent_ingestions: usize,
    /// Ingestions running at once against one homeserver; more are refused with `BUSY`.
    pub max_concurrent_per_homeserver: usize,
    /// Ingestions one caller may have running at once; more are refused with `CALLER_BUSY`.
    pub max_concurrent_per_caller: usize,
    /// Ingestions (and watches) one caller may start per minute; more are refused with
    /// `TOO_MANY_REQUESTS`. Every room of a joined-rooms call counts.
    pub ingestions_per_caller_per_minute: u32,
    /// Seconds an ingestion run holds its journal row without committing a batch; past it (its
    /// process died), another process audits the run as interrupted.
    pub run_lease_secs: u64,
    /// Seconds one ingestion run may take in all (it commits as it goes: this only bounds a
    /// run that never ends; the rest of a room is read by the next run).
    pub run_deadline_secs: u64,
    /// Seconds one run of a call (the API, the CLI) may read in all; past it the run stops,
    /// keeps what it stored and is audited `DEADLINE_EXCEEDED` (scheduled runs have
    /// `run_deadline_secs`).
    pub interactive_run_deadline_secs: u64,
    /// Rooms one joined-rooms call ingests at most; the others are reported `TOO_MANY_ROOMS`.
    pub joined_rooms_per_call: u32,
    /// Failures of one joined-rooms call audited one by one; past them, rooms the token cannot
    /// read are counted in one audit record of the call.
    pub joined_failures_recorded: u32,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        let admission = argus_graphql::AdmissionLimits::default();
        let limits = argus_ingest::Limits::default();
        Self {
            allowed_homeservers: Vec::new(),
            allow_private_addresses: Vec::new(),
            max_concurrent_ingestions: admission.max_concurrent,
            max_concurrent_per_homeserver: admission.max_concurrent_per_homeserver,
            max_concurrent_per_caller: admission.max_concurrent_per_caller,
            ingestions_per_caller_per_minute: admission.per_caller_per_minute,
            run_lease_secs: limits.run_lease.as_secs(),
            run_deadline_secs: argus_matrix::ConnectorConfig::default().stream_deadline.as_secs(),
            interactive_run_deadline_secs: limits.interactive_run_deadline.as_secs(),
            joined_rooms_per_call: limits.joined_rooms_per_call,
            joined_failures_recorded: limits.joined_failures_recorded,
        }
    }
}

/// Limits and switches of the GraphQL endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GraphqlConfig {
    /// Introspection; default: on in development, off when a real key is configured.
    pub introspection: Option<bool>,
    /// The GraphiQL page; default: on in development, off when a real key is configured.
    pub graphiql: Option<bool>,
    /// Maximum nesting depth of a query (fragments expanded).
    pub max_depth: usize,
    /// Maximum number of fields of an operation, aliases and fragment spreads counted.
    pub max_fields: usize,
    /// Maximum number of tokens of a document.
    pub max_tokens: usize,
    /// Maximum number of operations in one batched request.
    pub max_batch: usize,
    /// Maximum size of a request body, in bytes.
    pub max_body_bytes: usize,
    /// Key authenticating pagination cursors (base64); default: random per process.
    pub cursor_key: Option<Secret>,
}

impl Default for GraphqlConfig {
    fn default() -> Self {
        Self {
            introspection: None,
            graphiql: None,
            max_depth: 15,
            max_fields: 300,
            max_tokens: 5_000,
            max_batch: 10,
            max_body_bytes: 64 * 1024,
            cursor_key: None,
        }
    }
}

/// Where the key that verifies bearer tokens comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A shared HS256 secret (development).
    Hs256 {
        /// The secret.
        secret: Secret,
        /// Whether it was generated by this program and kept in the data directory.
        generated: bool,
    },
    /// A PEM public key read from a file.
    PublicKeyPem(Vec<u8>),
    /// A JSON Web Key Set fetched from a URL.
    Jwks(String),
}

impl KeySource {
    /// Whether this is a development key (an HS256 secret) rather than a real signing key.
    pub fn is_development(&self) -> bool {
        matches!(self, Self::Hs256 { .. })
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
        Figment::new().merge(Toml::file(path)).merge(env_provider())
    }

    /// Extracts and checks the configuration from a figment.
    pub fn from_figment(figment: Figment) -> Result<Self> {
        let config: Self = figment.extract().map_err(|e| Error::Config(describe_figment_error(&e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what typing alone cannot.
    pub fn validate(&self) -> Result<()> {
        self.post.policy().validate().map_err(|e| Error::Config(format!("post: {e}")))?;
        let keys = usize::from(self.jwt.hs256_secret.is_some())
            + usize::from(self.jwt.public_key_file.is_some())
            + usize::from(self.jwt.jwks_url.is_some());
        if keys > 1 {
            return Err(Error::Config(
                "configure at most one of jwt.hs256_secret, jwt.public_key_file and jwt.jwks_url".into(),
            ));
        }
        if let Some(secret) = &self.jwt.hs256_secret
            && secret.expose_secret().len() < 32
        {
            return Err(Error::Config("jwt.hs256_secret must be at least 32 bytes".into()));
        }
        if let Some(url) = &self.jwt.jwks_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return Err(Error::Config("jwt.jwks_url must be an http(s) URL".into()));
        }
        if let Some(url) = &self.oauth.token_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(Error::Config("oauth.token_url must be an http(s) URL".into()));
            }
            if self.oauth.client_id.is_empty() {
                return Err(Error::Config("oauth.client_id is required with oauth.token_url".into()));
            }
        }
        if self.jwt.issuer.is_empty() || self.jwt.audience.is_empty() {
            return Err(Error::Config("jwt.issuer and jwt.audience must not be empty".into()));
        }
        let g = &self.graphql;
        if g.max_depth == 0 || g.max_fields == 0 || g.max_tokens == 0 || g.max_batch == 0 {
            return Err(Error::Config("graphql limits must be positive".into()));
        }
        if g.max_body_bytes < 1024 {
            return Err(Error::Config("graphql.max_body_bytes must be at least 1024".into()));
        }
        self.fusion.validate().map_err(|e| Error::Config(e.to_string()))?;
        if let Some(key) = &g.cursor_key {
            let bytes = decode_key(key.expose_secret())
                .ok_or_else(|| Error::Config("graphql.cursor_key must be base64".into()))?;
            if bytes.len() < 32 {
                return Err(Error::Config("graphql.cursor_key must hold at least 32 bytes".into()));
            }
        }
        Ok(())
    }

    /// Whether no real signing key (public key or JWKS) is configured.
    pub fn is_development(&self) -> bool {
        self.jwt.public_key_file.is_none() && self.jwt.jwks_url.is_none()
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

    /// Resolves the verification key: reads the PEM file, or reads (or generates on first use)
    /// the development secret in the data directory.
    pub fn key_source(&self) -> Result<KeySource> {
        if let Some(secret) = &self.jwt.hs256_secret {
            return Ok(KeySource::Hs256 { secret: secret.clone(), generated: false });
        }
        if let Some(file) = &self.jwt.public_key_file {
            let pem = std::fs::read(file)
                .map_err(|_| Error::Config("cannot read the file named by jwt.public_key_file".into()))?;
            return Ok(KeySource::PublicKeyPem(pem));
        }
        if let Some(url) = &self.jwt.jwks_url {
            return Ok(KeySource::Jwks(url.clone()));
        }
        let secret = load_or_create_dev_secret(&self.data_dir())?;
        Ok(KeySource::Hs256 { secret, generated: true })
    }

    /// The audit chain's key, when one is configured (file or value); a key that cannot be read
    /// or is shorter than 32 bytes is a configuration error, never silently ignored.
    pub fn audit_key(&self) -> Result<Option<argus_store::AuditKey>> {
        let encoded = match (&self.audit.key, &self.audit.key_file) {
            (Some(key), _) => key.expose_secret().to_owned(),
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|_| Error::Config("cannot read audit.key_file".into()))?,
            (None, None) => return Ok(None),
        };
        let bytes =
            decode_key(&encoded).ok_or_else(|| Error::Config("the audit key is not base64".into()))?;
        argus_store::AuditKey::new(bytes)
            .map(Some)
            .map_err(|_| Error::Config("the audit key must hold at least 32 bytes".into()))
    }

    /// Creates the data directory, and the directory of the SQLite database, owner-only (0700)
    /// when they do not exist yet.
    pub fn prepare_directories(&self) -> Result<()> {
        create_private_dir(&self.data_dir())?;
        if let Some(dir) = self.sqlite_path().as_deref().and_then(Path::parent) {
            create_private_dir(dir)?;
        }
        Ok(())
    }

    /// Store options with the audit key.
    pub fn store_options(&self) -> Result<argus_store::StoreOptions> {
        Ok(argus_store::StoreOptions { audit_key: self.audit_key()?, ..argus_store::StoreOptions::default() })
    }

    /// The key that authenticates pagination cursors, when one is configured.
    pub fn cursor_key(&self) -> Option<Vec<u8>> {
        self.graphql.cursor_key.as_ref().and_then(|k| decode_key(k.expose_secret()))
    }

    /// The configured cursor key, or the one generated and kept in the data directory (so node
    /// ids stay stable across restarts and replicas sharing the directory).
    pub fn cursor_key_or_generated(&self) -> Result<Vec<u8>> {
        if let Some(key) = self.cursor_key() {
            return Ok(key);
        }
        let secret = load_or_create_secret(&self.data_dir(), CURSOR_KEY_FILE, "cursor key")?;
        decode_key(secret.expose_secret())
            .ok_or_else(|| Error::Config("the cursor key file is not base64".into()))
    }
}

impl Config {
    /// The keys that seal watched rooms' tokens: the configured one (value or file) or the one
    /// generated in the data directory, and the previous ones. A key that cannot be read or is
    /// not 32 bytes is a configuration error.
    pub fn token_keys(&self) -> Result<argus_ingest::TokenKeys> {
        let read = |file: &Path| {
            std::fs::read_to_string(file)
                .map_err(|_| Error::Config("cannot read a watch token key file".into()))
        };
        let encoded = match (&self.watch.token_key, &self.watch.token_key_file) {
            (Some(key), _) => key.expose_secret().to_owned(),
            (None, Some(file)) => read(file)?,
            (None, None) => load_or_create_secret(&self.data_dir(), WATCH_KEY_FILE, "watch token key")?
                .expose_secret()
                .to_owned(),
        };
        let key = |text: &str| {
            decode_key(text).ok_or_else(|| Error::Config("a watch token key is not base64".into())).and_then(
                |bytes| {
                    argus_ingest::TokenKey::new(&bytes)
                        .map_err(|_| Error::Config("a watch token key must be 32 bytes".into()))
                },
            )
        };
        let current = key(&encoded)?;
        let previous = self
            .watch
            .previous_token_key_files
            .iter()
            .map(|file| read(file).and_then(|text| key(&text)))
            .collect::<Result<Vec<_>>>()?;
        Ok(argus_ingest::TokenKeys::new(current, previous))
    }
}

fn decode_key(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s))
        .ok()
}

/// Creates the data directory, readable by the owner only, when it does not exist (an
/// existing one, which may be the working directory, is left as it is).
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|_| Error::Config("cannot create the data directory".into()))
}

/// Reads the development secret from `dir`, generating it (readable by the owner only) on
/// first use.
fn load_or_create_dev_secret(dir: &Path) -> Result<Secret> {
    load_or_create_secret(dir, DEV_SECRET_FILE, "development JWT secret")
}

/// Reads the secret kept in `dir/file`, generating 32 random bytes (base64url, readable by the
/// owner only) on first use; `what` names it in errors and the log.
fn load_or_create_secret(dir: &Path, file: &str, what: &str) -> Result<Secret> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 32 => return Ok(Secret::new(s.trim())),
        Ok(_) => return Err(Error::Config(format!("the {what} file is too short"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(_) => return Err(Error::Config(format!("cannot read the {what} file"))),
    }
    let mut bytes = [0_u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    create_private_dir(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            use std::io::Write as _;
            file.write_all(secret.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|_| Error::Config(format!("cannot write the {what} file")))?;
            tracing::info!(what, "generated a secret in the data directory");
            Ok(Secret::new(secret))
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_secret(dir, file, what),
        Err(_) => Err(Error::Config(format!("cannot create the {what} file"))),
    }
}

/// Maps an environment variable name (without `ARGUS_`, any case) to a configuration key:
/// `JWT_ISSUER` -> `jwt.issuer`, `DATABASE_URL` -> `database_url`. Other variables are ignored.
///
/// ```
/// use argus_server::config::env_key;
/// assert_eq!(env_key("JWT_HS256_SECRET").as_deref(), Some("jwt.hs256_secret"));
/// assert_eq!(env_key("database_url").as_deref(), Some("database_url"));
/// assert_eq!(env_key("CONFIG"), None);
/// ```
pub fn env_key(name: &str) -> Option<String> {
    let lower = name.to_ascii_lowercase();
    if TOP_LEVEL_KEYS.contains(&lower.as_str()) {
        return Some(lower);
    }
    SECTIONS.iter().find_map(|section| {
        lower
            .strip_prefix(section)
            .and_then(|rest| rest.strip_prefix('_'))
            .filter(|rest| !rest.is_empty())
            .map(|rest| format!("{section}.{rest}"))
    })
}

fn env_provider() -> Env {
    Env::prefixed("ARGUS_").filter_map(|key| env_key(key.as_str()).map(Into::into))
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

/// Accepts a string, a number or a boolean as a string (environment values that look like
/// numbers stay strings).
fn scalar_string<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        I(i64),
        U(u64),
        F(f64),
        B(bool),
    }
    Ok(match Scalar::deserialize(d)? {
        Scalar::S(s) => s,
        Scalar::I(i) => i.to_string(),
        Scalar::U(u) => u.to_string(),
        Scalar::F(f) => f.to_string(),
        Scalar::B(b) => b.to_string(),
    })
}

/// Accepts a list of strings or one string of comma- or space-separated items.
fn string_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// A list of paths, or one string of paths separated by commas (as the environment gives it).
fn paths_or_list<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<PathBuf>, D::Error> {
    Ok(string_or_list(d)?.into_iter().map(PathBuf::from).collect())
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment's Jail closures return figment::Error")]
mod tests {
    use figment::Jail;

    use super::*;

    #[test]
    fn defaults_without_any_configuration() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c, Config::default());
            assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
            assert_eq!(c.database_url, DatabaseUrl::sqlite_file("argus-tchap.db"));
            assert!(c.is_development());
            assert!(c.introspection_enabled());
            assert_eq!(c.data_dir(), PathBuf::from("."));
            assert_eq!(c.fusion().jsonl_path, Some(PathBuf::from("./network-nodes.jsonl")));
            Ok(())
        });
    }

    #[test]
    fn the_fusion_file_lies_in_the_data_directory_unless_absolute() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ARGUS_DATA_DIR", "/var/lib/argus");
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.fusion().jsonl_path, Some(PathBuf::from("/var/lib/argus/network-nodes.jsonl")));
            jail.set_env("ARGUS_FUSION_JSONL_PATH", "/srv/fusion/{org}.jsonl");
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.fusion().jsonl_path, Some(PathBuf::from("/srv/fusion/{org}.jsonl")));
            Ok(())
        });
    }

    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file(
                "argus-tchap.toml",
                r#"
                bind = "0.0.0.0:9000"
                database_url = "sqlite:///var/lib/argus/tchap.db"
                [jwt]
                issuer = "https://idp.example"
                leeway_seconds = 5
                [matrix]
                allowed_homeservers = ["https://matrix.agent.tchap.gouv.fr"]
                "#,
            )?;
            jail.set_env("ARGUS_JWT_ISSUER", "https://idp2.example");
            jail.set_env("ARGUS_JWT_HS256_SECRET", "12345678901234567890123456789012");
            jail.set_env("ARGUS_MATRIX_ALLOW_PRIVATE_ADDRESSES", "127.0.0.1, ::1");
            jail.set_env("ARGUS_GRAPHQL_INTROSPECTION", "false");
            jail.set_env("ARGUS_CONFIG", "ignored");
            jail.set_env("ARGUS_SOMETHING_ELSE", "ignored");
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.bind.to_string(), "0.0.0.0:9000");
            assert_eq!(c.jwt.issuer, "https://idp2.example");
            assert_eq!(c.jwt.leeway_seconds, 5);
            assert_eq!(
                c.jwt.hs256_secret.as_ref().map(Secret::expose_secret),
                Some("12345678901234567890123456789012")
            );
            assert_eq!(c.matrix.allow_private_addresses, vec!["127.0.0.1", "::1"]);
            assert_eq!(c.matrix.allowed_homeservers, vec!["https://matrix.agent.tchap.gouv.fr"]);
            assert!(!c.introspection_enabled());
            assert_eq!(c.data_dir(), PathBuf::from("/var/lib/argus"));
            assert!(!format!("{c:?}").contains("1234567890"));
            Ok(())
        });
    }

    #[test]
    fn debug_leaves_out_the_database_url() -> std::result::Result<(), argus_store::Error> {
        let c =
            Config { database_url: "postgres://argus:db-password-42@db/argus".parse()?, ..Config::default() };
        let debug = format!("{c:?}");
        assert!(debug.contains("database_url: DatabaseUrl(Postgres([redacted]))"), "{debug}");
        Ok(())
    }

    #[test]
    fn the_database_url_is_parsed_once_when_loaded() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("ARGUS_DATABASE_URL", "sqlite:data/tchap.db");
            let c = Config::load(Path::new("argus-tchap.toml")).map_err(|e| e.to_string())?;
            assert_eq!(c.sqlite_path(), Some(PathBuf::from("data/tchap.db")));
            assert_eq!(c.data_dir(), PathBuf::from("data"));
            // What the store would refuse, the configuration refuses when it is loaded, without
            // repeating the URL.
            for bad in ["sqlite://tchap.db?mode=ro", "mysql://argus:pw-secret@db/argus", "postgres://"] {
                jail.set_env("ARGUS_DATABASE_URL", bad);
                let e = Config::load(Path::new("argus-tchap.toml")).err().map(|e| e.to_string());
                assert!(
                    e.as_deref().is_some_and(|e| e.contains("database URL") && !e.contains("pw-secret")),
                    "{e:?}"
                );
            }
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected() {
        Jail::expect_with(|jail| {
            jail.clear_env();
            jail.create_file("argus-tchap.toml", "[jwt]\nissuer_typo = \"x\"\n")?;
            let e = Config::load(Path::new("argus-tchap.toml")).err().map(|e| e.to_string());
            assert!(e.is_some_and(|e| e.contains("issuer_typo")));
            jail.create_file("argus-tchap.toml", "")?;
            jail.set_env("ARGUS_JWT_ISSUR", "x");
            assert!(Config::load(Path::new("argus-tchap.toml")).is_err());
            Ok(())
        });
    }

    #[test]
    fn a_real_key_turns_development_features_off() {
        let mut c = Config::default();
        c.jwt.jwks_url = Some("https://idp.example/jwks".into());
        assert!(!c.is_development());
        assert!(!c.introspection_enabled());
        assert!(!c.graphiql_enabled());
        c.graphql.introspection = Some(true);
        assert!(c.introspection_enabled());
        c.jwt.hs256_secret = Some(Secret::new("x".repeat(40)));
        assert!(c.validate().is_err(), "two keys at once");
    }

    #[test]
    fn dev_secret_is_generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config {
            database_url: DatabaseUrl::sqlite_file(dir.path().join("db.sqlite")),
            ..Config::default()
        };
        let first = c.key_source().unwrap();
        let second = c.key_source().unwrap();
        assert_eq!(first, second);
        assert!(matches!(first, KeySource::Hs256 { generated: true, .. }));
        let path = dir.path().join(DEV_SECRET_FILE);
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn short_secrets_are_refused() {
        let mut c = Config::default();
        c.jwt.hs256_secret = Some(Secret::new("short"));
        assert!(c.validate().is_err());
    }
}
