//! A real Synapse homeserver for tests.
//!
//! [`synapse`] installs the `matrix-synapse` Python package into a venv under the workspace's
//! `target/` directory (once, cached, guarded by a file lock so two test processes never install
//! at the same time), writes a configuration on a free loopback port (SQLite, raised rate limits,
//! no federation listener, registration only through the shared secret), starts it and waits for
//! `/_matrix/client/versions`. One server per test process; it is stopped and its directory
//! removed by a detached watchdog when the test process exits.
//!
//! Users are registered with the shared-secret admin API ([`Synapse::register`]) and rooms are
//! built through the Matrix client-server API with the helpers of [`TestUser`].
//!
//! The server's directory (configuration, SQLite database, log) lives in `/dev/shm` when it
//! exists and `TMPDIR` is not set, because SQLite syncs every commit. Synapse logs at `WARNING`
//! into `homeserver.log` there; set `ARGUS_SYNAPSE_LOG_LEVEL=INFO` to see every request.
//!
//! When Python, venv or pip are unavailable (or the install fails) the tier is skipped with a loud
//! message on stderr; with `ARGUS_REQUIRE_SYNAPSE=1` it panics instead.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let Some(server) = argus_testkit::synapse::synapse() else {
//!     return Ok(()); // skipped loudly
//! };
//! let alice = server.register("alice").await?;
//! let room = alice.create_room(Some("General"), None, false).await?;
//! alice.send_text(&room, "hello").await?;
//! let page = alice.messages(&room, "b", 10).await?;
//! assert_eq!(page["chunk"][0]["content"]["body"], "hello");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use reqwest::{Method, Url};
use serde_json::{Value, json};

use crate::{Tier, spawn_watchdog, tail_of_file};

static SYNAPSE: Tier<Synapse> = Tier::new("Synapse", "real-Synapse tier", REQUIRE_ENV);

/// Environment variable that turns a missing Synapse into a panic instead of a skip.
pub const REQUIRE_ENV: &str = "ARGUS_REQUIRE_SYNAPSE";

/// The pip requirement installed into the venv.
pub const SYNAPSE_REQUIREMENT: &str = "matrix-synapse==1.163.*";

/// The homeserver's `server_name` (user ids are `@localpart:argus.test`).
pub const SERVER_NAME: &str = "argus.test";

/// How long to wait for `/_matrix/client/versions` after starting the server.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running Synapse homeserver (one per test process, see [`synapse`]).
///
/// `Debug` leaves out the registration shared secret.
pub struct Synapse {
    base_url: String,
    server_name: String,
    port: u16,
    shared_secret: String,
    dir: PathBuf,
}

impl fmt::Debug for Synapse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Synapse")
            .field("base_url", &self.base_url)
            .field("server_name", &self.server_name)
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Synapse {
    /// Base URL of the client-server API, e.g. `http://127.0.0.1:PORT` (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The homeserver's `server_name`.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// The loopback TCP port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's log file (useful when a test fails).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("homeserver.log")
    }

    /// Registers a new (non-admin) user through the shared-secret admin API.
    ///
    /// The localpart is made unique per call (`<localpart>_<pid>_<n>`, lowercased) so that
    /// parallel tests never collide; the full id is in [`TestUser::user_id`].
    pub async fn register(&self, localpart: &str) -> anyhow::Result<TestUser> {
        self.register_with(localpart, false).await
    }

    /// Registers a new server admin through the shared-secret admin API.
    pub async fn register_admin(&self, localpart: &str) -> anyhow::Result<TestUser> {
        self.register_with(localpart, true).await
    }

    async fn register_with(&self, localpart: &str, admin: bool) -> anyhow::Result<TestUser> {
        let username = unique_localpart(localpart);
        let password = random_hex(16);
        let client = new_client()?;
        let url = format!("{}/_synapse/admin/v1/register", self.base_url);
        let nonce_response: Value =
            checked_json(client.get(&url).send().await?, "GET register nonce").await?;
        let nonce = nonce_response["nonce"]
            .as_str()
            .ok_or_else(|| anyhow!("register nonce missing in {nonce_response}"))?
            .to_owned();
        let mac = registration_mac(&self.shared_secret, &nonce, &username, &password, admin)?;
        let body = json!({
            "nonce": nonce,
            "username": username,
            "password": password,
            "admin": admin,
            "mac": mac,
        });
        let registered: Value =
            checked_json(client.post(&url).json(&body).send().await?, "POST register").await?;
        let field = |name: &str| {
            registered[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("`{name}` missing from the registration response"))
        };
        Ok(TestUser {
            user_id: field("user_id")?,
            access_token: field("access_token")?,
            device_id: field("device_id")?,
            base_url: self.base_url.clone(),
            client,
        })
    }
}

/// Returns the process's Synapse homeserver, installing and starting it on first use.
///
/// Returns `None` after a loud SKIP message on stderr when Python, venv or pip are unavailable,
/// the install fails or the server does not start.
///
/// # Panics
///
/// When Synapse is unavailable and `ARGUS_REQUIRE_SYNAPSE=1`.
pub fn synapse() -> Option<&'static Synapse> {
    SYNAPSE.get(start)
}

/// A user registered on the test homeserver, with helpers over the client-server API.
///
/// Holds its own HTTP client: use a `TestUser` inside the async runtime (test) that created it.
/// `Debug` leaves out the access token.
#[derive(Clone)]
pub struct TestUser {
    /// Full Matrix user id, e.g. `@alice_123_0:argus.test`.
    pub user_id: String,
    /// The user's access token.
    pub access_token: String,
    /// The device id of the registration login.
    pub device_id: String,
    base_url: String,
    client: reqwest::Client,
}

impl fmt::Debug for TestUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestUser")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl TestUser {
    /// Sends an authenticated request to `/_matrix/client/v3/<segments…>` (each segment is
    /// percent-encoded) with optional query and JSON body; returns the JSON response, or an error
    /// naming the status and Matrix error body on a non-2xx answer.
    pub async fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut url = Url::parse(&self.base_url).context("parsing the homeserver base URL")?;
        url.path_segments_mut()
            .map_err(|()| anyhow!("base URL cannot have a path"))?
            .pop_if_empty()
            .extend(["_matrix", "client", "v3"])
            .extend(segments);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let what = format!("{method} /{}", segments.join("/"));
        let mut request = self.client.request(method, url).bearer_auth(&self.access_token);
        if let Some(body) = body {
            request = request.json(body);
        }
        checked_json(request.send().await?, &what).await
    }

    /// Creates a private (invite-only) room and returns its id. `encrypted` adds an
    /// `m.room.encryption` state event (megolm) to the initial state.
    pub async fn create_room(
        &self,
        name: Option<&str>,
        topic: Option<&str>,
        encrypted: bool,
    ) -> anyhow::Result<String> {
        let mut body = json!({ "preset": "private_chat" });
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        if let Some(topic) = topic {
            body["topic"] = json!(topic);
        }
        if encrypted {
            body["initial_state"] = json!([{
                "type": "m.room.encryption",
                "state_key": "",
                "content": { "algorithm": "m.megolm.v1.aes-sha2" }
            }]);
        }
        self.create_room_with(&body).await
    }

    /// Creates a room from a raw `/createRoom` body and returns its id.
    pub async fn create_room_with(&self, body: &Value) -> anyhow::Result<String> {
        let response = self.request(Method::POST, &["createRoom"], &[], Some(body)).await?;
        string_field(&response, "room_id")
    }

    /// Invites `user_id` into `room`.
    pub async fn invite(&self, room: &str, user_id: &str) -> anyhow::Result<()> {
        let body = json!({ "user_id": user_id });
        self.request(Method::POST, &["rooms", room, "invite"], &[], Some(&body)).await.map(drop)
    }

    /// Joins `room` (a room id).
    pub async fn join(&self, room: &str) -> anyhow::Result<()> {
        self.request(Method::POST, &["rooms", room, "join"], &[], Some(&json!({}))).await.map(drop)
    }

    /// Leaves `room`.
    pub async fn leave(&self, room: &str) -> anyhow::Result<()> {
        self.request(Method::POST, &["rooms", room, "leave"], &[], Some(&json!({}))).await.map(drop)
    }

    /// Sends a state event and returns its event id.
    pub async fn set_state(
        &self,
        room: &str,
        event_type: &str,
        state_key: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let response = self
            .request(Method::PUT, &["rooms", room, "state", event_type, state_key], &[], Some(content))
            .await?;
        string_field(&response, "event_id")
    }

    /// Renames `room` (`m.room.name`) and returns the state event id.
    pub async fn set_name(&self, room: &str, name: &str) -> anyhow::Result<String> {
        self.set_state(room, "m.room.name", "", &json!({ "name": name })).await
    }

    /// Sets the topic of `room` (`m.room.topic`) and returns the state event id.
    pub async fn set_topic(&self, room: &str, topic: &str) -> anyhow::Result<String> {
        self.set_state(room, "m.room.topic", "", &json!({ "topic": topic })).await
    }

    /// Sends a room event of any type and returns its event id.
    pub async fn send_event(&self, room: &str, event_type: &str, content: &Value) -> anyhow::Result<String> {
        let txn = transaction_id();
        let response =
            self.request(Method::PUT, &["rooms", room, "send", event_type, &txn], &[], Some(content)).await?;
        string_field(&response, "event_id")
    }

    /// Creates a key backup version (`POST /room_keys/version`) with `auth_data` and returns
    /// its version.
    pub async fn create_key_backup(&self, algorithm: &str, auth_data: &Value) -> anyhow::Result<String> {
        let body = json!({ "algorithm": algorithm, "auth_data": auth_data });
        let response = self.request(Method::POST, &["room_keys", "version"], &[], Some(&body)).await?;
        string_field(&response, "version")
    }

    /// Uploads one backed-up session (`PUT /room_keys/keys/{room}/{session}?version=`).
    pub async fn upload_room_key(
        &self,
        version: &str,
        room: &str,
        session_id: &str,
        key_data: &Value,
    ) -> anyhow::Result<()> {
        self.request(
            Method::PUT,
            &["room_keys", "keys", room, session_id],
            &[("version", version)],
            Some(key_data),
        )
        .await
        .map(drop)
    }

    /// Sets global account data of type `kind` (`PUT /user/{userId}/account_data/{type}`).
    pub async fn set_account_data(&self, kind: &str, content: &Value) -> anyhow::Result<()> {
        self.request(Method::PUT, &["user", &self.user_id, "account_data", kind], &[], Some(content))
            .await
            .map(drop)
    }

    /// Sends an `m.room.message` with arbitrary content (notice, emote, image, file, location,
    /// replies, threads…) and returns its event id.
    pub async fn send_message(&self, room: &str, content: &Value) -> anyhow::Result<String> {
        self.send_event(room, "m.room.message", content).await
    }

    /// Sends an `m.text` message and returns its event id.
    pub async fn send_text(&self, room: &str, body: &str) -> anyhow::Result<String> {
        self.send_message(room, &json!({ "msgtype": "m.text", "body": body })).await
    }

    /// Sends `count` `m.text` messages (`"{prefix} 00000"`, `"{prefix} 00001"`, …), at most
    /// `in_flight` at a time (at least one), and returns their event ids in numbering order.
    ///
    /// Building a large room one message at a time is slow; Synapse orders concurrent sends
    /// itself, so the timeline order of messages sent in the same batch is not the numbering
    /// order. Must run inside a multi-threaded or current-thread Tokio runtime.
    pub async fn send_texts(
        &self,
        room: &str,
        prefix: &str,
        count: usize,
        in_flight: usize,
    ) -> anyhow::Result<Vec<String>> {
        let in_flight = in_flight.max(1);
        let mut ids: Vec<Option<String>> = vec![None; count];
        let mut tasks = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < count || !tasks.is_empty() {
            while next < count && tasks.len() < in_flight {
                let (user, room, body) = (self.clone(), room.to_owned(), format!("{prefix} {next:05}"));
                let i = next;
                tasks.spawn(async move { (i, user.send_text(&room, &body).await) });
                next += 1;
            }
            if let Some(joined) = tasks.join_next().await {
                let (i, sent) = joined.context("send task")?;
                ids[i] = Some(sent.with_context(|| format!("sending message {i}"))?);
            }
        }
        Ok(ids.into_iter().flatten().collect())
    }

    /// Sends an `m.text` reply (`m.in_reply_to`) to `parent` and returns its event id.
    pub async fn reply(&self, room: &str, parent: &str, body: &str) -> anyhow::Result<String> {
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": { "m.in_reply_to": { "event_id": parent } }
        });
        self.send_message(room, &content).await
    }

    /// Sends an `m.text` message in the thread rooted at `root` (`m.thread`) and returns its id.
    pub async fn send_in_thread(&self, room: &str, root: &str, body: &str) -> anyhow::Result<String> {
        let content = json!({
            "msgtype": "m.text",
            "body": body,
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": root,
                "is_falling_back": true,
                "m.in_reply_to": { "event_id": root }
            }
        });
        self.send_message(room, &content).await
    }

    /// Edits `original` (an `m.replace` relation with `m.new_content`) and returns the edit's id.
    pub async fn edit(&self, room: &str, original: &str, new_body: &str) -> anyhow::Result<String> {
        let content = json!({
            "msgtype": "m.text",
            "body": format!("* {new_body}"),
            "m.new_content": { "msgtype": "m.text", "body": new_body },
            "m.relates_to": { "rel_type": "m.replace", "event_id": original }
        });
        self.send_message(room, &content).await
    }

    /// Redacts `event_id` with an optional reason and returns the redaction's event id.
    pub async fn redact(&self, room: &str, event_id: &str, reason: Option<&str>) -> anyhow::Result<String> {
        let txn = transaction_id();
        let body = reason.map_or_else(|| json!({}), |reason| json!({ "reason": reason }));
        let response =
            self.request(Method::PUT, &["rooms", room, "redact", event_id, &txn], &[], Some(&body)).await?;
        string_field(&response, "event_id")
    }

    /// One raw page of `/rooms/{room}/messages` (`dir` is `"b"` or `"f"`), as a Matrix client
    /// sees it.
    pub async fn messages(&self, room: &str, dir: &str, limit: u32) -> anyhow::Result<Value> {
        self.messages_from(room, None, dir, limit).await
    }

    /// One raw page of `/rooms/{room}/messages` starting at the pagination token `from`.
    pub async fn messages_from(
        &self,
        room: &str,
        from: Option<&str>,
        dir: &str,
        limit: u32,
    ) -> anyhow::Result<Value> {
        let limit = limit.to_string();
        let mut query = vec![("dir", dir), ("limit", limit.as_str())];
        if let Some(from) = from {
            query.push(("from", from));
        }
        self.request(Method::GET, &["rooms", room, "messages"], &query, None).await
    }

    /// Every event of the room's timeline visible to this user, newest first, read backwards
    /// with `/messages` until the start of the room.
    pub async fn all_messages(&self, room: &str) -> anyhow::Result<Vec<Value>> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let page = self.messages_from(room, from.as_deref(), "b", 1000).await?;
            if let Some(chunk) = page["chunk"].as_array() {
                events.extend(chunk.iter().cloned());
            }
            match page["end"].as_str() {
                Some(end) if page["chunk"].as_array().is_some_and(|chunk| !chunk.is_empty()) => {
                    from = Some(end.to_owned());
                }
                _ => return Ok(events),
            }
        }
    }

    /// Raw `/rooms/{room}/joined_members` (`{"joined": {user_id: {display_name, avatar_url}}}`).
    pub async fn joined_members(&self, room: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, &["rooms", room, "joined_members"], &[], None).await
    }

    /// Raw `/rooms/{room}/state` (every current state event).
    pub async fn state(&self, room: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, &["rooms", room, "state"], &[], None).await
    }

    /// Raw `/rooms/{room}/event/{event_id}`.
    pub async fn event(&self, room: &str, event_id: &str) -> anyhow::Result<Value> {
        self.request(Method::GET, &["rooms", room, "event", event_id], &[], None).await
    }
}

fn new_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

async fn checked_json(response: reqwest::Response, what: &str) -> anyhow::Result<Value> {
    let status = response.status();
    let text = response.text().await.with_context(|| format!("{what}: reading the body"))?;
    if !status.is_success() {
        bail!("{what}: HTTP {status}: {text}");
    }
    serde_json::from_str(&text).with_context(|| format!("{what}: invalid JSON body: {text}"))
}

fn string_field(value: &Value, name: &str) -> anyhow::Result<String> {
    value[name].as_str().map(str::to_owned).ok_or_else(|| anyhow!("`{name}` missing from {value}"))
}

fn transaction_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |duration| duration.as_nanos());
    format!("argus-{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

fn unique_localpart(localpart: &str) -> String {
    let cleaned: String = localpart
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() || "._=-".contains(c) { c } else { '_' })
        .collect();
    format!("{cleaned}_{}", crate::unique_suffix())
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill(buffer.as_mut_slice());
    hex::encode(buffer)
}

/// HMAC-SHA1 over `nonce\0user\0password\0(admin|notadmin)`, hex-encoded, keyed by the shared
/// secret, as the shared-secret registration API expects.
fn registration_mac(
    secret: &str,
    nonce: &str,
    user: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<String> {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())
        .map_err(|error| anyhow!("HMAC key: {error}"))?;
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(user.as_bytes());
    mac.update(b"\0");
    mac.update(password.as_bytes());
    mac.update(b"\0");
    mac.update(if admin { b"admin" as &[u8] } else { b"notadmin" });
    Ok(hex::encode(mac.finalize().into_bytes()))
}

/// The workspace's target directory: `CARGO_TARGET_DIR`, else the nearest ancestor of this
/// crate holding `Cargo.lock`, plus `target`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        if dir.is_absolute() {
            return dir;
        }
    }
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(manifest_dir)
        .join("target")
}

fn run_logged(command: &mut Command, log: &Path, what: &str) -> anyhow::Result<()> {
    let log_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let status = command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); log tail:\n{}", tail_of_file(log, 15));
    }
    Ok(())
}

fn synapse_importable(python: &Path) -> bool {
    python.is_file()
        && Command::new(python)
            .args(["-c", "import synapse.app.homeserver"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
}

/// Makes sure `target/synapse-venv` has Synapse installed; returns the venv's python.
fn ensure_installed() -> anyhow::Result<PathBuf> {
    let target = target_dir();
    let venv = target.join("synapse-venv");
    let python = venv.join("bin").join("python");
    let marker = venv.join(".argus-installed");
    let installed =
        || python.is_file() && fs::read_to_string(&marker).is_ok_and(|text| text == SYNAPSE_REQUIREMENT);
    if installed() {
        return Ok(python);
    }
    let system_python = crate::find_on_path("python3").context("`python3` not found on PATH")?;
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let lock_path = target.join("synapse-venv.lock");
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let mut lock = fd_lock::RwLock::new(lock_file);
    let _guard = lock.write().context("locking the Synapse venv")?;
    // Another process may have installed it while we waited for the lock.
    if installed() {
        return Ok(python);
    }
    let started = Instant::now();
    eprintln!(
        "argus-testkit: installing {SYNAPSE_REQUIREMENT} into {} (first run only, takes a while)…",
        venv.display()
    );
    let log = target.join("synapse-venv-install.log");
    run_logged(
        Command::new(&system_python).args(["-m", "venv", "--clear"]).arg(&venv),
        &log,
        "python3 -m venv",
    )?;
    run_logged(
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            SYNAPSE_REQUIREMENT,
        ]),
        &log,
        "pip install matrix-synapse",
    )?;
    if !synapse_importable(&python) {
        bail!("Synapse installed but `import synapse.app.homeserver` fails; see {}", log.display());
    }
    fs::write(&marker, SYNAPSE_REQUIREMENT).context("writing the install marker")?;
    eprintln!("argus-testkit: Synapse installed in {:.1?}", started.elapsed());
    Ok(python)
}

fn homeserver_config(dir: &Path, port: u16, shared_secret: &str) -> Value {
    let path = |name: &str| dir.join(name).display().to_string();
    let unlimited = json!({ "per_second": 100_000, "burst_count": 1_000_000 });
    json!({
        "server_name": SERVER_NAME,
        "public_baseurl": format!("http://127.0.0.1:{port}/"),
        "pid_file": path("homeserver.pid"),
        "log_config": path("log.yaml"),
        "listeners": [{
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": false,
            "resources": [{ "names": ["client"], "compress": false }]
        }],
        "database": { "name": "sqlite3", "args": { "database": path("homeserver.db") } },
        "media_store_path": path("media"),
        "signing_key_path": path("signing.key"),
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "report_stats": false,
        "bcrypt_rounds": 4,
        "enable_metrics": false,
        "enable_registration": false,
        "registration_shared_secret": shared_secret,
        "macaroon_secret_key": random_hex(32),
        "form_secret": random_hex(32),
        "presence": { "enabled": false },
        "url_preview_enabled": false,
        "federation_domain_whitelist": [],
        "rc_message": unlimited,
        "rc_registration": unlimited,
        "rc_registration_token_validity": unlimited,
        "rc_login": { "address": unlimited, "account": unlimited, "failed_attempts": unlimited },
        "rc_admin_redaction": unlimited,
        "rc_joins": { "local": unlimited, "remote": unlimited },
        "rc_joins_per_room": unlimited,
        "rc_3pid_validation": unlimited,
        "rc_invites": { "per_room": unlimited, "per_user": unlimited, "per_issuer": unlimited },
        "rc_third_party_invite": unlimited,
        "rc_media_create": unlimited,
        "rc_key_requests": unlimited,
        "rc_presence": { "per_user": unlimited },
        "rc_delayed_event_mgmt": unlimited,
        "rc_room_creation": unlimited,
        "rc_reports": unlimited,
        "rc_user_directory": unlimited,
        "rc_profile": unlimited,
    })
}

fn start() -> anyhow::Result<Synapse> {
    let python = ensure_installed()?;
    // SQLite fsyncs every commit: on tmpfs (when there is one) sending is several times faster.
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("argus-synapse-");
    let dir = if shm.is_dir() && std::env::var_os("TMPDIR").is_none() {
        builder.tempdir_in(shm).or_else(|_| builder.tempdir())
    } else {
        builder.tempdir()
    }
    .context("creating the homeserver's temporary directory")?
    .keep();
    let log_level = std::env::var("ARGUS_SYNAPSE_LOG_LEVEL").unwrap_or_else(|_| "WARNING".to_owned());
    let log_config = json!({
        "version": 1,
        "formatters": { "precise": { "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s" } },
        "handlers": { "console": { "class": "logging.StreamHandler", "formatter": "precise" } },
        "loggers": { "synapse.storage.SQL": { "level": "WARNING" } },
        "root": { "level": log_level, "handlers": ["console"] },
        "disable_existing_loggers": false,
    });
    fs::write(dir.join("log.yaml"), serde_json::to_string_pretty(&log_config)?)
        .context("writing log.yaml")?;
    let child_pid_file = dir.join("child.pid");
    spawn_watchdog(&format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ -f '{child}' ]; then c=$(cat '{child}'); kill $c 2>/dev/null; sleep 2; kill -9 $c 2>/dev/null; fi; \
         rm -rf '{dir}'",
        pid = std::process::id(),
        child = child_pid_file.display(),
        dir = dir.display(),
    ))?;
    let shared_secret = random_hex(32);
    // Synapse's signing key format: `ed25519 <key id> <unpadded base64 of the 32-byte seed>`.
    let mut seed = [0u8; 32];
    rand::thread_rng().fill(&mut seed);
    let signing_key = format!("ed25519 a_{} {}\n", random_hex(2), STANDARD_NO_PAD.encode(seed));
    fs::write(dir.join("signing.key"), signing_key).context("writing signing.key")?;
    let config_path = dir.join("homeserver.yaml");
    let log = dir.join("homeserver.log");

    let mut last_error = None;
    for _ in 0..3 {
        let port = crate::free_port()?;
        // JSON is valid YAML.
        let config = serde_json::to_string_pretty(&homeserver_config(&dir, port, &shared_secret))?;
        fs::write(&config_path, config).context("writing homeserver.yaml")?;
        let log_file = fs::OpenOptions::new().create(true).append(true).open(&log)?;
        let mut child = Command::new(&python)
            .args(["-m", "synapse.app.homeserver", "-c"])
            .arg(&config_path)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .context("starting Synapse")?;
        fs::write(&child_pid_file, child.id().to_string()).context("writing the child pid")?;
        let started = Instant::now();
        match wait_until_ready(&mut child, port) {
            Ok(()) => {
                eprintln!(
                    "argus-testkit: Synapse ready on 127.0.0.1:{port} in {:.1?} (log: {})",
                    started.elapsed(),
                    log.display()
                );
                return Ok(Synapse {
                    base_url: format!("http://127.0.0.1:{port}"),
                    server_name: SERVER_NAME.to_owned(),
                    port,
                    shared_secret,
                    dir,
                });
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                let tail = tail_of_file(&log, 30);
                eprintln!("argus-testkit: Synapse did not start: {error:#}\n--- log tail ---\n{tail}\n---");
                last_error = Some(anyhow!("{error:#}; log tail:\n{tail}"));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| anyhow!("Synapse did not start")))
}

fn wait_until_ready(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("Synapse exited during startup ({status})");
        }
        if versions_ok(port) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Synapse not answering /_matrix/client/versions after {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal blocking HTTP/1.0 probe (no runtime needed; callers may be inside one).
fn versions_ok(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /_matrix/client/versions HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut response = Vec::new();
    if stream.read_to_end(&mut response).is_err() {
        return false;
    }
    let text = String::from_utf8_lossy(&response);
    text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::registration_mac;

    #[test]
    fn registration_mac_matches_the_reference() {
        // Python: hmac.new(b"secret", b"abc\0alice\0pw\0notadmin", hashlib.sha1).hexdigest()
        let mac = registration_mac("secret", "abc", "alice", "pw", false).unwrap();
        assert_eq!(mac, "42e32623fe124933c326f9d2d67ff7c617915a10");
    }
}
