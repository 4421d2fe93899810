//! `GET`/`HEAD /media/{id}` over HTTP: the bytes byte for byte to a cleared reader, streamed
//! from a blob source; one 404 for every file the caller may not have; quarantine; the
//! security headers; ranges; authentication as `/graphql`; the refusals without a scanner or
//! a blob store.

use std::{
    io::{self, SeekFrom},
    ops::Range,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use argus_domain::{
    Classification::{Restricted, Secret, TopSecret},
    MediaRef, Scope, Sha256Digest, Viewer,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
};
use argus_server::{BlobSource, media::BlobStream};
use argus_store::{BlobVerdict, FetchOutcome, NewBlob, ScanRecord, Store};
use bytes::Bytes;
use futures::{StreamExt as _, future::BoxFuture};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};

use crate::harness::{self, TestServer};

/// A blob store of files named by their hex digest in a folder; counts what it opens.
pub(crate) struct DirBlobs {
    root: PathBuf,
    opened: AtomicUsize,
}

impl BlobSource for DirBlobs {
    fn open(
        &self,
        sha256: &Sha256Digest,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'_, io::Result<BlobStream>> {
        let path = self.root.join(sha256.to_hex());
        self.opened.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let mut file = tokio::fs::File::open(&path).await?;
            let (start, left) = match range {
                Some(r) => (r.start, r.end - r.start),
                None => (0, file.metadata().await?.len()),
            };
            file.seek(SeekFrom::Start(start)).await?;
            let chunks = futures::stream::try_unfold((file, left), |(mut file, left)| async move {
                if left == 0 {
                    return Ok(None);
                }
                let mut buf = vec![0_u8; usize::try_from(left.min(16 * 1024)).unwrap_or(16 * 1024)];
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short blob"));
                }
                buf.truncate(n);
                Ok(Some((Bytes::from(buf), (file, left - n as u64))))
            });
            Ok(chunks.boxed())
        })
    }
}

/// The reference ids of the fixture.
pub(crate) struct Files {
    /// dgsi, SECRET, clean PDF of [`report`]'s bytes, named `rapport final.pdf`.
    pub(crate) stored: i64,
    /// dgsi, SECRET, infected.
    pub(crate) infected: i64,
    /// dgsi, SECRET, held but not scanned.
    unscanned: i64,
    /// dgsi, SECRET, clean, sniffed as HTML, named `../page.html`.
    html: i64,
    /// dgsi, SECRET, never fetched.
    pending: i64,
    /// anssi, clean.
    foreign: i64,
}

/// 300,000 bytes of a pattern (several chunks of the blob source).
fn report() -> Vec<u8> {
    (0..300_000_u32).map(|i| u8::try_from((i * 7 + i / 256) % 251).unwrap_or_default()).collect()
}

const INFECTED: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$ARGUS-TEST-MARKER";
const HTML: &[u8] = b"<html><script>alert(document.cookie)</script></html>";

fn store_viewer(org: &str) -> Viewer {
    ViewerBuilder::new(org).actor(&format!("agent@{org}")).clearance(TopSecret).scopes([Scope::Read]).build()
}

fn file_message(n: usize, media_id: &str, filename: &str) -> argus_domain::MessageRecord {
    MessageRecordBuilder::new(&format!("$m{n}:tchap.test"))
        .msgtype("m.file")
        .sent_at(
            time::OffsetDateTime::UNIX_EPOCH
                + time::Duration::days(20_000)
                + time::Duration::minutes(n as i64),
        )
        .media(MediaRef {
            uri: Some(format!("mxc://tchap.test/{media_id}")),
            mimetype: Some("application/pdf".to_owned()),
            size: None,
            filename: Some(filename.to_owned()),
            file: None,
        })
        .build()
}

/// A file of the fixture: media id, name, bytes and sniffed type once fetched, scan verdict.
type FileSpec<'a> = (&'a str, &'a str, Option<(&'a [u8], &'a str)>, Option<BlobVerdict>);

/// Stores `files` (media id, name, bytes and sniffed type, verdict) in a room of `org` at
/// `level`, fetched into `blobs` and scanned as given; returns each reference id, in order.
fn store_files(
    store: &Store,
    blobs: &std::path::Path,
    org: &str,
    level: argus_domain::Classification,
    files: &[FileSpec<'_>],
) -> Vec<i64> {
    let viewer = store_viewer(org);
    let room = format!("!files-{org}:tchap.test");
    let messages = files.iter().enumerate().map(|(n, (id, name, ..))| file_message(n, id, name));
    let snapshot = RoomSnapshotBuilder::new(&room).messages(messages).build();
    let now = time::OffsetDateTime::now_utc();
    let run = argus_store::IngestionRun { viewer: viewer.clone(), classification: level, started_at: now };
    store.record_ingestion(&run, &snapshot).unwrap_or_else(|e| panic!("{e}"));
    let lease = std::time::Duration::from_secs(60);
    let room_id = room.parse().unwrap_or_else(|e| panic!("{e}"));
    let jobs = store
        .claim_room_media(&viewer.org, &room_id, "run-1", now, lease, 20)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut ids = Vec::new();
    for (id, _, content, verdict) in files {
        let job = jobs
            .iter()
            .find(|j| j.mxc_uri == format!("mxc://tchap.test/{id}"))
            .unwrap_or_else(|| panic!("no job for {id}"));
        ids.push(job.id);
        let Some((bytes, sniffed)) = content else { continue };
        let sha256 = Sha256Digest::of(bytes);
        std::fs::write(blobs.join(sha256.to_hex()), bytes).unwrap_or_else(|e| panic!("{e}"));
        let blob = NewBlob { sha256, size: bytes.len() as u64, sniffed_mimetype: (*sniffed).to_owned() };
        assert!(
            store
                .record_media(job.id, "run-1", &FetchOutcome::Fetched(blob), now)
                .unwrap_or_else(|e| panic!("{e}"))
        );
        if let Some(verdict) = verdict {
            let scan =
                ScanRecord { verdict: verdict.clone(), engine: "ClamAV 1.4.3/27500".to_owned(), at: now };
            assert!(store.record_scan(&sha256, &scan).unwrap_or_else(|e| panic!("{e}")));
        }
    }
    ids
}

/// A server with a scanner configured and a folder blob store, and the fixture's files.
pub(crate) async fn server_with_files() -> (TestServer, Files, Arc<DirBlobs>, TempDir) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blob_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = harness::config(&dir);
    config.media.clamd = Some("tcp://127.0.0.1:3310".parse().unwrap_or_else(|e| panic!("{e}")));
    let blobs = Arc::new(DirBlobs { root: blob_dir.path().to_path_buf(), opened: AtomicUsize::new(0) });
    let source: Arc<dyn BlobSource> = blobs.clone();
    let (server, store) = TestServer::start_with_blobs(dir, config, Some(source)).await;
    let root = blob_dir.path().to_path_buf();
    let files = tokio::task::spawn_blocking(move || {
        let report = report();
        let dgsi = store_files(
            &store,
            &root,
            "dgsi",
            Secret,
            &[
                (
                    "rapport",
                    "rapport final.pdf",
                    Some((&report, "application/pdf")),
                    Some(BlobVerdict::Clean),
                ),
                (
                    "sample",
                    "sample.exe",
                    Some((INFECTED, "application/x-msdownload")),
                    Some(BlobVerdict::Infected("Argus.Test.Marker".to_owned())),
                ),
                ("waiting", "waiting.pdf", Some((b"not scanned yet", "text/plain")), None),
                ("page", "../page.html", Some((HTML, "text/html")), Some(BlobVerdict::Clean)),
                ("later", "later.pdf", None, None),
            ],
        );
        let anssi = store_files(
            &store,
            &root,
            "anssi",
            Restricted,
            &[("theirs", "theirs.txt", Some((b"anssi's own file", "text/plain")), Some(BlobVerdict::Clean))],
        );
        Files {
            stored: dgsi[0],
            infected: dgsi[1],
            unscanned: dgsi[2],
            html: dgsi[3],
            pending: dgsi[4],
            foreign: anssi[0],
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    (server, files, blobs, blob_dir)
}

fn header<'r>(response: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

impl TestServer {
    pub(crate) async fn media(
        &self,
        id: &str,
        token: Option<&str>,
        range: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self.client.get(self.url(&format!("/media/{id}")));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(range) = range {
            request = request.header("range", range);
        }
        request.send().await.unwrap_or_else(|e| panic!("{e}"))
    }
}

#[tokio::test]
async fn a_cleared_reader_downloads_the_bytes_with_every_security_header() {
    let (server, files, blobs, _blobs_dir) = server_with_files().await;
    let token = server.token("dgsi", Secret, &[Scope::Read]);
    let expected = report();
    let response = server.media(&files.stored.to_string(), Some(&token), None).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "content-type"), Some("application/pdf"));
    assert_eq!(
        header(&response, "content-disposition"),
        Some("attachment; filename*=UTF-8''rapport%20final.pdf")
    );
    assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
    assert_eq!(header(&response, "content-security-policy"), Some("sandbox"));
    assert_eq!(header(&response, "cache-control"), Some("private, no-store"));
    assert_eq!(header(&response, "accept-ranges"), Some("bytes"));
    let etag = format!("\"{}\"", Sha256Digest::of(&expected).to_hex());
    assert_eq!(header(&response, "etag"), Some(etag.as_str()));
    assert_eq!(header(&response, "content-length"), Some("300000"));
    let body = response.bytes().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(body[..] == expected[..], "the bytes differ");

    // HEAD: the same headers and length, no body, no blob opened.
    let opened = blobs.opened.load(Ordering::SeqCst);
    let head = server
        .client
        .head(server.url(&format!("/media/{}", files.stored)))
        .bearer_auth(&token)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(header(&head, "content-length"), Some("300000"));
    assert_eq!(header(&head, "etag"), Some(etag.as_str()));
    assert_eq!(header(&head, "content-security-policy"), Some("sandbox"));
    assert!(head.bytes().await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert_eq!(blobs.opened.load(Ordering::SeqCst), opened);

    // A file sniffed as HTML is sent as bytes, under its name without the folder.
    let html = server.media(&files.html.to_string(), Some(&token), None).await;
    assert_eq!(html.status().as_u16(), 200);
    assert_eq!(header(&html, "content-type"), Some("application/octet-stream"));
    assert_eq!(header(&html, "content-disposition"), Some("attachment; filename*=UTF-8''page.html"));
    assert_eq!(header(&html, "x-content-type-options"), Some("nosniff"));
    assert_eq!(&html.bytes().await.unwrap_or_else(|e| panic!("{e}"))[..], HTML);

    // The route is counted like every other.
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    let metrics = metrics.text().await.unwrap_or_default();
    assert!(
        metrics.contains("argus_http_requests_total{route=\"/media/{id}\",method=\"GET\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/media/{id}\",method=\"HEAD\",status=\"200\""), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn every_file_the_caller_may_not_have_answers_the_same_404() {
    let (server, files, blobs, _blobs_dir) = server_with_files().await;
    let reader = server.token("dgsi", Secret, &[Scope::Read]);
    let low = server.token("dgsi", Restricted, &[Scope::Read]);
    let cases = [
        ("absent", "999999", &reader),
        ("zero", "0", &reader),
        ("another organisation's", &files.foreign.to_string(), &reader),
        ("above clearance", &files.stored.to_string(), &low),
        ("non-numeric", "abc", &reader),
        ("negative", "-1", &reader),
        ("too large a number", "99999999999999999999999", &reader),
        ("not scanned yet", &files.unscanned.to_string(), &reader),
        ("never fetched", &files.pending.to_string(), &reader),
        ("infected, without tchap:quarantine", &files.infected.to_string(), &reader),
    ];
    let mut answers = Vec::new();
    for (what, id, token) in cases {
        let response = server.media(id, Some(token), None).await;
        let status = response.status().as_u16();
        let headers: Vec<_> = ["content-type", "content-length", "x-content-type-options", "cache-control"]
            .iter()
            .map(|h| header(&response, h).map(str::to_owned))
            .collect();
        assert!(header(&response, "content-disposition").is_none(), "{what}");
        let body = response.bytes().await.unwrap_or_else(|e| panic!("{e}"));
        answers.push((what, status, headers, body));
    }
    let (_, status, headers, body) = &answers[0];
    assert_eq!(*status, 404);
    let body_json: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body_json["errors"][0]["extensions"]["code"], "NOT_FOUND");
    for (what, s, h, b) in &answers[1..] {
        assert_eq!((s, h, b), (status, headers, body), "{what} answers differently from an absent file");
    }
    // Nothing was read from the blob store for any of them.
    assert_eq!(blobs.opened.load(Ordering::SeqCst), 0);

    // The other organisation reaches its own file through its own reference.
    let anssi = server.token("anssi", Restricted, &[Scope::Read]);
    let theirs = server.media(&files.foreign.to_string(), Some(&anssi), None).await;
    assert_eq!(theirs.status().as_u16(), 200);
    assert_eq!(&theirs.bytes().await.unwrap_or_else(|e| panic!("{e}"))[..], b"anssi's own file");
    server.stop().await;
}

#[tokio::test]
async fn an_infected_file_is_served_only_to_quarantine_and_only_as_bytes() {
    let (server, files, _blobs, _blobs_dir) = server_with_files().await;
    let id = files.infected.to_string();
    let plain = server.token("dgsi", TopSecret, &[Scope::Read, Scope::Ingest, Scope::Audit]);
    assert_eq!(server.media(&id, Some(&plain), None).await.status().as_u16(), 404);
    // tchap:quarantine alone is not enough: the file is read through its message.
    let quarantine_only = server.token("dgsi", TopSecret, &[Scope::Quarantine]);
    assert_eq!(server.media(&id, Some(&quarantine_only), None).await.status().as_u16(), 403);
    let low = server.token("dgsi", Restricted, &[Scope::Read, Scope::Quarantine]);
    assert_eq!(server.media(&id, Some(&low), None).await.status().as_u16(), 404);
    let quarantine = server.token("dgsi", Secret, &[Scope::Read, Scope::Quarantine]);
    let response = server.media(&id, Some(&quarantine), None).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(header(&response, "content-type"), Some("application/octet-stream"));
    assert_eq!(header(&response, "content-disposition"), Some("attachment; filename*=UTF-8''sample.exe"));
    assert_eq!(header(&response, "content-security-policy"), Some("sandbox"));
    assert_eq!(&response.bytes().await.unwrap_or_else(|e| panic!("{e}"))[..], INFECTED);
    server.stop().await;
}

#[tokio::test]
async fn single_ranges_are_partial_and_unsatisfiable_ones_say_the_size() {
    let (server, files, _blobs, _blobs_dir) = server_with_files().await;
    let token = server.token("dgsi", Secret, &[Scope::Read]);
    let id = files.stored.to_string();
    let whole = report();
    let size = whole.len();
    for (range, from, to) in [
        ("bytes=0-9", 0, 9),
        ("bytes=100000-", 100_000, size - 1),
        ("bytes=-1000", size - 1000, size - 1),
        ("bytes=299990-400000", 299_990, size - 1),
        ("bytes=70000-200000", 70_000, 200_000),
    ] {
        let response = server.media(&id, Some(&token), Some(range)).await;
        assert_eq!(response.status().as_u16(), 206, "{range}");
        let content_range = format!("bytes {from}-{to}/{size}");
        assert_eq!(header(&response, "content-range"), Some(content_range.as_str()), "{range}");
        assert_eq!(
            header(&response, "content-length"),
            Some((to - from + 1).to_string().as_str()),
            "{range}"
        );
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"), "{range}");
        let body = response.bytes().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(body[..] == whole[from..=to], "{range}: the bytes differ");
    }
    for range in ["bytes=300000-", "bytes=400000-500000", "bytes=-0"] {
        let response = server.media(&id, Some(&token), Some(range)).await;
        assert_eq!(response.status().as_u16(), 416, "{range}");
        assert_eq!(header(&response, "content-range"), Some(format!("bytes */{size}").as_str()), "{range}");
    }
    // Several ranges, another unit or a malformed header: the whole file.
    for range in ["bytes=0-9,20-29", "lines=1-2", "bytes=nine-ten"] {
        let response = server.media(&id, Some(&token), Some(range)).await;
        assert_eq!(response.status().as_u16(), 200, "{range}");
        assert!(header(&response, "content-range").is_none(), "{range}");
        assert_eq!(response.bytes().await.unwrap_or_else(|e| panic!("{e}")).len(), size, "{range}");
    }
    // A range of a file the caller may not have is the same 404.
    let low = server.token("dgsi", Restricted, &[Scope::Read]);
    assert_eq!(server.media(&id, Some(&low), Some("bytes=999999-")).await.status().as_u16(), 404);
    server.stop().await;
}

#[tokio::test]
async fn authentication_is_the_one_of_graphql() {
    let (server, files, _blobs, _blobs_dir) = server_with_files().await;
    let id = files.stored.to_string();
    let graphql = server.post_raw(None, b"{}".to_vec()).await;
    let media = server.media(&id, None, None).await;
    assert_eq!((media.status().as_u16(), graphql.status().as_u16()), (401, 401));
    assert_eq!(header(&media, "www-authenticate"), header(&graphql, "www-authenticate"));
    assert_eq!(media.text().await.ok(), graphql.text().await.ok());
    let forged = server.media(&id, Some("not.a.token"), None).await;
    assert_eq!(forged.status().as_u16(), 401);
    assert!(header(&forged, "www-authenticate").is_some_and(|h| h.contains("invalid_token")));
    // Authenticated without tchap:read: refused whatever the id.
    let audit = server.token("dgsi", Secret, &[Scope::Audit]);
    for id in [id.as_str(), "999999", "abc"] {
        let response = server.media(id, Some(&audit), None).await;
        assert_eq!(response.status().as_u16(), 403, "{id}");
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_a_scanner_no_file_is_served() {
    // No scanner and scanning not turned off: refused, whatever the id.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let blob_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = harness::config(&dir);
    assert!(!config.media.serving_allowed());
    let blobs: Arc<dyn BlobSource> =
        Arc::new(DirBlobs { root: blob_dir.path().to_path_buf(), opened: AtomicUsize::new(0) });
    let (server, _store) = TestServer::start_with_blobs(dir, config, Some(Arc::clone(&blobs))).await;
    let token = server.token("dgsi", Secret, &[Scope::Read]);
    for id in ["1", "abc"] {
        let response = server.media(id, Some(&token), None).await;
        assert_eq!(response.status().as_u16(), 503);
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(body["errors"][0]["extensions"]["code"], "MEDIA_SCANNER_NOT_CONFIGURED");
    }
    server.stop().await;

    // scan = "off" serves: the server opens its blob store itself, and a missing file is the
    // route's 404, not a refusal.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut config = harness::config(&dir);
    config.media.scan = argus_server::config::ScanMode::Off;
    let (server, _store) = TestServer::start_with_blobs(dir, config, None).await;
    let token = server.token("dgsi", Secret, &[Scope::Read]);
    let response = server.media("1", Some(&token), None).await;
    assert_eq!(response.status().as_u16(), 404);
    server.stop().await;
}
