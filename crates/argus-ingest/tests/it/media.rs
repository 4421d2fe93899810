//! The files of a run, through the ingestion use-case on every backend, against a lying mock
//! homeserver (for the faults a real one will not produce) and a real `clamd`: every hostile
//! file ends in a recorded status and reason, never in a crash, a half-written blob, or a run
//! that loses its messages; a file held while the scanner was down is scanned when it returns,
//! by the worker, without another ingestion; files of many rooms at once are fetched within the
//! per-homeserver bound.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use argus_domain::{Attachment, AttachmentStatus, PageRequest, RoomId, Sha256Digest};
use argus_ingest::{Media, MediaSettings, Services, ingest::ingest_room};
use argus_matrix::{Connector, ConnectorConfig, MediaRoute};
use argus_media::{Clamd, FileBlobStore, Scanner, Staging};
use argus_testkit::homeserver::{BASE_TS, MockHomeserver, ROOM, TOKEN, ev};
use serde_json::{Value, json};
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path},
};

use crate::support::{Env, analyst, backend_suite, connector, request_from};

backend_suite!(
    hostile_files_end_in_a_recorded_status_and_the_run_keeps_its_messages,
    a_file_held_while_the_scanner_was_down_is_scanned_when_it_returns,
);

/// The most bytes a file may have in these tests.
const CAP: u64 = 64 * 1024;

/// A media message of [`ROOM`] with `content` merged over `{msgtype: m.file, body}`.
fn file_message(id: &str, i: i64, mut content: Value) -> Value {
    content["msgtype"] = json!("m.file");
    content["body"] = json!(format!("{id}.bin"));
    ev::event("m.room.message", id, ev::ALICE, BASE_TS + i, content)
}

/// Answers `GET` of the authenticated download route of `media_id` with `response`.
async fn serve(hs: &MockHomeserver, media_id: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(format!("/_matrix/client/v1/media/download/tchap.test/{media_id}")))
        .respond_with(response)
        .mount(hs.server())
        .await;
}

/// Says the homeserver has authenticated media and takes uploads up to 1 MiB.
async fn media_support(hs: &MockHomeserver) {
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "versions": ["v1.11"] })))
        .mount(hs.server())
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v1/media/config"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "m.upload.size": 1_048_576 })))
        .mount(hs.server())
        .await;
}

/// The pipeline over a blob directory and a staging directory in `dir`, scanning with
/// `scanner`.
fn media(dir: &std::path::Path, scanner: Option<Arc<dyn Scanner>>, concurrency: usize) -> Arc<Media> {
    let blobs = Arc::new(FileBlobStore::open(dir.join("blobs")).unwrap_or_else(|e| panic!("blobs: {e}")));
    let staging = Staging::new(dir.join("staging")).unwrap_or_else(|e| panic!("staging: {e}"));
    let settings = MediaSettings {
        max_file_bytes: CAP,
        concurrency_per_homeserver: concurrency,
        retry_base: Duration::from_secs(600),
        replica: "replica-a".into(),
        ..MediaSettings::default()
    };
    Arc::new(Media::new(blobs, scanner, staging, settings))
}

/// Services over the environment's store with `media`.
fn services(env: &Env, media: Arc<Media>, connector: Connector) -> Arc<Services> {
    let mut services = Services::new(env.services.store.clone(), connector);
    services.limits = env.services.limits;
    services.token_keys = env.services.token_keys.clone();
    services.media = Some(media);
    Arc::new(services)
}

/// The attachments of `room` once none is pending (at most 30 s), by event id.
async fn settled(services: &Services, room: &str) -> Vec<(String, Attachment)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (v, r) = (analyst("dgsi"), room.parse::<RoomId>().unwrap_or_else(|e| panic!("{e}")));
        let items = services
            .with_store(move |s| s.messages(&v, &r, &PageRequest::first(100)))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .items;
        let files: Vec<(String, Attachment)> = items
            .into_iter()
            .filter_map(|m| Some((m.message.event_id.as_str().to_owned(), m.attachment?)))
            .collect();
        if files.iter().all(|(_, a)| a.status != AttachmentStatus::Pending) {
            return files;
        }
        assert!(std::time::Instant::now() < deadline, "files still pending: {files:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn status_of<'a>(files: &'a [(String, Attachment)], id: &str) -> &'a Attachment {
    &files.iter().find(|(e, _)| e == id).unwrap_or_else(|| panic!("no file for {id}: {files:#?}")).1
}

/// Every file left in `dir`, recursively.
fn files_in(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_dir() { out.extend(files_in(&p)) } else { out.push(p) }
        }
    }
    out
}

async fn hostile_files_end_in_a_recorded_status_and_the_run_keeps_its_messages(env: Env) {
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let scanner: Arc<dyn Scanner> =
        Arc::new(Clamd::new(&clamd.addr(), Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}")));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let media = media(dir.path(), Some(scanner), 4);
    let hs = MockHomeserver::start().await;
    media_support(&hs).await;

    let report = b"%PDF-1.4 rapport de situation".to_vec();
    let photo: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let (ciphertext, mut good) = argus_crypto::attachment::encrypt_attachment(&photo);
    good.url = "mxc://tchap.test/sealed".into();
    let (_, mut tampered) = argus_crypto::attachment::encrypt_attachment(b"original");
    tampered.url = "mxc://tchap.test/swapped".into();
    let (swapped_bytes, _) = argus_crypto::attachment::encrypt_attachment(b"substitute");
    let mut v1 = good.clone();
    v1.url = "mxc://tchap.test/v1".into();
    v1.v = Some("v1".into());
    let mut short_key = good.clone();
    short_key.url = "mxc://tchap.test/short".into();
    short_key.key.k = "c2hvcnQ".into();

    let events = vec![
        ev::text("$plain", BASE_TS, "pas de fichier"),
        file_message("$ok", 1, json!({ "url": "mxc://tchap.test/ok", "info": { "size": report.len() } })),
        // Declares 10 bytes, sends more than the cap.
        file_message("$liar", 2, json!({ "url": "mxc://tchap.test/liar", "info": { "size": 10 } })),
        // Declares more than the cap: never fetched.
        file_message(
            "$huge",
            3,
            json!({ "url": "mxc://tchap.test/huge", "info": { "size": 1_000_000_000 } }),
        ),
        file_message("$gone", 4, json!({ "url": "mxc://tchap.test/gone" })),
        file_message("$redirect", 5, json!({ "url": "mxc://tchap.test/redirect" })),
        file_message("$path", 6, json!({ "url": "mxc://tchap.test/../../etc/passwd" })),
        file_message("$foreign", 7, json!({ "url": "mxc://169.254.169.254/metadata" })),
        file_message("$sealed", 8, json!({ "file": good })),
        file_message("$swapped", 9, json!({ "file": tampered })),
        file_message("$v1", 10, json!({ "file": v1 })),
        file_message("$short", 11, json!({ "file": short_key })),
        file_message("$infected", 12, json!({ "url": "mxc://tchap.test/sample" })),
    ];
    hs.state(ROOM).mount().await;
    hs.messages(ROOM).page(events.into_iter().rev().collect()).mount().await;
    serve(&hs, "ok", ResponseTemplate::new(200).set_body_bytes(report.clone())).await;
    serve(&hs, "liar", ResponseTemplate::new(200).set_body_bytes(vec![7u8; (CAP as usize) * 2])).await;
    serve(
        &hs,
        "gone",
        ResponseTemplate::new(404).set_body_json(json!({ "errcode": "M_NOT_FOUND", "error": "gone" })),
    )
    .await;
    serve(
        &hs,
        "redirect",
        ResponseTemplate::new(307).insert_header("location", "http://169.254.169.254/latest"),
    )
    .await;
    serve(&hs, "sealed", ResponseTemplate::new(200).set_body_bytes(ciphertext)).await;
    serve(&hs, "swapped", ResponseTemplate::new(200).set_body_bytes(swapped_bytes)).await;
    serve(&hs, "sample", ResponseTemplate::new(200).set_body_bytes(argus_testkit::clamd::MARKER.to_vec()))
        .await;

    let wide = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        page_size: 50,
        ..ConnectorConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let services = services(&env, Arc::clone(&media), wide);
    let run =
        ingest_room(&services, &analyst("dgsi"), request_from(&hs.uri(), TOKEN, ROOM, false), &mut |_| {})
            .await
            .unwrap_or_else(|e| panic!("the run failed: {e}"));
    assert_eq!(run.messages_stored, 13, "the run keeps every message whatever its file");

    let files = settled(&services, ROOM).await;
    assert_eq!(files.len(), 12, "one reference per message with a file: {files:#?}");
    let ok = status_of(&files, "$ok");
    assert_eq!(
        (ok.status, ok.sha256, ok.size),
        (AttachmentStatus::Stored, Some(Sha256Digest::of(&report)), Some(report.len() as u64))
    );
    let sealed = status_of(&files, "$sealed");
    assert_eq!(
        (sealed.status, sealed.sha256, sealed.encrypted),
        (AttachmentStatus::Stored, Some(Sha256Digest::of(&photo)), true)
    );
    let expect = [
        ("$liar", AttachmentStatus::TooLarge, "TOO_LARGE"),
        ("$huge", AttachmentStatus::TooLarge, "TOO_LARGE"),
        ("$gone", AttachmentStatus::Unavailable, "NOT_FOUND"),
        ("$redirect", AttachmentStatus::Unavailable, "OUTBOUND_POLICY"),
        ("$path", AttachmentStatus::Unavailable, "INVALID_MXC"),
        ("$foreign", AttachmentStatus::Unavailable, "OUTBOUND_POLICY"),
        ("$swapped", AttachmentStatus::Tampered, "TAMPERED"),
        ("$v1", AttachmentStatus::Undecryptable, "UNSUPPORTED_VERSION"),
        ("$short", AttachmentStatus::Undecryptable, "BAD_KEY_LENGTH"),
    ];
    for (id, status, code) in expect {
        let a = status_of(&files, id);
        let reason = a.reason.as_deref().unwrap_or_default();
        assert_eq!(a.status, status, "{id}: {a:#?}");
        assert!(reason.starts_with(code), "{id}: the reason {reason:?} does not start with {code}");
        assert!(!reason.contains(TOKEN), "{id}: {reason}");
        assert!(a.sha256.is_none(), "{id}: no bytes are held");
    }
    let infected = status_of(&files, "$infected");
    assert_eq!(infected.status, AttachmentStatus::Infected, "{infected:#?}");
    assert!(infected.threat.as_deref().is_some_and(|t| t.contains("Argus")), "{infected:#?}");

    // Nothing half-written: the staging area is empty, and the blob store holds exactly the
    // three files that were fetched whole (the report, the decrypted photo, the sample).
    assert!(files_in(&dir.path().join("staging")).is_empty(), "{:?}", files_in(&dir.path().join("staging")));
    assert_eq!(files_in(&dir.path().join("blobs")).len(), 3, "{:?}", files_in(&dir.path().join("blobs")));
    // The token went in the header only.
    for request in hs.server().received_requests().await.unwrap_or_default() {
        assert!(!request.url.as_str().contains(TOKEN));
    }
}

async fn a_file_held_while_the_scanner_was_down_is_scanned_when_it_returns(env: Env) {
    let Some(clamd) = argus_testkit::clamd::shared() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A scanner address where nothing listens: the daemon is down.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let dead = format!("tcp://{}", down.local_addr().unwrap_or_else(|e| panic!("{e}")));
    drop(down);
    let away: Arc<dyn Scanner> =
        Arc::new(Clamd::new(&dead, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}")));
    let hs = MockHomeserver::start().await;
    media_support(&hs).await;
    hs.state(ROOM).mount().await;
    hs.messages(ROOM)
        .page(vec![file_message("$doc", 1, json!({ "url": "mxc://tchap.test/doc" }))])
        .mount()
        .await;
    serve(&hs, "doc", ResponseTemplate::new(200).set_body_bytes(b"note de service".to_vec())).await;

    let services_down = services(&env, media(dir.path(), Some(away), 4), connector());
    ingest_room(&services_down, &analyst("dgsi"), request_from(&hs.uri(), TOKEN, ROOM, false), &mut |_| {})
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Fetched and held, never judged: pending, never served.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let held = loop {
        let (v, r) = (analyst("dgsi"), ROOM.parse::<RoomId>().unwrap_or_else(|e| panic!("{e}")));
        let page = services_down.with_store(move |s| s.messages(&v, &r, &PageRequest::first(10))).await;
        let attachment = page.ok().and_then(|p| p.items.into_iter().next()).and_then(|m| m.attachment);
        if let Some(a) = attachment.filter(|a| a.sha256.is_some()) {
            break a;
        }
        assert!(std::time::Instant::now() < deadline, "the file was not fetched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(held.status, AttachmentStatus::Pending);
    assert!(held.reason.as_deref().is_some_and(|r| r.starts_with("SCAN_PENDING")), "{held:#?}");
    let v = analyst("dgsi");
    let id = held.id;
    assert!(
        services_down
            .with_store(move |s| s.attachment_download(&v, id))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none()
    );

    // The scanner is back: one pass of the worker, no ingestion.
    let scanner: Arc<dyn Scanner> =
        Arc::new(Clamd::new(&clamd.addr(), Duration::from_secs(30)).unwrap_or_else(|e| panic!("{e}")));
    let worker = media(dir.path(), Some(scanner), 4);
    let services_up = services(&env, Arc::clone(&worker), connector());
    let report = worker.work_once(&services_up).await;
    assert_eq!((report.scanned, report.scan_failures), (1, 0), "{report:?}");
    let files = settled(&services_up, ROOM).await;
    assert_eq!(status_of(&files, "$doc").status, AttachmentStatus::Stored);
    let v = analyst("dgsi");
    assert!(
        services_up
            .with_store(move |s| s.attachment_download(&v, id))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some()
    );
}

/// A media route that counts the downloads it serves at once, each held for a while.
async fn counting_route(in_flight: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (in_flight, most) = (Arc::clone(&in_flight), Arc::clone(&most));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(150)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let body = b"fichier";
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
            });
        }
    });
    format!("http://{addr}")
}

/// Sixteen rooms ingested at once, each with a file, through a content scanner route that
/// counts its downloads in flight: never more than the per-homeserver bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_rooms_at_once_stay_within_the_bound_per_homeserver() {
    let env = Env::sqlite().await;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (in_flight, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let base = counting_route(Arc::clone(&in_flight), Arc::clone(&most)).await;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        page_size: 10,
        media_route: MediaRoute::ContentScanner { base_url: base.parse().unwrap_or_else(|e| panic!("{e}")) },
        ..ConnectorConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let media = media(dir.path(), None, 2);
    let mut services = Services::new(env.services.store.clone(), connector);
    services.media = Some(media);
    // Sixteen runs of one caller at once: the admission bounds are not what is tested here.
    services.admission = argus_ingest::Admission::new(argus_ingest::AdmissionLimits {
        max_concurrent: 32,
        max_concurrent_per_homeserver: 32,
        max_concurrent_per_caller: 32,
        per_caller_per_minute: 1000,
    });
    let services = Arc::new(services);
    let hs = MockHomeserver::start().await;
    media_support(&hs).await;
    let rooms: Vec<String> = (0..16).map(|i| format!("!r{i}:tchap.test")).collect();
    for (i, room) in rooms.iter().enumerate() {
        hs.state(room).mount().await;
        let mut event =
            file_message(&format!("$f{i}"), 1, json!({ "url": format!("mxc://tchap.test/f{i}") }));
        event["room_id"] = json!(room);
        hs.messages(room).page(vec![event]).mount().await;
    }
    let runs = rooms.iter().map(|room| {
        let services = Arc::clone(&services);
        let request = request_from(&hs.uri(), TOKEN, room, false);
        async move { ingest_room(&services, &analyst("dgsi"), request, &mut |_| {}).await }
    });
    for run in futures::future::join_all(runs).await {
        assert_eq!(run.unwrap_or_else(|e| panic!("{e}")).messages_stored, 1);
    }
    // Wait until every file was fetched (held, unscanned: no scanner here).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let held =
            services.with_store(|s| s.unscanned_blobs(100)).await.unwrap_or_else(|e| panic!("{e}")).len();
        let fetched = files_in(&dir.path().join("blobs")).len();
        if held == 1 && fetched == 1 && in_flight.load(Ordering::SeqCst) == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "files not fetched: {held} held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut all_fetched = 0;
    for room in &rooms {
        all_fetched += settled_unscanned(&services, room).await;
    }
    assert_eq!(all_fetched, 16, "every room's file was fetched");
    let peak = most.load(Ordering::SeqCst);
    assert!((1..=2).contains(&peak), "{peak} downloads at once from one homeserver (bound 2)");
}

/// How many files of `room` are fetched (held), scanned or not.
async fn settled_unscanned(services: &Services, room: &str) -> usize {
    let (v, r) = (analyst("dgsi"), room.parse::<RoomId>().unwrap_or_else(|e| panic!("{e}")));
    let items = services
        .with_store(move |s| s.messages(&v, &r, &PageRequest::first(10)))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items;
    items.iter().filter(|m| m.attachment.as_ref().is_some_and(|a| a.sha256.is_some())).count()
}
