//! Bounds on watched rooms: counted over the watches the caller may see, never over those above
//! their clearance (a refusal must not tell how many of those exist), per owner and per
//! organisation, with a code of their own.

use argus_domain::{
    Classification::{self, Restricted, Secret, Unclassified},
    NewWatch, SealedToken, Viewer,
};
use argus_store::{Error, WatchCaps};

use crate::support::{TestDb, backend_suite, viewer};

backend_suite!(
    the_organisation_cap_counts_only_the_watches_the_caller_may_see,
    each_owner_has_a_cap_of_their_own,
    a_renewed_token_is_stored_only_by_the_lease_holder_over_the_token_it_renewed,
);

/// `actor` of `org` cleared `clearance`.
fn someone(actor: &str, org: &str, clearance: Classification) -> Viewer {
    let v = viewer(org, clearance);
    Viewer::new(actor.parse().unwrap(), v.org, clearance, [argus_domain::Scope::Ingest])
}

fn new_watch(owner: &Viewer, room: &str, classification: Classification) -> NewWatch {
    NewWatch {
        owner: owner.actor.clone(),
        org: owner.org.clone(),
        room_id: room.parse().unwrap(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse().unwrap(),
        classification,
        interval_secs: 60,
        token: SealedToken { key_id: "k1".into(), nonce: "bm9uY2U".into(), ciphertext: "c2VhbGVk".into() },
        decrypts: false,
    }
}

fn watch(db: &TestDb, who: &Viewer, room: &str, level: Classification, caps: WatchCaps) -> Result<(), Error> {
    db.store.upsert_watch(who, &new_watch(who, room, level), caps).map(drop)
}

fn the_organisation_cap_counts_only_the_watches_the_caller_may_see(db: &TestDb) {
    let caps = WatchCaps { per_owner: 100, per_org: 3 };
    // Two watches above what the next caller may see.
    let high = someone("high", "dgsi", Secret);
    watch(db, &high, "!s1:x.org", Secret, caps).unwrap();
    watch(db, &high, "!s2:x.org", Secret, caps).unwrap();
    // An UNCLASSIFIED caller of the organisation fills the cap as far as they see it: three
    // watches, whatever exists above them; the fourth is refused, and the refusal names the
    // bound, not a count.
    let low = someone("low", "dgsi", Unclassified);
    for room in ["!u1:x.org", "!u2:x.org", "!u3:x.org"] {
        watch(db, &low, room, Unclassified, caps).unwrap_or_else(|e| panic!("{room}: {e}"));
    }
    let refused = watch(db, &low, "!u4:x.org", Unclassified, caps).unwrap_err();
    assert_eq!(refused.code(), "TOO_MANY_WATCHES");
    assert_eq!(refused.public_message(), "at most 3 watched rooms per organisation");
    // Renewing a watch is not a new one.
    watch(db, &low, "!u1:x.org", Unclassified, caps).unwrap();
    // The one who sees them all is held to the same cap over what they see (five).
    assert_eq!(watch(db, &high, "!s3:x.org", Secret, caps).unwrap_err().code(), "TOO_MANY_WATCHES");
    // Another organisation is not counted.
    watch(db, &someone("low", "anssi", Unclassified), "!u4:x.org", Unclassified, caps).unwrap();
}

fn each_owner_has_a_cap_of_their_own(db: &TestDb) {
    let caps = WatchCaps { per_owner: 2, per_org: 100 };
    let alice = someone("alice", "dgsi", Restricted);
    watch(db, &alice, "!a1:x.org", Restricted, caps).unwrap();
    watch(db, &alice, "!a2:x.org", Restricted, caps).unwrap();
    let refused = watch(db, &alice, "!a3:x.org", Restricted, caps).unwrap_err();
    assert_eq!(refused.code(), "TOO_MANY_WATCHES");
    assert_eq!(refused.public_message(), "at most 2 watched rooms per owner");
    // Renewing one of hers is not a new watch.
    watch(db, &alice, "!a2:x.org", Restricted, caps).unwrap();
    // Another owner of the organisation has a cap of their own.
    let bob = someone("bob", "dgsi", Restricted);
    watch(db, &bob, "!b1:x.org", Restricted, caps).unwrap();
    watch(db, &bob, "!b2:x.org", Restricted, caps).unwrap();
    // Taking over a watch of another owner (renewing it) makes it the new owner's: counted.
    assert_eq!(watch(db, &bob, "!a1:x.org", Restricted, caps).unwrap_err().code(), "TOO_MANY_WATCHES");
    let listed = db.store.watches(&alice, 10, None).unwrap();
    assert_eq!(listed.iter().filter(|w| w.owner == alice.actor).count(), 2);
}

fn sealed(ciphertext: &str) -> SealedToken {
    SealedToken { key_id: "k1".into(), nonce: "bm9uY2U".into(), ciphertext: ciphertext.into() }
}

fn a_renewed_token_is_stored_only_by_the_lease_holder_over_the_token_it_renewed(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let id = db
        .store
        .upsert_watch(&alice, &new_watch(&alice, "!r:x.org", Restricted), WatchCaps::default())
        .unwrap()
        .id;
    let now = time::OffsetDateTime::now_utc();
    let lease = std::time::Duration::from_secs(60);
    let old = sealed("c2VhbGVk");
    // Nobody holds the lease yet: nobody stores.
    assert!(!db.store.renew_watch_token(id, "r1", now, &old, &sealed("bmV3MQ")).unwrap());
    assert_eq!(db.store.claim_due_watches(now, "r1", lease, 10).unwrap().len(), 1);
    // Another replica, or the holder over a token no longer stored, loses the race.
    assert!(!db.store.renew_watch_token(id, "r2", now, &old, &sealed("bmV3Mg")).unwrap());
    assert!(!db.store.renew_watch_token(id, "r1", now, &sealed("b3RoZXI"), &sealed("bmV3Mg")).unwrap());
    // A lease past its end is no longer held.
    let later = now + time::Duration::seconds(61);
    assert!(!db.store.renew_watch_token(id, "r1", later, &old, &sealed("bmV3Mg")).unwrap());
    assert_eq!(db.store.watch_token(id).unwrap(), Some(old.clone()));
    // The holder, over the token it renewed: stored once; the same swap again fails.
    assert!(db.store.renew_watch_token(id, "r1", now, &old, &sealed("bmV3MQ")).unwrap());
    assert!(!db.store.renew_watch_token(id, "r1", now, &old, &sealed("bmV3Mw")).unwrap());
    assert_eq!(db.store.watch_token(id).unwrap(), Some(sealed("bmV3MQ")));
    assert_eq!(db.store.watch_token(id + 1000).unwrap(), None);
    // Outside a run a lease is borrowed only while nobody holds it, and given back.
    assert!(!db.store.borrow_watch_lease(id, "media", now, lease).unwrap(), "r1 holds it");
    assert!(db.store.borrow_watch_lease(id, "media", later, lease).unwrap(), "r1's ran out");
    assert!(db.store.renew_watch_token(id, "media", later, &sealed("bmV3MQ"), &sealed("bmV3NA")).unwrap());
    assert!(!db.store.return_watch_lease(id, "r1").unwrap());
    assert!(db.store.return_watch_lease(id, "media").unwrap());
    assert_eq!(db.store.claim_due_watches(later, "r2", lease, 10).unwrap().len(), 1, "due as it was");
}
