//! Bounds on watched rooms: counted over the watches the caller may see, never over those above
//! their clearance (a refusal must not tell how many of those exist), per owner and per
//! organisation, with a code of their own. A watch stopped by its account's state keeps that
//! status, is not claimed, and is active again when renewed.

use argus_domain::{
    Classification::{self, Restricted, Secret, Unclassified},
    NewWatch, SealedToken, Viewer, WatchStatus,
};
use argus_store::{Error, NewCredential, WatchCaps, WatchRun};
use time::OffsetDateTime;

use crate::support::{TestDb, backend_suite, viewer};

backend_suite!(
    the_organisation_cap_counts_only_the_watches_the_caller_may_see,
    each_owner_has_a_cap_of_their_own,
    an_account_state_stops_a_watch_as_its_own_status_until_it_is_renewed,
    an_accounts_watches_share_one_credential_renewed_under_its_own_lease,
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
        since: None,
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

fn an_account_state_stops_a_watch_as_its_own_status_until_it_is_renewed(db: &TestDb) {
    let owner = someone("alice", "dgsi", Restricted);
    let caps = WatchCaps::default();
    for (reason, status) in [
        ("ACCOUNT_EXPIRED: the account has expired", WatchStatus::AccountExpired),
        ("ACCOUNT_LOCKED: the account is locked", WatchStatus::AccountLocked),
        ("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN (soft logout)", WatchStatus::Paused),
    ] {
        let room = "!stopped:x.org";
        let id = db.store.upsert_watch(&owner, &new_watch(&owner, room, Restricted), caps).unwrap().id;
        let now = OffsetDateTime::now_utc() + time::Duration::minutes(1);
        let claimed =
            db.store.claim_due_watches(now, "replica-a", std::time::Duration::from_secs(60), 10).unwrap();
        assert_eq!(claimed.iter().map(|c| c.watch.id).collect::<Vec<_>>(), [id]);
        let run = WatchRun {
            ran_at: now,
            next_run_at: now,
            error: Some(reason.into()),
            pause: Some(reason.into()),
        };
        assert!(db.store.record_watch_run(id, "replica-a", &run).unwrap());

        let stopped = db.store.watch(&owner, &room.parse().unwrap()).unwrap().unwrap();
        assert_eq!((stopped.status, stopped.status_reason.as_deref()), (status, Some(reason)));
        assert_eq!(stopped.last_error.as_deref(), Some(reason));
        // Due, yet not run: no replica claims it.
        let later = now + time::Duration::hours(1);
        let claimed =
            db.store.claim_due_watches(later, "replica-b", std::time::Duration::from_secs(60), 10).unwrap();
        assert!(claimed.is_empty(), "{status} was claimed");
        // Given again, it is active and due.
        let renewed = db.store.upsert_watch(&owner, &new_watch(&owner, room, Restricted), caps).unwrap();
        assert_eq!((renewed.status, renewed.status_reason), (WatchStatus::Active, None));
        let claimed =
            db.store.claim_due_watches(later, "replica-b", std::time::Duration::from_secs(60), 10).unwrap();
        assert_eq!(claimed.iter().map(|c| c.watch.id).collect::<Vec<_>>(), [id]);
        let done = WatchRun { ran_at: later, next_run_at: later, error: None, pause: None };
        assert!(db.store.record_watch_run(id, "replica-b", &done).unwrap());
    }
}

/// Sets the status of every watch to `status` on `db`'s own connection, around the store.
fn set_status(db: &TestDb, status: &str) -> diesel::QueryResult<usize> {
    use diesel::{Connection as _, PgConnection, RunQueryDsl as _, SqliteConnection, sql_types::Text};
    match &db.guard {
        crate::support::Guard::Sqlite(dir) => {
            let mut c = SqliteConnection::establish(dir.path().join("store.db").to_str().unwrap()).unwrap();
            diesel::sql_query("UPDATE watches SET status = ?").bind::<Text, _>(status).execute(&mut c)
        }
        crate::support::Guard::Postgres(_) => {
            let mut c = PgConnection::establish(&db.url).unwrap();
            diesel::sql_query("UPDATE watches SET status = $1").bind::<Text, _>(status).execute(&mut c)
        }
    }
}

/// The schema takes the statuses of an account's state, and still nothing else.
fn the_schema_takes_the_account_states_and_nothing_else(db: &TestDb) {
    let owner = someone("alice", "dgsi", Restricted);
    watch(db, &owner, "!checked:x.org", Restricted, WatchCaps::default()).unwrap();
    for status in ["ACCOUNT_EXPIRED", "ACCOUNT_LOCKED", "PAUSED", "ACTIVE"] {
        assert_eq!(set_status(db, status).unwrap(), 1, "{status}");
    }
    assert!(set_status(db, "SUSPENDED").is_err());
    assert!(set_status(db, "account_locked").is_err());
}

#[test]
fn sqlite_the_schema_takes_the_account_states_and_nothing_else() {
    the_schema_takes_the_account_states_and_nothing_else(&crate::support::sqlite());
}

#[test]
fn postgres_the_schema_takes_the_account_states_and_nothing_else() {
    let Some(db) = crate::support::postgres() else { return };
    the_schema_takes_the_account_states_and_nothing_else(&db);
}

fn sealed(ciphertext: &str) -> SealedToken {
    SealedToken { key_id: "k1".into(), nonce: "bm9uY2U".into(), ciphertext: ciphertext.into() }
}

fn an_accounts_watches_share_one_credential_renewed_under_its_own_lease(db: &TestDb) {
    let alice = someone("alice", "dgsi", Restricted);
    let account = |token: &str| NewCredential {
        org: alice.org.clone(),
        owner: alice.actor.clone(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".into(),
        user_id: "@alice:agent.tchap.gouv.fr".into(),
        token: sealed(token),
    };
    let caps = WatchCaps::default();
    let watch = |room: &str, credential: Option<&NewCredential>| {
        db.store
            .upsert_account_watch(&alice, &new_watch(&alice, room, Restricted), credential, caps)
            .unwrap()
            .id
    };
    let w1 = watch("!a:x.org", Some(&account("cGFpcjE")));
    // The same account again: the same row, its pair replaced by the one given.
    let w2 = watch("!b:x.org", Some(&account("cGFpcjI")));
    let other = NewCredential { user_id: "@bob:agent.tchap.gouv.fr".into(), ..account("Ym9i") };
    let w3 = watch("!c:x.org", Some(&other));
    let id = db.store.watch_credential(w1).unwrap().unwrap().id;
    for watch in [w1, w2] {
        let shared = db.store.watch_credential(watch).unwrap().unwrap();
        assert_eq!((shared.id, shared.token.clone()), (id, sealed("cGFpcjI")));
        assert_eq!(shared.user_id, "@alice:agent.tchap.gouv.fr");
    }
    assert_ne!(db.store.watch_credential(w3).unwrap().unwrap().id, id);
    // Not the caller's own: refused, nothing written.
    let mallory = NewCredential { owner: "mallory".parse().unwrap(), ..account("bWFs") };
    let refused = db.store.upsert_account_watch(
        &alice,
        &new_watch(&alice, "!d:x.org", Restricted),
        Some(&mallory),
        caps,
    );
    assert!(matches!(refused, Err(Error::Invalid(_))), "{refused:?}");
    // Renewed without a refresh token: the watch keeps its own token again.
    db.store.upsert_watch(&alice, &new_watch(&alice, "!b:x.org", Restricted), caps).unwrap();
    assert_eq!(db.store.watch_credential(w2).unwrap(), None);
    assert_eq!(db.store.watch_credential(w1).unwrap().map(|c| c.id), Some(id));
    // The lease is the renewer's (one holder string each) and stores only over the pair renewed.
    let (now, lease) = (OffsetDateTime::now_utc(), std::time::Duration::from_secs(30));
    let old = sealed("cGFpcjI");
    assert!(!db.store.renew_credential_token(id, "r1#a", now, &old, &sealed("cGFpcjM")).unwrap());
    assert!(db.store.borrow_credential_lease(id, "r1#a", now, lease).unwrap());
    assert!(db.store.borrow_credential_lease(id, "r1#a", now, lease).unwrap(), "its own again");
    assert!(
        !db.store.borrow_credential_lease(id, "r1#b", now, lease).unwrap(),
        "same replica, other renewer"
    );
    assert!(!db.store.return_credential_lease(id, "r1#b").unwrap(), "never another holder's");
    assert!(!db.store.renew_credential_token(id, "r1#b", now, &old, &sealed("cGFpcjM")).unwrap());
    assert!(
        !db.store.renew_credential_token(id, "r1#a", now, &sealed("b3RoZXI"), &sealed("cGFpcjM")).unwrap()
    );
    assert!(db.store.renew_credential_token(id, "r1#a", now, &old, &sealed("cGFpcjM")).unwrap());
    assert!(!db.store.renew_credential_token(id, "r1#a", now, &old, &sealed("cGFpcjQ")).unwrap());
    assert_eq!(db.store.credential(id).unwrap().map(|c| c.token), Some(sealed("cGFpcjM")));
    assert!(db.store.return_credential_lease(id, "r1#a").unwrap());
    // A lease that ran out is anyone's.
    assert!(db.store.borrow_credential_lease(id, "r2#c", now, lease).unwrap());
    let later = now + time::Duration::seconds(31);
    assert!(!db.store.renew_credential_token(id, "r2#c", later, &sealed("cGFpcjM"), &sealed("eA")).unwrap());
    assert!(db.store.borrow_credential_lease(id, "r3#d", later, lease).unwrap());
    // Re-sealing swaps only over the pair it read.
    assert!(!db.store.reseal_credential(id, &old, &sealed("bmV3")).unwrap());
    assert!(db.store.reseal_credential(id, &sealed("cGFpcjM"), &sealed("bmV3")).unwrap());
    assert_eq!(db.store.sealed_credentials().unwrap().len(), 2);
    // A pair no watch refers to any more is not kept.
    let viewer = someone("alice", "dgsi", Restricted);
    assert!(db.store.remove_watch(&viewer, &"!c:x.org".parse().unwrap()).unwrap());
    assert_eq!(db.store.sealed_credentials().unwrap().iter().map(|c| c.id).collect::<Vec<_>>(), vec![id]);
    assert!(db.store.remove_watch(&viewer, &"!a:x.org".parse().unwrap()).unwrap());
    assert!(db.store.sealed_credentials().unwrap().is_empty());
    assert_eq!(db.store.credential(id).unwrap(), None);
}
