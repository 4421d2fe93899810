//! The real server started in-process on 127.0.0.1:0, a GraphQL client that keeps every response
//! body it received (for the token scan), development JWTs, and a process-wide capture of the
//! tracing output.

use std::{
    io,
    path::Path,
    sync::{Mutex, Once},
    time::Duration,
};

use anyhow::{Context as _, Result, anyhow, ensure};
use argus_domain::{Classification, Scope};
use argus_server::{
    Config, RunningServer,
    auth::{TokenRequest, mint_dev_token},
    config::KeySource,
};
use serde_json::{Value, json};

/// The HS256 secret of the test server.
pub(crate) const SECRET: &str = "e2e-secret-0123456789abcdef-0123456789abcdef";

/// The fusion JSON Lines file, in the server's data directory.
pub(crate) const FUSION_FILE: &str = "network-nodes.jsonl";

/// Everything written by the tracing subscriber of this test process.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A writer appending to [`LOGS`].
struct Capture;

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        LOGS.lock().map_err(|_| io::Error::other("log capture poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a global subscriber at TRACE for every crate, writing into memory.
pub(crate) fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let installed = tracing_subscriber::fmt()
            .with_writer(|| Capture)
            .with_ansi(false)
            .with_max_level(tracing_subscriber::filter::LevelFilter::TRACE)
            .try_init();
        if let Err(error) = installed {
            eprintln!("e2e: could not install the log capture: {error}");
        }
    });
}

/// Everything logged so far in this process.
pub(crate) fn captured_logs() -> Result<String> {
    let logs = LOGS.lock().map_err(|_| anyhow!("log capture poisoned"))?;
    Ok(String::from_utf8_lossy(&logs).into_owned())
}

/// A running server and a client for it.
pub(crate) struct Server {
    running: Option<RunningServer>,
    base: String,
    client: reqwest::Client,
    config: Config,
    responses: Mutex<Vec<String>>,
}

impl Server {
    /// Starts the server on `database_url`, with its data directory and fusion JSON Lines file in
    /// `dir`, an HS256 secret, and the loopback Synapse allowed as a homeserver.
    pub(crate) async fn start(database_url: &str, dir: &Path) -> Result<Self> {
        Self::start_with(database_url, dir, |_| {}).await
    }

    /// [`Server::start`] with `configure` applied to the configuration last.
    pub(crate) async fn start_with(
        database_url: &str,
        dir: &Path,
        configure: impl FnOnce(&mut Config),
    ) -> Result<Self> {
        let mut config = Config { database_url: database_url.parse()?, ..Config::default() };
        config.data_dir = Some(dir.to_path_buf());
        config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
        config.matrix.allow_private_addresses = vec!["127.0.0.1".into()];
        config.fusion.jsonl_path = Some(dir.join(FUSION_FILE));
        configure(&mut config);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
        let running = argus_server::spawn(listener, config.clone()).await.context("starting the server")?;
        let base = format!("http://{}", running.addr());
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .no_proxy()
            .build()
            .context("building the HTTP client")?;
        Ok(Self { running: Some(running), base, client, config, responses: Mutex::new(Vec::new()) })
    }

    /// Stops the server gracefully.
    pub(crate) async fn stop(mut self) -> Result<()> {
        if let Some(running) = self.running.take() {
            running.stop().await.context("stopping the server")?;
        }
        Ok(())
    }

    /// A development JWT for `sub` in `org` at `clearance` with `scopes`.
    pub(crate) fn jwt(
        &self,
        sub: &str,
        org: &str,
        clearance: Classification,
        scopes: &[Scope],
    ) -> Result<String> {
        let request = TokenRequest {
            sub: sub.parse().context("sub")?,
            org: org.parse().context("org")?,
            clearance,
            scopes: scopes.to_vec(),
            ttl: Duration::from_secs(900),
        };
        let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
        mint_dev_token(&self.config.jwt, &source, &request).context("minting a JWT")
    }

    /// POSTs a GraphQL request with `jwt`; checks HTTP 200 and a JSON body, keeps the raw body.
    pub(crate) async fn graphql(&self, jwt: &str, query: &str, variables: Value) -> Result<Value> {
        let response = self
            .client
            .post(format!("{}/graphql", self.base))
            .bearer_auth(jwt)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .context("POST /graphql")?;
        let status = response.status();
        let text = response.text().await.context("reading the GraphQL response")?;
        self.responses.lock().map_err(|_| anyhow!("responses poisoned"))?.push(text.clone());
        ensure!(status.as_u16() == 200, "HTTP {status}: {text}");
        serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
    }

    /// `data.<field>` of a request that must succeed without errors.
    pub(crate) async fn data(&self, jwt: &str, query: &str, variables: Value, field: &str) -> Result<Value> {
        let body = self.graphql(jwt, query, variables).await?;
        ensure!(body.get("errors").is_none(), "unexpected errors for {field}: {body}");
        let value = body["data"].get(field).cloned().ok_or_else(|| anyhow!("no data.{field} in {body}"))?;
        Ok(value)
    }

    /// The `extensions.code` of the first error of a request that must fail.
    pub(crate) async fn error_code(
        &self,
        jwt: &str,
        query: &str,
        variables: Value,
    ) -> Result<(String, Value)> {
        let body = self.graphql(jwt, query, variables).await?;
        let code = body["errors"][0]["extensions"]["code"]
            .as_str()
            .ok_or_else(|| anyhow!("expected an error with extensions.code, got {body}"))?
            .to_owned();
        Ok((code, body))
    }

    /// GETs `path` (a path on the server) with `jwt`, and the `Range` header when given.
    pub(crate) async fn download(&self, jwt: &str, path: &str, range: Option<&str>) -> Result<Downloaded> {
        let mut request = self.client.get(format!("{}{path}", self.base)).bearer_auth(jwt);
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = request.send().await.with_context(|| format!("GET {path}"))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = response.bytes().await.context("reading a download")?.to_vec();
        Ok(Downloaded { status, headers, body })
    }

    /// Every response body received so far.
    pub(crate) fn responses(&self) -> Result<Vec<String>> {
        Ok(self.responses.lock().map_err(|_| anyhow!("responses poisoned"))?.clone())
    }
}

/// A development JWT signed with [`SECRET`], as any server of these tests accepts it.
pub(crate) fn dev_jwt(sub: &str, org: &str, clearance: Classification, scopes: &[Scope]) -> Result<String> {
    let mut config = Config::default();
    config.jwt.hs256_secret = Some(argus_domain::Secret::new(SECRET));
    let request = TokenRequest {
        sub: sub.parse().context("sub")?,
        org: org.parse().context("org")?,
        clearance,
        scopes: scopes.to_vec(),
        ttl: Duration::from_secs(900),
    };
    let source = KeySource::Hs256 { secret: argus_domain::Secret::new(SECRET), generated: false };
    mint_dev_token(&config.jwt, &source, &request).context("minting a JWT")
}

/// The node of the message `event_id` in a `tchapMessages` connection.
pub(crate) fn message_node(connection: &Value, event_id: &str) -> Result<Value> {
    connection["edges"]
        .as_array()
        .and_then(|e| e.iter().map(|e| &e["node"]).find(|n| n["eventId"] == event_id))
        .cloned()
        .with_context(|| format!("{event_id} not listed: {connection}"))
}

/// A download's answer.
pub(crate) struct Downloaded {
    /// The HTTP status.
    pub(crate) status: u16,
    /// The headers, lowercase names.
    pub(crate) headers: Vec<(String, String)>,
    /// The body.
    pub(crate) body: Vec<u8>,
}

impl Downloaded {
    /// The value of header `name` (empty when absent).
    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }
}
