//! The transparency log, on every backend: one log per organisation whose indexes run from 0
//! without gaps across audit records, reads of content and held files; its stored tree agrees
//! with the entries' bytes and proves inclusion and consistency (and not against a forged
//! history); a run's eventsRoot is the root over the versions it stored, rebuilt from the rows
//! (a row changed since no longer matches); the access journal commits concurrent callers'
//! entries and is read through the gate; a disclosure reads only a room the viewer may see.

use argus_crypto::tlog::{leaf_hash, root_of, verify_consistency, verify_inclusion};
use argus_domain::{
    Classification::{self, *},
    EventId, MediaRef, MessageEdit, MessageRecord, MessageRedaction, OrgId, PageRequest, Redaction, Scope,
    Sha256Digest, Viewer,
    oversight::{AccessAction, AccessEntry, LogEntry, VersionKind},
};
use argus_store::{AccessCursor, AccessFilter, FetchOutcome, NewBlob, Store};
use time::Duration;

use crate::{
    reads::rid,
    support::{TestDb, backend_suite, messages, now, run, snapshot, viewer},
};

backend_suite!(
    indexes_are_gapless_per_organisation_and_the_tree_proves_its_entries,
    a_runs_events_root_is_the_root_over_the_versions_it_stored,
    concurrent_accesses_share_commits_and_each_gets_its_own_index,
    the_access_log_is_read_through_the_gate_and_filtered,
    a_disclosure_reads_only_a_room_the_viewer_may_see,
);

const LEASE: std::time::Duration = std::time::Duration::from_secs(60);

fn org(s: &str) -> OrgId {
    s.parse().unwrap()
}

fn access(
    org: &str,
    actor: &str,
    level: Classification,
    rooms: &[&str],
    action: AccessAction,
) -> AccessEntry {
    AccessEntry {
        action,
        actor: actor.to_owned(),
        at: argus_domain::to_unix_ms(now()),
        classification: level,
        disclosure: None,
        item_count: 3,
        org: org.to_owned(),
        query: (action == AccessAction::Search).then(|| "hangar".to_owned()),
        room_ids: rooms.iter().map(|r| (*r).to_owned()).collect(),
        r#type: AccessEntry::TYPE.to_owned(),
        v: argus_domain::oversight::ENCODING_VERSION,
    }
}

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

/// Fetches every pending file of `room` with `bytes`.
fn fetch_files(s: &Store, v: &Viewer, room: &str, bytes: &[u8]) -> usize {
    let jobs = s.claim_room_media(&v.org, &rid(room), "run-1", now(), LEASE, 10).unwrap();
    for job in &jobs {
        let blob = NewBlob {
            sha256: Sha256Digest::of(bytes),
            size: bytes.len() as u64,
            sniffed_mimetype: "application/pdf".into(),
        };
        assert!(s.record_media(job.id, "run-1", &FetchOutcome::Fetched(blob), now()).unwrap());
    }
    jobs.len()
}

/// Every entry of `org`'s log, checked to run from 0 without gaps.
fn all_entries(s: &Store, o: &OrgId) -> Vec<argus_store::LogEntryRecord> {
    let head = s.log_head(o).unwrap();
    let entries = s.log_entries(o, &(0..head.size + 3).collect::<Vec<_>>()).unwrap();
    assert_eq!(entries.iter().map(|e| e.index).collect::<Vec<_>>(), (0..head.size).collect::<Vec<_>>());
    entries
}

fn indexes_are_gapless_per_organisation_and_the_tree_proves_its_entries(db: &TestDb) {
    let s = &db.store;
    let a = viewer("org-a", Secret);
    let b = viewer("org-b", Secret);
    let mut msgs = messages(2, now() - Duration::minutes(5));
    msgs[1] = with_file(msgs[1].clone(), "mxc://x.org/rapport");
    let done = s.record_ingestion(&run(&a, Restricted), &snapshot("!a:x.org", msgs)).unwrap();
    s.record_ingestion(&run(&b, Restricted), &snapshot("!b:x.org", messages(1, now()))).unwrap();
    let first =
        s.record_access(&access("org-a", "alice", Restricted, &["!a:x.org"], AccessAction::ReadMessages));
    assert_eq!(first.unwrap(), 1);
    assert_eq!(fetch_files(s, &a, "!a:x.org", b"%PDF-"), 1);
    s.record_ingestion(&run(&a, Restricted), &snapshot("!a2:x.org", messages(1, now()))).unwrap();
    let search = access("org-a", "alice", Secret, &[], AccessAction::Search);
    assert_eq!(s.record_access(&search).unwrap(), 4);

    let entries = all_entries(s, &org("org-a"));
    let kinds: Vec<&str> = entries.iter().map(|e| LogEntry::parse(&e.bytes).unwrap().kind()).collect();
    assert_eq!(kinds, ["AUDIT", "ACCESS", "ATTACHMENT", "AUDIT", "ACCESS"]);
    let LogEntry::Audit(audit) = LogEntry::parse(&entries[0].bytes).unwrap() else {
        panic!("not an audit entry")
    };
    assert_eq!((audit.seq, audit.events_count), (done.ingestion.seq, Some(2)));
    let LogEntry::Attachment(held) = LogEntry::parse(&entries[2].bytes).unwrap() else {
        panic!("not a file")
    };
    assert_eq!(
        (held.sha256, held.size, held.uri.as_str()),
        (Sha256Digest::of(b"%PDF-").to_hex(), 5, "mxc://x.org/rapport")
    );
    assert_eq!(LogEntry::parse(&entries[4].bytes).unwrap(), LogEntry::Access(search));
    assert_eq!(all_entries(s, &org("org-b")).len(), 1);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM log_entries WHERE org_id = 'org-a'"), 5);

    let leaves: Vec<_> = entries.iter().map(|e| leaf_hash(&e.bytes)).collect();
    let o = org("org-a");
    let head = s.log_head(&o).unwrap();
    assert_eq!((head.size, head.root), (5, root_of(&leaves)));
    for size in 1..=leaves.len() {
        let root = root_of(&leaves[..size]);
        for index in 0..size {
            let proof = s.log_inclusion(&o, index as u64, size as u64).unwrap();
            verify_inclusion(index as u64, size as u64, leaves[index], &proof, root).unwrap();
            let other = leaves[(index + 1) % size];
            assert!(size == 1 || verify_inclusion(index as u64, size as u64, other, &proof, root).is_err());
        }
        for old in 1..=size {
            let proof = s.log_consistency(&o, old as u64, size as u64).unwrap();
            verify_consistency(old as u64, root_of(&leaves[..old]), size as u64, root, &proof).unwrap();
        }
    }
    // A history whose second entry was forged is not a prefix of the log.
    let mut forged = leaves[..3].to_vec();
    forged[1] = leaf_hash(b"{\"type\":\"ACCESS\",\"forged\":true}");
    let proof = s.log_consistency(&o, 3, 5).unwrap();
    assert!(verify_consistency(3, root_of(&forged), 5, head.root, &proof).is_err());
    // Sizes past the log are refused.
    assert!(s.log_inclusion(&o, 2, 6).is_err());
    assert!(s.log_consistency(&o, 2, 9).is_err());
}

fn edit(id: &str, of: &MessageRecord, body: &str) -> MessageEdit {
    MessageEdit {
        event_id: id.parse().unwrap(),
        sender: of.sender.clone(),
        target: of.event_id.clone(),
        msgtype: Some("m.text".to_owned()),
        body: Some(body.to_owned()),
        edited_at: now(),
    }
}

fn redaction(target: &EventId, by: &str) -> MessageRedaction {
    MessageRedaction {
        target: target.clone(),
        redaction: Redaction {
            redacted_by: by.parse().unwrap(),
            redacted_at: now(),
            reason: Some("erreur".into()),
        },
        confirmed: false,
    }
}

fn oversight(org: &str, clearance: Classification) -> Viewer {
    let mut v = viewer(org, clearance);
    v.scopes.insert(Scope::Redacted);
    v
}

fn a_runs_events_root_is_the_root_over_the_versions_it_stored(db: &TestDb) {
    const ROOM: &str = "!versions:x.org";
    let s = &db.store;
    let v = oversight("org-a", Secret);
    let mut msgs = messages(3, now() - Duration::minutes(10));
    msgs[1] = with_file(msgs[1].clone(), "mxc://x.org/plan");
    s.record_ingestion(&run(&v, Restricted), &snapshot(ROOM, msgs.clone())).unwrap();
    let mut later = snapshot(ROOM, Vec::new());
    later.edits = vec![edit("$edit1", &msgs[0], "Livraison au hangar 9")];
    later.redactions = vec![redaction(&msgs[1].event_id, msgs[1].sender.as_str())];
    let second = s.record_ingestion(&run(&v, Restricted), &later).unwrap();

    let source = s.disclosure_source(&v, &rid(ROOM), None, None).unwrap().unwrap();
    assert_eq!(source.messages.len(), 3);
    assert_eq!(source.runs.len(), 2);
    for run in &source.runs {
        let LogEntry::Audit(audit) = LogEntry::parse(&run.entry.bytes).unwrap() else {
            panic!("not an audit entry")
        };
        assert_eq!(audit.events_root, Some(hex::encode(root_of(&run.leaves))));
        assert_eq!(audit.events_count, Some(run.leaves.len() as u64));
        // Every version of the run is in the room, so the rebuilt versions give its root.
        let mut mine: Vec<_> = source.versions.iter().filter(|v| v.run_id == run.run_id).collect();
        mine.sort_by_key(|v| v.position);
        let rebuilt: Vec<_> = mine.iter().map(|v| leaf_hash(&v.leaf.canonical())).collect();
        assert_eq!(hex::encode(root_of(&rebuilt)), audit.events_root.clone().unwrap());
    }
    let LogEntry::Audit(last) = LogEntry::parse(&source.runs[1].entry.bytes).unwrap() else { panic!() };
    assert_eq!(last.seq, second.ingestion.seq);
    let kinds: Vec<VersionKind> =
        source.versions.iter().filter(|v| v.run_id == source.runs[1].run_id).map(|v| v.kind).collect();
    assert_eq!(kinds, [VersionKind::Original, VersionKind::Edit, VersionKind::Redaction]);
    let redacted = source.versions.iter().find(|v| v.kind == VersionKind::Redaction).unwrap();
    assert_eq!(redacted.leaf.reason.as_deref(), Some("erreur"));
    let file = source.versions.iter().find(|v| v.message_event_id == msgs[1].event_id.as_str()).unwrap();
    assert_eq!(file.leaf.attachment.as_ref().unwrap().uri.as_deref(), Some("mxc://x.org/plan"));
    // The redacted message's body is held: rebuilt from it for a reader of held content, not
    // for anyone else (whose leaf then differs from the one stored).
    assert_eq!(file.leaf.body.as_deref(), Some("rapport.pdf"));
    let plain = viewer("org-a", Secret);
    let without = s.disclosure_source(&plain, &rid(ROOM), None, None).unwrap().unwrap();
    let purged = without.versions.iter().find(|v| v.message_event_id == msgs[1].event_id.as_str()).unwrap();
    assert_eq!(purged.leaf.body, None);
    assert_ne!(leaf_hash(&purged.leaf.canonical()), purged.stored_leaf_hash);

    // A body changed behind the store's back no longer matches the leaf stored.
    let untouched = |src: &argus_store::DisclosureSource| {
        src.versions.iter().find(|v| v.message_event_id == msgs[2].event_id.as_str()).unwrap().clone()
    };
    let before = untouched(&source);
    assert_eq!(leaf_hash(&before.leaf.canonical()), before.stored_leaf_hash);
    db.raw()
        .exec(&format!(
            "UPDATE messages SET body = 'rien à signaler' WHERE event_id = '{}'",
            msgs[2].event_id
        ))
        .unwrap();
    let after = untouched(&s.disclosure_source(&v, &rid(ROOM), None, None).unwrap().unwrap());
    assert_eq!(after.stored_leaf_hash, before.stored_leaf_hash);
    assert_ne!(leaf_hash(&after.leaf.canonical()), after.stored_leaf_hash);

    // A range keeps only the messages sent in it.
    let from = msgs[1].sent_at;
    let ranged = s.disclosure_source(&v, &rid(ROOM), Some(from), Some(from)).unwrap().unwrap();
    assert_eq!(
        ranged.messages.iter().map(|m| m.message.event_id.clone()).collect::<Vec<_>>(),
        [msgs[1].event_id.clone()]
    );
}

fn concurrent_accesses_share_commits_and_each_gets_its_own_index(db: &TestDb) {
    const THREADS: usize = 8;
    const EACH: usize = 25;
    let s = &db.store;
    let sent: Vec<Vec<(u64, AccessEntry)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let room = format!("!r{t}-{i}:x.org");
                            let e = access(
                                "org-a",
                                &format!("agent{t}"),
                                Restricted,
                                &[&room],
                                AccessAction::Download,
                            );
                            (s.record_access(&e).unwrap(), e)
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut indexes: Vec<u64> = sent.iter().flatten().map(|(i, _)| *i).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..(THREADS * EACH) as u64).collect::<Vec<_>>());
    // Each entry is durable, at the index its caller was given, in a store opened afresh.
    let reopened = Store::open(&db.url).unwrap();
    let stored = reopened.log_entries(&org("org-a"), &indexes).unwrap();
    for (index, entry) in sent.iter().flatten() {
        let record = &stored[*index as usize];
        assert_eq!(LogEntry::parse(&record.bytes).unwrap(), LogEntry::Access(entry.clone()));
    }
    let leaves: Vec<_> = stored.iter().map(|e| leaf_hash(&e.bytes)).collect();
    assert_eq!(reopened.log_head(&org("org-a")).unwrap().root, root_of(&leaves));
}

fn the_access_log_is_read_through_the_gate_and_filtered(db: &TestDb) {
    let s = &db.store;
    let entries = [
        access("org-a", "alice", Restricted, &["!one:x.org"], AccessAction::ReadMessages),
        access("org-a", "bob", Secret, &["!one:x.org", "!two:x.org"], AccessAction::ReadMessages),
        access("org-a", "alice", Unclassified, &[], AccessAction::Search),
        access("org-b", "carol", Restricted, &["!one:x.org"], AccessAction::Download),
    ];
    for e in &entries {
        s.record_access(e).unwrap();
    }
    let all = AccessFilter::default();
    let read = |v: &Viewer, f: &AccessFilter| s.access_log(v, &PageRequest::first(10), f).unwrap();
    let secret = read(&viewer("org-a", Secret), &all);
    assert_eq!(secret.total_count, 3);
    // Newest first.
    assert_eq!(
        secret.items.iter().map(|r| r.entry.clone()).collect::<Vec<_>>(),
        [entries[2].clone(), entries[1].clone(), entries[0].clone()]
    );
    assert_eq!(secret.items.iter().map(|r| r.index).collect::<Vec<_>>(), [2, 1, 0]);
    // Lower clearance, another organisation, no audit scope: less, or nothing.
    let restricted = read(&viewer("org-a", Restricted), &all);
    assert_eq!((restricted.total_count, restricted.items.len()), (2, 2));
    let other = read(&viewer("org-b", Secret), &all);
    assert_eq!(other.items.iter().map(|r| r.entry.actor.as_str()).collect::<Vec<_>>(), ["carol"]);
    let mut no_scope = viewer("org-a", Secret);
    no_scope.scopes.remove(&Scope::Audit);
    let none = read(&no_scope, &all);
    assert_eq!((none.total_count, none.items.len()), (0, 0));
    // Filters.
    let alice = read(&viewer("org-a", Secret), &AccessFilter { actor: Some("alice".into()), room_id: None });
    assert_eq!(alice.items.iter().map(|r| r.index).collect::<Vec<_>>(), [2, 0]);
    let two =
        read(&viewer("org-a", Secret), &AccessFilter { actor: None, room_id: Some("!two:x.org".into()) });
    assert_eq!((two.total_count, two.items[0].entry.actor.as_str()), (1, "bob"));
    // Paging.
    let v = viewer("org-a", Secret);
    let first = s.access_log(&v, &PageRequest::first(2), &all).unwrap();
    assert!(first.has_next_page);
    let after = AccessCursor { index: first.items[1].index };
    let next = s.access_log(&v, &PageRequest { first: 2, after: Some(after) }, &all).unwrap();
    assert_eq!((next.items.len(), next.items[0].index, next.has_next_page), (1, 0, false));
}

fn a_disclosure_reads_only_a_room_the_viewer_may_see(db: &TestDb) {
    let s = &db.store;
    let a = viewer("org-a", Secret);
    s.record_ingestion(&run(&a, Secret), &snapshot("!secret:x.org", messages(2, now()))).unwrap();
    assert!(s.disclosure_source(&a, &rid("!secret:x.org"), None, None).unwrap().is_some());
    assert!(
        s.disclosure_source(&viewer("org-a", Restricted), &rid("!secret:x.org"), None, None)
            .unwrap()
            .is_none()
    );
    assert!(
        s.disclosure_source(&viewer("org-b", Secret), &rid("!secret:x.org"), None, None).unwrap().is_none()
    );
    assert!(s.disclosure_source(&a, &rid("!missing:x.org"), None, None).unwrap().is_none());
}
