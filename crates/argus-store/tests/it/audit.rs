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

fn drop_triggers(db: &TestDb) {
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
