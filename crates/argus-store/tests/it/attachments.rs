//! Attachments, on every backend: a message's file gets a reference that reads with its message
//! and only where the message reads (organisation, clearance, not redacted); the media queue
//! hands each reference to one claimant and records what became of it; the same bytes are one
//! blob whichever rooms and organisations they came from, while each reference keeps its own
//! gate; a scan verdict is the blob's, and only a scanned file is downloadable.

use argus_domain::{
    AttachmentJwk, AttachmentStatus, Classification::*, EncryptedFile, MediaRef, MessageRecord, PageRequest,
    Sha256Digest, StoredMessage, Viewer,
};
use argus_store::{BlobVerdict, FetchOutcome, NewBlob, ScanRecord, Store, StoreOptions, WatchCaps};
use time::Duration;

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, messages, now, run, snapshot, viewer},
};

backend_suite!(
    a_file_reads_with_its_message_and_is_served_only_once_scanned,
    one_blob_for_the_same_bytes_each_reference_with_its_own_gate,
    the_queue_hands_a_reference_to_one_claimant_and_retries_later,
    a_file_known_once_its_message_is_decrypted_and_hidden_once_redacted,
    the_worker_takes_only_files_of_watched_rooms,
    a_file_the_reader_may_not_have_takes_the_time_of_a_missing_one,
    a_room_raised_above_the_reader_hides_its_earlier_files,
    a_redacted_messages_file_is_not_fetched_and_without_the_hold_is_purged,
    a_file_the_scanner_cannot_judge_waits_behind_the_others,
);

const ROOM: &str = "!files:x.org";

fn with_file(mut m: MessageRecord, uri: &str) -> MessageRecord {
    m.msgtype = Some("m.file".to_owned());
    m.body = Some("rapport.pdf".to_owned());
    m.media = Some(MediaRef {
        uri: Some(uri.to_owned()),
        mimetype: Some("application/pdf".to_owned()),
        size: Some(5),
        filename: Some("rapport.pdf".to_owned()),
        file: None,
    });
    m
}

fn read(store: &Store, v: &Viewer, room: &str) -> Vec<StoredMessage> {
    store.messages(v, &rid(room), &PageRequest::first(50)).unwrap().items
}

fn blob(bytes: &[u8]) -> NewBlob {
    NewBlob {
        sha256: Sha256Digest::of(bytes),
        size: bytes.len() as u64,
        sniffed_mimetype: "application/pdf".into(),
    }
}

fn scan(verdict: BlobVerdict) -> ScanRecord {
    ScanRecord { verdict, engine: "ClamAV 1.4.3/27500".into(), at: now() }
}

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

/// Stores one message with a file in `room` for `v` at `level`, fetches it as `owner`, and
/// returns its reference id.
fn stored_and_fetched(
    s: &Store,
    v: &Viewer,
    room: &str,
    level: argus_domain::Classification,
    bytes: &[u8],
) -> i64 {
    let mut msgs = messages(2, now() - Duration::minutes(5));
    msgs[1] = with_file(msgs[1].clone(), "mxc://x.org/rapport");
    s.record_ingestion(&run(v, level), &snapshot(room, msgs)).unwrap();
    let jobs = s.claim_room_media(&v.org, &rid(room), "run-1", now(), LEASE, 10).unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(s.record_media(jobs[0].id, "run-1", &FetchOutcome::Fetched(blob(bytes)), now()).unwrap());
    jobs[0].id
}

fn a_file_reads_with_its_message_and_is_served_only_once_scanned(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let mut msgs = messages(2, now() - Duration::minutes(5));
    msgs[1] = with_file(msgs[1].clone(), "mxc://x.org/rapport");
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs)).unwrap();

    let read_now = read(s, &v, ROOM);
    assert!(read_now[0].attachment.is_none(), "a text message carries no file");
    let a = read_now[1].attachment.clone().expect("the file's reference");
    assert_eq!(
        (a.status, a.mxc_uri.as_str(), a.encrypted),
        (AttachmentStatus::Pending, "mxc://x.org/rapport", false)
    );
    assert_eq!(
        (a.filename.as_deref(), a.declared_mimetype.as_deref(), a.declared_size),
        (Some("rapport.pdf"), Some("application/pdf"), Some(5))
    );
    assert!(a.sha256.is_none() && a.fetched_at.is_none());
    // The single-message lookup reads it too.
    let one = s.message(&v, &rid(ROOM), &read_now[1].message.event_id).unwrap().unwrap();
    assert_eq!(one.attachment.as_ref().map(|a| a.id), Some(a.id));

    let jobs = s.claim_room_media(&v.org, &rid(ROOM), "run-1", now(), LEASE, 10).unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.id]);
    assert_eq!((jobs[0].mxc_uri.as_str(), jobs[0].declared_size), ("mxc://x.org/rapport", Some(5)));
    assert!(s.record_media(a.id, "run-1", &FetchOutcome::Fetched(blob(b"%PDF-")), now()).unwrap());

    // Held, not scanned yet: still pending, and not downloadable.
    let held = read(s, &v, ROOM)[1].attachment.clone().unwrap();
    assert_eq!(held.status, AttachmentStatus::Pending);
    assert!(held.reason.as_deref().unwrap().starts_with("SCAN_PENDING"));
    assert_eq!(held.sha256, Some(Sha256Digest::of(b"%PDF-")));
    assert!(s.attachment_download(&v, a.id).unwrap().is_none());
    assert_eq!(s.unscanned_blobs(10).unwrap(), vec![Sha256Digest::of(b"%PDF-")]);

    assert!(s.record_scan(&Sha256Digest::of(b"%PDF-"), &scan(BlobVerdict::Clean)).unwrap());
    let stored = read(s, &v, ROOM)[1].attachment.clone().unwrap();
    assert_eq!(
        (stored.status, stored.size, stored.reason.as_deref()),
        (AttachmentStatus::Stored, Some(5), None)
    );
    assert_eq!(stored.scan_engine.as_deref(), Some("ClamAV 1.4.3/27500"));
    assert!(stored.scanned_at.is_some());
    let d = s.attachment_download(&v, a.id).unwrap().expect("downloadable");
    assert_eq!(
        (d.sha256, d.size, d.sniffed_mimetype.as_str()),
        (Sha256Digest::of(b"%PDF-"), 5, "application/pdf")
    );
    assert!(s.unscanned_blobs(10).unwrap().is_empty());

    // Another organisation, or a reader below the message's level, gets nothing, as for a
    // reference that does not exist.
    assert!(s.attachment_download(&viewer("org-b", TopSecret), a.id).unwrap().is_none());
    assert!(s.attachment_download(&viewer("org-a", Unclassified), a.id).unwrap().is_none());
    assert!(s.attachment_download(&v, a.id + 1000).unwrap().is_none());

    // A rescan that finds a threat makes it infected, with the signature.
    assert!(
        s.record_scan(&Sha256Digest::of(b"%PDF-"), &scan(BlobVerdict::Infected("Argus.Marker".into())))
            .unwrap()
    );
    let infected = read(s, &v, ROOM)[1].attachment.clone().unwrap();
    assert_eq!(
        (infected.status, infected.threat.as_deref()),
        (AttachmentStatus::Infected, Some("Argus.Marker"))
    );
    let d = s.attachment_download(&v, a.id).unwrap().expect("held in quarantine");
    assert_eq!(d.attachment.status, AttachmentStatus::Infected);
}

fn one_blob_for_the_same_bytes_each_reference_with_its_own_gate(db: &TestDb) {
    let s = &db.store;
    let a = viewer("org-a", Secret);
    let b = viewer("org-b", Restricted);
    let in_a = stored_and_fetched(s, &a, "!a:x.org", Secret, b"same bytes");
    let in_b = stored_and_fetched(s, &b, "!b:x.org", Unclassified, b"same bytes");
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM media_blobs"), 1);
    assert!(!s.blob_judged(&Sha256Digest::of(b"same bytes"), None).unwrap());
    assert!(s.record_scan(&Sha256Digest::of(b"same bytes"), &scan(BlobVerdict::Clean)).unwrap());
    // Judged once for both references; bytes never held are not judged.
    assert!(s.blob_judged(&Sha256Digest::of(b"same bytes"), None).unwrap());
    assert!(!s.blob_judged(&Sha256Digest::of(b"other bytes"), None).unwrap());
    // Each reader reaches the file through their own reference only.
    assert!(s.attachment_download(&a, in_a).unwrap().is_some());
    assert!(s.attachment_download(&b, in_b).unwrap().is_some());
    assert!(s.attachment_download(&a, in_b).unwrap().is_none());
    assert!(s.attachment_download(&b, in_a).unwrap().is_none());
    // The same organisation below the level of the first message sees only the second.
    let low_a = viewer("org-a", Restricted);
    assert!(s.attachment_download(&low_a, in_a).unwrap().is_none());
}

/// A room raised above a reader's clearance by a later ingestion hides the files of its
/// earlier, lower messages too, as it hides the messages.
fn a_room_raised_above_the_reader_hides_its_earlier_files(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", TopSecret);
    let id = stored_and_fetched(s, &top, ROOM, Restricted, b"older file");
    s.record_scan(&Sha256Digest::of(b"older file"), &scan(BlobVerdict::Clean)).unwrap();
    let reader = viewer("org-a", Restricted);
    assert!(s.attachment_download(&reader, id).unwrap().is_some());
    let mut later = messages(1, now());
    later[0].event_id = "$later:x.org".parse().unwrap();
    s.record_ingestion(&run(&top, Secret), &snapshot(ROOM, later)).unwrap();
    assert!(s.attachment_download(&reader, id).unwrap().is_none(), "a file of a room above the reader");
    assert!(s.attachment_download(&top, id).unwrap().is_some());
}

fn the_queue_hands_a_reference_to_one_claimant_and_retries_later(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let mut msgs = messages(3, now() - Duration::minutes(5));
    msgs[0] = with_file(msgs[0].clone(), "mxc://x.org/one");
    msgs[1] = with_file(msgs[1].clone(), "mxc://x.org/two");
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs)).unwrap();
    let first = s.claim_room_media(&v.org, &rid(ROOM), "run-1", now(), LEASE, 10).unwrap();
    assert_eq!(first.len(), 2);
    // Claimed: nobody else gets them while the lease runs, nor another organisation's run.
    assert!(s.claim_room_media(&v.org, &rid(ROOM), "run-2", now(), LEASE, 10).unwrap().is_empty());
    assert!(
        s.claim_room_media(
            &"org-b".parse().unwrap(),
            &rid(ROOM),
            "run-3",
            now() + Duration::hours(1),
            LEASE,
            10
        )
        .unwrap()
        .is_empty()
    );
    // Only the holder records.
    let retry = FetchOutcome::Retry {
        reason: "HOMESERVER_UNAVAILABLE: 502".into(),
        after: std::time::Duration::from_secs(600),
    };
    assert!(!s.record_media(first[0].id, "run-2", &retry, now()).unwrap());
    assert!(s.record_media(first[0].id, "run-1", &retry, now()).unwrap());
    let too_large =
        FetchOutcome::Ended { status: AttachmentStatus::TooLarge, reason: "TOO_LARGE: over 5 bytes".into() };
    assert!(s.record_media(first[1].id, "run-1", &too_large, now()).unwrap());
    // The retried one is due again only after its wait, with its attempt counted.
    assert!(
        s.claim_room_media(&v.org, &rid(ROOM), "run-2", now() + Duration::minutes(1), LEASE, 10)
            .unwrap()
            .is_empty()
    );
    let again =
        s.claim_room_media(&v.org, &rid(ROOM), "run-2", now() + Duration::minutes(11), LEASE, 10).unwrap();
    assert_eq!(again.iter().map(|j| (j.id, j.attempts)).collect::<Vec<_>>(), vec![(first[0].id, 1)]);
    let items = read(s, &v, ROOM);
    let statuses: Vec<_> =
        items.iter().map(|m| m.attachment.as_ref().map(|a| (a.status, a.reason.clone()))).collect();
    assert_eq!(statuses[0], Some((AttachmentStatus::Pending, Some("HOMESERVER_UNAVAILABLE: 502".into()))));
    assert_eq!(statuses[1], Some((AttachmentStatus::TooLarge, Some("TOO_LARGE: over 5 bytes".into()))));
    assert_eq!(statuses[2], None);
    // An expired lease is taken over.
    let later = now() + Duration::hours(2);
    let taken = s.claim_room_media(&v.org, &rid(ROOM), "run-3", later, LEASE, 10).unwrap();
    assert_eq!(taken.len(), 1);
    assert!(!s.record_media(taken[0].id, "run-2", &FetchOutcome::Fetched(blob(b"x")), later).unwrap());
}

fn encrypted_file() -> EncryptedFile {
    EncryptedFile {
        url: "mxc://x.org/chiffre".into(),
        key: AttachmentJwk {
            kty: "oct".into(),
            key_ops: vec!["encrypt".into(), "decrypt".into()],
            alg: "A256CTR".into(),
            k: "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA".into(),
            ext: true,
        },
        iv: "X85+XgHN+HEAAAAAAAAAAA".into(),
        hashes: [("sha256".to_owned(), "m2Unq2ztVdKhfrl6xGvoGZv1dCM5eD7fBdT2s6gCxd0".to_owned())].into(),
        v: Some("v2".into()),
    }
}

fn a_file_known_once_its_message_is_decrypted_and_hidden_once_redacted(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let mut msgs = messages(2, now() - Duration::minutes(5));
    let mut undecrypted = msgs[1].clone();
    undecrypted.msgtype = None;
    undecrypted.body = None;
    undecrypted.encrypted = true;
    msgs[1] = undecrypted.clone();
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs.clone())).unwrap();
    assert!(read(s, &v, ROOM)[1].attachment.is_none(), "no file is known of an undecrypted message");

    let mut decrypted = undecrypted.clone();
    decrypted.decrypted = true;
    decrypted.msgtype = Some("m.image".into());
    decrypted.body = Some("photo.jpg".into());
    decrypted.media = Some(MediaRef {
        file: Some(encrypted_file()),
        mimetype: Some("image/jpeg".into()),
        ..Default::default()
    });
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, vec![decrypted])).unwrap();
    let a = read(s, &v, ROOM)[1].attachment.clone().expect("known once decrypted");
    assert_eq!(
        (a.status, a.encrypted, a.mxc_uri.as_str()),
        (AttachmentStatus::Pending, true, "mxc://x.org/chiffre")
    );
    let jobs = s.claim_room_media(&v.org, &rid(ROOM), "run-1", now(), LEASE, 10).unwrap();
    assert_eq!(jobs[0].file, Some(encrypted_file()), "the job carries how to open the file");
    assert!(s.record_media(a.id, "run-1", &FetchOutcome::Fetched(blob(b"jpeg")), now()).unwrap());
    assert!(s.record_scan(&Sha256Digest::of(b"jpeg"), &scan(BlobVerdict::Clean)).unwrap());
    assert!(s.attachment_download(&v, a.id).unwrap().is_some());

    // Its sender redacts it: no file shows, none downloads.
    let mut erase = snapshot(ROOM, Vec::new());
    erase.redactions = vec![argus_domain::MessageRedaction {
        target: msgs[1].event_id.clone(),
        redaction: argus_domain::Redaction {
            redacted_by: msgs[1].sender.clone(),
            redacted_at: now(),
            reason: None,
        },
        confirmed: false,
    }];
    s.record_ingestion(&run(&v, Restricted), &erase).unwrap();
    assert!(read(s, &v, ROOM)[1].attachment.is_none());
    assert!(s.attachment_download(&v, a.id).unwrap().is_none());
}

fn the_worker_takes_only_files_of_watched_rooms(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    for room in ["!watched:x.org", "!once:x.org"] {
        let mut msgs = messages(1, now() - Duration::minutes(5));
        msgs[0] = with_file(msgs[0].clone(), "mxc://x.org/f");
        s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs)).unwrap();
    }
    assert!(s.claim_watched_media("worker", now(), LEASE, 10).unwrap().is_empty());
    let new = argus_domain::NewWatch {
        owner: v.actor.clone(),
        org: v.org.clone(),
        room_id: "!watched:x.org".parse().unwrap(),
        homeserver_url: "https://x.org".parse().unwrap(),
        classification: Restricted,
        interval_secs: 60,
        token: argus_domain::SealedToken {
            key_id: "k1".into(),
            nonce: "bm9uY2U".into(),
            ciphertext: "c2VhbGVk".into(),
        },
        decrypts: false,
        since: None,
    };
    s.upsert_watch(&v, &new, WatchCaps { per_owner: 10, per_org: 10 }).unwrap();
    let jobs = s.claim_watched_media("worker", now(), LEASE, 10).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].room_id.as_str(), "!watched:x.org");
    let (_, owner, token) = jobs[0].watch.clone().expect("the watch lends its token");
    assert_eq!((owner, token.key_id.as_str()), (v.actor.clone(), "k1"));
}

/// The download lookup of a file whose message is withheld (above the reader's clearance) or
/// foreign takes the time of a missing one: each kind timed once per round (in turn first), its
/// cost the median over rounds of its time over the missing file's in the same round.
fn a_file_the_reader_may_not_have_takes_the_time_of_a_missing_one(db: &TestDb) {
    let s = &db.store;
    let top = viewer("org-a", TopSecret);
    let withheld = stored_and_fetched(s, &top, "!withheld:x.org", Secret, b"withheld");
    let foreign = stored_and_fetched(s, &viewer("org-b", Secret), "!foreign:x.org", Restricted, b"foreign");
    for bytes in [&b"withheld"[..], b"foreign"] {
        s.record_scan(&Sha256Digest::of(bytes), &scan(BlobVerdict::Clean)).unwrap();
    }
    let reader = viewer("org-a", Restricted);
    let ids = [withheld + foreign + 1000, withheld, foreign];
    let mut ratios = [Vec::new(), Vec::new()];
    for round in 0..430 {
        let mut times = [0f64; 3];
        for k in 0..3 {
            let i = (k + round) % 3;
            let started = std::time::Instant::now();
            assert!(s.attachment_download(&reader, ids[i]).unwrap().is_none());
            times[i] = started.elapsed().as_nanos() as f64;
        }
        if round >= 30 {
            ratios[0].push(times[1] / times[0]);
            ratios[1].push(times[2] / times[0]);
        }
    }
    for (what, mut r) in [("withheld", ratios[0].clone()), ("foreign", ratios[1].clone())] {
        r.sort_by(f64::total_cmp);
        let median = r[r.len() / 2];
        eprintln!("{what}: {median:.2}x a missing file");
        assert!(median < 1.25, "a {what} file takes {median:.2}x the time of a missing one");
    }
}

/// A file's message redacted before the file was fetched: it is not fetched; with the legal
/// hold off its reference keeps no name, key or bytes.
fn a_redacted_messages_file_is_not_fetched_and_without_the_hold_is_purged(db: &TestDb) {
    let purging =
        Store::open_with(&db.url, StoreOptions { keep_redacted: false, ..StoreOptions::default() }).unwrap();
    let v = viewer("org-a", Secret);
    for (s, room) in [(&db.store, "!kept:x.org"), (&purging, "!purged:x.org")] {
        let mut msgs = messages(1, now() - Duration::minutes(5));
        msgs[0] = with_file(msgs[0].clone(), "mxc://x.org/secret-plan");
        s.record_ingestion(&run(&v, Restricted), &snapshot(room, msgs.clone())).unwrap();
        let mut erase = snapshot(room, Vec::new());
        erase.redactions = vec![argus_domain::MessageRedaction {
            target: msgs[0].event_id.clone(),
            redaction: argus_domain::Redaction {
                redacted_by: msgs[0].sender.clone(),
                redacted_at: now(),
                reason: None,
            },
            confirmed: false,
        }];
        s.record_ingestion(&run(&v, Restricted), &erase).unwrap();
        assert!(
            s.claim_room_media(&v.org, &rid(room), "run-1", now(), LEASE, 10).unwrap().is_empty(),
            "{room}"
        );
    }
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM attachments WHERE filename IS NOT NULL"),
        1,
        "the held one only"
    );
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM attachments WHERE filename IS NULL AND file IS NULL AND sha256 IS NULL AND state = 'UNAVAILABLE'"),
        1
    );
}

/// A blob the scanner could not judge for a reason of its own waits until its retry, behind
/// the others; a blob recorded while scanning was off is due again for a real scanner.
fn a_file_the_scanner_cannot_judge_waits_behind_the_others(db: &TestDb) {
    let s = &db.store;
    let v = viewer("org-a", Secret);
    let first = stored_and_fetched(s, &v, "!one:x.org", Restricted, b"first");
    let _ = first;
    let _ = stored_and_fetched(s, &v, "!two:x.org", Restricted, b"second");
    let (a, b) = (Sha256Digest::of(b"first"), Sha256Digest::of(b"second"));
    assert_eq!(s.blobs_due_for_scan(now(), None, 10).unwrap(), vec![a, b]);
    assert!(s.record_scan_failure(&a, now() + Duration::minutes(10)).unwrap());
    assert_eq!(s.blobs_due_for_scan(now(), None, 10).unwrap(), vec![b], "the failed one waits");
    assert_eq!(s.blobs_due_for_scan(now() + Duration::minutes(11), None, 10).unwrap(), vec![b, a]);
    // Recorded clean while scanning was off: judged for a store with scanning off, due again
    // for a real scanner.
    let off =
        ScanRecord { verdict: BlobVerdict::Clean, engine: "none (scanning turned off)".into(), at: now() };
    assert!(s.record_scan(&b, &off).unwrap());
    assert!(s.blob_judged(&b, None).unwrap());
    assert!(!s.blob_judged(&b, Some("none (scanning turned off)")).unwrap());
    assert_eq!(s.blobs_due_for_scan(now(), Some("none (scanning turned off)"), 10).unwrap(), vec![b]);
    assert!(s.blobs_due_for_scan(now(), None, 10).unwrap().is_empty());
}
