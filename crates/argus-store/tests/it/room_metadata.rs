//! What Tchap says about a room (room version, retention, access rule, external members),
//! stored on the room and kept in the room's history of state (the outbox's payload of every
//! ingestion); the date its history is complete since; whether an active watch keeps it, and
//! the retention risk that follows.

use argus_domain::{
    Classification::Restricted, HistoryPosition, Retention, RoomId, RoomMetadata, RoomSnapshot, SealedToken,
    Viewer,
};
use argus_store::WatchCaps;

use crate::support::{TestDb, backend_suite, messages, now, run, snapshot, viewer};

backend_suite!(
    metadata_is_stored_and_kept_with_each_state,
    history_since_is_kept_with_a_complete_history,
    retention_risk_follows_the_watch_and_the_history,
);

const ROOM: &str = "!meta:x.org";

fn rid() -> RoomId {
    ROOM.parse().unwrap()
}

fn with(metadata: RoomMetadata) -> RoomSnapshot {
    let mut s = snapshot(ROOM, messages(1, now() - time::Duration::minutes(5)));
    s.metadata = metadata;
    s
}

fn day() -> Retention {
    Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: Some(3_600_000) }
}

fn metadata_is_stored_and_kept_with_each_state(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Restricted));
    let first = RoomMetadata {
        room_version: Some("10".into()),
        retention: Some(day()),
        access_rule: Some("restricted".into()),
        external_member_count: 2,
    };
    s.record_ingestion(&run(&v, Restricted), &with(first.clone())).unwrap();
    let room = s.room(&v, &rid()).unwrap().unwrap();
    assert_eq!(room.metadata, first);
    // The retention policy removed, the rule changed, the external members gone.
    let second = RoomMetadata {
        room_version: Some("10".into()),
        retention: None,
        access_rule: Some("unrestricted".into()),
        external_member_count: 0,
    };
    s.record_ingestion(&run(&v, Restricted), &with(second.clone())).unwrap();
    assert_eq!(s.room(&v, &rid()).unwrap().unwrap().metadata, second);
    let states: Vec<RoomMetadata> =
        s.outbox_pending(10).unwrap().into_iter().map(|row| row.payload.metadata).collect();
    assert_eq!(states, [first, second], "each ingestion keeps the state it read");
    // Withheld above the reader's clearance, like the rest of the room.
    assert!(s.room(&viewer("org-a", argus_domain::Classification::Unclassified), &rid()).unwrap().is_none());
    assert!(s.room(&viewer("org-b", Restricted), &rid()).unwrap().is_none());
}

fn history_since_is_kept_with_a_complete_history(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Restricted));
    let since = now() - time::Duration::hours(2);
    let mut partial = with(RoomMetadata::default());
    partial.history = HistoryPosition::Continues("t1".into());
    partial.history_since = Some(since);
    s.record_ingestion(&run(&v, Restricted), &partial).unwrap();
    let room = s.room(&v, &rid()).unwrap().unwrap();
    assert_eq!((room.history_complete, room.history_since), (false, None), "not complete yet");
    let mut complete = with(RoomMetadata::default());
    complete.history = HistoryPosition::Complete;
    complete.history_since = Some(since);
    s.record_ingestion(&run(&v, Restricted), &complete).unwrap();
    let room = s.room(&v, &rid()).unwrap().unwrap();
    assert_eq!((room.history_complete, room.history_since), (true, Some(since)));
    // A read back to the room's creation clears the date.
    let mut whole = with(RoomMetadata::default());
    whole.history = HistoryPosition::Complete;
    s.record_ingestion(&run(&v, Restricted), &whole).unwrap();
    let room = s.room(&v, &rid()).unwrap().unwrap();
    assert_eq!((room.history_complete, room.history_since), (true, None));
}

fn new_watch(v: &Viewer, since: Option<time::OffsetDateTime>) -> argus_domain::NewWatch {
    argus_domain::NewWatch {
        owner: v.actor.clone(),
        org: v.org.clone(),
        room_id: rid(),
        homeserver_url: argus_domain::testing::HOMESERVER.parse().unwrap(),
        classification: Restricted,
        interval_secs: 86_400,
        token: SealedToken { key_id: "k1".into(), nonce: "bm9uY2U".into(), ciphertext: "c2VhbGVk".into() },
        decrypts: false,
        since,
    }
}

fn retention_risk_follows_the_watch_and_the_history(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Restricted));
    let mut snap = with(RoomMetadata { retention: Some(day()), ..RoomMetadata::default() });
    snap.history = HistoryPosition::Complete;
    s.record_ingestion(&run(&v, Restricted), &snap).unwrap();
    let room = s.room(&v, &rid()).unwrap().unwrap();
    assert!(!room.watched && room.retention_risk(), "no watch: events would expire uncaptured");

    let since = now() - time::Duration::days(1);
    let watch = s.upsert_watch(&v, &new_watch(&v, Some(since)), WatchCaps::default()).unwrap();
    assert_eq!(watch.since, Some(since));
    let room = s.room(&v, &rid()).unwrap().unwrap();
    assert!(room.watched && !room.retention_risk(), "watched, with its whole history");

    // Older history still to read: at risk although watched.
    snap.history = HistoryPosition::Continues("t9".into());
    s.record_ingestion(&run(&v, Restricted), &snap).unwrap();
    assert!(s.room(&v, &rid()).unwrap().unwrap().retention_risk());

    // A watch above a reader's clearance is not told: the room looks unwatched to them.
    let mut secret = new_watch(&v, None);
    secret.classification = argus_domain::Classification::Secret;
    let boss = viewer("org-a", argus_domain::Classification::Secret);
    secret.owner = boss.actor.clone();
    s.upsert_watch(&boss, &secret, WatchCaps::default()).unwrap();
    assert!(s.room(&boss, &rid()).unwrap().unwrap().watched);
    assert!(!s.room(&v, &rid()).unwrap().unwrap().watched, "the watch is above the reader's clearance");
    assert!(s.remove_watch(&boss, &rid()).unwrap());
    s.upsert_watch(&v, &new_watch(&v, Some(since)), WatchCaps::default()).unwrap();

    // Without a retention policy nothing is at risk; without the watch, the room is not watched.
    snap.metadata.retention = None;
    s.record_ingestion(&run(&v, Restricted), &snap).unwrap();
    assert!(!s.room(&v, &rid()).unwrap().unwrap().retention_risk());
    assert!(s.remove_watch(&v, &rid()).unwrap());
    assert!(!s.room(&v, &rid()).unwrap().unwrap().watched);
    // Renewed without a date, the watch has none.
    assert_eq!(s.upsert_watch(&v, &new_watch(&v, None), WatchCaps::default()).unwrap().since, None);
}
