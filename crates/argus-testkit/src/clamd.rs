//! A real ClamAV daemon for tests, air-gapped: no `freshclam`, no official database.
//!
//! The test writes a database of one `.ndb` signature ([`SIGNATURE`], matching the bytes
//! [`MARKER`] anywhere in a file) and a `clamd.conf` (foreground, TCP on a free loopback port, no
//! local socket, a stream limit of [`STREAM_MAX_LENGTH`] bytes), starts `clamd` from the
//! machine's Debian `clamav-daemon` package and waits for `PING`/`PONG`.
//!
//! [`shared`] is one daemon per test process (stopped by a watchdog when the process exits);
//! [`start`] is a daemon of the caller's own, stopped when dropped (to take it down mid-test).
//! When `clamd` is missing (or does not start) the tier is skipped with a loud message on stderr;
//! with `ARGUS_REQUIRE_CLAMD=1` it panics instead.
//!
//! ```no_run
//! let Some(clamd) = argus_testkit::clamd::shared() else {
//!     return; // skipped loudly
//! };
//! assert!(clamd.addr().starts_with("tcp://127.0.0.1:"));
//! ```

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::{Tier, spawn_watchdog};

static CLAMD: Tier<ClamdDaemon> = Tier::new("clamd", "ClamAV (clamd) tier", REQUIRE_ENV);
static OWN_CLAMD: Tier<()> = Tier::new("clamd", "ClamAV (clamd) tier", REQUIRE_ENV);

/// Environment variable that turns a missing `clamd` into a panic instead of a skip.
pub const REQUIRE_ENV: &str = "ARGUS_REQUIRE_CLAMD";

/// Where Debian's `clamav-daemon` installs the daemon (else it is looked up on `PATH`).
const CLAMD_PATH: &str = "/usr/sbin/clamd";

/// Bytes that the test database's only signature matches: a file holding them is infected.
/// They are the test's own (not EICAR), so no other antivirus on the machine reacts to them.
pub const MARKER: &[u8] = b"ARGUS-TEST-MARKER:7f3a9c51e2:this file is a harmless scanner probe";

/// The signature's name as written in the database; clamd reports it with the suffix
/// `.UNOFFICIAL` (`Argus.Test.Marker.UNOFFICIAL`).
pub const SIGNATURE: &str = "Argus.Test.Marker";

/// The daemon's `StreamMaxLength`: an `INSTREAM` body over this many bytes is refused with
/// `INSTREAM size limit exceeded`.
pub const STREAM_MAX_LENGTH: u64 = 4 * 1024 * 1024;

/// How long to wait for `PONG` after starting the daemon.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running `clamd` on loopback.
#[derive(Debug)]
pub struct ClamdDaemon {
    port: u16,
    dir: PathBuf,
    child: Mutex<Child>,
    owned: bool,
}

impl ClamdDaemon {
    /// The address as the media settings take it: `tcp://127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// The loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's log (useful when a test fails).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("clamd.log")
    }
}

impl Drop for ClamdDaemon {
    fn drop(&mut self) {
        if let Ok(child) = self.child.get_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.owned {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The process's shared daemon, started on first use; `None` after a loud SKIP message when
/// `clamd` is unavailable.
///
/// # Panics
///
/// When `clamd` is unavailable and `ARGUS_REQUIRE_CLAMD=1`.
pub fn shared() -> Option<&'static ClamdDaemon> {
    CLAMD.get(|| launch(false))
}

/// A daemon of the caller's own, stopped and removed when dropped; `None` after a loud SKIP
/// message when `clamd` is unavailable.
///
/// # Panics
///
/// When `clamd` is unavailable and `ARGUS_REQUIRE_CLAMD=1`.
pub fn start() -> Option<ClamdDaemon> {
    match launch(true) {
        Ok(daemon) => Some(daemon),
        Err(error) => {
            OWN_CLAMD.unavailable(&format!("{error:#}"));
            None
        }
    }
}

/// The `.ndb` line of [`SIGNATURE`]: any target type, any offset, [`MARKER`] in hex.
fn signature_line() -> String {
    let mut hex = String::with_capacity(MARKER.len() * 2);
    for byte in MARKER {
        let _ = write!(hex, "{byte:02x}");
    }
    format!("{SIGNATURE}:0:*:{hex}\n")
}

fn config(dir: &Path, port: u16) -> String {
    format!(
        "Foreground yes\n\
         TCPSocket {port}\n\
         TCPAddr 127.0.0.1\n\
         DatabaseDirectory {dir}\n\
         TemporaryDirectory {dir}\n\
         LogFile {log}\n\
         LogTime yes\n\
         StreamMaxLength {STREAM_MAX_LENGTH}\n\
         MaxScanSize {scan}\n\
         MaxFileSize {scan}\n\
         SelfCheck 3600\n\
         AlertExceedsMax yes\n\
         MaxThreads 4\n",
        dir = dir.display(),
        log = dir.join("clamd.log").display(),
        scan = STREAM_MAX_LENGTH * 2,
    )
}

fn launch(owned: bool) -> anyhow::Result<ClamdDaemon> {
    let binary = Some(PathBuf::from(CLAMD_PATH))
        .filter(|path| path.is_file())
        .or_else(|| crate::find_on_path("clamd"))
        .context("`clamd` not found (Debian package clamav-daemon)")?;
    let dir = tempfile::Builder::new()
        .prefix("argus-clamd-")
        .tempdir()
        .context("creating clamd's directory")?
        .keep();
    std::fs::write(dir.join("argus-test.ndb"), signature_line()).context("writing the signature database")?;
    let child_pid_file = dir.join("child.pid");
    if !owned {
        spawn_watchdog(&format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             if [ -f '{child}' ]; then kill $(cat '{child}') 2>/dev/null; fi; rm -rf '{dir}'",
            pid = std::process::id(),
            child = child_pid_file.display(),
            dir = dir.display(),
        ))?;
    }
    let conf = dir.join("clamd.conf");
    let started = crate::start_daemon(
        "clamd",
        &dir.join("clamd.out"),
        &child_pid_file,
        |port| {
            std::fs::write(&conf, config(&dir, port)).context("writing clamd.conf")?;
            let mut command = Command::new(&binary);
            command.arg("-c").arg(&conf);
            Ok(command)
        },
        wait_for_pong,
    );
    match started {
        Ok((child, port)) => Ok(ClamdDaemon { port, dir, child: Mutex::new(child), owned }),
        Err(error) => {
            if owned {
                let _ = std::fs::remove_dir_all(&dir);
            }
            Err(error)
        }
    }
}

fn wait_for_pong(child: &mut Child, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("clamd exited during startup ({status})");
        }
        if request(port, b"zPING\0").is_ok_and(|reply| reply == b"PONG\0") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("clamd not answering PING after {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One blocking clamd command (no runtime needed; callers may be inside one).
fn request(port: u16, command: &[u8]) -> std::io::Result<Vec<u8>> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(command)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::{MARKER, SIGNATURE, signature_line};

    #[test]
    fn the_signature_is_the_marker_in_hex() {
        let line = signature_line();
        let hex = line.trim_end().rsplit(':').next().unwrap();
        assert!(line.starts_with(&format!("{SIGNATURE}:0:*:")));
        assert_eq!(hex.len(), MARKER.len() * 2);
        assert_eq!(hex::decode(hex).unwrap(), MARKER);
    }
}
