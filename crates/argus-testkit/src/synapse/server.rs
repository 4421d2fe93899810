//! Installing Synapse into a venv under `target/`, configuring it on a free loopback port and
//! starting it.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use rand::Rng as _;
use serde_json::{Value, json};

use super::{SYNAPSE_REQUIREMENT, Synapse, random_hex};
use crate::{spawn_watchdog, tail_of_file};

/// How long to wait for `/_matrix/client/versions` after starting the server.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Makes sure `target/synapse-venv` has Synapse installed; returns the venv's python.
fn ensure_installed() -> anyhow::Result<PathBuf> {
    crate::venv::ensure("synapse-venv", SYNAPSE_REQUIREMENT, "import synapse.app.homeserver")
        .map(|bin| bin.join("python"))
}

/// The server name of a Synapse listening on `port`: its own listener, where it serves the
/// client `.well-known` file, so that discovery of its user ids is the real thing.
fn server_name(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn homeserver_config(dir: &Path, port: u16, shared_secret: &str) -> Value {
    let path = |name: &str| dir.join(name).display().to_string();
    let unlimited = json!({ "per_second": 100_000, "burst_count": 1_000_000 });
    json!({
        "server_name": server_name(port),
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
        // Configured as Tchap runs where Synapse can be: tokens asked for with a refresh token
        // live seconds (a watch renews them again and again), account validity (an account
        // past its date is refused with ORG_MATRIX_EXPIRED_ACCOUNT; every account registered
        // here is valid for years unless a test moves its date), suspension by an admin
        // (MSC3823), room retention policies honoured, and the client `.well-known` file served
        // for server discovery (the server name is the listener's own address, so discovery of
        // its user ids reads Synapse's own answer).
        "refreshable_access_token_lifetime": "4s",
        "account_validity": { "enabled": true, "period": "3650d" },
        "experimental_features": { "msc3823_account_suspension": true },
        "retention": { "enabled": true },
        "serve_client_wellknown": true,
    })
}

pub(super) fn start() -> anyhow::Result<Synapse> {
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
                    server_name: server_name(port),
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
