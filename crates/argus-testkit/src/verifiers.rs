//! The offline verifiers a disclosure package is checked with, as a third party would: Python
//! with bagit-python and `cryptography` (installed once into a venv under the workspace's
//! `target/` directory, like the Synapse venv), the Debian `minisign` tool and headless
//! Chromium.
//!
//! Each is skipped with a loud message on stderr when unavailable; with
//! `ARGUS_REQUIRE_VERIFIERS=1` a missing one panics instead.
//!
//! ```no_run
//! if let Some(python) = argus_testkit::verifiers::python() {
//!     // (else skipped loudly)
//!     let status = std::process::Command::new(python).args(["-m", "bagit", "--help"]).status()?;
//!     assert!(status.success());
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use std::path::PathBuf;

use anyhow::Context as _;

use crate::{Tier, find_on_path, venv};

/// Environment variable that turns a missing verifier into a panic instead of a skip.
pub const REQUIRE_ENV: &str = "ARGUS_REQUIRE_VERIFIERS";

static PYTHON: Tier<PathBuf> =
    Tier::new("Python with bagit-python and cryptography", "package verifiers (bagit-python)", REQUIRE_ENV);
static MINISIGN: Tier<PathBuf> = Tier::new("the minisign tool", "package verifiers (minisign)", REQUIRE_ENV);
static CHROMIUM: Tier<PathBuf> = Tier::new("headless Chromium", "package verifiers (chromium)", REQUIRE_ENV);

/// The venv's `python`, with bagit-python and `cryptography` installed; `None` (after a loud
/// SKIP banner) when it cannot be had.
///
/// # Panics
///
/// When it cannot be had and [`REQUIRE_ENV`] is set.
pub fn python() -> Option<PathBuf> {
    PYTHON
        .get(|| {
            let bin = install()?;
            Ok(bin.join("python"))
        })
        .cloned()
}

fn install() -> anyhow::Result<PathBuf> {
    // `ensure` takes one requirement; install the second through the venv's pip once the first is.
    let bin = venv::ensure("disclose-venv", "bagit==1.*", "import bagit")?;
    let ok = |check: &str| {
        std::process::Command::new(bin.join("python"))
            .args(["-c", check])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok("import cryptography.hazmat.primitives.asymmetric.ed25519") {
        let status = std::process::Command::new(bin.join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                "cryptography",
            ])
            .stdin(std::process::Stdio::null())
            .status()
            .context("running pip install cryptography")?;
        anyhow::ensure!(status.success(), "pip install cryptography failed ({status})");
    }
    Ok(bin)
}

/// The `minisign` tool; `None` (after a loud SKIP banner) when it is not on PATH.
///
/// # Panics
///
/// When it is missing and [`REQUIRE_ENV`] is set.
pub fn minisign() -> Option<PathBuf> {
    MINISIGN
        .get(|| find_on_path("minisign").context("`minisign` not found on PATH (Debian package minisign)"))
        .cloned()
}

/// Chromium (`chromium`, else `chromium-browser`); `None` (after a loud SKIP banner) when it is
/// not on PATH.
///
/// # Panics
///
/// When it is missing and [`REQUIRE_ENV`] is set.
pub fn chromium() -> Option<PathBuf> {
    CHROMIUM
        .get(|| {
            find_on_path("chromium")
                .or_else(|| find_on_path("chromium-browser"))
                .context("`chromium` not found on PATH (Debian package chromium)")
        })
        .cloned()
}
