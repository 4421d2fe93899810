//! What the package says of each message's sending device (`senderTrust`): carried in
//! `data/messages.jsonl`, shown in the transcript for encrypted messages, checked by every
//! verifier, and covered by the package's hashes like any other field.

use std::{fs, path::Path};

use argus_disclose::{testing::SourceBuilder, verify_package};
use argus_domain::{SenderTrust, testing::MessageRecordBuilder};
use serde_json::Value;

use crate::{
    support::{self, ANA, BOB, Built, ORG, ROOM, t},
    tamper::{altered, forge_disclosure, refused_by_rust},
};

/// The labels the transcript shows, as `verify.py` and `verify_package` look for them.
const LABELS: [(&str, &str); 4] = [
    ("$verified", "Appareil d'envoi / Sending device: vérifié / verified device"),
    ("$unverified", "Appareil d'envoi / Sending device: non vérifié / unverified device"),
    ("$changed", "Appareil d'envoi / Sending device: identité changée / identity changed"),
    ("$backup", "Appareil d'envoi / Sending device: inconnu / unknown device"),
];

/// A room of decrypted messages of each trust, one left encrypted, one not encrypted, and one
/// recorded with a trust its `encrypted` contradicts.
async fn build() -> Built {
    support::build_from(
        |log| {
            let mut b = SourceBuilder::new(&ORG.parse().unwrap(), &ROOM.parse().unwrap());
            b.message(MessageRecordBuilder::new("$plain").sender(ANA).body("en clair").sent_at(t(0)).build());
            let decrypted = [
                ("$verified", SenderTrust::Verified),
                ("$unverified", SenderTrust::UnverifiedDevice),
                ("$changed", SenderTrust::IdentityChanged),
                ("$backup", SenderTrust::UnknownDevice),
            ];
            for (n, (eid, trust)) in decrypted.into_iter().enumerate() {
                let mut m = MessageRecordBuilder::new(eid)
                    .sender(BOB)
                    .body(format!("chiffré {n}"))
                    .sent_at(t(1 + n as i64))
                    .build();
                (m.encrypted, m.decrypted, m.sender_trust) = (true, true, trust);
                b.message(m);
            }
            b.message(MessageRecordBuilder::new("$sealed").sender(BOB).sent_at(t(6)).encrypted().build());
            let mut odd =
                MessageRecordBuilder::new("$odd").sender(ANA).body("incohérent").sent_at(t(7)).build();
            odd.sender_trust = SenderTrust::Verified;
            b.message(odd);
            (b.build(log), Vec::new())
        },
        false,
    )
    .await
}

fn lines(bag: &Path) -> Vec<Value> {
    fs::read_to_string(bag.join("data/messages.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The text of the article of `eid` in the transcript (markup included).
fn article(bag: &Path, eid: &str) -> String {
    let html = fs::read_to_string(bag.join("data/transcript.html")).unwrap();
    let start = html.find(&format!("data-event-id=\"{eid}\"")).unwrap();
    let end = start + html[start..].find("</article>").unwrap();
    html[start..end].replace("&#39;", "'").replace("&#x27;", "'")
}

fn assert_refused(bag: &Path, built: &Built, why: &str) {
    assert_eq!(refused_by_rust(bag, built), why);
    let tools = support::tools(bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false), "the re-made bag is valid as a bag");
    assert_ne!(tools.minisign, Some(false), "and signed with the package key");
    assert_ne!(tools.verify_py, Some(true), "verify.py accepted it");
    if tools.verify_py.is_some() {
        assert!(tools.verify_py_output.contains(why), "{}", tools.verify_py_output);
    }
}

/// Replaces `from` by `to` in the line of `eid` of `data/messages.jsonl`.
fn rewrite(bag: &Path, eid: &str, from: &str, to: &str) {
    let jsonl = fs::read_to_string(bag.join("data/messages.jsonl")).unwrap();
    let line = jsonl.lines().find(|l| l.contains(&format!("\"eventId\":\"{eid}\""))).unwrap();
    let changed = line.replacen(from, to, 1);
    assert_ne!(changed, line, "{from} is not in the line of {eid}");
    fs::write(bag.join("data/messages.jsonl"), jsonl.replace(line, &changed)).unwrap();
}

#[tokio::test]
async fn each_trust_is_carried_verified_and_shown() {
    let built = build().await;
    let report = verify_package(&built.bag, &built.log_key, &built.package_key).unwrap();
    assert_eq!(report.messages, 7);
    let tools = support::tools(&built.bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(false), "bagit-python refuses the bag");
    assert_ne!(tools.verify_py, Some(false), "verify.py refuses the package: {}", tools.verify_py_output);

    let trust: Vec<(String, bool, String)> = lines(&built.bag)
        .iter()
        .map(|l| {
            let eid = l["eventId"].as_str().unwrap().to_owned();
            (eid, l["encrypted"].as_bool().unwrap(), l["senderTrust"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [
        ("$plain", false, "NOT_ENCRYPTED"),
        ("$verified", true, "VERIFIED"),
        ("$unverified", true, "UNVERIFIED_DEVICE"),
        ("$changed", true, "IDENTITY_CHANGED"),
        ("$backup", true, "UNKNOWN_DEVICE"),
        ("$sealed", true, "UNKNOWN_DEVICE"),
        // Recorded VERIFIED while not encrypted: the package does not contradict itself.
        ("$odd", false, "NOT_ENCRYPTED"),
    ];
    let expected: Vec<(String, bool, String)> =
        expected.iter().map(|(e, enc, t)| ((*e).to_owned(), *enc, (*t).to_owned())).collect();
    assert_eq!(trust, expected);

    for (eid, label) in LABELS {
        let text = article(&built.bag, eid);
        assert!(text.contains(label), "{eid} does not show {label:?}: {text}");
        for (_, other) in LABELS.iter().filter(|(_, l)| *l != label) {
            assert!(!text.contains(other), "{eid} shows {other:?} too");
        }
    }
    assert!(article(&built.bag, "$sealed").contains("inconnu / unknown device"));
    for eid in ["$plain", "$odd"] {
        assert!(!article(&built.bag, eid).contains("Sending device"), "{eid} is not encrypted");
    }
}

#[tokio::test]
async fn a_trust_outside_the_five_codes_is_refused_even_re_journaled() {
    let built = build().await;
    let bag = altered(&built, "unknown-code");
    rewrite(&bag, "$verified", "\"senderTrust\":\"VERIFIED\"", "\"senderTrust\":\"TRUSTED\"");
    forge_disclosure(&bag, &built);
    assert_refused(&bag, &built, "message $verified: its senderTrust is not a known value");

    let bag = altered(&built, "not-a-string");
    rewrite(&bag, "$verified", "\"senderTrust\":\"VERIFIED\"", "\"senderTrust\":1");
    forge_disclosure(&bag, &built);
    assert_refused(&bag, &built, "message $verified: its senderTrust is not a known value");

    // An encrypted message said to be not encrypted, and the reverse.
    let bag = altered(&built, "contradiction");
    rewrite(&bag, "$sealed", "\"senderTrust\":\"UNKNOWN_DEVICE\"", "\"senderTrust\":\"NOT_ENCRYPTED\"");
    forge_disclosure(&bag, &built);
    assert_refused(&bag, &built, "message $sealed: its senderTrust contradicts its encrypted");
    let bag = altered(&built, "contradiction-2");
    rewrite(&bag, "$plain", "\"senderTrust\":\"NOT_ENCRYPTED\"", "\"senderTrust\":\"VERIFIED\"");
    forge_disclosure(&bag, &built);
    assert_refused(&bag, &built, "message $plain: its senderTrust contradicts its encrypted");
}

#[tokio::test]
async fn a_changed_trust_breaks_verification() {
    let built = build().await;
    // Changed alone: the manifests, and the DISCLOSE record's hash of messages.jsonl, differ.
    let bag = altered(&built, "changed");
    rewrite(&bag, "$unverified", "\"senderTrust\":\"UNVERIFIED_DEVICE\"", "\"senderTrust\":\"VERIFIED\"");
    let why = refused_by_rust(&bag, &built);
    assert!(why.contains("messages.jsonl"), "{why}");
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.bagit, Some(true), "bagit accepted a changed messages.jsonl");
    assert_ne!(tools.verify_py, Some(true), "verify.py accepted a changed messages.jsonl");

    // With the bag re-made and signed: the DISCLOSE record names the original.
    let bag = altered(&built, "changed-re-signed");
    rewrite(&bag, "$unverified", "\"senderTrust\":\"UNVERIFIED_DEVICE\"", "\"senderTrust\":\"VERIFIED\"");
    support::rebag(&bag, &built.keys.package);
    assert_refused(&bag, &built, "data/messages.jsonl is not the one the DISCLOSE record names");

    // Even re-journaled by an insider holding both keys: the transcript still says otherwise.
    let bag = altered(&built, "changed-re-journaled");
    rewrite(&bag, "$unverified", "\"senderTrust\":\"UNVERIFIED_DEVICE\"", "\"senderTrust\":\"VERIFIED\"");
    forge_disclosure(&bag, &built);
    assert_refused(
        &bag,
        &built,
        "data/transcript.html does not show what messages.jsonl says of $unverified",
    );
}

#[tokio::test]
async fn a_package_written_before_the_field_still_verifies() {
    let built = build().await;
    let bag = altered(&built, "older");
    let jsonl = fs::read_to_string(bag.join("data/messages.jsonl")).unwrap();
    let older: String = jsonl
        .lines()
        .map(|l| {
            let mut v: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            assert!(v.remove("senderTrust").is_some());
            format!("{}\n", Value::Object(v))
        })
        .collect();
    fs::write(bag.join("data/messages.jsonl"), older).unwrap();
    let html = fs::read_to_string(bag.join("data/transcript.html")).unwrap();
    let html: String =
        html.lines().filter(|l| !l.contains("class=\"trust\"")).map(|l| format!("{l}\n")).collect();
    fs::write(bag.join("data/transcript.html"), html).unwrap();
    forge_disclosure(&bag, &built);
    verify_package(&bag, &built.log_key, &built.package_key).unwrap();
    let tools = support::tools(&bag, &built.log_key, &built.package_key);
    assert_ne!(tools.verify_py, Some(false), "{}", tools.verify_py_output);
}
