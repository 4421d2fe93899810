//! Offline verification of a package in Rust: what bagit-python, minisign and `verify.py`
//! check, with the two public keys given by the caller (never read from the package).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    path::Path,
};

use argus_crypto::{
    package_signing::verify_package_signature,
    tlog::{leaf_hash, parse_tlog_proof, verify_checkpoint, verify_inclusion},
};
use argus_domain::{
    SenderTrust,
    oversight::{AccessAction, LogEntry, VersionLeaf},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::{
    Error, Result, bag,
    check::{events_root, kind_name, latest_content},
    hashing::{both_of_file, sha512_file},
    transcript::trust_label,
};

/// What a verified package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerificationReport {
    /// The package id (`External-Identifier`).
    pub package_id: String,
    /// The organisation (`Source-Organization`).
    pub org: String,
    /// The room (`Bag-Group-Identifier`).
    pub room_id: String,
    /// Messages.
    pub messages: u64,
    /// Versions proven against their runs' `eventsRoot`.
    pub versions: u64,
    /// Files.
    pub attachments: u64,
    /// Log records proven against the checkpoint.
    pub records: u64,
    /// The checkpoint's size.
    pub checkpoint_size: u64,
    /// The signature's trusted comment.
    pub trusted_comment: String,
}

/// Verifies the package at `bag_dir`: its bag (manifests, tag manifest, `Payload-Oxum`), its
/// minisign signature with `package_public_key` (minisign's base64 line), its checkpoint with
/// `log_verifier_key` (`name+hexid+base64`), every log record and version proof, its DISCLOSE
/// record, and that `messages.jsonl`, the files and `transcript.html` agree.
///
/// # Errors
///
/// [`Error::Invalid`] naming the first check that fails; [`Error::Crypto`] for a malformed key.
pub fn verify_package(
    bag_dir: &Path,
    log_verifier_key: &str,
    package_public_key: &str,
) -> Result<VerificationReport> {
    let trusted_comment = verify_bag(bag_dir, package_public_key)?;
    let mut report = verify_content(bag_dir, log_verifier_key)?;
    report.trusted_comment = trusted_comment;
    Ok(report)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).map_err(|_| Error::invalid(format!("{what} is missing")))
}

fn read_text(path: &Path, what: &str) -> Result<String> {
    String::from_utf8(read(path, what)?).map_err(|_| Error::invalid(format!("{what} is not UTF-8")))
}

/// `<hex>  <path>` lines.
fn manifest(text: &str, what: &str) -> Result<BTreeMap<String, String>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once(char::is_whitespace)
                .map(|(h, p)| (p.trim_start().to_owned(), h.to_ascii_lowercase()))
                .ok_or_else(|| Error::invalid(format!("{what} is malformed")))
        })
        .collect()
}

/// Every file under `dir`, as bag paths (`data/…`).
fn payload_files(root: &Path) -> Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.join("data")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path();
                let rel = rel
                    .strip_prefix(root)
                    .map_err(|_| Error::invalid("a payload file is outside the bag"))?;
                let parts: Vec<String> =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
                out.insert(parts.join("/"));
            }
        }
    }
    Ok(out)
}

/// The bag and its signature; returns the trusted comment.
fn verify_bag(root: &Path, public_key: &str) -> Result<String> {
    if read_text(&root.join("bagit.txt"), "bagit.txt")?.lines().next() != Some("BagIt-Version: 1.0") {
        return Err(Error::invalid("bagit.txt does not declare BagIt 1.0"));
    }
    let tag_manifest = root.join("tagmanifest-sha512.txt");
    let signature = read_text(&root.join(bag::SIGNATURE), bag::SIGNATURE)?;
    let file =
        fs::File::open(&tag_manifest).map_err(|_| Error::invalid("tagmanifest-sha512.txt is missing"))?;
    let comment = verify_package_signature(public_key, &signature, file).map_err(|e| match e {
        argus_crypto::Error::BadSigningKey => Error::Crypto(e),
        _ => Error::invalid("the signature of tagmanifest-sha512.txt does not verify with the package key"),
    })?;
    let tags = manifest(&read_text(&tag_manifest, "tagmanifest-sha512.txt")?, "tagmanifest-sha512.txt")?;
    for name in bag::TAG_FILES {
        if !tags.contains_key(name) {
            return Err(Error::invalid(format!("tagmanifest-sha512.txt does not cover {name}")));
        }
    }
    for (name, digest) in &tags {
        if name.contains("..") || name.starts_with('/') {
            return Err(Error::invalid("tagmanifest-sha512.txt names a file outside the bag"));
        }
        let actual =
            sha512_file(&root.join(name)).map_err(|_| Error::invalid(format!("{name} is missing")))?;
        if &actual != digest {
            return Err(Error::invalid(format!("{name} does not match tagmanifest-sha512.txt")));
        }
    }
    let m512 = manifest(
        &read_text(&root.join("manifest-sha512.txt"), "manifest-sha512.txt")?,
        "manifest-sha512.txt",
    )?;
    let m256 = manifest(
        &read_text(&root.join("manifest-sha256.txt"), "manifest-sha256.txt")?,
        "manifest-sha256.txt",
    )?;
    let files = payload_files(root)?;
    for (name, m) in [("manifest-sha512.txt", &m512), ("manifest-sha256.txt", &m256)] {
        if m.keys().cloned().collect::<BTreeSet<_>>() != files {
            return Err(Error::invalid(format!("{name} does not list exactly the payload's files")));
        }
    }
    let mut octets = 0_u64;
    for name in &files {
        let path = root.join(name);
        octets += fs::metadata(&path)?.len();
        let (s256, s512) = both_of_file(&path)?;
        if m256.get(name) != Some(&s256) || m512.get(name) != Some(&s512) {
            return Err(Error::invalid(format!("{name} does not match the manifests")));
        }
    }
    let info = bag_info(root)?;
    if info.get("Payload-Oxum").map(String::as_str) != Some(format!("{octets}.{}", files.len()).as_str()) {
        return Err(Error::invalid("Payload-Oxum does not match the payload"));
    }
    Ok(comment)
}

fn bag_info(root: &Path) -> Result<HashMap<String, String>> {
    Ok(read_text(&root.join("bag-info.txt"), "bag-info.txt")?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

fn hashes(text: &str, what: &str) -> Result<Vec<[u8; 32]>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            STANDARD
                .decode(l)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| Error::invalid(format!("{what} is malformed")))
        })
        .collect()
}

fn numbered(dir: &Path, suffix: &str) -> Result<BTreeSet<u64>> {
    let mut out = BTreeSet::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let n = name
            .strip_suffix(suffix)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Error::invalid("an unexpected file is in data/log"))?;
        out.insert(n);
    }
    Ok(out)
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// What `verify.py` checks.
fn verify_content(root: &Path, log_key: &str) -> Result<VerificationReport> {
    let data = root.join("data");
    let log = data.join("log");
    let info = bag_info(root)?;
    let field =
        |k: &str| info.get(k).cloned().ok_or_else(|| Error::invalid(format!("bag-info.txt has no {k}")));
    let (package_id, org, room_id) =
        (field("External-Identifier")?, field("Source-Organization")?, field("Bag-Group-Identifier")?);

    let note = read_text(&log.join("checkpoint"), "data/log/checkpoint")?;
    let checkpoint = verify_checkpoint(&note, log_key).map_err(|e| match e {
        argus_crypto::Error::BadSigningKey => Error::Crypto(e),
        _ => Error::invalid("the checkpoint's signature does not verify with the log key"),
    })?;
    if !checkpoint.origin.ends_with(&format!("/{org}")) {
        return Err(Error::invalid("the checkpoint's origin is not the organisation's log"));
    }

    // Records against the checkpoint.
    let indexes = numbered(&log.join("records"), "")?;
    if numbered(&log.join("proofs"), ".tlog-proof")? != indexes {
        return Err(Error::invalid("data/log/proofs and data/log/records do not match"));
    }
    let mut records = BTreeMap::new();
    for &index in &indexes {
        let bytes = read(&log.join("records").join(index.to_string()), "a log record")?;
        let proof =
            parse_tlog_proof(&read_text(&log.join("proofs").join(format!("{index}.tlog-proof")), "a proof")?)
                .map_err(|_| Error::invalid(format!("the proof of log entry {index} is malformed")))?;
        if proof.index != index || proof.note != note {
            return Err(Error::invalid(format!(
                "the proof of log entry {index} is not against data/log/checkpoint"
            )));
        }
        verify_inclusion(index, checkpoint.size, leaf_hash(&bytes), &proof.proof, checkpoint.root)
            .map_err(|_| Error::invalid(format!("log entry {index} is not included in the checkpoint")))?;
        records.insert(index, bytes);
    }

    // Versions against their runs' eventsRoot.
    let mut versions: HashMap<(u64, u64), VersionLeaf> = HashMap::new();
    let versions_dir = log.join("versions");
    for run in numbered(&versions_dir, "")? {
        let (root_hash, count) = records.get(&run).and_then(|b| events_root(b)).ok_or_else(|| {
            Error::invalid(format!("versions cite run {run}, whose AUDIT record is not in the package"))
        })?;
        let count = count
            .ok_or_else(|| Error::invalid(format!("the AUDIT record of run {run} has no eventsCount")))?;
        let dir = versions_dir.join(run.to_string());
        let mut names: Vec<String> = fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        names.sort();
        if names != ["proofs.txt", "versions.jsonl"] {
            return Err(Error::invalid(format!(
                "data/log/versions/{run} does not hold exactly its versions and proofs"
            )));
        }
        let lines = read(&dir.join("versions.jsonl"), "a run's versions")?;
        let proofs = read_text(&dir.join("proofs.txt"), "a run's version proofs")?;
        let lines: Vec<&[u8]> =
            lines.strip_suffix(b"\n").unwrap_or_default().split(|b| *b == b'\n').collect();
        let proofs: Vec<&str> = proofs.lines().collect();
        if lines.len() != proofs.len() || lines.iter().any(|l| l.is_empty()) {
            return Err(Error::invalid(format!("run {run} has a version without its proof")));
        }
        for (bytes, proof) in lines.into_iter().zip(proofs) {
            let mut fields = proof.split(' ');
            let position: u64 = fields
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| Error::invalid(format!("a version proof of run {run} is malformed")))?;
            let path = hashes(&fields.collect::<Vec<_>>().join("\n"), "a version proof")?;
            verify_inclusion(position, count, leaf_hash(bytes), &path, root_hash).map_err(|_| {
                Error::invalid(format!("version {position} of run {run} is not included in its eventsRoot"))
            })?;
            let leaf = VersionLeaf::parse(bytes)
                .map_err(|_| Error::invalid(format!("version {position} of run {run} is malformed")))?;
            if versions.insert((run, position), leaf).is_some() {
                return Err(Error::invalid(format!("version {position} of run {run} is listed twice")));
            }
        }
    }

    // The disclosure record.
    let jsonl = read(&data.join("messages.jsonl"), "data/messages.jsonl")?;
    let lines: Vec<Value> = jsonl
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).map_err(|_| Error::invalid("data/messages.jsonl is malformed")))
        .collect::<Result<_>>()?;
    let parsed: BTreeMap<u64, LogEntry> =
        records.iter().filter_map(|(i, b)| LogEntry::parse(b).ok().map(|e| (*i, e))).collect();
    let disclosures: Vec<_> = parsed
        .values()
        .filter_map(|e| match e {
            LogEntry::Access(a) if a.action == AccessAction::Disclose => {
                a.disclosure.as_ref().filter(|d| d.package_id == package_id).map(|d| (a, d))
            }
            _ => None,
        })
        .collect();
    let [(access, disclosure)] = disclosures.as_slice() else {
        return Err(Error::invalid("the package's DISCLOSE record is not in the package"));
    };
    if disclosure.messages_sha256 != hex::encode(Sha256::digest(&jsonl)) {
        return Err(Error::invalid("data/messages.jsonl is not the one the DISCLOSE record names"));
    }
    if access.item_count != lines.len() as u64 || !access.room_ids.contains(&room_id) || access.org != org {
        return Err(Error::invalid("the DISCLOSE record does not describe this package"));
    }
    if disclosure.version_count != versions.len() as u64 {
        return Err(Error::invalid("the DISCLOSE record's version count differs from the package's"));
    }

    // messages.jsonl against versions, files and ATTACHMENT records.
    let mut cited = BTreeSet::new();
    let mut files = 0_u64;
    for m in &lines {
        let eid = str_of(m, "eventId").ok_or_else(|| Error::invalid("a message has no event id"))?;
        sender_trust(m, eid)?;
        let mut own = Vec::new();
        for v in m.get("versions").and_then(Value::as_array).into_iter().flatten() {
            let key = (v.get("run").and_then(Value::as_u64), v.get("position").and_then(Value::as_u64));
            let leaf = match key {
                (Some(run), Some(position)) => {
                    versions.get(&(run, position)).map(|leaf| ((run, position), leaf))
                }
                _ => None,
            };
            let (key, leaf) = leaf
                .ok_or_else(|| Error::invalid(format!("message {eid} cites a version not in the package")))?;
            if !cited.insert(key) {
                return Err(Error::invalid(format!("message {eid} cites a version another message cites")));
            }
            let same = str_of(v, "eventId") == Some(leaf.event_id.as_str())
                && str_of(v, "sender") == Some(leaf.sender.as_str())
                && str_of(v, "body") == leaf.body.as_deref()
                && str_of(v, "msgtype") == leaf.msgtype.as_deref()
                && str_of(v, "reason") == leaf.reason.as_deref()
                && str_of(v, "target") == leaf.target.as_deref()
                && str_of(v, "kind") == Some(kind_name(leaf.kind))
                && (leaf.event_id == eid || leaf.target.as_deref() == Some(eid));
            if !same {
                return Err(Error::invalid(format!("message {eid}: a version differs from the logged one")));
            }
            own.push((leaf, key));
        }
        // A message not redacted shows the content of its latest version.
        if m.get("redacted").and_then(Value::as_bool) != Some(true)
            && let Some(latest) = latest_content(own.iter().copied())
            && (str_of(m, "body"), str_of(m, "msgtype"))
                != (latest.body.as_deref(), latest.msgtype.as_deref())
        {
            return Err(Error::invalid(format!(
                "message {eid}: its content is not its latest logged version"
            )));
        }
        let Some(a) = m.get("attachment").filter(|a| !a.is_null()) else { continue };
        let sha = str_of(a, "sha256");
        if let Some(file) = str_of(a, "file") {
            let bytes_sha = hex::encode(Sha256::digest(read(&data.join(file), "a file")?));
            if Some(bytes_sha.as_str()) != sha
                || sha.map(|s| format!("attachments/{s}")).as_deref() != Some(file)
            {
                return Err(Error::invalid(format!("message {eid}: its file does not match its SHA-256")));
            }
            files += 1;
        }
        if let Some(index) = a.get("logIndex").and_then(Value::as_u64) {
            let ok = matches!(parsed.get(&index), Some(LogEntry::Attachment(r)) if r.event_id == eid && Some(r.sha256.as_str()) == sha);
            if !ok {
                return Err(Error::invalid(format!(
                    "message {eid}: its file is not the one its ATTACHMENT record names"
                )));
            }
        }
    }
    if cited.len() != versions.len() {
        return Err(Error::invalid("data/log/versions holds versions no message cites"));
    }
    transcript_agrees(&read_text(&data.join("transcript.html"), "data/transcript.html")?, &lines)?;
    Ok(VerificationReport {
        package_id,
        org,
        room_id,
        messages: lines.len() as u64,
        versions: versions.len() as u64,
        attachments: files,
        records: records.len() as u64,
        checkpoint_size: checkpoint.size,
        trusted_comment: String::new(),
    })
}

/// What `message` says of its sending device: `None` in a package written before messages
/// carried it; refused when it is not one of the [`SenderTrust`] codes, or contradicts the
/// message's `encrypted` (`NOT_ENCRYPTED` exactly when it was not encrypted).
fn sender_trust(message: &Value, eid: &str) -> Result<Option<SenderTrust>> {
    let Some(value) = message.get("senderTrust") else { return Ok(None) };
    let trust: SenderTrust = value
        .as_str()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| Error::invalid(format!("message {eid}: its senderTrust is not a known value")))?;
    let encrypted = message.get("encrypted").and_then(Value::as_bool) == Some(true);
    if encrypted == (trust == SenderTrust::NotEncrypted) {
        return Err(Error::invalid(format!("message {eid}: its senderTrust contradicts its encrypted")));
    }
    Ok(Some(trust))
}

/// Decodes the character references the transcript writes (and numeric ones).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(rest.get(..i).unwrap_or_default());
        rest = rest.get(i..).unwrap_or_default();
        let Some(end) = rest.find(';').filter(|&e| e <= 10) else {
            out.push('&');
            rest = rest.get(1..).unwrap_or_default();
            continue;
        };
        let entity = rest.get(1..end).unwrap_or_default();
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "middot" => Some('·'),
            e => e
                .strip_prefix("#x")
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| e.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = rest.get(end + 1..).unwrap_or_default();
            }
            None => {
                out.push('&');
                rest = rest.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// The text of an HTML fragment: its tags removed, its references decoded.
fn text_of(fragment: &str) -> String {
    let mut out = String::with_capacity(fragment.len());
    let mut rest = fragment;
    while let Some(i) = rest.find('<') {
        out.push_str(rest.get(..i).unwrap_or_default());
        rest = rest.get(i..).and_then(|r| r.find('>').and_then(|e| r.get(e + 1..))).unwrap_or_default();
    }
    out.push_str(rest);
    unescape(&out)
}

/// The transcript shows the same messages, in the same order, as `messages.jsonl`.
fn transcript_agrees(page: &str, lines: &[Value]) -> Result<()> {
    let lower = page.to_ascii_lowercase();
    for tag in ["<script", "<iframe", "<object", "<embed", "<img", "<link"] {
        if lower.contains(tag) {
            return Err(Error::invalid("data/transcript.html holds active or external content"));
        }
    }
    const OPEN: &str = "<article class=\"msg\"";
    let mut articles = Vec::new();
    let mut rest = page;
    while let Some(i) = rest.find(OPEN) {
        let from = rest.get(i..).unwrap_or_default();
        let end =
            from.find("</article>").ok_or_else(|| Error::invalid("data/transcript.html is malformed"))?;
        let article = from.get(..end).unwrap_or_default();
        let eid = article
            .split_once("data-event-id=\"")
            .and_then(|(_, r)| r.split_once('"'))
            .map(|(e, _)| unescape(e))
            .ok_or_else(|| Error::invalid("data/transcript.html is malformed"))?;
        articles.push((eid, text_of(article)));
        rest = from.get(end..).unwrap_or_default();
    }
    if articles.len() != lines.len() {
        return Err(Error::invalid("data/transcript.html and data/messages.jsonl list different messages"));
    }
    for ((eid, text), m) in articles.iter().zip(lines) {
        if Some(eid.as_str()) != str_of(m, "eventId") {
            return Err(Error::invalid(
                "data/transcript.html and data/messages.jsonl list different messages",
            ));
        }
        let mut needed: Vec<&str> =
            [str_of(m, "sender"), str_of(m, "sentAt"), str_of(m, "body")].into_iter().flatten().collect();
        for v in m.get("versions").and_then(Value::as_array).into_iter().flatten() {
            needed.extend(str_of(v, "sentAt"));
            if str_of(v, "kind") != Some("REDACTION") {
                needed.extend(str_of(v, "body"));
            }
        }
        let trust = sender_trust(m, eid)?;
        needed.extend(trust.and_then(trust_label));
        if let Some(r) = m.get("redaction").filter(|r| !r.is_null()) {
            needed.extend([str_of(r, "by"), str_of(r, "at"), str_of(r, "reason")].into_iter().flatten());
        }
        if needed.iter().any(|s| !text.contains(s)) {
            return Err(Error::invalid(format!(
                "data/transcript.html does not show what messages.jsonl says of {eid}"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use argus_domain::SenderTrust;

    use super::{text_of, unescape};
    use crate::{
        transcript::{escape, trust_label},
        write::VERIFY_PY,
    };

    /// `verify.py` knows the five codes and looks for the labels the transcript writes; no
    /// label is part of another.
    #[test]
    fn verify_py_holds_every_trust_and_its_label() {
        for trust in SenderTrust::ALL {
            let code = format!("\"{}\": ", trust.code());
            let entry = match trust_label(trust) {
                Some(label) => format!("{code}\"{label}\","),
                None => format!("{code}None,"),
            };
            assert!(VERIFY_PY.contains(&entry), "verify.py lacks {entry}");
            for other in SenderTrust::ALL.into_iter().filter(|o| *o != trust) {
                if let (Some(a), Some(b)) = (trust_label(trust), trust_label(other)) {
                    assert!(!a.contains(b), "{a:?} holds {b:?}");
                }
            }
        }
    }

    /// What the transcript escapes reads back as the text it was, markup included.
    #[test]
    fn escaped_text_reads_back() {
        for text in ["<script>alert(\"x\")</script> & 'q'", "a &amp; b", "été — ligne\n2", "&#233;&x;&"] {
            assert_eq!(unescape(&escape(text)), text);
            assert_eq!(text_of(&format!("<p class=\"body\">{}</p>", escape(text))), text);
        }
        assert_eq!(unescape("&#233;t&#xE9; &middot; &bogus; &"), "été · &bogus; &");
        assert_eq!(text_of("<article><b>Ana</b> <time>10h</time></article>"), "Ana 10h");
    }
}
