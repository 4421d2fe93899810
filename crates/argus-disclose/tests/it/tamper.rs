//! Altering a package in any way makes verification fail: one byte of any file, a message
//! removed (with the manifests recomputed and the bag re-signed), another package key, another
//! log key.

use std::{fs, path::Path};

use argus_crypto::{
    package_signing::PackageSigner,
    tlog::{LogSigner, parse_tlog_proof, tlog_proof_text, verify_checkpoint},
};
use argus_disclose::{Error, verify_package};

use crate::support::{self, Built};

fn altered(built: &Built, name: &str) -> std::path::PathBuf {
    let to = built.dir.path().join(name);
    support::copy(&built.bag, &to);
    to
}

fn refused_by_rust(bag: &Path, built: &Built) -> String {
    match verify_package(bag, &built.log_key, &built.package_key) {
        Err(Error::Invalid(why)) => why,
        other => panic!("verify_package accepted an altered package: {other:?}"),
    }
}

#[tokio::test]
async fn one_byte_changed_in_any_file_fails() {
    let built = support::build().await;
    let files = support::walk(&built.bag);
    assert!(files.len() > 30, "{} files", files.len());
    for (n, file) in files.iter().enumerate() {
        let rel = file.strip_prefix(&built.bag).unwrap().to_owned();
        let bag = altered(&built, &format!("flip{n}"));
        let mut bytes = fs::read(bag.join(&rel)).unwrap();
        // The signature file's first line is minisign's untrusted comment: alter its signature.
        let at = if rel.ends_with("tagmanifest-sha512.txt.minisig") {
            bytes.iter().position(|b| *b == b'\n').unwrap() + 10
        } else {
            bytes.len() / 2
        };
        match bytes.get_mut(at) {
            Some(byte) => *byte ^= 0x01,
            None => bytes.push(b'A'), // an empty proof (a run of one version): one byte added
        }
        fs::write(bag.join(&rel), bytes).unwrap();
        let why = refused_by_rust(&bag, &built);
        eprintln!("{}: {why}", rel.display());
        let tools = support::tools(&bag, &built.log_key, &built.package_key);
        assert!(
            [tools.bagit, tools.minisign, tools.verify_py].iter().all(Option::is_none)
                || [tools.bagit, tools.minisign, tools.verify_py].contains(&Some(false)),
            "{}: every tool accepted it: {tools:?}",
            rel.display()
        );
        if rel.starts_with("data") {
            assert_ne!(tools.bagit, Some(true), "{}: bagit accepted it", rel.display());
        }
        fs::remove_dir_all(&bag).unwrap();
    }
}

#[tokio::test]
async fn a_message_removed_and_the_bag_re_signed_fails() {
    let built = support::build().await;
    let bag = altered(&built, "removed");
    let jsonl = fs::read_to_string(bag.join("data/messages.jsonl")).unwrap();
    let kept: String =
        jsonl.lines().filter(|l| !l.contains("\"eventId\":\"$m1\"")).map(|l| format!("{l}\n")).collect();
    assert_eq!(kept.lines().count(), 7);
    fs::write(bag.join("data/messages.jsonl"), kept).unwrap();
    let html = fs::read_to_string(bag.join("data/transcript.html")).unwrap();
    let start = html.find("<article class=\"msg\" id=\"m0\"").unwrap();
    let end = start + html[start..].find("</article>\n").unwrap() + "</article>\n".len();
    fs::write(bag.join("data/transcript.html"), format!("{}{}", &html[..start], &html[end..])).unwrap();
    support::rebag(&bag, &built.keys.package);

    let why = refused_by_rust(&bag, &built);
    assert_eq!(why, "data/messages.jsonl is not the one the DISCLOSE record names");
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false), "the re-made bag is valid as a bag");
    assert_ne!(tools.minisign, Some(false), "and signed with the package key");
    assert_ne!(tools.verify_py, Some(true), "verify.py accepted a package missing a message");
    if tools.verify_py.is_some() {
        assert!(
            tools.verify_py_output.contains("messages.jsonl is not the one the DISCLOSE record names"),
            "{}",
            tools.verify_py_output
        );
    }
}

#[tokio::test]
async fn another_package_key_fails() {
    let built = support::build().await;
    let bag = altered(&built, "other-package-key");
    let (other, _) = PackageSigner::generate().unwrap();
    support::rebag(&bag, &other);
    let why = refused_by_rust(&bag, &built);
    assert!(why.contains("signature"), "{why}");
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.minisign, Some(true), "minisign accepted another key's signature");
    assert_ne!(tools.bagit, Some(false));
    // Verified with the key it was signed with, it passes: the package key decides.
    verify_package(&bag, &built.log_key, &other.public_key()).unwrap();
}

#[tokio::test]
async fn another_log_key_fails() {
    let built = support::build().await;
    let bag = altered(&built, "other-log-key");
    let (other, _) = LogSigner::generate("argus-tchap").unwrap();
    let note = fs::read_to_string(bag.join("data/log/checkpoint")).unwrap();
    let checkpoint = verify_checkpoint(&note, &built.log_key).unwrap();
    let forged = other.sign(&checkpoint).unwrap();
    fs::write(bag.join("data/log/checkpoint"), &forged).unwrap();
    for proof_file in support::walk(&bag.join("data/log/proofs")) {
        let proof = parse_tlog_proof(&fs::read_to_string(&proof_file).unwrap()).unwrap();
        fs::write(&proof_file, tlog_proof_text(proof.index, &proof.proof, &forged)).unwrap();
    }
    support::rebag(&bag, &built.keys.package);
    let why = refused_by_rust(&bag, &built);
    assert!(why.contains("checkpoint"), "{why}");
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false));
    assert_ne!(tools.minisign, Some(false));
    assert_ne!(tools.verify_py, Some(true), "verify.py accepted a checkpoint signed by another key");
    if tools.verify_py.is_some() {
        assert!(tools.verify_py_output.contains("no signature by the log key"), "{}", tools.verify_py_output);
    }
    // With the other key given, everything holds: the key on the command line decides.
    verify_package(&bag, other.verifier_key(), &built.package_key).unwrap();
    if let Some(python) = argus_testkit::verifiers::python() {
        let ok = std::process::Command::new(python)
            .arg(bag.join("data/verify/verify.py"))
            .args(["--log-key", other.verifier_key()])
            .arg(&bag)
            .status()
            .unwrap();
        assert!(ok.success());
    }
}
