//! Altering a package in any way makes verification fail: one byte of any file, a message
//! removed (with the manifests recomputed and the bag re-signed), another package key, another
//! log key, a message shown with other content than its latest version (even with its DISCLOSE
//! record forged and the checkpoint signed again).

use std::{fs, path::Path};

use argus_crypto::{
    package_signing::PackageSigner,
    tlog::{Checkpoint, LogSigner, parse_tlog_proof, tlog_proof_text, verify_checkpoint},
};
use argus_disclose::{Error, LogView as _, verify_package};
use argus_domain::oversight::{AccessAction, LogEntry};
use sha2::{Digest as _, Sha256};

use crate::support::{self, Built};

pub(crate) fn altered(built: &Built, name: &str) -> std::path::PathBuf {
    let to = built.dir.path().join(name);
    support::copy(&built.bag, &to);
    to
}

pub(crate) fn refused_by_rust(bag: &Path, built: &Built) -> String {
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

/// Journals a forged DISCLOSE record naming the altered `data/messages.jsonl`, in place of the
/// package's own, and signs a new checkpoint with the log key, every proof made again: what an
/// insider holding both keys could do.
pub(crate) fn forge_disclosure(bag: &Path, built: &Built) {
    let org: argus_domain::OrgId = support::ORG.parse().unwrap();
    let jsonl = fs::read(bag.join("data/messages.jsonl")).unwrap();
    let records = bag.join("data/log/records");
    let proofs = bag.join("data/log/proofs");
    let mut indexes: Vec<u64> = Vec::new();
    let mut forged = None;
    for file in support::walk(&records) {
        let index: u64 = file.file_name().unwrap().to_str().unwrap().parse().unwrap();
        match LogEntry::parse(&fs::read(&file).unwrap()).unwrap() {
            LogEntry::Access(mut access) if access.action == AccessAction::Disclose => {
                let fields = access.disclosure.as_mut().unwrap();
                fields.messages_sha256 = hex::encode(Sha256::digest(&jsonl));
                fs::remove_file(&file).unwrap();
                fs::remove_file(proofs.join(format!("{index}.tlog-proof"))).unwrap();
                forged = Some(LogEntry::Access(access).canonical());
            }
            _ => indexes.push(index),
        }
    }
    let bytes = forged.unwrap();
    let index = built.log.append(bytes.clone());
    fs::write(records.join(index.to_string()), bytes).unwrap();
    indexes.push(index);
    let note = fs::read_to_string(bag.join("data/log/checkpoint")).unwrap();
    let origin = verify_checkpoint(&note, &built.log_key).unwrap().origin;
    let head = built.log.log_head(&org).unwrap();
    let note = built.keys.log.sign(&Checkpoint { origin, size: head.size, root: head.root }).unwrap();
    fs::write(bag.join("data/log/checkpoint"), &note).unwrap();
    for index in indexes {
        let proof = built.log.log_inclusion(&org, index, head.size).unwrap();
        fs::write(proofs.join(format!("{index}.tlog-proof")), tlog_proof_text(index, &proof, &note)).unwrap();
    }
    support::rebag(bag, &built.keys.package);
}

#[tokio::test]
async fn an_edited_message_shown_with_other_content_fails_even_re_journaled_and_re_signed() {
    let built = support::build().await;
    // The forgery alone is accepted: what fails below is the content check.
    let bag = altered(&built, "re-journaled");
    forge_disclosure(&bag, &built);
    verify_package(&bag, &built.log_key, &built.package_key).unwrap();
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.verify_py, Some(false), "{}", tools.verify_py_output);

    // $m2's latest edit says "(salle B)": the message is shown with its first edit's text.
    let bag = altered(&built, "other-content");
    let jsonl = fs::read_to_string(bag.join("data/messages.jsonl")).unwrap();
    let line = jsonl.lines().find(|l| l.contains("\"eventId\":\"$m2\"")).unwrap();
    let changed = line.replacen("\"body\":\"Réunion à 15h (salle B)\"", "\"body\":\"Réunion à 15h\"", 1);
    assert_ne!(changed, line);
    fs::write(bag.join("data/messages.jsonl"), jsonl.replace(line, &changed)).unwrap();
    forge_disclosure(&bag, &built);

    let why = refused_by_rust(&bag, &built);
    assert_eq!(why, "message $m2: its content is not its latest logged version");
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false), "the re-made bag is valid as a bag");
    assert_ne!(tools.minisign, Some(false), "and signed with the package key");
    assert_ne!(tools.verify_py, Some(true), "verify.py accepted a message shown with other content");
    if tools.verify_py.is_some() {
        assert!(
            tools.verify_py_output.contains("message $m2: its content is not its latest logged version"),
            "{}",
            tools.verify_py_output
        );
    }
}
