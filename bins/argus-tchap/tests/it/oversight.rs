//! The oversight commands as an operator runs them: `keys public` (generated once, owner-only),
//! `audit checkpoint` (a signed note that verifies against the printed key) and `audit
//! consistency` (a proof from an earlier checkpoint that verifies, and fails against a forged
//! history).

use std::path::Path;

use argus_crypto::tlog::{Checkpoint, verify_checkpoint, verify_consistency};
use argus_testkit::homeserver::{MATRIX_TOKEN, MockHomeserver};
use base64::{Engine as _, engine::general_purpose::STANDARD};

use crate::cli::{ingest_command, run, stdout};

/// `keys public`: (log verifier key, minisign public key).
fn public_keys(dir: &Path) -> (String, String) {
    let keys = run(dir, &["keys", "public"]);
    assert!(keys.status.success(), "{keys:?}");
    let out = stdout(&keys);
    let lines: Vec<&str> = out.lines().collect();
    let [log, package] = lines.as_slice() else { panic!("two lines: {out}") };
    let log = log.strip_prefix("log: ").unwrap_or_else(|| panic!("{out}")).to_owned();
    let package = package.strip_prefix("package: ").unwrap_or_else(|| panic!("{out}")).to_owned();
    (log, package)
}

fn checkpoint(dir: &Path, key: &str) -> (String, Checkpoint) {
    let printed = run(dir, &["audit", "checkpoint", "--org", "dgsi"]);
    assert!(printed.status.success(), "{printed:?}");
    let note = format!("{}\n", stdout(&printed));
    let checkpoint = verify_checkpoint(&note, key).unwrap_or_else(|e| panic!("{e}: {note}"));
    (note, checkpoint)
}

async fn ingest(dir: &Path, homeserver: &MockHomeserver, room: &str) {
    let (dir, uri, room) = (dir.to_path_buf(), homeserver.uri(), room.to_owned());
    let output = tokio::task::spawn_blocking(move || {
        ingest_command(&dir, &uri, &room)
            .env("MATRIX_ACCESS_TOKEN", MATRIX_TOKEN)
            .output()
            .unwrap_or_else(|e| panic!("ingest: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("join: {e}"));
    assert!(output.status.success(), "{output:?}");
}

fn hex_digits(text: &str) -> bool {
    text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn keys_public_prints_the_two_keys_generated_once_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (log, package) = public_keys(dir.path());
    assert!(log.starts_with("argus-tchap+"), "{log}");
    let parts: Vec<&str> = log.splitn(3, '+').collect();
    assert!(parts.len() == 3 && parts[1].len() == 8 && hex_digits(parts[1]), "name+hexid+base64: {log}");
    assert_eq!(STANDARD.decode(&package).map(|k| k.len()).ok(), Some(42), "minisign's key line: {package}");
    assert_eq!(public_keys(dir.path()), (log.clone(), package.clone()), "generated once, then read");
    assert_eq!(stdout(&run(dir.path(), &["keys", "public", "--log"])), log);
    assert_eq!(stdout(&run(dir.path(), &["keys", "public", "--package"])), package);
    #[cfg(unix)]
    for file in ["oversight-log.key", "oversight-package.key"] {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    // A configured log name names the key and the checkpoints.
    let named = tempfile::tempdir().unwrap();
    let keys = crate::cli::command(named.path())
        .args(["keys", "public", "--log"])
        .env("ARGUS_OVERSIGHT_LOG_NAME", "court-log")
        .output()
        .unwrap();
    assert!(stdout(&keys).starts_with("court-log+"), "{keys:?}");
}

#[tokio::test]
async fn checkpoints_verify_and_prove_consistency_from_an_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let homeserver = MockHomeserver::start_any_room().await;
    homeserver.room("!first:tchap.test", 3);
    homeserver.room("!second:tchap.test", 2);
    ingest(path, &homeserver, "!first:tchap.test").await;
    let (log_key, _) = public_keys(path);
    let (_, old) = checkpoint(path, &log_key);
    assert_eq!(old.origin, "argus-tchap/dgsi");
    assert!(old.size >= 1, "the ingestion's audit record is in the log");

    ingest(path, &homeserver, "!second:tchap.test").await;
    let printed = run(path, &["audit", "consistency", "--org", "dgsi", "--old-size", &old.size.to_string()]);
    assert!(printed.status.success(), "{printed:?}");
    let out = stdout(&printed);
    // The note holds a blank line of its own (before its signature): the proof follows the last.
    let (note, proof) = out.rsplit_once("\n\n").unwrap_or((out.as_str(), ""));
    let new = verify_checkpoint(&format!("{note}\n"), &log_key).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(new.size > old.size, "{out}");
    assert_eq!(new, checkpoint(path, &log_key).1, "the current checkpoint");
    let proof: Vec<[u8; 32]> = proof
        .lines()
        .map(|line| {
            STANDARD.decode(line).ok().and_then(|h| h.try_into().ok()).unwrap_or_else(|| panic!("{line}"))
        })
        .collect();
    assert!(!proof.is_empty());
    verify_consistency(old.size, old.root, new.size, new.root, &proof).unwrap_or_else(|e| panic!("{e}"));
    // A forged history (another earlier root) does not verify, nor a proof with a hash changed.
    let mut forged = old.root;
    forged[0] ^= 1;
    assert!(verify_consistency(old.size, forged, new.size, new.root, &proof).is_err());
    let mut tampered = proof.clone();
    tampered[0][31] ^= 1;
    assert!(verify_consistency(old.size, old.root, new.size, new.root, &tampered).is_err());
    // Another key does not verify the checkpoint.
    let other = tempfile::tempdir().unwrap();
    let (other_key, _) = public_keys(other.path());
    assert!(verify_checkpoint(&format!("{note}\n"), &other_key).is_err());

    let too_large =
        run(path, &["audit", "consistency", "--org", "dgsi", "--old-size", &(new.size + 1).to_string()]);
    assert!(!too_large.status.success());
}
