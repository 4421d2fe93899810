//! Python packages installed once into a venv under the workspace's `target/` directory,
//! guarded by a file lock so that two test processes never install at the same time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::tail_of_file;

/// The workspace's target directory: `CARGO_TARGET_DIR`, else the nearest ancestor of this
/// crate holding `Cargo.lock`, plus `target`.
pub(crate) fn target_dir() -> PathBuf {
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

/// Makes sure `target/<name>` is a venv with `requirement` installed and returns its `bin`
/// directory. `check` is a Python statement that must succeed once it is installed.
pub(crate) fn ensure(name: &str, requirement: &str, check: &str) -> anyhow::Result<PathBuf> {
    let target = target_dir();
    let venv = target.join(name);
    let bin = venv.join("bin");
    let python = bin.join("python");
    let marker = venv.join(".argus-installed");
    let installed = || python.is_file() && fs::read_to_string(&marker).is_ok_and(|text| text == requirement);
    if installed() {
        return Ok(bin);
    }
    let system_python = crate::find_on_path("python3").context("`python3` not found on PATH")?;
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let lock_path = target.join(format!("{name}.lock"));
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("opening {}", lock_path.display()))?;
    let mut lock = fd_lock::RwLock::new(lock_file);
    let _guard = lock.write().with_context(|| format!("locking {name}"))?;
    // Another process may have installed it while we waited for the lock.
    if installed() {
        return Ok(bin);
    }
    let started = Instant::now();
    eprintln!("argus-testkit: installing {requirement} into {} (first run only)…", venv.display());
    let log = target.join(format!("{name}-install.log"));
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
            requirement,
        ]),
        &log,
        "pip install",
    )?;
    let imports = Command::new(&python)
        .args(["-c", check])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !imports {
        bail!("{requirement} installed but `{check}` fails; see {}", log.display());
    }
    fs::write(&marker, requirement).context("writing the install marker")?;
    eprintln!("argus-testkit: {requirement} installed in {:.1?}", started.elapsed());
    Ok(bin)
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
