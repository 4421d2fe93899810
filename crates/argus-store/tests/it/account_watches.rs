//! Account watches (live capture), on both backends: created and renewed with their positions
//! kept, bounded by caps over what the caller may see, read through the gate (their room count
//! and listed rooms never showing a room stored above the viewer's clearance), claimed by one
//! replica at a time under a lease, and written by the loop only while it holds that lease;
//! memberships of the followed rooms, stops by an account's state, removal with its rooms and
//! without a credential another watch still uses, re-sealing, bad input refused with nothing
//! written, and the migration run down and up again over stored rows.

use std::time::Duration;

use argus_domain::{
    AccountWatch,
    Classification::{self, Restricted, Secret, Unclassified},
    FollowedRoom, Membership, NewAccountWatch, NewWatch, RoomId, SealedToken, Viewer, WatchStatus,
};
use argus_store::{Error, NewCredential, SyncProgress, WatchCaps};
use time::OffsetDateTime;

use crate::support::{TestDb, backend_suite, messages, now, run, snapshot, viewer};

backend_suite!(
    an_account_watch_is_renewed_in_place_keeping_its_positions,
    caps_count_the_account_watches_the_caller_may_see,
    reads_go_through_the_gate_and_hide_rooms_above_clearance,
    one_replica_at_a_time_holds_an_account_watch,
    replicas_claiming_at_once_get_disjoint_watches,
    the_loop_writes_only_under_its_lease,
    memberships_are_upserted_by_room,
    an_account_state_stops_the_watch_until_it_is_given_again,
    a_loop_started_with_other_credentials_cannot_stop_the_watch_given_again,
    removal_takes_the_rooms_and_keeps_a_credential_still_in_use,
    tokens_are_resealed_only_over_the_token_read,
    bad_input_is_refused_with_nothing_written,
    the_migration_runs_down_and_up_again_over_stored_rows,
);

const HS: &str = "https://matrix.agent.tchap.gouv.fr";
const LEASE: Duration = Duration::from_secs(60);

/// `actor` of `org` cleared `clearance`.
fn someone(actor: &str, org: &str, clearance: Classification) -> Viewer {
    let v = viewer(org, clearance);
    Viewer::new(actor.parse().unwrap(), v.org, clearance, [argus_domain::Scope::Ingest])
}

fn sealed(ciphertext: &str) -> SealedToken {
    SealedToken { key_id: "k1".into(), nonce: "bm9uY2U".into(), ciphertext: ciphertext.into() }
}

fn rid(room: &str) -> RoomId {
    room.parse().unwrap()
}

fn new_watch(owner: &Viewer, user: &str, classification: Classification) -> NewAccountWatch {
    NewAccountWatch {
        owner: owner.actor.clone(),
        org: owner.org.clone(),
        homeserver_url: HS.parse().unwrap(),
        user_id: user.into(),
        classification,
        timeout_secs: 30,
        rooms: None,
        token: sealed("dG9rZW4"),
        decrypts: false,
        since: None,
    }
}

fn credential(owner: &Viewer, user: &str, pair: &str) -> NewCredential {
    NewCredential {
        org: owner.org.clone(),
        owner: owner.actor.clone(),
        homeserver_url: HS.into(),
        user_id: user.into(),
        token: sealed(pair),
    }
}

fn create(db: &TestDb, owner: &Viewer, user: &str, level: Classification) -> AccountWatch {
    db.store
        .upsert_account_sync_watch(owner, &new_watch(owner, user, level), None, WatchCaps::default())
        .unwrap()
}

fn followed(room: &str, membership: Membership, by: Option<&str>, due: bool) -> FollowedRoom {
    FollowedRoom { room_id: rid(room), membership, by: by.map(str::to_owned), changed_at: now(), due }
}

fn progress(token: &str, rooms: Vec<FollowedRoom>) -> SyncProgress {
    SyncProgress { sync_token: token.into(), synced_at: now(), rooms }
}

fn claimed_ids(db: &TestDb, replica: &str, at: OffsetDateTime) -> Vec<i64> {
    db.store.claim_account_watches(replica, at, LEASE, 100).unwrap().into_iter().map(|c| c.watch.id).collect()
}

fn an_account_watch_is_renewed_in_place_keeping_its_positions(db: &TestDb) {
    let alice = someone("alice", "dgsi", Secret);
    let user = "@alice:agent.tchap.gouv.fr";
    let mut new = new_watch(&alice, user, Restricted);
    new.rooms = Some(vec![rid("!a:x.org"), rid("!b:x.org"), rid("!a:x.org")]);
    new.since = Some(now() - time::Duration::days(2));
    new.decrypts = true;
    let created = db
        .store
        .upsert_account_sync_watch(
            &alice,
            &new,
            Some(&credential(&alice, user, "cGFpcjE")),
            WatchCaps::default(),
        )
        .unwrap();
    assert_eq!((created.status, created.status_reason.as_deref()), (WatchStatus::Active, None));
    assert_eq!((created.room_count, created.last_sync_at, created.timeout_secs), (0, None, 30));
    assert_eq!(created.rooms, Some(vec![rid("!a:x.org"), rid("!b:x.org")]), "each room once, in order");
    assert_eq!((created.since, created.decrypts, created.user_id.as_str()), (new.since, true, user));
    let pair = db.store.account_watch_credential(created.id).unwrap().unwrap();
    assert_eq!((pair.user_id.as_str(), pair.token.clone()), (user, sealed("cGFpcjE")));

    // The loop syncs once: a filter, a position, two joined rooms.
    let t0 = now();
    let claimed = db.store.claim_account_watches("r1", t0, LEASE, 10).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!((claimed[0].sync_token.as_deref(), claimed[0].filter_id.as_deref()), (None, None));
    assert_eq!((claimed[0].credential_id, claimed[0].token.clone()), (Some(pair.id), sealed("dG9rZW4")));
    assert!(db.store.set_account_watch_filter(created.id, "r1", "filter-7").unwrap());
    let rooms = vec![
        followed("!a:x.org", Membership::Join, None, false),
        followed("!b:x.org", Membership::Join, None, true),
    ];
    assert!(db.store.record_sync(created.id, "r1", &progress("s72_1", rooms.clone())).unwrap());
    let synced = db.store.account_watch(&alice, created.id).unwrap().unwrap();
    assert_eq!(synced.room_count, 2);
    assert!(synced.last_sync_at.is_some());

    // Renewed with everything changed: the same watch, active, its positions and rooms kept,
    // the old pair replaced, the running loop's lease given up.
    let renewed = NewAccountWatch {
        classification: Secret,
        timeout_secs: 45,
        rooms: Some(vec![rid("!c:x.org")]),
        token: sealed("bmV3"),
        decrypts: false,
        since: None,
        ..new.clone()
    };
    let again = db
        .store
        .upsert_account_sync_watch(
            &alice,
            &renewed,
            Some(&credential(&alice, user, "cGFpcjI")),
            WatchCaps::default(),
        )
        .unwrap();
    assert_eq!(again.id, created.id);
    assert_eq!(
        (again.classification, again.timeout_secs, again.decrypts, again.since),
        (Secret, 45, false, None)
    );
    assert_eq!(
        (again.rooms, again.room_count, again.last_sync_at),
        (Some(vec![rid("!c:x.org")]), 2, synced.last_sync_at)
    );
    assert_eq!(again.created_at, created.created_at);
    assert_eq!(
        db.store.account_watch_credential(created.id).unwrap().map(|c| (c.id, c.token)),
        Some((pair.id, sealed("cGFpcjI")))
    );
    assert!(
        !db.store.record_sync(created.id, "r1", &progress("s99", Vec::new())).unwrap(),
        "the old loop's lease is gone"
    );
    let resumed = db.store.claim_account_watches("r2", t0, LEASE, 10).unwrap();
    assert_eq!(resumed.len(), 1);
    assert_eq!(
        (resumed[0].sync_token.as_deref(), resumed[0].filter_id.as_deref()),
        (Some("s72_1"), Some("filter-7"))
    );
    assert_eq!(resumed[0].token, sealed("bmV3"));
    assert_eq!(db.store.followed_rooms(created.id).unwrap().len(), 2);

    // Renewed without a refresh token: the watch refers to none, and the pair is not kept.
    db.store.upsert_account_sync_watch(&alice, &renewed, None, WatchCaps::default()).unwrap();
    assert_eq!(db.store.account_watch_credential(created.id).unwrap(), None);
    assert_eq!(db.store.credential(pair.id).unwrap(), None);
    assert_eq!(db.store.count_account_watches(&alice).unwrap(), 1);
}

fn caps_count_the_account_watches_the_caller_may_see(db: &TestDb) {
    let caps = WatchCaps { per_owner: 2, per_org: 3 };
    let watch = |who: &Viewer, user: &str, level: Classification| {
        db.store.upsert_account_sync_watch(who, &new_watch(who, user, level), None, caps).map(|w| w.id)
    };
    // Two above what the next callers may see; room watches are not counted either.
    let high = someone("high", "dgsi", Secret);
    watch(&high, "@s1:x.org", Secret).unwrap();
    watch(&high, "@s2:x.org", Secret).unwrap();
    let room = NewWatch {
        owner: high.actor.clone(),
        org: high.org.clone(),
        room_id: rid("!r:x.org"),
        homeserver_url: HS.parse().unwrap(),
        classification: Unclassified,
        interval_secs: 60,
        token: sealed("cm9vbQ"),
        decrypts: false,
        since: None,
    };
    db.store.upsert_watch(&high, &room, WatchCaps::default()).unwrap();

    let alice = someone("alice", "dgsi", Unclassified);
    watch(&alice, "@a1:x.org", Unclassified).unwrap();
    let a2 = watch(&alice, "@a2:x.org", Unclassified).unwrap();
    let refused = watch(&alice, "@a3:x.org", Unclassified).unwrap_err();
    assert_eq!(
        (refused.code(), refused.public_message().as_str()),
        ("TOO_MANY_WATCHES", "at most 2 watched rooms per owner")
    );
    // A renewal is not a new watch.
    assert_eq!(watch(&alice, "@a2:x.org", Unclassified).unwrap(), a2);
    let bob = someone("bob", "dgsi", Unclassified);
    watch(&bob, "@b1:x.org", Unclassified).unwrap();
    let refused = watch(&bob, "@b2:x.org", Unclassified).unwrap_err();
    assert_eq!(refused.public_message(), "at most 3 watched rooms per organisation");
    // Taking another owner's watch over makes it a new one of the taker's.
    let carol = someone("carol", "dgsi", Unclassified);
    let caps_for_carol = WatchCaps { per_owner: 0, per_org: 100 };
    let taken = db.store.upsert_account_sync_watch(
        &carol,
        &new_watch(&carol, "@b1:x.org", Unclassified),
        None,
        caps_for_carol,
    );
    assert_eq!(taken.unwrap_err().code(), "TOO_MANY_WATCHES");
    // Who sees them all is held to the same cap over what they see (five).
    let refused = watch(&someone("high2", "dgsi", Secret), "@s3:x.org", Secret).unwrap_err();
    assert_eq!(refused.public_message(), "at most 3 watched rooms per organisation");
    // Another organisation is not counted.
    watch(&someone("alice", "anssi", Unclassified), "@a3:x.org", Unclassified).unwrap();
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watches"), 6);
}

fn reads_go_through_the_gate_and_hide_rooms_above_clearance(db: &TestDb) {
    let low = someone("low", "dgsi", Restricted);
    let high = someone("high", "dgsi", Secret);
    let stranger = someone("low", "anssi", Secret);
    // A room the organisation stores at SECRET, and another organisation's room of the same
    // id at SECRET too (it withholds nothing of dgsi's).
    db.store.record_ingestion(&run(&high, Secret), &snapshot("!secret:x.org", messages(1, now()))).unwrap();
    db.store.record_ingestion(&run(&stranger, Secret), &snapshot("!open:x.org", messages(1, now()))).unwrap();
    db.store
        .record_ingestion(&run(&low, Restricted), &snapshot("!restricted:x.org", messages(1, now())))
        .unwrap();

    let mut new = new_watch(&low, "@low:x.org", Restricted);
    new.rooms = Some(vec![rid("!open:x.org"), rid("!secret:x.org"), rid("!restricted:x.org")]);
    let watched = db.store.upsert_account_sync_watch(&low, &new, None, WatchCaps::default()).unwrap();
    assert_eq!(
        watched.rooms,
        Some(vec![rid("!open:x.org"), rid("!restricted:x.org")]),
        "never names a withheld room"
    );
    let above = create(db, &high, "@high:x.org", Secret);
    db.store.claim_account_watches("r1", now(), LEASE, 10).unwrap();
    let rooms = ["!open:x.org", "!secret:x.org", "!restricted:x.org"]
        .map(|r| followed(r, Membership::Join, None, false))
        .into_iter()
        .chain([
            followed("!left:x.org", Membership::Leave, None, false),
            followed("!invited:x.org", Membership::Invite, Some("@boss:x.org"), false),
        ])
        .collect();
    assert!(db.store.record_sync(watched.id, "r1", &progress("s1", rooms)).unwrap());

    // The low viewer: their own watch, its count without the SECRET room; not the SECRET watch.
    let seen = db.store.account_watches(&low, 50, None).unwrap();
    assert_eq!(seen.iter().map(|w| (w.id, w.room_count)).collect::<Vec<_>>(), [(watched.id, 2)]);
    assert_eq!(db.store.count_account_watches(&low).unwrap(), 1);
    assert_eq!(db.store.account_watch(&low, above.id).unwrap(), None);
    assert!(!db.store.remove_account_watch(&low, above.id).unwrap());
    let renewal = db.store.upsert_account_sync_watch(
        &low,
        &new_watch(&low, "@high:x.org", Restricted),
        None,
        WatchCaps::default(),
    );
    assert!(matches!(renewal, Err(Error::Withheld)), "{renewal:?}");
    // The high viewer sees both, and every joined room (the listed ones too).
    let seen = db.store.account_watches(&high, 50, None).unwrap();
    assert_eq!(
        seen.iter().map(|w| (w.id, w.room_count)).collect::<Vec<_>>(),
        [(watched.id, 3), (above.id, 0)]
    );
    assert_eq!(seen[0].rooms.as_ref().map(Vec::len), Some(3));
    assert_eq!(db.store.count_account_watches(&high).unwrap(), 2);
    // Keyset pages.
    assert_eq!(db.store.account_watches(&high, 1, None).unwrap().len(), 1);
    assert_eq!(
        db.store
            .account_watches(&high, 50, Some(watched.id))
            .unwrap()
            .iter()
            .map(|w| w.id)
            .collect::<Vec<_>>(),
        [above.id]
    );
    // Another organisation sees nothing, removes nothing.
    assert!(db.store.account_watches(&stranger, 50, None).unwrap().is_empty());
    assert_eq!(db.store.count_account_watches(&stranger).unwrap(), 0);
    assert_eq!(db.store.account_watch(&stranger, watched.id).unwrap(), None);
    assert!(!db.store.remove_account_watch(&stranger, watched.id).unwrap());
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watches"), 2);
    // The loop's own read: every room, whatever its level.
    assert_eq!(db.store.followed_rooms(watched.id).unwrap().len(), 5);
}

fn one_replica_at_a_time_holds_an_account_watch(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let id = create(db, &alice, "@alice:x.org", Restricted).id;
    let t0 = now();
    assert_eq!(claimed_ids(db, "r1", t0), [id]);
    assert!(claimed_ids(db, "r2", t0).is_empty(), "held by r1");
    assert_eq!(claimed_ids(db, "r1", t0), [id], "its own again");
    assert!(db.store.renew_account_watch_lease(id, "r1", t0, LEASE).unwrap());
    assert!(!db.store.renew_account_watch_lease(id, "r2", t0, LEASE).unwrap());
    // r1 stops renewing: once its lease ran out, r2 takes the watch; r1 has lost it.
    let later = t0 + time::Duration::seconds(61);
    assert_eq!(claimed_ids(db, "r2", later), [id]);
    assert!(!db.store.renew_account_watch_lease(id, "r1", later, LEASE).unwrap());
    assert!(!db.store.record_sync(id, "r1", &progress("s1", Vec::new())).unwrap());
    assert!(db.store.record_sync(id, "r2", &progress("s1", Vec::new())).unwrap());
    // Released: anyone's at once; a release by another replica changes nothing.
    db.store.release_account_watch(id, "r1").unwrap();
    assert!(claimed_ids(db, "r3", later).is_empty());
    db.store.release_account_watch(id, "r2").unwrap();
    assert_eq!(claimed_ids(db, "r3", later), [id]);
    // Stopped: not claimed, its lease not renewed.
    assert!(db.store.stop_account_watch(id, "r3", "PAUSED: token refused", &sealed("dG9rZW4")).unwrap());
    assert!(!db.store.renew_account_watch_lease(id, "r3", later, LEASE).unwrap());
    assert!(claimed_ids(db, "r4", later + time::Duration::hours(1)).is_empty());
    // Removed: not claimed either.
    let other = create(db, &alice, "@other:x.org", Restricted).id;
    assert!(db.store.remove_account_watch(&alice, other).unwrap());
    assert!(claimed_ids(db, "r4", later + time::Duration::hours(1)).is_empty());
    assert!(!db.store.renew_account_watch_lease(other, "r4", later, LEASE).unwrap());
}

fn replicas_claiming_at_once_get_disjoint_watches(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let ids: Vec<i64> = (0..12).map(|i| create(db, &alice, &format!("@u{i}:x.org"), Restricted).id).collect();
    let t0 = now();
    let claims: Vec<Vec<i64>> = std::thread::scope(|s| {
        let handles: Vec<_> = ["r1", "r2", "r3"]
            .map(|replica| s.spawn(move || claimed_ids(db, replica, t0)))
            .into_iter()
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: Vec<i64> = claims.iter().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, ids, "each watch claimed by exactly one replica: {claims:?}");
    // A limit is a limit.
    assert_eq!(
        db.store.claim_account_watches("r9", t0 + time::Duration::hours(1), LEASE, 5).unwrap().len(),
        5
    );
}

fn the_loop_writes_only_under_its_lease(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let id = create(db, &alice, "@alice:x.org", Restricted).id;
    let rooms = vec![followed("!a:x.org", Membership::Join, None, true)];
    let written = |db: &TestDb| {
        db.count("SELECT COUNT(*) AS n FROM account_watch_rooms")
            + db.count("SELECT COUNT(*) AS n FROM account_watches WHERE sync_token IS NOT NULL OR filter_id IS NOT NULL OR last_sync_at IS NOT NULL")
    };
    // Never claimed: nothing is written.
    assert!(!db.store.record_sync(id, "r1", &progress("s1", rooms.clone())).unwrap());
    assert!(!db.store.set_account_watch_filter(id, "r1", "f1").unwrap());
    assert!(!db.store.stop_account_watch(id, "r1", "ACCOUNT_EXPIRED: expired", &sealed("dG9rZW4")).unwrap());
    // Claimed long ago: the lease ran out (by the store's clock), nothing is written.
    assert_eq!(claimed_ids(db, "r1", now() - time::Duration::minutes(10)), [id]);
    assert!(!db.store.record_sync(id, "r1", &progress("s1", rooms.clone())).unwrap());
    assert!(!db.store.set_account_watch_filter(id, "r1", "f1").unwrap());
    assert!(!db.store.stop_account_watch(id, "r1", "ACCOUNT_EXPIRED: expired", &sealed("dG9rZW4")).unwrap());
    assert_eq!(written(db), 0);
    let watch = db.store.account_watch(&alice, id).unwrap().unwrap();
    assert_eq!((watch.status, watch.last_sync_at), (WatchStatus::Active, None));
    // Held now: written, in one go.
    assert_eq!(claimed_ids(db, "r1", now()), [id]);
    assert!(db.store.record_sync(id, "r1", &progress("s1", rooms)).unwrap());
    assert!(db.store.set_account_watch_filter(id, "r1", "f1").unwrap());
    assert_eq!(written(db), 2);
    let watch = db.store.account_watch(&alice, id).unwrap().unwrap();
    assert_eq!(watch.room_count, 1);
    let claimed = db.store.claim_account_watches("r1", now(), LEASE, 10).unwrap();
    assert_eq!((claimed[0].sync_token.as_deref(), claimed[0].filter_id.as_deref()), (Some("s1"), Some("f1")));
}

fn memberships_are_upserted_by_room(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let id = create(db, &alice, "@alice:x.org", Restricted).id;
    assert_eq!(claimed_ids(db, "r1", now()), [id]);
    let first = vec![
        followed("!a:x.org", Membership::Join, None, true),
        followed("!b:x.org", Membership::Join, None, true),
        followed("!c:x.org", Membership::Invite, Some("@inviter:x.org"), false),
    ];
    assert!(db.store.record_sync(id, "r1", &progress("s1", first.clone())).unwrap());
    assert_eq!(db.store.followed_rooms(id).unwrap(), first);
    assert_eq!(db.store.account_watch(&alice, id).unwrap().unwrap().room_count, 2);
    // Left, banned, captured: each replaces what is stored of its room; the others are kept.
    // A room given twice counts once, as given last.
    let second = vec![
        followed("!a:x.org", Membership::Leave, Some("@admin:x.org"), false),
        followed("!b:x.org", Membership::Join, None, true),
        followed("!b:x.org", Membership::Join, None, false),
        followed("!d:x.org", Membership::Ban, Some("@admin:x.org"), false),
    ];
    assert!(db.store.record_sync(id, "r1", &progress("s2", second.clone())).unwrap());
    let stored = db.store.followed_rooms(id).unwrap();
    assert_eq!(stored, vec![second[0].clone(), second[2].clone(), first[2].clone(), second[3].clone()]);
    assert_eq!(db.store.account_watch(&alice, id).unwrap().unwrap().room_count, 1);
    // Many rooms at once (more than one statement's worth).
    let many: Vec<FollowedRoom> =
        (0..450).map(|i| followed(&format!("!m{i:03}:x.org"), Membership::Join, None, true)).collect();
    assert!(db.store.record_sync(id, "r1", &progress("s3", many)).unwrap());
    assert_eq!(db.store.followed_rooms(id).unwrap().len(), 454);
    assert_eq!(db.store.account_watch(&alice, id).unwrap().unwrap().room_count, 451);
}

fn an_account_state_stops_the_watch_until_it_is_given_again(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    for (reason, status) in [
        ("ACCOUNT_EXPIRED: the account has expired", WatchStatus::AccountExpired),
        ("ACCOUNT_LOCKED: the account is locked", WatchStatus::AccountLocked),
        ("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN", WatchStatus::Paused),
    ] {
        let id = create(db, &alice, "@alice:x.org", Restricted).id;
        assert_eq!(claimed_ids(db, "r1", now()), [id]);
        assert!(
            !db.store.stop_account_watch(id, "r2", reason, &sealed("dG9rZW4")).unwrap(),
            "not r2's to stop"
        );
        assert!(db.store.stop_account_watch(id, "r1", reason, &sealed("dG9rZW4")).unwrap());
        let stopped = db.store.account_watch(&alice, id).unwrap().unwrap();
        assert_eq!((stopped.status, stopped.status_reason.as_deref()), (status, Some(reason)));
        assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watches WHERE lease_owner IS NOT NULL"), 0);
        assert!(claimed_ids(db, "r1", now()).is_empty());
        assert!(!db.store.record_sync(id, "r1", &progress("s1", Vec::new())).unwrap());
        // Given again: active, claimed.
        let renewed = create(db, &alice, "@alice:x.org", Restricted);
        assert_eq!((renewed.id, renewed.status, renewed.status_reason), (id, WatchStatus::Active, None));
        assert_eq!(claimed_ids(db, "r1", now()), [id]);
        db.store.release_account_watch(id, "r1").unwrap();
    }
}

fn a_loop_started_with_other_credentials_cannot_stop_the_watch_given_again(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let user = "@alice:x.org";
    let first = create(db, &alice, user, Restricted);
    let claimed = db.store.claim_account_watches("r1", now(), LEASE, 10).unwrap();
    let old_token = claimed[0].token.clone();
    // Given again with a new token while its loop runs; the same replica claims it anew.
    let renewed = NewAccountWatch { token: sealed("bmV3LXRva2Vu"), ..new_watch(&alice, user, Restricted) };
    db.store.upsert_account_sync_watch(&alice, &renewed, None, WatchCaps::default()).unwrap();
    assert_eq!(claimed_ids(db, "r1", now()), [first.id]);
    let reason = "HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN";
    // The old loop's stop, for the old token's failure: refused, the renewed watch stays active.
    assert!(!db.store.stop_account_watch(first.id, "r1", reason, &old_token).unwrap());
    assert_eq!(db.store.account_watch(&alice, first.id).unwrap().unwrap().status, WatchStatus::Active);
    // The new loop's stop goes through.
    assert!(db.store.stop_account_watch(first.id, "r1", reason, &renewed.token).unwrap());
    assert_eq!(db.store.account_watch(&alice, first.id).unwrap().unwrap().status, WatchStatus::Paused);
}

fn removal_takes_the_rooms_and_keeps_a_credential_still_in_use(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let user = "@alice:agent.tchap.gouv.fr";
    let pair = credential(&alice, user, "cGFpcg");
    let account = db
        .store
        .upsert_account_sync_watch(
            &alice,
            &new_watch(&alice, user, Restricted),
            Some(&pair),
            WatchCaps::default(),
        )
        .unwrap();
    let room = NewWatch {
        owner: alice.actor.clone(),
        org: alice.org.clone(),
        room_id: rid("!r:x.org"),
        homeserver_url: HS.parse().unwrap(),
        classification: Restricted,
        interval_secs: 60,
        token: sealed("cm9vbQ"),
        decrypts: false,
        since: None,
    };
    let watch = db.store.upsert_account_watch(&alice, &room, Some(&pair), WatchCaps::default()).unwrap();
    let shared = db.store.account_watch_credential(account.id).unwrap().unwrap().id;
    assert_eq!(
        db.store.watch_credential(watch.id).unwrap().map(|c| c.id),
        Some(shared),
        "one pair per account"
    );
    assert_eq!(claimed_ids(db, "r1", now()), [account.id]);
    let rooms = vec![
        followed("!a:x.org", Membership::Join, None, false),
        followed("!b:x.org", Membership::Leave, None, false),
    ];
    assert!(db.store.record_sync(account.id, "r1", &progress("s1", rooms)).unwrap());

    // The room watch goes: the pair stays, the account watch still refers to it.
    assert!(db.store.remove_watch(&alice, &rid("!r:x.org")).unwrap());
    assert_eq!(db.store.credential(shared).unwrap().map(|c| c.id), Some(shared));
    // A room watch refers to it again; the account watch goes, with its rooms: the pair stays.
    let watch = db.store.upsert_account_watch(&alice, &room, Some(&pair), WatchCaps::default()).unwrap();
    assert!(db.store.remove_account_watch(&alice, account.id).unwrap());
    assert!(!db.store.remove_account_watch(&alice, account.id).unwrap(), "gone");
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watch_rooms"), 0);
    assert!(db.store.followed_rooms(account.id).unwrap().is_empty());
    assert_eq!(db.store.watch_credential(watch.id).unwrap().map(|c| c.id), Some(shared));
    // The last watch referring to it goes: so does the pair.
    assert!(db.store.remove_watch(&alice, &rid("!r:x.org")).unwrap());
    assert_eq!(db.store.credential(shared).unwrap(), None);
}

fn tokens_are_resealed_only_over_the_token_read(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let id = create(db, &alice, "@alice:x.org", Restricted).id;
    let tokens = db.store.sealed_account_watch_tokens().unwrap();
    assert_eq!(tokens.len(), 1);
    let t = &tokens[0];
    assert_eq!(
        (t.id, &t.org, &t.owner, t.homeserver_url.as_str(), t.user_id.as_str()),
        (id, &alice.org, &alice.actor, HS, "@alice:x.org")
    );
    assert_eq!(t.token, sealed("dG9rZW4"));
    let new = SealedToken { key_id: "k2".into(), nonce: "bm9uY2Uy".into(), ciphertext: "bmV3".into() };
    assert!(!db.store.reseal_account_watch_token(id, &sealed("b3RoZXI"), &new).unwrap());
    assert!(db.store.reseal_account_watch_token(id, &t.token, &new).unwrap());
    assert!(!db.store.reseal_account_watch_token(id, &t.token, &new).unwrap(), "already re-sealed");
    assert_eq!(db.store.claim_account_watches("r1", now(), LEASE, 1).unwrap()[0].token, new);
    let bad = SealedToken { key_id: String::new(), ..new.clone() };
    assert!(matches!(db.store.reseal_account_watch_token(id, &new, &bad), Err(Error::Invalid(_))));
}

fn bad_input_is_refused_with_nothing_written(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let user = "@alice:x.org";
    let good = new_watch(&alice, user, Restricted);
    let many: Vec<RoomId> = (0..1001).map(|i| rid(&format!("!r{i}:x.org"))).collect();
    let bad_watches = [
        NewAccountWatch { user_id: "alice".into(), ..good.clone() },
        NewAccountWatch { user_id: format!("@{}:x.org", "a".repeat(260)), ..good.clone() },
        NewAccountWatch { timeout_secs: 0, ..good.clone() },
        NewAccountWatch { timeout_secs: 3601, ..good.clone() },
        NewAccountWatch { rooms: Some(Vec::new()), ..good.clone() },
        NewAccountWatch { rooms: Some(many), ..good.clone() },
        NewAccountWatch { token: SealedToken { ciphertext: String::new(), ..sealed("x") }, ..good.clone() },
        NewAccountWatch { owner: "mallory".parse().unwrap(), ..good.clone() },
        NewAccountWatch { org: "anssi".parse().unwrap(), ..good.clone() },
        NewAccountWatch { classification: Secret, ..good.clone() },
    ];
    for bad in &bad_watches {
        let refused = db.store.upsert_account_sync_watch(&alice, bad, None, WatchCaps::default());
        assert!(matches!(refused, Err(Error::Invalid(_))), "{bad:?}: {refused:?}");
    }
    let bad_credentials = [
        NewCredential { owner: "mallory".parse().unwrap(), ..credential(&alice, user, "cGFpcg") },
        credential(&alice, "@bob:x.org", "cGFpcg"),
        NewCredential {
            homeserver_url: "https://elsewhere.example".into(),
            ..credential(&alice, user, "cGFpcg")
        },
    ];
    for bad in &bad_credentials {
        let refused = db.store.upsert_account_sync_watch(&alice, &good, Some(bad), WatchCaps::default());
        assert!(matches!(refused, Err(Error::Invalid(_))), "{bad:?}: {refused:?}");
    }
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watches"), 0);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_credentials"), 0);

    // The loop's writes: refused whole, even under the lease.
    let id = create(db, &alice, user, Restricted).id;
    assert_eq!(claimed_ids(db, "r1", now()), [id]);
    let rooms = vec![followed("!a:x.org", Membership::Join, None, true)];
    let long_by = vec![
        followed("!a:x.org", Membership::Join, None, true),
        followed("!b:x.org", Membership::Invite, Some(&format!("@{}:x.org", "b".repeat(255))), false),
    ];
    for bad in [progress("", rooms.clone()), progress(&"s".repeat(4097), rooms), progress("s1", long_by)] {
        let refused = db.store.record_sync(id, "r1", &bad);
        assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    }
    assert!(matches!(db.store.set_account_watch_filter(id, "r1", ""), Err(Error::Invalid(_))));
    assert!(matches!(db.store.set_account_watch_filter(id, "r1", &"f".repeat(257)), Err(Error::Invalid(_))));
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watch_rooms"), 0);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_watches WHERE sync_token IS NOT NULL OR filter_id IS NOT NULL OR last_sync_at IS NOT NULL"), 0);
    // The bounds at their edge are taken.
    assert!(db.store.record_sync(id, "r1", &progress(&"s".repeat(4096), Vec::new())).unwrap());
    assert!(db.store.set_account_watch_filter(id, "r1", &"f".repeat(256)).unwrap());

    // The schema holds the same bounds against a writer that skips the store.
    let mut raw = db.raw();
    let list: Vec<String> = (0..1001).map(|i| format!("\"!r{i}:x.org\"")).collect();
    for attack in [
        format!("UPDATE account_watches SET rooms = '[{}]'", list.join(",")),
        "UPDATE account_watches SET rooms = 'not json'".to_owned(),
        format!("UPDATE account_watches SET sync_token = '{}'", "s".repeat(4097)),
        format!("UPDATE account_watches SET filter_id = '{}'", "f".repeat(257)),
        "UPDATE account_watches SET status = 'STOPPED'".to_owned(),
        format!(
            "INSERT INTO account_watch_rooms (watch_id, room_id, membership, changed_at, due) VALUES ({id}, '!x:x.org', 'KNOCK', 0, FALSE)"
        ),
        format!(
            "INSERT INTO account_watch_rooms (watch_id, room_id, membership, by_user, changed_at, due) VALUES ({id}, '!x:x.org', 'JOIN', '{}', 0, FALSE)",
            "b".repeat(256)
        ),
    ] {
        assert!(raw.exec(&attack).is_err(), "accepted: {}", &attack[..attack.len().min(80)]);
    }
    let list: Vec<String> = (0..1000).map(|i| format!("\"!r{i}:x.org\"")).collect();
    raw.exec(&format!("UPDATE account_watches SET rooms = '[{}]'", list.join(","))).unwrap();
    assert_eq!(db.store.account_watch(&alice, id).unwrap().unwrap().rooms.map(|r| r.len()), Some(1000));
}

/// Diesel's form of the version `2026-12-06-000026`.
const ACCOUNT_WATCHES: &str = "20261206000026";

fn the_migration_runs_down_and_up_again_over_stored_rows(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let user = "@alice:agent.tchap.gouv.fr";
    let pair = credential(&alice, user, "cGFpcg");
    let account = db
        .store
        .upsert_account_sync_watch(
            &alice,
            &new_watch(&alice, user, Restricted),
            Some(&pair),
            WatchCaps::default(),
        )
        .unwrap();
    let room = NewWatch {
        owner: alice.actor.clone(),
        org: alice.org.clone(),
        room_id: rid("!r:x.org"),
        homeserver_url: HS.parse().unwrap(),
        classification: Restricted,
        interval_secs: 60,
        token: sealed("cm9vbQ"),
        decrypts: false,
        since: None,
    };
    let watch = db.store.upsert_account_watch(&alice, &room, Some(&pair), WatchCaps::default()).unwrap();
    assert_eq!(claimed_ids(db, "r1", now()), [account.id]);
    assert!(
        db.store
            .record_sync(
                account.id,
                "r1",
                &progress("s1", vec![followed("!a:x.org", Membership::Join, None, false)])
            )
            .unwrap()
    );

    db.raw().migrate(ACCOUNT_WATCHES, true);
    // Down: the two tables are gone; the room watch and its pair are as they were.
    let tables = if db.is_postgres() {
        "SELECT COUNT(*) AS n FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'account_watch%'"
    } else {
        "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name LIKE 'account_watch%'"
    };
    assert_eq!(db.count(tables), 0);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM account_credentials"), 1);
    assert_eq!(db.count("SELECT COUNT(*) AS n FROM watches"), 1);

    db.raw().migrate(ACCOUNT_WATCHES, false);
    assert_eq!(db.count(tables), 2);
    assert_eq!(db.store.watch_credential(watch.id).unwrap().map(|c| c.user_id), Some(user.to_owned()));
    assert!(db.store.account_watches(&alice, 10, None).unwrap().is_empty());
    // The store works on the re-created tables.
    let again = db
        .store
        .upsert_account_sync_watch(
            &alice,
            &new_watch(&alice, user, Restricted),
            Some(&pair),
            WatchCaps::default(),
        )
        .unwrap();
    assert_eq!(claimed_ids(db, "r1", now()), [again.id]);
    assert!(
        db.store
            .record_sync(
                again.id,
                "r1",
                &progress("s1", vec![followed("!a:x.org", Membership::Join, None, false)])
            )
            .unwrap()
    );
    assert_eq!(db.store.account_watch(&alice, again.id).unwrap().unwrap().room_count, 1);
}
