//! A real S3-compatible server for tests: moto's server mode (`moto[server]` from PyPI),
//! installed once into a venv under the workspace's `target/` directory (guarded by a file lock
//! like the Synapse venv), started on a free loopback port with `moto_server -H 127.0.0.1 -p
//! PORT`, with one bucket ([`S3Server::bucket`]) created. One server per test process; a
//! detached watchdog stops it when the process exits.
//!
//! moto checks no signature, so the dummy credentials ([`ACCESS_KEY_ID`],
//! [`SECRET_ACCESS_KEY`]) are only there for the client to sign with.
//!
//! When Python, venv or pip are unavailable (or the install fails) the tier is skipped with a
//! loud message on stderr; with `ARGUS_REQUIRE_S3=1` it panics instead.
//!
//! ```no_run
//! let Some(s3) = argus_testkit::s3::server() else {
//!     return; // skipped loudly
//! };
//! assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
//! let store_setting = s3.store_url(); // s3://argus-test?endpoint=http://127.0.0.1:PORT
//! # let _ = store_setting;
//! ```

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};

use crate::{Tier, spawn_watchdog};

static S3: Tier<S3Server> = Tier::new("an S3-compatible server (moto)", "S3 (moto) tier", REQUIRE_ENV);

/// Environment variable that turns a missing S3 server into a panic instead of a skip.
pub const REQUIRE_ENV: &str = "ARGUS_REQUIRE_S3";

/// The pip requirement installed into the venv.
pub const MOTO_REQUIREMENT: &str = "moto[server]==5.*";

/// The dummy access key id (moto accepts any).
pub const ACCESS_KEY_ID: &str = "argus-test";

/// The dummy secret access key (moto accepts any).
pub const SECRET_ACCESS_KEY: &str = "argus-test-secret";

/// The bucket created at start.
pub const BUCKET: &str = "argus-test";

/// How long to wait for the server after starting it.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running moto server with one bucket (one per test process, see [`server`]).
#[derive(Debug)]
pub struct S3Server {
    port: u16,
    dir: PathBuf,
}

impl S3Server {
    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The bucket created at start.
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// The `[media] store` setting naming this server's bucket:
    /// `s3://argus-test?endpoint=http://127.0.0.1:PORT&region=us-east-1`.
    pub fn store_url(&self) -> String {
        format!("s3://{BUCKET}?endpoint=http://127.0.0.1:{}&region=us-east-1", self.port)
    }

    /// The server's log (useful when a test fails).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("moto.log")
    }
}

/// Returns the process's S3 server, installing and starting it on first use; `None` after a
/// loud SKIP message when it is unavailable.
///
/// # Panics
///
/// When it is unavailable and `ARGUS_REQUIRE_S3=1`.
pub fn server() -> Option<&'static S3Server> {
    S3.get(start)
}

fn start() -> anyhow::Result<S3Server> {
    let bin = crate::venv::ensure("moto-venv", MOTO_REQUIREMENT, "import moto.server, flask")?;
    let dir =
        tempfile::Builder::new().prefix("argus-moto-").tempdir().context("creating moto's directory")?.keep();
    let child_pid_file = dir.join("child.pid");
    spawn_watchdog(&format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
         if [ -f '{child}' ]; then kill $(cat '{child}') 2>/dev/null; fi; rm -rf '{dir}'",
        pid = std::process::id(),
        child = child_pid_file.display(),
        dir = dir.display(),
    ))?;
    let (_child, port) = crate::start_daemon(
        "moto S3",
        &dir.join("moto.log"),
        &child_pid_file,
        |port| {
            let mut command = Command::new(bin.join("moto_server"));
            command.args(["-H", "127.0.0.1", "-p", &port.to_string()]).current_dir(&dir);
            Ok(command)
        },
        |child, port| wait_until_ready(child, port).and_then(|()| create_bucket(port)),
    )?;
    Ok(S3Server { port, dir })
}

fn wait_until_ready(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("moto_server exited during startup ({status})");
        }
        if http(port, "GET", "/").is_ok_and(|status| status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("moto_server not answering after {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Creates [`BUCKET`] (path-style `PUT /bucket`; moto checks no signature).
fn create_bucket(port: u16) -> anyhow::Result<()> {
    let status = http(port, "PUT", &format!("/{BUCKET}")).context("creating the bucket")?;
    if status != 200 {
        bail!("creating the bucket: HTTP {status}");
    }
    Ok(())
}

/// One blocking HTTP/1.0 request without a body; returns the status code.
fn http(port: u16, method: &str, path: &str) -> anyhow::Result<u16> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\n\r\n")?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split_whitespace().nth(1).and_then(|code| code.parse().ok());
    status.ok_or_else(|| anyhow!("no HTTP status in the reply"))
}
