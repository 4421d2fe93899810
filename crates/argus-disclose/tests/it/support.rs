//! A disclosed room with edits, a redaction and files, and the tools that check a package.

use std::{
    convert::Infallible,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use argus_crypto::{package_signing::PackageSigner, tlog::LogSigner};
use argus_disclose::{
    Keys, Request, Summary,
    testing::{MemoryLog, SourceBuilder},
    write_package,
};
use argus_domain::{
    AttachmentStatus, MediaRef, MessageVersion,
    testing::{MessageRecordBuilder, ViewerBuilder},
};
use argus_media::{BlobStore as _, FileBlobStore, Staging};
use argus_store::DisclosureSource;
use sha2::{Digest as _, Sha256, Sha512};
use tempfile::TempDir;
use time::{Duration, OffsetDateTime};

pub(crate) const ORG: &str = "dgsi";
pub(crate) const ROOM: &str = "!crise:agent.tchap.gouv.fr";
pub(crate) const ANA: &str = "@ana:agent.tchap.gouv.fr";
pub(crate) const BOB: &str = "@bob:agent.tchap.gouv.fr";
pub(crate) const PDF: &[u8] =
    b"%PDF-1.4\n% note de situation\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n";
pub(crate) const TRICKY: &str = "<script>alert(\"x\")</script> & 'quotes'\nligne 2 — été";

pub(crate) fn t(minutes: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_780_000_000).unwrap() + Duration::minutes(minutes)
}

pub(crate) fn utc(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(&time::format_description::well_known::Rfc3339).unwrap()
}

pub(crate) fn png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend((0..4000_u32).map(|i| (i * 7 % 251) as u8));
    bytes
}

pub(crate) fn infected() -> Vec<u8> {
    b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*".to_vec()
}

/// The room's messages: plain, edited twice, redacted, two files (and an infected one), a body
/// full of characters HTML must escape.
pub(crate) fn source(log: &MemoryLog) -> (DisclosureSource, Vec<Vec<u8>>) {
    let mut b = SourceBuilder::new(&ORG.parse().unwrap(), &ROOM.parse().unwrap());
    b.message(
        MessageRecordBuilder::new("$m1").sender(ANA).body("Point de situation à 10h").sent_at(t(0)).build(),
    );
    let mut edited =
        MessageRecordBuilder::new("$m2").sender(BOB).body("Réunion à 15h (salle B)").sent_at(t(1)).build();
    edited.edited = true;
    edited.versions = vec![
        version("$m2", BOB, t(1), "Réunion à 14h"),
        version("$m2e1", BOB, t(2), "Réunion à 15h"),
        version("$m2e2", BOB, t(3), "Réunion à 15h (salle B)"),
    ];
    b.message(edited);
    b.message(MessageRecordBuilder::new("$m3").sender(ANA).body("erreur de salon").sent_at(t(4)).build());
    b.message(
        MessageRecordBuilder::new("$m3r")
            .sender(ANA)
            .sent_at(t(5))
            .redacted(BOB, t(6), Some("hors sujet / off topic"))
            .build(),
    );
    b.new_run();
    let mut file =
        MessageRecordBuilder::new("$m4").sender(ANA).msgtype("m.file").body("note.pdf").sent_at(t(7)).build();
    file.media = Some(media("mxc://agent.tchap.gouv.fr/pdf", "application/pdf", PDF.len()));
    b.message(file).attach(PDF, "note.pdf", "application/pdf", AttachmentStatus::Stored);
    let image = png();
    let mut img = MessageRecordBuilder::new("$m5")
        .sender(BOB)
        .msgtype("m.image")
        .body("carte.png")
        .sent_at(t(8))
        .build();
    img.media = Some(media("mxc://agent.tchap.gouv.fr/png", "image/png", image.len()));
    b.message(img).attach(&image, "carte.png", "image/png", AttachmentStatus::Stored);
    let bad = infected();
    let mut virus = MessageRecordBuilder::new("$m6")
        .sender(BOB)
        .msgtype("m.file")
        .body("facture.com")
        .sent_at(t(9))
        .build();
    virus.media = Some(media("mxc://agent.tchap.gouv.fr/com", "application/octet-stream", bad.len()));
    b.message(virus).attach(&bad, "facture.com", "application/octet-stream", AttachmentStatus::Infected);
    b.message(MessageRecordBuilder::new("$m7").sender(ANA).body(TRICKY).sent_at(t(10)).build());
    // A later run stores the redaction of $m3, whose content is then purged (no legal hold).
    b.new_run();
    b.redact_later("$m3", ANA, t(11), Some("doublon"));
    (b.build(log), vec![PDF.to_vec(), image, bad])
}

fn version(event_id: &str, sender: &str, at: OffsetDateTime, body: &str) -> MessageVersion {
    MessageVersion {
        event_id: event_id.parse().unwrap(),
        sender: sender.parse().unwrap(),
        sent_at: at,
        msgtype: Some("m.text".to_owned()),
        body: Some(body.to_owned()),
    }
}

fn media(uri: &str, mimetype: &str, size: usize) -> MediaRef {
    MediaRef {
        uri: Some(uri.to_owned()),
        mimetype: Some(mimetype.to_owned()),
        size: Some(size as u64),
        filename: None,
        file: None,
    }
}

pub(crate) struct Built {
    pub(crate) dir: TempDir,
    pub(crate) bag: PathBuf,
    pub(crate) log_key: String,
    pub(crate) package_key: String,
    pub(crate) keys: Keys,
    pub(crate) summary: Summary,
    pub(crate) log: MemoryLog,
}

/// Fresh keys; the log key's base64 holds a `+` (as about half do), which a verifier must not
/// take for a separator.
pub(crate) fn keys() -> Keys {
    let log = std::iter::repeat_with(|| LogSigner::generate("argus-tchap").unwrap().0)
        .find(|k| k.verifier_key().splitn(3, '+').nth(2).is_some_and(|b64| b64.contains('+')))
        .unwrap();
    Keys { log, package: PackageSigner::generate().unwrap().0, log_name: "argus-tchap".to_owned() }
}

pub(crate) fn request(include_quarantined: bool) -> Request {
    Request {
        viewer: ViewerBuilder::new(ORG).actor("juriste@interieur.gouv.fr").build(),
        room_id: ROOM.parse().unwrap(),
        from: None,
        to: None,
        include_quarantined,
    }
}

/// A blob store holding `files`.
pub(crate) async fn blobs(dir: &Path, files: &[Vec<u8>]) -> FileBlobStore {
    let store = FileBlobStore::open(dir.join("blobs")).unwrap();
    let staging = Staging::new(dir.join("staging")).unwrap();
    for bytes in files {
        let body = futures::stream::iter([Ok::<_, Infallible>(bytes::Bytes::from(bytes.clone()))]);
        let staged = staging.stage(body, 1 << 30).await.unwrap();
        store.put(&staged).await.unwrap();
    }
    store
}

pub(crate) async fn build_with(include_quarantined: bool) -> Built {
    build_from(source, include_quarantined).await
}

/// The package of the room `source` makes (with its files) in a fresh log.
pub(crate) async fn build_from(
    source: impl FnOnce(&MemoryLog) -> (DisclosureSource, Vec<Vec<u8>>),
    include_quarantined: bool,
) -> Built {
    let dir = tempfile::tempdir().unwrap();
    let log = MemoryLog::new();
    let (source, files) = source(&log);
    let store = blobs(dir.path(), &files).await;
    let keys = keys();
    let bag = dir.path().join("out").join("package");
    let summary =
        write_package(&source, &log, &store, &keys, &request(include_quarantined), &bag).await.unwrap();
    let log_key = keys.log.verifier_key().to_owned();
    let package_key = keys.package.public_key();
    Built { dir, bag, log_key, package_key, keys, summary, log }
}

pub(crate) async fn build() -> Built {
    build_with(false).await
}

/// A copy of the bag, to alter.
pub(crate) fn copy(bag: &Path, to: &Path) {
    for entry in walk(bag) {
        let rel = entry.strip_prefix(bag).unwrap();
        let dest = to.join(rel);
        fs::create_dir_all(dest.parent().unwrap()).unwrap();
        fs::copy(&entry, &dest).unwrap();
    }
}

/// Every file under `dir`.
pub(crate) fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// Rewrites the manifests, `Payload-Oxum` and the tag manifest of an altered bag, and signs it
/// with `signer`: what an insider holding the package key could do.
pub(crate) fn rebag(bag: &Path, signer: &PackageSigner) {
    let mut m256 = String::new();
    let mut m512 = String::new();
    let (mut octets, mut count) = (0, 0);
    for file in walk(&bag.join("data")) {
        let bytes = fs::read(&file).unwrap();
        let rel = file.strip_prefix(bag).unwrap().to_str().unwrap().to_owned();
        m256.push_str(&format!("{}  {rel}\n", hex::encode(Sha256::digest(&bytes))));
        m512.push_str(&format!("{}  {rel}\n", hex::encode(Sha512::digest(&bytes))));
        octets += bytes.len();
        count += 1;
    }
    fs::write(bag.join("manifest-sha256.txt"), m256).unwrap();
    fs::write(bag.join("manifest-sha512.txt"), m512).unwrap();
    let info = fs::read_to_string(bag.join("bag-info.txt")).unwrap();
    let info: String = info
        .lines()
        .map(|l| {
            if l.starts_with("Payload-Oxum:") {
                format!("Payload-Oxum: {octets}.{count}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(bag.join("bag-info.txt"), info).unwrap();
    let mut tags = String::new();
    for name in ["bagit.txt", "bag-info.txt", "manifest-sha256.txt", "manifest-sha512.txt"] {
        tags.push_str(&format!(
            "{}  {name}\n",
            hex::encode(Sha512::digest(fs::read(bag.join(name)).unwrap()))
        ));
    }
    fs::write(bag.join("tagmanifest-sha512.txt"), &tags).unwrap();
    let sig = signer.sign(tags.as_bytes(), "re-signed").unwrap();
    fs::write(bag.join("tagmanifest-sha512.txt.minisig"), sig).unwrap();
}

/// What the external tools say of a bag; `None` where a tool is unavailable (skipped loudly).
#[derive(Debug)]
pub(crate) struct Tools {
    pub(crate) bagit: Option<bool>,
    pub(crate) minisign: Option<bool>,
    pub(crate) verify_py: Option<bool>,
    /// What verify.py printed.
    pub(crate) verify_py_output: String,
}

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        eprintln!("{command:?} failed:\n{text}");
    }
    (out.status.success(), text)
}

pub(crate) fn tools(bag: &Path, log_key: &str, package_key: &str) -> Tools {
    let python = argus_testkit::verifiers::python();
    let minisign = argus_testkit::verifiers::minisign();
    let verify_py = python.as_ref().map(|py| {
        run(Command::new(py).arg(bag.join("data/verify/verify.py")).args(["--log-key", log_key]).arg(bag))
    });
    Tools {
        bagit: python
            .as_ref()
            .map(|py| run(Command::new(py).args(["-m", "bagit", "--quiet", "--validate"]).arg(bag)).0),
        minisign: minisign.map(|m| {
            run(Command::new(m).current_dir(bag).args(["-Vm", "tagmanifest-sha512.txt", "-P", package_key])).0
        }),
        verify_py: verify_py.as_ref().map(|r| r.0),
        verify_py_output: verify_py.map(|r| r.1).unwrap_or_default(),
    }
}
