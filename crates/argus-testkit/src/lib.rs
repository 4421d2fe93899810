//! Argus Tchap connector: test support (throw-away PostgreSQL, Synapse harness, mock
//! homeserver, fixtures).
//!
//! Dev-only. Tiers of real dependencies, each started once per test process and removed when
//! the process exits:
//!
//! - [`postgres`]: a throw-away PostgreSQL cluster and a fresh database per test
//!   (skipped loudly when the binaries are missing unless `ARGUS_REQUIRE_POSTGRES=1`);
//! - [`synapse`]: a real Synapse homeserver installed into a venv under `target/`
//!   (skipped loudly when Python/pip is missing unless `ARGUS_REQUIRE_SYNAPSE=1`);
//! - [`clamd`]: a real ClamAV daemon on loopback with a one-signature database made by the test
//!   (skipped loudly when `clamd` is missing unless `ARGUS_REQUIRE_CLAMD=1`);
//! - [`s3`]: a real S3-compatible server (moto) installed into a venv under `target/`
//!   (skipped loudly when Python/pip is missing unless `ARGUS_REQUIRE_S3=1`);
//! - [`verifiers`]: the offline verifiers of disclosure packages (bagit-python and
//!   `cryptography` in a venv, `minisign`, headless Chromium; skipped loudly when missing unless
//!   `ARGUS_REQUIRE_VERIFIERS=1`).
//!
//! and in-process servers, always available:
//!
//! - [`homeserver`]: a mock Matrix homeserver (wiremock on 127.0.0.1) with endpoint-mock
//!   builders, an any-room responder and the benchmarks' prepared pages;
//! - [`identity`]: a tiny identity server on 127.0.0.1 answering the e-mail lookup Tchap
//!   clients make to find an address's homeserver.
//!
//! [`e2ee_client`] is a real end-to-end encryption client (`matrix-sdk-crypto`'s `OlmMachine`)
//! driven over HTTP against the [`synapse`] tier, with a plain-typed API.
#![recursion_limit = "256"]

pub mod clamd;
pub mod e2ee;
pub mod e2ee_client;
pub mod homeserver;
pub mod identity;
pub mod logs;
pub mod oauth;
pub mod postgres;
pub mod s3;
pub mod synapse;
mod venv;
pub mod verifiers;

use std::fs;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use anyhow::Context as _;

/// True when the environment variable is set to `1`/`true`/`yes`.
fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| matches!(value.trim(), "1" | "true" | "yes" | "TRUE" | "YES"))
}

/// True when the current process runs as uid 0 (read from `/proc/self/status`, then `id -u`).
fn is_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|line| line.starts_with("Uid:"))
    {
        return line.split_whitespace().nth(1) == Some("0");
    }
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}

/// A suffix unique within the machine for this process's lifetime: `<pid>_<counter>`.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Finds an executable on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

/// A free TCP port on the loopback interface (probed by binding port 0).
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
    Ok(listener.local_addr()?.port())
}

/// The last `lines` lines of a log file (or a note that it could not be read).
fn tail_of_file(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(could not read {}: {error})", path.display()),
    }
}

/// Spawns a detached `sh -c script` in its own process group, so that it outlives the test
/// process and can clean up after it.
fn spawn_watchdog(script: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .context("spawning the cleanup watchdog")?;
    Ok(())
}

/// Starts a daemon on a free loopback port, up to three times (a port taken meanwhile): the
/// command `command(port)` with its output appended to `log` and its pid written to `pid_file`
/// (for the watchdog that stops it with the test process), until `ready(child, port)` says it
/// answers. A start that fails kills what it started; the last failure is returned with the
/// log's tail.
fn start_daemon(
    what: &str,
    log: &Path,
    pid_file: &Path,
    mut command: impl FnMut(u16) -> anyhow::Result<Command>,
    mut ready: impl FnMut(&mut std::process::Child, u16) -> anyhow::Result<()>,
) -> anyhow::Result<(std::process::Child, u16)> {
    let mut last_error = anyhow::anyhow!("{what} did not start");
    for _ in 0..3 {
        let port = free_port()?;
        let out = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let mut child = command(port)?
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        fs::write(pid_file, child.id().to_string()).context("writing the child pid")?;
        let started = std::time::Instant::now();
        match ready(&mut child, port) {
            Ok(()) => {
                eprintln!("argus-testkit: {what} ready on 127.0.0.1:{port} in {:.1?}", started.elapsed());
                return Ok((child, port));
            }
            Err(error) => {
                let _ = child.kill();
                let _ = child.wait();
                last_error = anyhow::anyhow!("{error:#}; output tail:\n{}", tail_of_file(log, 20));
            }
        }
    }
    Err(last_error)
}

/// A real dependency started once per test process: its instance, or why it is unavailable.
struct Tier<T> {
    /// What is missing, for the panic message (`PostgreSQL`).
    name: &'static str,
    /// The tier, for the SKIP banner (`PostgreSQL tier`).
    label: &'static str,
    /// The environment variable that turns a skip into a panic.
    require_env: &'static str,
    instance: OnceLock<Result<T, String>>,
    skip_announced: AtomicBool,
}

impl<T> Tier<T> {
    const fn new(name: &'static str, label: &'static str, require_env: &'static str) -> Self {
        Self { name, label, require_env, instance: OnceLock::new(), skip_announced: AtomicBool::new(false) }
    }

    /// The instance, started by `start` on first use; `None` after a loud SKIP banner when it
    /// is unavailable.
    ///
    /// # Panics
    ///
    /// When it is unavailable and `require_env` is set.
    fn get(&self, start: impl FnOnce() -> anyhow::Result<T>) -> Option<&T> {
        match self.instance.get_or_init(|| start().map_err(|error| format!("{error:#}"))) {
            Ok(instance) => Some(instance),
            Err(reason) => {
                self.unavailable(reason);
                None
            }
        }
    }

    /// Reports the tier unavailable for `reason`: a loud SKIP banner, or a panic when
    /// `require_env` is set.
    ///
    /// # Panics
    ///
    /// When `require_env` is set.
    fn unavailable(&self, reason: &str) {
        let require_env = self.require_env;
        if env_flag(require_env) {
            panic!("argus-testkit: {} is required ({require_env}=1) but unavailable: {reason}", self.name);
        }
        self.announce_skip(reason);
    }

    /// Writes the loud SKIP banner once per process. Written straight to the process's stderr
    /// (not through `eprintln!`), so the test harness's output capture cannot hide it.
    fn announce_skip(&self, reason: &str) {
        use std::io::Write as _;
        if self.skip_announced.swap(true, Ordering::Relaxed) {
            return;
        }
        let (rule, tier, require_env) = ("=".repeat(78), self.label, self.require_env);
        let _ = writeln!(
            std::io::stderr(),
            "\n{rule}\nSKIPPED: {tier} ({reason})\nTests needing it return early. Set {require_env}=1 to make this a failure.\n{rule}\n"
        );
    }
}
