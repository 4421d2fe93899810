//! The migration that gives account states a watch status of their own
//! (`2026-12-06-000022_watch_account_states`) run down and up again over existing watches in
//! each status, on both backends: down, a watch stopped by its account's state is PAUSED with
//! its reason kept; up again, every watch is there as it was, and the wider statuses are
//! accepted again.

use argus_domain::{Classification::Restricted, NewWatch, SealedToken, Viewer, Watch, WatchStatus};
use argus_store::{WatchCaps, WatchRun};
use time::OffsetDateTime;

use crate::support::{TestDb, backend_suite, viewer};

backend_suite!(account_states_survive_the_migration_down_and_up_again);

/// Diesel's form of the version `2026-12-06-000022`.
const ACCOUNT_STATES: &str = "20261206000022";

fn new_watch(owner: &Viewer, room: &str) -> NewWatch {
    NewWatch {
        owner: owner.actor.clone(),
        org: owner.org.clone(),
        room_id: room.parse().unwrap(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse().unwrap(),
        classification: Restricted,
        interval_secs: 300,
        token: SealedToken {
            key_id: "k1".into(),
            nonce: "bm9uY2U".into(),
            ciphertext: format!("c2VhbGVk{}", room.len()),
        },
        decrypts: false,
        // No start date: its column is a later migration's (`000023`), dropped when that one is
        // reverted on the way down.
        since: None,
    }
}

/// The watches of `owner`, by room, with what the migration must keep.
fn listed(db: &TestDb, owner: &Viewer) -> Vec<(String, WatchStatus, Option<String>, Watch)> {
    let mut watches: Vec<_> = db
        .store
        .watches(owner, 10, None)
        .unwrap()
        .into_iter()
        .map(|w| (w.room_id.as_str().to_owned(), w.status, w.status_reason.clone(), w))
        .collect();
    watches.sort_by(|a, b| a.0.cmp(&b.0));
    watches
}

fn account_states_survive_the_migration_down_and_up_again(db: &TestDb) {
    let owner = viewer("dgsi", Restricted);
    let rows = [
        ("!active:x.org", "ACTIVE", None),
        ("!paused:x.org", "PAUSED", Some("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN (token refused)")),
        ("!expired:x.org", "ACCOUNT_EXPIRED", Some("ACCOUNT_EXPIRED: the account has expired")),
        ("!locked:x.org", "ACCOUNT_LOCKED", Some("ACCOUNT_LOCKED: the account is locked")),
    ];
    for (room, status, reason) in rows {
        let id = db.store.upsert_watch(&owner, &new_watch(&owner, room), WatchCaps::default()).unwrap().id;
        let reason = reason.map_or("NULL".to_owned(), |r| format!("'{r}'"));
        db.raw()
            .exec(&format!(
                "UPDATE watches SET status = '{status}', status_reason = {reason} WHERE id = {id}"
            ))
            .unwrap();
    }
    let before = listed(db, &owner);
    let statuses: Vec<WatchStatus> = before.iter().map(|w| w.1).collect();
    assert_eq!(
        statuses,
        [WatchStatus::Active, WatchStatus::AccountExpired, WatchStatus::AccountLocked, WatchStatus::Paused]
    );

    // Down: two statuses; a watch stopped by its account is PAUSED, its reason (which names the
    // state) kept; nothing else changes.
    db.raw().migrate(ACCOUNT_STATES, true);
    let count =
        |status: &str| db.count(&format!("SELECT COUNT(*) AS n FROM watches WHERE status = '{status}'"));
    assert_eq!((count("ACTIVE"), count("PAUSED")), (1, 3));
    let kept = db.count(
        "SELECT COUNT(*) AS n FROM watches WHERE status_reason LIKE 'ACCOUNT_EXPIRED:%' \
         OR status_reason LIKE 'ACCOUNT_LOCKED:%' OR status_reason LIKE 'HOMESERVER_UNAUTHORIZED:%'",
    );
    assert_eq!(kept, 3, "the reasons are kept");
    assert!(
        db.raw().exec("UPDATE watches SET status = 'ACCOUNT_LOCKED'").is_err(),
        "the narrower schema refuses the account states"
    );

    // Up again: every watch as it was (the account states are PAUSED now, with their reason).
    db.raw().migrate(ACCOUNT_STATES, false);
    let after = listed(db, &owner);
    assert_eq!(after.len(), 4);
    for ((room, status, reason, watch), (_, _, reason_after, watch_after)) in before.iter().zip(&after) {
        assert_eq!(reason, reason_after, "{room}");
        let expected = if *status == WatchStatus::Active { WatchStatus::Active } else { WatchStatus::Paused };
        assert_eq!(watch_after.status, expected, "{room}");
        assert_eq!(
            Watch { status: expected, ..watch.clone() },
            *watch_after,
            "{room}: every other field kept"
        );
    }
    // The wider statuses work again: an account state stops a watch as its own status.
    let id = after[0].3.id;
    let later = OffsetDateTime::now_utc() + time::Duration::days(1);
    let claimed =
        db.store.claim_due_watches(later, "replica-a", std::time::Duration::from_secs(60), 10).unwrap();
    assert_eq!(claimed.iter().map(|c| c.watch.id).collect::<Vec<_>>(), [id], "only the active one is run");
    let run = WatchRun {
        ran_at: later,
        next_run_at: later,
        error: Some("expired".into()),
        pause: Some("ACCOUNT_EXPIRED: the account has expired".into()),
    };
    assert!(db.store.record_watch_run(id, "replica-a", &run).unwrap());
    assert_eq!(listed(db, &owner)[0].1, WatchStatus::AccountExpired);
}
