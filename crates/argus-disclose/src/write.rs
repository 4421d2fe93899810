//! Writing a package from a [`DisclosureSource`] and a [`LogView`]: check, write the payload
//! into a folder beside the destination, journal the disclosure, sign a checkpoint that includes
//! it, add the log's records and proofs, close the bag, sign it, move it into place.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io::Write as _,
    path::Path,
};

use argus_crypto::tlog::{Checkpoint, leaf_hash, tlog_proof_text, verify_inclusion};
use argus_domain::{
    Sha256Digest,
    oversight::{AccessAction, AccessEntry, DisclosureFields, ENCODING_VERSION, LogEntry},
};
use argus_media::BlobStore;
use argus_store::{DisclosureSource, SourceVersion};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use futures::StreamExt as _;
use time::OffsetDateTime;

use crate::{
    Error, Keys, LogView, Request, Result, Summary, bag, check,
    hashing::Payload,
    messages::{self, Index, packaged, utc},
    transcript::{self, Heading},
    tree::Subtrees,
};

/// `verify.py`, shipped in every package.
pub(crate) const VERIFY_PY: &str = include_str!("../verify/verify.py");
/// How to verify a package, shipped in every package.
pub(crate) const VERIFY_README: &str = include_str!("../verify/README.md");

/// Writes the package of `source` (read for `request`) into `out_dir`, with `log` the
/// organisation's transparency log. See [`crate::disclose`].
///
/// # Errors
///
/// As [`crate::disclose`].
pub async fn write_package(
    source: &DisclosureSource,
    log: &dyn LogView,
    blobs: &dyn BlobStore,
    keys: &Keys,
    request: &Request,
    out_dir: &Path,
) -> Result<Summary> {
    let checked = check::source(source)?;
    if out_dir.exists() && std::fs::read_dir(out_dir)?.next().is_some() {
        return Err(Error::Exists);
    }
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent)?;
    // Only the kind of the error is kept: tempfile's names the folder.
    let staging = tempfile::Builder::new()
        .prefix(".disclosure-")
        .tempdir_in(parent)
        .map_err(|e| std::io::Error::from(e.kind()))?;
    let summary = write_bag(source, &checked, log, blobs, keys, request, staging.path()).await?;
    if out_dir.exists() {
        std::fs::remove_dir(out_dir)?;
    }
    std::fs::rename(staging.keep(), out_dir)?;
    Ok(summary)
}

/// The range as the package writes it.
pub(crate) fn range_text(from: Option<OffsetDateTime>, to: Option<OffsetDateTime>) -> String {
    let from = from.map_or_else(|| "début / start".to_owned(), utc);
    let to = to.map_or_else(|| "fin / end".to_owned(), utc);
    format!("{from} .. {to}")
}

async fn write_bag(
    source: &DisclosureSource,
    checked: &check::Checked,
    log: &dyn LogView,
    blobs: &dyn BlobStore,
    keys: &Keys,
    request: &Request,
    root: &Path,
) -> Result<Summary> {
    let viewer = &request.viewer;
    let org = &viewer.org;
    let package_id = uuid::Uuid::new_v4().to_string();
    let range = range_text(request.from, request.to);
    let mut payload = Payload::new(root)?;
    let index = Index::new(source, &checked.purged, request.include_quarantined);

    // Messages and transcript, in one pass.
    let mut jsonl = payload.create("data/messages.jsonl")?;
    let mut html = payload.create("data/transcript.html")?;
    let heading = Heading {
        package_id: &package_id,
        org: org.as_str(),
        room_id: source.room.room_id.as_str(),
        room_name: source.room.name.as_deref(),
        range: &range,
        requester: viewer.actor.as_str(),
    };
    transcript::start(&mut html, &heading)?;
    // Filed at the room's level at least (as the audit trail files records of a room): a reader
    // below it learns nothing of the disclosure, even of a range holding only lower messages.
    let mut classification = source.room.classification;
    let mut version_count = 0_u64;
    for (n, stored) in source.messages.iter().enumerate() {
        classification = classification.max(stored.classification);
        let line = index.line(stored);
        version_count += line.versions.len() as u64;
        serde_json::to_writer(&mut jsonl, &line).map_err(std::io::Error::other)?;
        jsonl.write_all(b"\n")?;
        transcript::message(&mut html, n, &line)?;
    }
    let message_count = source.messages.len() as u64;
    transcript::end(&mut html, message_count)?;
    let messages_sha256 = payload.finish("data/messages.jsonl", jsonl)?.sha256;
    payload.finish("data/transcript.html", html)?;

    // Files.
    let mut files = HashSet::new();
    for stored in &source.messages {
        let Some(a) = &stored.attachment else { continue };
        let Some(digest) = a.sha256 else { continue };
        if !packaged(a.status, request.include_quarantined) || !files.insert(digest) {
            continue;
        }
        copy_blob(&mut payload, blobs, &digest, stored.message.event_id.as_str()).await?;
    }

    // Versions and their proofs in their runs' eventsRoot.
    let mut by_run: HashMap<i64, Vec<&SourceVersion>> = HashMap::new();
    for v in source.versions.iter().filter(|v| !checked.purged.contains(&(v.run_id, v.position))) {
        by_run.entry(v.run_id).or_default().push(v);
    }
    for run in &source.runs {
        let Some(versions) = by_run.get(&run.run_id) else { continue };
        let tree = Subtrees::new(&run.leaves)?;
        let run_index = run.entry.index;
        let versions_name = format!("data/{}", messages::versions_file(run_index));
        let proofs_name = format!("data/{}", messages::proofs_file(run_index));
        let mut lines = payload.create(&versions_name)?;
        let mut proofs = payload.create(&proofs_name)?;
        for v in versions {
            lines.write_all(&v.leaf.canonical())?;
            lines.write_all(b"\n")?;
            write!(proofs, "{}", v.position)?;
            for hash in tree.inclusion(v.position, tree.size())? {
                write!(proofs, " {}", STANDARD.encode(hash))?;
            }
            proofs.write_all(b"\n")?;
        }
        payload.finish(&versions_name, lines)?;
        payload.finish(&proofs_name, proofs)?;
    }

    // The disclosure's own entry, then a checkpoint that includes it.
    let now = OffsetDateTime::now_utc();
    let entry = AccessEntry {
        action: AccessAction::Disclose,
        actor: viewer.actor.as_str().to_owned(),
        at: ms(now),
        classification,
        disclosure: Some(DisclosureFields {
            attachment_count: files.len() as u64,
            clearance: viewer.clearance,
            from: request.from.map(ms),
            messages_sha256,
            package_id: package_id.clone(),
            to: request.to.map(ms),
            version_count,
        }),
        item_count: message_count,
        org: org.as_str().to_owned(),
        query: None,
        room_ids: vec![source.room.room_id.as_str().to_owned()],
        r#type: AccessEntry::TYPE.to_owned(),
        v: ENCODING_VERSION,
    };
    let log_index = log.record_access(&entry)?;
    let head = log.log_head(org)?;
    if head.size <= log_index {
        return Err(Error::Log(format!("the head ({}) does not include entry {log_index}", head.size)));
    }
    let checkpoint = Checkpoint {
        origin: format!("{}/{}", keys.log_name, org.as_str()),
        size: head.size,
        root: head.root,
    };
    let note = keys.log.sign(&checkpoint)?;
    payload.write("data/log/checkpoint", note.as_bytes())?;

    // The records the package relies on, each with its proof against the checkpoint.
    let mut expected: HashMap<u64, Vec<u8>> = HashMap::new();
    for run in &source.runs {
        expected.insert(run.entry.index, run.entry.bytes.clone());
    }
    for a in &source.attachments {
        if let Some(e) = &a.entry {
            expected.insert(e.index, e.bytes.clone());
        }
    }
    expected.insert(log_index, LogEntry::Access(entry.clone()).canonical());
    let indexes: Vec<u64> = expected.keys().copied().collect::<BTreeSet<_>>().into_iter().collect();
    let records = log.log_entries(org, &indexes)?;
    let mut seen = BTreeSet::new();
    let mut mismatched = Vec::new();
    for record in &records {
        if expected.get(&record.index) != Some(&record.bytes) {
            mismatched.push(format!("log entry {}", record.index));
            continue;
        }
        seen.insert(record.index);
        let proof = log.log_inclusion(org, record.index, head.size)?;
        verify_inclusion(record.index, head.size, leaf_hash(&record.bytes), &proof, head.root)
            .map_err(|_| Error::Log(format!("the proof of entry {} does not verify", record.index)))?;
        payload.write(&format!("data/log/records/{}", record.index), &record.bytes)?;
        payload.write(
            &format!("data/log/proofs/{}.tlog-proof", record.index),
            tlog_proof_text(record.index, &proof, &note).as_bytes(),
        )?;
    }
    mismatched.extend(indexes.iter().filter(|i| !seen.contains(i)).map(|i| format!("log entry {i}")));
    mismatched.dedup();
    if !mismatched.is_empty() {
        return Err(Error::Mismatch { rows: mismatched });
    }

    payload.write("data/verify/verify.py", VERIFY_PY.as_bytes())?;
    payload.write("data/verify/README.md", VERIFY_README.as_bytes())?;
    let (octets, count) = payload.close()?;

    let info = bag::Info {
        package_id: &package_id,
        org: org.as_str(),
        room_id: source.room.room_id.as_str(),
        range: &range,
        from: request.from,
        to: request.to,
        requester: viewer.actor.as_str(),
        clearance: viewer.clearance,
        checkpoint_size: head.size,
        log_index,
        octets,
        files: count,
    };
    bag::close(root, &info, &keys.package)?;
    Ok(Summary {
        package_id,
        messages: message_count,
        versions: version_count,
        attachments: files.len() as u64,
        checkpoint_size: head.size,
        log_index,
    })
}

/// Milliseconds since the epoch.
fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Copies a held file into `data/attachments/<sha256>`, checking its digest as it streams.
async fn copy_blob(
    payload: &mut Payload,
    blobs: &dyn BlobStore,
    digest: &Sha256Digest,
    event_id: &str,
) -> Result<()> {
    let name = format!("data/attachments/{}", digest.to_hex());
    let mut file = payload.create_large(&name)?;
    let mut stream = blobs.get(digest, None).await?;
    while let Some(chunk) = stream.next().await {
        file.write_chunk(chunk?)?;
    }
    if payload.finish(&name, file)?.sha256 != digest.to_hex() {
        return Err(Error::Mismatch { rows: vec![event_id.to_owned()] });
    }
    Ok(())
}
