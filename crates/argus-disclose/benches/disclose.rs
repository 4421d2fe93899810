//! Disclosure of a large room against `sha256sum` + `sha512sum` over the same bytes, and
//! `verify.py` on the package it wrote.
//!
//! A room of `ARGUS_DISCLOSE_MESSAGES` messages (default 100,000; one in ten edited) with
//! `ARGUS_DISCLOSE_FILES` files (default 1,000) totalling `ARGUS_DISCLOSE_BYTES` (default 1 GB),
//! from the in-memory log and a file blob store in a temporary folder (`ARGUS_BENCH_DIR`, else
//! the system's). Targets: disclosure ≥ 0.5× the time of the two hash tools over the package's
//! files; `verify.py` under 60 s.
//!
//! `cargo bench -p argus-disclose --bench disclose` (for a quick run:
//! `ARGUS_DISCLOSE_MESSAGES=10000 ARGUS_DISCLOSE_FILES=100 ARGUS_DISCLOSE_BYTES=100000000`).

#![expect(clippy::unwrap_used, clippy::print_stdout, reason = "a benchmark binary reports and fails loudly")]

use std::{
    convert::Infallible,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use argus_crypto::{package_signing::PackageSigner, tlog::LogSigner};
use argus_disclose::{
    Keys, Request,
    testing::{MemoryLog, SourceBuilder},
    verify_package, write_package,
};
use argus_domain::{
    AttachmentStatus, MediaRef, MessageVersion,
    testing::{MessageRecordBuilder, ViewerBuilder},
};
use argus_media::{BlobStore as _, FileBlobStore, Staging};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `len` bytes that differ from one file to the next (xorshift).
fn file_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs `tool` over `files` (as `xargs` would, in batches); returns the time taken.
fn hash_tool(tool: &str, files: &[PathBuf]) -> Duration {
    let started = Instant::now();
    for batch in files.chunks(2_000) {
        let status = Command::new(tool).args(batch).stdout(Stdio::null()).status().unwrap();
        assert!(status.success(), "{tool} failed");
    }
    started.elapsed()
}

#[tokio::main]
async fn main() {
    let messages = env("ARGUS_DISCLOSE_MESSAGES", 100_000);
    let files = env("ARGUS_DISCLOSE_FILES", 1_000).max(1);
    let bytes = env("ARGUS_DISCLOSE_BYTES", 1_000_000_000);
    let base = std::env::var_os("ARGUS_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(base).unwrap();
    println!("disclosure bench: {messages} messages, {files} files, {bytes} bytes of files");

    // The room: runs of 1,000 messages, one in ten edited, a file every messages/files.
    let setup = Instant::now();
    let store = FileBlobStore::open(dir.path().join("blobs")).unwrap();
    let staging = Staging::new(dir.path().join("staging")).unwrap();
    let org = "dgsi".parse().unwrap();
    let room = "!bench:agent.tchap.gouv.fr".parse().unwrap();
    let mut builder = SourceBuilder::new(&org, &room);
    let every = (messages / files).max(1);
    let file_len = usize::try_from(bytes / files).unwrap();
    let t0 = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    let mut held = 0;
    for n in 0..messages {
        if n > 0 && n % 1_000 == 0 {
            builder.new_run();
        }
        let at = t0 + time::Duration::seconds(i64::try_from(n).unwrap());
        let id = format!("$bench{n}");
        let sender = if n % 2 == 0 { "@ana:agent.tchap.gouv.fr" } else { "@bob:agent.tchap.gouv.fr" };
        let mut m = MessageRecordBuilder::new(&id)
            .sender(sender)
            .body(format!("Message {n}: point de situation, rien à signaler <ok> & suite"))
            .sent_at(at)
            .build();
        if n % 10 == 3 {
            m.edited = true;
            let v = |eid: &str, body: String| MessageVersion {
                event_id: eid.parse().unwrap(),
                sender: m.sender.clone(),
                sent_at: at,
                msgtype: Some("m.text".into()),
                body: Some(body),
            };
            m.versions = vec![
                v(&id, format!("Message {n} (premier jet)")),
                v(&format!("{id}e"), m.body.clone().unwrap()),
            ];
        }
        let with_file = n % every == 0 && held < files;
        if with_file {
            m.msgtype = Some("m.file".into());
            m.media = Some(MediaRef {
                uri: Some(format!("mxc://agent.tchap.gouv.fr/f{n}")),
                mimetype: Some("application/octet-stream".into()),
                size: Some(file_len as u64),
                filename: Some(format!("piece-{n}.bin")),
                file: None,
            });
        }
        builder.message(m);
        if with_file {
            let content = file_bytes(n, file_len);
            let body = futures::stream::iter([Ok::<_, Infallible>(bytes::Bytes::from(content.clone()))]);
            let staged = staging.stage(body, u64::MAX).await.unwrap();
            store.put(&staged).await.unwrap();
            builder.attach(
                &content,
                &format!("piece-{n}.bin"),
                "application/octet-stream",
                AttachmentStatus::Stored,
            );
            held += 1;
        }
    }
    let log = MemoryLog::new();
    let source = builder.build(&log);
    println!("setup: {:.1?}", setup.elapsed());

    let keys = Keys {
        log: LogSigner::generate("argus-tchap").unwrap().0,
        package: PackageSigner::generate().unwrap().0,
        log_name: "argus-tchap".into(),
    };
    let request = Request {
        viewer: ViewerBuilder::new("dgsi").actor("juriste@interieur.gouv.fr").build(),
        room_id: room.clone(),
        from: None,
        to: None,
        include_quarantined: false,
    };
    let bag = dir.path().join("package");
    let started = Instant::now();
    let summary = write_package(&source, &log, &store, &keys, &request, &bag).await.unwrap();
    let disclose = started.elapsed();
    let package_files = files_under(&bag);
    let package_bytes: u64 = package_files.iter().map(|p| std::fs::metadata(p).unwrap().len()).sum();
    println!(
        "disclose: {disclose:.2?} ({} messages, {} versions, {} files; package {} files, {package_bytes} bytes)",
        summary.messages,
        summary.versions,
        summary.attachments,
        package_files.len()
    );

    let sha256 = hash_tool("sha256sum", &package_files);
    let sha512 = hash_tool("sha512sum", &package_files);
    let tools = sha256 + sha512;
    println!("sha256sum: {sha256:.2?}, sha512sum: {sha512:.2?}, together {tools:.2?}");
    println!(
        "ratio: {:.2}x the hash tools' speed (target >= 0.5)",
        tools.as_secs_f64() / disclose.as_secs_f64()
    );

    let started = Instant::now();
    let report = verify_package(&bag, keys.log.verifier_key(), &keys.package.public_key()).unwrap();
    println!("verify_package: {:.2?} ({} versions)", started.elapsed(), report.versions);

    match argus_testkit::verifiers::python() {
        Some(python) => {
            let started = Instant::now();
            let status = Command::new(python)
                .arg(bag.join("data/verify/verify.py"))
                .args(["--quiet", "--log-key", keys.log.verifier_key()])
                .arg(&bag)
                .status()
                .unwrap();
            assert!(status.success(), "verify.py refused the package");
            println!("verify.py: {:.2?} (target < 60 s)", started.elapsed());
        }
        None => println!("verify.py: skipped (no Python with cryptography)"),
    }
}
