//! Audit trail tampering: refused through SQL while the triggers stand, detected by
//! verification once someone with raw access has removed them.

use argus_domain::Classification::*;
use argus_store::ChainHead;

use crate::support::{TestDb, backend_suite, messages, now, run, snapshot, viewer};

backend_suite!(
    triggers_refuse_update_delete_truncate,
    altered_field_names_its_seq,
    deleted_middle_record_names_the_gap,
    dropped_newest_records_caught_by_expected_head,
    chains_are_per_organisation,
    a_rehashed_chain_fails_against_the_audit_key,
    a_chain_keyed_from_a_boundary_verifies_with_it,
    posts_share_the_chain_and_their_evidence_is_bound,
);

/// Five records in org-a (ingestions and failures), two in org-b.
fn fill(db: &TestDb) -> Vec<ChainHead> {
    let s = &db.store;
    let a = viewer("org-a", Secret);
    for i in 0..5 {
        s.record_ingestion(&run(&a, Restricted), &snapshot(&format!("!a{i}:x.org"), messages(2, now())))
            .unwrap();
    }
    let b = viewer("org-b", Secret);
    for i in 0..2 {
        s.record_ingestion(&run(&b, Secret), &snapshot(&format!("!b{i}:x.org"), messages(1, now()))).unwrap();
    }
    let heads = s.audit_heads().unwrap();
    assert_eq!(heads.len(), 2);
    assert!(s.audit_verify(&heads).unwrap().iter().all(|c| c.is_ok()));
    heads
}

pub(crate) fn drop_triggers(db: &TestDb) {
    if db.is_postgres() {
        db.raw()
            .exec(
                "DROP TRIGGER ingestions_no_update_delete ON ingestions; \
                 DROP TRIGGER ingestions_no_truncate ON ingestions;",
            )
            .unwrap();
    } else {
        db.raw().exec("DROP TRIGGER ingestions_no_update; DROP TRIGGER ingestions_no_delete;").unwrap();
    }
}

fn triggers_refuse_update_delete_truncate(db: &TestDb) {
    fill(db);
    let mut raw = db.raw();
    assert!(raw.exec("UPDATE ingestions SET message_count = 99 WHERE seq = 2").is_err());
    assert!(raw.exec("DELETE FROM ingestions WHERE seq = 5").is_err());
    assert!(raw.exec("DELETE FROM ingestions").is_err());
    if db.is_postgres() {
        assert!(raw.exec("TRUNCATE ingestions").is_err());
    }
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM ingestions"), 7);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM ingestions WHERE message_count = 99"), 0);
}

fn org_result(db: &TestDb, heads: &[ChainHead], org: &str) -> argus_store::ChainVerification {
    db.store.audit_verify(heads).unwrap().into_iter().find(|c| c.org.as_str() == org).unwrap()
}

fn altered_field_names_its_seq(db: &TestDb) {
    let heads = fill(db);
    drop_triggers(db);
    db.raw().exec("UPDATE ingestions SET message_count = 99 WHERE org_id = 'org-a' AND seq = 3").unwrap();
    let v = org_result(db, &heads, "org-a");
    assert!(!v.is_ok());
    assert_eq!(v.first_bad_seq, Some(3));
    assert!(v.problem.unwrap().contains("altered"));
    // Recomputing the hash of the altered record is not enough: the next link breaks.
    assert!(org_result(db, &heads, "org-b").is_ok());
}

fn deleted_middle_record_names_the_gap(db: &TestDb) {
    let heads = fill(db);
    drop_triggers(db);
    db.raw().exec("DELETE FROM ingestions WHERE org_id = 'org-a' AND seq = 2").unwrap();
    let v = org_result(db, &heads, "org-a");
    assert_eq!(v.first_bad_seq, Some(2));
    assert_eq!(v.length, 4);
    // Even without an expected head the gap is seen.
    let v = org_result(db, &[], "org-a");
    assert_eq!(v.first_bad_seq, Some(2));
}

fn dropped_newest_records_caught_by_expected_head(db: &TestDb) {
    let heads = fill(db);
    drop_triggers(db);
    db.raw().exec("DELETE FROM ingestions WHERE org_id = 'org-a' AND seq >= 4").unwrap();
    // The remaining chain is consistent in itself...
    assert!(org_result(db, &[], "org-a").is_ok());
    // ...but not with the head the operator kept.
    let v = org_result(db, &heads, "org-a");
    assert_eq!(v.first_bad_seq, Some(4));
    assert_eq!(v.length, 3);
    assert_eq!(v.head.as_ref().map(|h| h.seq), Some(3));
    // A whole chain dropped is caught too.
    db.raw().exec("DELETE FROM ingestions WHERE org_id = 'org-b'").unwrap();
    let v = org_result(db, &heads, "org-b");
    assert_eq!((v.length, v.first_bad_seq), (0, Some(1)));
    // The text form of the heads survives the round trip an operator makes.
    let text: Vec<String> = heads.iter().map(ToString::to_string).collect();
    let back: Vec<ChainHead> = text.iter().map(|t| t.parse().unwrap()).collect();
    assert_eq!(back, heads);
}

fn chains_are_per_organisation(db: &TestDb) {
    let heads = fill(db);
    let a = heads.iter().find(|h| h.org.as_str() == "org-a").unwrap();
    let b = heads.iter().find(|h| h.org.as_str() == "org-b").unwrap();
    assert_eq!((a.seq, b.seq), (5, 2));
    let recs =
        db.store.ingestions(&viewer("org-a", TopSecret), &argus_domain::PageRequest::first(10)).unwrap();
    assert_eq!(recs.items.last().unwrap().prev_hash, argus_store::GENESIS);
    for w in recs.items.windows(2) {
        assert_eq!(w[0].prev_hash, w[1].hash);
    }
    // A head from another chain or with a wrong hash is reported, not ignored.
    let mut wrong = a.clone();
    wrong.hash[0] ^= 1;
    let v = org_result(db, &[wrong], "org-a");
    assert_eq!(v.first_bad_seq, Some(5));
}

/// An audit record as an attacker with raw access reads it.
#[derive(Debug, diesel::QueryableByName)]
struct RawRecord {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    actor: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    room_id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    homeserver_url: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    message_count: i64,
    #[diesel(sql_type = diesel::sql_types::SmallInt)]
    classification: i16,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    started_at: i64,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    finished_at: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    outcome: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    error: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    events_root: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    events_count: Option<i64>,
}

/// What an attacker who has dropped the triggers does: rewrites a record, then hashes the
/// whole chain of `org` again with the unkeyed scheme, which the source code documents.
fn rewrite_and_rehash(db: &TestDb, org: &str) {
    use diesel::{Connection, RunQueryDsl};
    use sha2::{Digest, Sha256};
    drop_triggers(db);
    let mut raw = db.raw();
    raw.exec(&format!("UPDATE ingestions SET error = 'nothing happened' WHERE org_id = '{org}' AND seq = 3"))
        .unwrap();
    let select = format!("SELECT * FROM ingestions WHERE org_id = '{org}' ORDER BY seq");
    let rows: Vec<RawRecord> = match &db.guard {
        crate::support::Guard::Sqlite(dir) => {
            let mut c =
                diesel::SqliteConnection::establish(dir.path().join("store.db").to_str().unwrap()).unwrap();
            diesel::sql_query(select).load(&mut c).unwrap()
        }
        crate::support::Guard::Postgres(pg) => {
            let mut c = diesel::PgConnection::establish(pg.url()).unwrap();
            diesel::sql_query(select).load(&mut c).unwrap()
        }
    };
    let field = |h: &mut Sha256, b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    let mut prev = [0u8; 32];
    for r in rows {
        let mut h = Sha256::new();
        field(&mut h, b"argus-audit-v1");
        field(&mut h, org.as_bytes());
        field(&mut h, &r.seq.to_be_bytes());
        field(&mut h, r.actor.as_bytes());
        field(&mut h, r.room_id.as_bytes());
        field(&mut h, r.homeserver_url.as_bytes());
        field(&mut h, &r.message_count.to_be_bytes());
        field(&mut h, &r.classification.to_be_bytes());
        field(&mut h, &r.started_at.to_be_bytes());
        match r.finished_at {
            None => h.update([0u8]),
            Some(t) => {
                h.update([1u8]);
                field(&mut h, &t.to_be_bytes());
            }
        }
        field(&mut h, r.outcome.as_bytes());
        match &r.error {
            None => h.update([0u8]),
            Some(e) => {
                h.update([1u8]);
                field(&mut h, e.as_bytes());
            }
        }
        if let (Some(root), Some(count)) = (&r.events_root, r.events_count) {
            field(&mut h, b"EVENTS");
            field(&mut h, root.as_bytes());
            field(&mut h, &count.to_be_bytes());
        }
        field(&mut h, &prev);
        let hash: [u8; 32] = h.finalize().into();
        raw.exec(&format!(
            "UPDATE ingestions SET prev_hash = '{}', hash = '{}' WHERE org_id = '{org}' AND seq = {}",
            hex::encode(prev),
            hex::encode(hash),
            r.seq
        ))
        .unwrap();
        prev = hash;
    }
}

fn keyed_store(db: &TestDb, key: &[u8]) -> argus_store::Store {
    let options = argus_store::StoreOptions {
        audit_key: Some(argus_store::AuditKey::new(key.to_vec()).unwrap()),
        ..argus_store::StoreOptions::default()
    };
    argus_store::Store::open_with(&db.url, options).unwrap()
}

const KEY: &[u8; 32] = b"audit-key-held-outside-the-db-!!";

/// Keyed with an audit key held outside the database, a chain rewritten and hashed again by
/// someone with write access (triggers dropped) no longer verifies; without the key the same
/// rewrite passes, which is why the key exists.
fn a_rehashed_chain_fails_against_the_audit_key(db: &TestDb) {
    let keyed = keyed_store(db, KEY);
    let v = viewer("org-a", Secret);
    for i in 0..5 {
        keyed
            .record_ingestion(&run(&v, Restricted), &snapshot(&format!("!k{i}:x.org"), messages(1, now())))
            .unwrap();
    }
    assert!(keyed.audit_verify(&[]).unwrap().iter().all(|c| c.is_ok()));
    // The wrong key, or none, does not verify a keyed chain.
    let wrong = keyed_store(db, b"another-key-another-key-another!");
    assert!(!wrong.audit_verify(&[]).unwrap()[0].is_ok());
    assert!(!db.store.audit_verify(&[]).unwrap()[0].is_ok());

    rewrite_and_rehash(db, "org-a");
    // Unkeyed verification is fooled by the rehash...
    assert!(db.store.audit_verify(&[]).unwrap()[0].is_ok());
    // ...keyed verification is not.
    let result = keyed.audit_verify(&[]).unwrap();
    assert!(!result[0].is_ok(), "{result:?}");
    assert_eq!(result[0].first_bad_seq, Some(1));
}

/// A chain begun before the key was set verifies when the operator gives the boundary
/// (`org:seq`) they kept outside the database, and not without it.
fn a_chain_keyed_from_a_boundary_verifies_with_it(db: &TestDb) {
    let v = viewer("org-a", Secret);
    for i in 0..3 {
        db.store
            .record_ingestion(&run(&v, Restricted), &snapshot(&format!("!u{i}:x.org"), messages(1, now())))
            .unwrap();
    }
    let keyed = keyed_store(db, KEY);
    for i in 0..2 {
        keyed
            .record_ingestion(&run(&v, Restricted), &snapshot(&format!("!k{i}:x.org"), messages(1, now())))
            .unwrap();
    }
    let org: argus_domain::OrgId = "org-a".parse().unwrap();
    assert!(keyed.audit_verify_from(&[], &[(org.clone(), 3)]).unwrap()[0].is_ok());
    let without = keyed.audit_verify(&[]).unwrap();
    assert_eq!(without[0].first_bad_seq, Some(1));
    // A boundary further than the truth is no excuse for a keyed record: 4 and 5 are keyed.
    assert_eq!(keyed.audit_verify_from(&[], &[(org, 4)]).unwrap()[0].first_bad_seq, Some(4));
}

/// The documented least-privilege setup (`docs/postgres-least-privilege.sql`): the server's
/// role works (a large ingestion, room and account watches too), and cannot drop or disable the
/// audit triggers, update or delete audit records, or truncate the trail.
#[test]
fn postgres_least_privilege_role_cannot_touch_the_audit_trail() {
    let Some(db) = crate::support::postgres() else { return };
    let setup = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/postgres-least-privilege.sql"
    ))
    .unwrap();
    db.raw().exec(&setup).unwrap();
    let app_url = db.url.replacen("postgres://postgres@", "postgres://argus_app@", 1);
    let app = argus_store::Store::open(&app_url).unwrap();
    let v = viewer("org-a", Secret);
    let done =
        app.record_ingestion(&run(&v, Restricted), &snapshot("!lp:x.org", messages(3, now()))).unwrap();
    assert_eq!(done.counts.messages_stored, 3);
    let mut again = snapshot("!lp:x.org", messages(1, now()));
    again.redactions = Vec::new();
    app.record_ingestion(&run(&v, Restricted), &again).unwrap();
    assert!(app.audit_verify(&app.audit_heads().unwrap()).unwrap().iter().all(|c| c.is_ok()));

    use diesel::{Connection, connection::SimpleConnection};
    let mut raw = diesel::PgConnection::establish(&app_url).unwrap();
    for attack in [
        "DROP TRIGGER ingestions_no_update_delete ON ingestions",
        "ALTER TABLE ingestions DISABLE TRIGGER ALL",
        "UPDATE ingestions SET message_count = 0",
        "DELETE FROM ingestions",
        "TRUNCATE ingestions",
        "DROP TABLE ingestions",
        "UPDATE room_states SET access_rule = NULL",
        "DELETE FROM room_states",
        "TRUNCATE room_states",
        "ALTER TABLE room_states DISABLE TRIGGER ALL",
    ] {
        let err = raw.batch_execute(attack).unwrap_err().to_string();
        assert!(err.contains("permission denied") || err.contains("must be owner"), "{attack}: {err}");
    }
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM ingestions"), 2);

    // Watches, and the account pair they share, are the server's to write (and remove).
    let sealed = |text: &str| argus_domain::SealedToken {
        key_id: "k1".into(),
        nonce: "bm9uY2U".into(),
        ciphertext: text.into(),
    };
    let room: argus_domain::RoomId = "!lp-watched:x.org".parse().unwrap();
    let new = argus_domain::NewWatch {
        owner: v.actor.clone(),
        org: v.org.clone(),
        room_id: room.clone(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse().unwrap(),
        classification: Restricted,
        interval_secs: 300,
        token: sealed("dG9rZW4"),
        decrypts: false,
        since: None,
    };
    let credential = argus_store::NewCredential {
        org: v.org.clone(),
        owner: v.actor.clone(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".into(),
        user_id: "@analyst:agent.tchap.gouv.fr".into(),
        token: sealed("cGFpcg"),
    };
    let watch =
        app.upsert_account_watch(&v, &new, Some(&credential), argus_store::WatchCaps::default()).unwrap();
    assert!(app.watch_credential(watch.id).unwrap().is_some());
    assert!(app.remove_watch(&v, &room).unwrap());
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_credentials"), 0);

    // Account watches too (live capture): created with the account's pair, claimed, synced
    // with the rooms they follow, and removed with them.
    let account = argus_domain::NewAccountWatch {
        owner: v.actor.clone(),
        org: v.org.clone(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse().unwrap(),
        user_id: "@analyst:agent.tchap.gouv.fr".into(),
        classification: Restricted,
        timeout_secs: 30,
        rooms: None,
        token: sealed("dG9rZW4"),
        decrypts: false,
        since: None,
    };
    let live = app
        .upsert_account_sync_watch(&v, &account, Some(&credential), argus_store::WatchCaps::default())
        .unwrap();
    let lease = std::time::Duration::from_secs(60);
    assert_eq!(app.claim_account_watches("replica-a", now(), lease, 10).unwrap().len(), 1);
    assert!(app.renew_account_watch_lease(live.id, "replica-a", now(), lease).unwrap());
    assert!(app.set_account_watch_filter(live.id, "replica-a", "filter-1").unwrap());
    let joined = argus_domain::FollowedRoom {
        room_id: "!lp:x.org".parse().unwrap(),
        membership: argus_domain::Membership::Join,
        by: None,
        changed_at: now(),
        due: false,
    };
    let progress =
        argus_store::SyncProgress { sync_token: "s1".into(), synced_at: now(), rooms: vec![joined] };
    assert!(app.record_sync(live.id, "replica-a", &progress).unwrap());
    assert_eq!(app.account_watch(&v, live.id).unwrap().map(|w| w.room_count), Some(1));
    assert!(app.account_watch_credential(live.id).unwrap().is_some());
    assert!(app.remove_account_watch(&v, live.id).unwrap());
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watch_rooms"), 0);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_credentials"), 0);

    // A large ingestion: its search vectors are computed ahead on a second connection, and the
    // merge of the index's pending list, which only the index's owner may ask for, is left to
    // the database; every row still has its vector.
    let big = app
        .record_ingestion(&run(&v, Restricted), &snapshot("!lp-big:x.org", messages(20_000, now())))
        .unwrap();
    assert_eq!(big.counts.messages_stored, 20_000);
    assert_eq!(
        db.count("SELECT COUNT(*) AS n FROM messages WHERE search IS DISTINCT FROM argus_search_vector(body, redacted)"),
        0
    );
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM messages WHERE search IS NULL"), 0);
}

fn post_entry(
    org: &str,
    room: &str,
    outcome: argus_domain::IngestionOutcome,
    event: Option<&str>,
) -> argus_domain::NewIngestion {
    let mut post = argus_domain::PostEvidence::of("[DIFFUSION RESTREINTE] rendez-vous 10h");
    post.event_id = event.map(str::to_owned);
    argus_domain::NewIngestion {
        actor: "analyst@example.gouv.fr".parse().unwrap(),
        org: org.parse().unwrap(),
        room_id: room.to_owned(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr/_matrix?access_token=x".to_owned(),
        message_count: 7,
        classification: Restricted,
        started_at: now(),
        finished_at: None,
        outcome,
        error: (outcome == argus_domain::IngestionOutcome::Failed).then(|| "refused: write-down".to_owned()),
        post: Some(post),
        scheduled: false,
        rehomed_from: None,
    }
}

/// A post, sent or refused, is a link of the same chain as the ingestions; its digest, length
/// and event id are hashed, and a record changed from one kind into the other fails.
fn posts_share_the_chain_and_their_evidence_is_bound(db: &TestDb) {
    use argus_domain::IngestionOutcome::{Failed, Succeeded};
    fill(db);
    let s = &db.store;
    // The room is held at SECRET: the records naming it are filed there.
    s.record_ingestion(&run(&viewer("org-a", Secret), Secret), &snapshot("!held:x.org", messages(1, now())))
        .unwrap();
    let sent = s.record_post(&post_entry("org-a", "!held:x.org", Succeeded, Some("$note:x.org"))).unwrap();
    let refused = s.record_post(&post_entry("org-a", "!other:x.org", Failed, None)).unwrap();
    assert_eq!(sent.seq, 7);
    assert_eq!(refused.seq, 8);
    assert_eq!(sent.entry.classification, Secret);
    assert_eq!(refused.entry.classification, Restricted);
    assert_eq!(sent.entry.message_count, 0);
    assert_eq!(sent.entry.homeserver_url, "https://matrix.agent.tchap.gouv.fr");
    let page = s.ingestions(&viewer("org-a", Secret), &argus_domain::PageRequest::first(2)).unwrap();
    assert_eq!(page.items[0].entry.post, refused.entry.post);
    assert_eq!(page.items[1].entry.post.as_ref().and_then(|p| p.event_id.as_deref()), Some("$note:x.org"));
    // A reader below the room's level does not see the record naming it.
    let low = s.ingestions(&viewer("org-a", Restricted), &argus_domain::PageRequest::first(50)).unwrap();
    assert!(low.items.iter().all(|r| r.entry.room_id != "!held:x.org"));
    // An ingestion record cannot be written with post evidence missing its body digest.
    let mut bad = post_entry("org-a", "!x:x.org", Succeeded, None);
    bad.post = None;
    assert!(s.record_post(&bad).is_err());

    let heads = s.audit_heads().unwrap();
    assert!(s.audit_verify(&heads).unwrap().iter().all(|c| c.is_ok()));
    drop_triggers(db);
    for (tamper, seq) in [
        ("UPDATE ingestions SET body_length = 3 WHERE org_id = 'org-a' AND seq = 7", 7),
        ("UPDATE ingestions SET event_id = '$other:x.org' WHERE org_id = 'org-a' AND seq = 7", 7),
        ("UPDATE ingestions SET action = 'INGEST' WHERE org_id = 'org-a' AND seq = 8", 8),
        ("UPDATE ingestions SET event_id = '$forged:x.org' WHERE org_id = 'org-a' AND seq = 1", 1),
        (
            "UPDATE ingestions SET action = 'INGEST', body_sha256 = NULL, body_length = NULL WHERE org_id = 'org-a' AND seq = 8",
            8,
        ),
    ] {
        let before = db.store.audit_heads().unwrap();
        db.raw().exec(tamper).unwrap();
        let v = org_result(db, &before, "org-a");
        assert_eq!(v.first_bad_seq, Some(seq), "{tamper}");
        // Put back: the next case starts from an intact chain.
        db.raw()
            .exec("UPDATE ingestions SET action = 'POST' WHERE org_id = 'org-a' AND seq = 8 AND body_sha256 IS NOT NULL")
            .unwrap();
        db.raw().exec("UPDATE ingestions SET event_id = NULL WHERE org_id = 'org-a' AND seq = 1").unwrap();
        let length = sent.entry.post.as_ref().map_or(0, |p| p.body_length);
        db.raw()
            .exec(&format!(
                "UPDATE ingestions SET body_length = {length}, event_id = '$note:x.org' WHERE org_id = 'org-a' AND seq = 7"
            ))
            .unwrap();
    }
}
