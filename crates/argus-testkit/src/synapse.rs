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

mod admin;
mod server;
mod user;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use hmac::{Hmac, Mac as _};
use rand::Rng as _;
use serde_json::{Value, json};

pub use admin::Answer;
pub use user::{RefreshableLogin, TestUser};

use crate::Tier;

static SYNAPSE: Tier<Synapse> = Tier::new("Synapse", "real-Synapse tier", REQUIRE_ENV);

/// Environment variable that turns a missing Synapse into a panic instead of a skip.
pub const REQUIRE_ENV: &str = "ARGUS_REQUIRE_SYNAPSE";

/// The pip requirement installed into the venv.
pub const SYNAPSE_REQUIREMENT: &str = "matrix-synapse==1.163.*";

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

    /// The homeserver's `server_name`: `127.0.0.1:PORT`, its own listener, so that server
    /// discovery of its user ids is real: Synapse serves `/.well-known/matrix/client` there
    /// (`serve_client_wellknown`), naming [`Synapse::base_url`] (user ids are
    /// `@localpart:127.0.0.1:PORT`).
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

    /// The process id of the server (its Python process), e.g. to read its CPU time from
    /// `/proc/{pid}/stat` in a benchmark; `None` when it cannot be read.
    pub fn process_id(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("child.pid")).ok()?.trim().parse().ok()
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

    /// Registers a new (non-admin) user under exactly `localpart` (no suffix added): fails
    /// when it is taken. For a user whose id must be derived from something else, such as an
    /// e-mail address ([`Synapse::register_for_email`]).
    pub async fn register_exact(&self, localpart: &str) -> anyhow::Result<TestUser> {
        self.register_as(localpart.to_owned(), false).await
    }

    /// Registers the user Tchap derives from a new, unique e-mail address
    /// `{name}.{unique}@{domain}`: its localpart is the address with its `@` replaced by `-`,
    /// lowercased (`jean.dupont@finances.gouv.fr` → `@jean.dupont-finances.gouv.fr:…`).
    /// Returns the user and the address.
    pub async fn register_for_email(&self, name: &str, domain: &str) -> anyhow::Result<(TestUser, String)> {
        let address = format!("{name}.{}@{domain}", crate::unique_suffix());
        let localpart = address.replace('@', "-").to_lowercase();
        Ok((self.register_exact(&localpart).await?, address))
    }

    async fn register_with(&self, localpart: &str, admin: bool) -> anyhow::Result<TestUser> {
        self.register_as(unique_localpart(localpart), admin).await
    }

    async fn register_as(&self, username: String, admin: bool) -> anyhow::Result<TestUser> {
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
            password,
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
    SYNAPSE.get(server::start)
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
