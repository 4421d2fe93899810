//! The history of a room's state: a row appended only when an ingestion observes the room's
//! state changed (the first always), never updated or deleted, read newest first and paged
//! through the room's gate (another organisation, or a reader below the room's level, sees
//! nothing), and kept when the room moves to another homeserver.

use argus_domain::{
    Classification::{Restricted, Secret, Unclassified},
    PageRequest, Retention, RoomId, RoomMetadata, RoomSnapshot,
};
use argus_store::{RoomStateCursor, RoomStateRecord};

use crate::support::{TestDb, backend_suite, messages, now, run, snapshot, viewer};

backend_suite!(
    a_state_is_appended_only_when_it_changed,
    the_history_cannot_be_updated_or_deleted,
    the_history_is_gated_like_its_room,
    the_history_is_paged_newest_first,
    the_history_follows_a_moved_room,
);

const ROOM: &str = "!history:x.org";

fn rid() -> RoomId {
    ROOM.parse().unwrap()
}

fn with(metadata: RoomMetadata) -> RoomSnapshot {
    let mut s = snapshot(ROOM, messages(1, now() - time::Duration::minutes(5)));
    s.metadata = metadata;
    s
}

fn restricted(max_lifetime_ms: u64) -> RoomMetadata {
    RoomMetadata {
        room_version: Some("10".into()),
        retention: Some(Retention { max_lifetime_ms: Some(max_lifetime_ms), min_lifetime_ms: None }),
        access_rule: Some("restricted".into()),
        external_member_count: 0,
    }
}

fn history(db: &TestDb, v: &argus_domain::Viewer) -> Vec<RoomStateRecord> {
    db.store.room_state_history(v, &rid(), &PageRequest::first(100)).unwrap().items
}

fn a_state_is_appended_only_when_it_changed(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Restricted));
    s.record_ingestion(&run(&v, Restricted), &with(restricted(86_400_000))).unwrap();
    let states = history(db, &v);
    assert_eq!(states.len(), 1, "a room's first ingestion always records its state");
    assert_eq!(states[0].metadata, restricted(86_400_000));
    assert_eq!(states[0].name.as_deref(), Some("Room !history:x.org"));
    assert_eq!(states[0].topic.as_deref(), Some("Coordination"));
    assert!(!states[0].encrypted);
    let observed_by = "SELECT COUNT(*) AS n FROM room_states s JOIN ingestions i \
                       ON i.org_id = s.org_id AND i.run_id = s.run_id AND i.seq = 1";
    assert_eq!(db.count(observed_by), 1, "the run that observed it, by its audit record");

    // The same state again (new messages only): nothing appended.
    s.record_ingestion(&run(&v, Restricted), &with(restricted(86_400_000))).unwrap();
    assert_eq!(history(db, &v).len(), 1);

    // The retention and the access rule change, then the topic alone, then encryption.
    let mut opened = restricted(3_600_000);
    opened.access_rule = Some("unrestricted".into());
    opened.external_member_count = 2;
    s.record_ingestion(&run(&v, Restricted), &with(opened.clone())).unwrap();
    let mut topic = with(opened.clone());
    topic.topic = Some("Crisis cell".into());
    s.record_ingestion(&run(&v, Restricted), &topic).unwrap();
    topic.encrypted = true;
    s.record_ingestion(&run(&v, Restricted), &topic).unwrap();
    s.record_ingestion(&run(&v, Restricted), &topic).unwrap();

    let states = history(db, &v);
    assert_eq!(states.len(), 4, "one row per change: {states:?}");
    assert!(states.windows(2).all(|w| w[0].id > w[1].id && w[0].observed_at >= w[1].observed_at));
    assert!(states[0].encrypted && !states[1].encrypted);
    assert_eq!(states[1].topic.as_deref(), Some("Crisis cell"));
    assert_eq!(states[2].topic.as_deref(), Some("Coordination"));
    assert_eq!(states[2].metadata, opened);
    assert_eq!(states[3].metadata, restricted(86_400_000));
    // The room's row holds the latest state.
    assert_eq!(s.room(&v, &rid()).unwrap().unwrap().metadata, states[0].metadata);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM room_states"), 4);
}

fn the_history_cannot_be_updated_or_deleted(db: &TestDb) {
    let v = viewer("org-a", Restricted);
    db.store.record_ingestion(&run(&v, Restricted), &with(restricted(86_400_000))).unwrap();
    let mut raw = db.raw();
    assert!(raw.exec("UPDATE room_states SET access_rule = 'unrestricted'").is_err());
    assert!(raw.exec("UPDATE room_states SET retention_max_lifetime_ms = NULL").is_err());
    assert!(raw.exec("DELETE FROM room_states").is_err());
    if db.is_postgres() {
        assert!(raw.exec("TRUNCATE room_states").is_err());
    }
    // Out of bounds, like the room's own columns.
    let bad = "INSERT INTO room_states (org_id, room_pk, run_id, observed_at, encrypted, \
               external_member_count, retention_max_lifetime_ms) SELECT org_id, id, 1, 0, FALSE, 0, ";
    assert!(raw.exec(&format!("{bad} 0 FROM rooms")).is_err(), "a lifetime must be positive");
    assert!(raw.exec(&format!("{bad} NULL FROM rooms WHERE FALSE")).is_ok());
    assert_eq!(history(db, &v).len(), 1);
    assert_eq!(history(db, &v)[0].metadata, restricted(86_400_000));
}

fn the_history_is_gated_like_its_room(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Secret));
    s.record_ingestion(&run(&v, Secret), &with(restricted(86_400_000))).unwrap();
    assert_eq!(history(db, &v).len(), 1);
    let missing = |viewer: &argus_domain::Viewer, room: &RoomId| {
        let page = s.room_state_history(viewer, room, &PageRequest::first(10)).unwrap();
        assert!(page.items.is_empty() && !page.has_next_page);
        assert_eq!(page.total_count, 0);
    };
    // Below the room's level, another organisation, a room not archived: alike.
    missing(&viewer("org-a", Restricted), &rid());
    missing(&viewer("org-a", Unclassified), &rid());
    missing(&viewer("org-b", Secret), &rid());
    missing(&v, &"!absent:x.org".parse().unwrap());
    // Another organisation's own copy of the room has its own history.
    let other = viewer("org-b", Secret);
    s.record_ingestion(&run(&other, Restricted), &with(RoomMetadata::default())).unwrap();
    assert_eq!(history(db, &other)[0].metadata, RoomMetadata::default());
    assert_eq!(history(db, &v)[0].metadata, restricted(86_400_000));
}

fn the_history_is_paged_newest_first(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Restricted));
    for hours in 1..=5_u64 {
        s.record_ingestion(&run(&v, Restricted), &with(restricted(hours * 3_600_000))).unwrap();
    }
    let lifetimes = |page: &[RoomStateRecord]| -> Vec<u64> {
        page.iter().map(|r| r.metadata.retention.unwrap().max_lifetime_ms.unwrap() / 3_600_000).collect()
    };
    let mut request = PageRequest::first(2);
    let mut seen = Vec::new();
    loop {
        let page = s.room_state_history(&v, &rid(), &request).unwrap();
        assert_eq!(page.total_count, 5);
        seen.extend(lifetimes(&page.items));
        if !page.has_next_page {
            break;
        }
        request.after = page.items.last().map(RoomStateCursor::of);
    }
    assert_eq!(seen, [5, 4, 3, 2, 1]);
    let none = s.room_state_history(&v, &rid(), &PageRequest::first(0)).unwrap();
    assert!(none.items.is_empty() && none.has_next_page);
}

fn the_history_follows_a_moved_room(db: &TestDb) {
    let (s, v) = (&db.store, viewer("org-a", Restricted));
    s.record_ingestion(&run(&v, Restricted), &with(restricted(86_400_000))).unwrap();
    let to: argus_domain::HomeserverUrl = "https://matrix.other.tchap.gouv.fr".parse().unwrap();
    let operator = "operator".parse().unwrap();
    s.rehome_room(&operator, &v.org, &rid(), &to).unwrap().unwrap();
    assert_eq!(history(db, &v).len(), 1, "the history stays with the room");
    // Read from its new server: the same state adds nothing, a change adds a row.
    let mut moved = with(restricted(86_400_000));
    moved.homeserver_url = to.clone();
    s.record_ingestion(&run(&v, Restricted), &moved).unwrap();
    assert_eq!(history(db, &v).len(), 1);
    moved.metadata.access_rule = Some("unrestricted".into());
    s.record_ingestion(&run(&v, Restricted), &moved).unwrap();
    let states = history(db, &v);
    assert_eq!(states.len(), 2);
    assert_eq!(states[0].metadata.access_rule.as_deref(), Some("unrestricted"));
}
