//! Starts the real server with a test configuration and talks to it over HTTP.

use std::{path::PathBuf, time::Duration};

use argus_domain::{Classification, Scope};
use argus_server::{
    Config, RunningServer,
    auth::{TokenRequest, mint_dev_token},
    config::KeySource,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The HS256 secret of the test servers.
pub(crate) const SECRET: &str = "test-secret-0123456789abcdef-0123456789";

pub(crate) fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub(crate) struct TestServer {
    pub(crate) server: Option<RunningServer>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) config: Config,
    _dir: TempDir,
    /// The PostgreSQL database of a server on PostgreSQL, dropped with it.
    _database: Option<argus_testkit::postgres::TestDatabase>,
}

/// A configuration with an HS256 secret, a SQLite database and a JSON Lines file in `dir`.
pub(crate) fn config(dir: &TempDir) -> Config {
    let mut config = Config {
        database_url: argus_store::DatabaseUrl::sqlite_file(dir.path().join("argus.db")),
        ..Config::default()
    };
    config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
    config.matrix.allow_private_addresses = vec!["127.0.0.1".into()];
    config.fusion.jsonl_path = Some(dir.path().join("network-nodes.jsonl"));
    config
}

impl TestServer {
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let config = config(&dir);
        Self::start_with(dir, config).await
    }

    pub(crate) async fn start_with(dir: TempDir, config: Config) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let server =
            argus_server::spawn(listener, config.clone()).await.unwrap_or_else(|e| panic!("server: {e}"));
        let base = format!("http://{}", server.addr());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        Self { server: Some(server), base, client, config, _dir: dir, _database: None }
    }

    /// Starts the server with `blobs` as its blob store (none: the route has no store), and
    /// returns it with the server's store, for fixtures.
    pub(crate) async fn start_with_blobs(
        dir: TempDir,
        config: Config,
        blobs: Option<std::sync::Arc<dyn argus_server::BlobSource>>,
    ) -> (Self, argus_store::Store) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let mut built = argus_server::app::build(&config).await.unwrap_or_else(|e| panic!("build: {e}"));
        if let Some(blobs) = blobs {
            built.state.set_blob_source(blobs);
        }
        let store = built.state.services().app.store.clone();
        let server = argus_server::spawn_built(listener, built).unwrap_or_else(|e| panic!("server: {e}"));
        let base = format!("http://{}", server.addr());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        (Self { server: Some(server), base, client, config, _dir: dir, _database: None }, store)
    }

    /// A server on SQLite, or on a fresh PostgreSQL database (`None` when PostgreSQL is absent),
    /// and its store, for fixtures.
    pub(crate) async fn start_on(postgres: bool) -> Option<(Self, argus_store::Store)> {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let mut config = config(&dir);
        let database = if postgres {
            let database = tokio::task::spawn_blocking(argus_testkit::postgres::fresh_database)
                .await
                .unwrap_or_else(|e| panic!("join: {e}"))?;
            config.database_url = database.url().parse().unwrap_or_else(|e| panic!("url: {e}"));
            // Without a SQLite file, generated keys would go to the working directory.
            config.data_dir = Some(dir.path().to_path_buf());
            Some(database)
        } else {
            None
        };
        let (mut server, store) = Self::start_with_blobs(dir, config, None).await;
        server._database = database;
        Some((server, store))
    }

    /// The URL of the GraphQL over WebSocket endpoint.
    pub(crate) fn ws_url(&self) -> String {
        format!("{}/graphql", self.base.replacen("http://", "ws://", 1))
    }

    /// A development token like [`Self::token`] that expires after `ttl`.
    pub(crate) fn token_for(
        &self,
        org: &str,
        clearance: Classification,
        scopes: &[Scope],
        ttl: Duration,
    ) -> String {
        let request = TokenRequest {
            sub: format!("agent@{org}").parse().unwrap_or_else(|e| panic!("sub: {e}")),
            org: org.parse().unwrap_or_else(|e| panic!("org: {e}")),
            clearance,
            scopes: scopes.to_vec(),
            ttl,
        };
        let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
        mint_dev_token(&self.config.jwt, &source, &request).unwrap_or_else(|e| panic!("mint: {e}"))
    }

    pub(crate) async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap_or_else(|e| panic!("stop: {e}"));
        }
    }

    /// A development token for `org` at `clearance` with `scopes`.
    pub(crate) fn token(&self, org: &str, clearance: Classification, scopes: &[Scope]) -> String {
        self.token_for(org, clearance, scopes, Duration::from_secs(600))
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a body to /graphql with an optional `Authorization` header value.
    pub(crate) async fn post_raw(&self, authorization: Option<&str>, body: Vec<u8>) -> reqwest::Response {
        let mut request =
            self.client.post(self.url("/graphql")).header("content-type", "application/json").body(body);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.unwrap_or_else(|e| panic!("request: {e}"))
    }

    /// Runs a GraphQL query with a bearer token; returns (status, JSON body).
    pub(crate) async fn graphql(&self, token: &str, query: &str, variables: Value) -> (u16, Value) {
        let body = json!({ "query": query, "variables": variables }).to_string().into_bytes();
        let response = self.post_raw(Some(&format!("Bearer {token}")), body).await;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }
}
