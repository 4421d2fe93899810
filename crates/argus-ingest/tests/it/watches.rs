//! Watched rooms: kept current by the scheduler as their owner, marked as scheduled in the
//! audit trail; tokens sealed at rest and never readable; a refused token pausing the watch
//! until a new one; gated like rooms; replicas sharing the due watches through leases.

use std::{sync::Arc, time::Duration};

use argus_domain::{AccessToken, Classification, Scope, Viewer, WatchStatus};
use argus_ingest::{
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, rotate_token_keys, unwatch_room, watch_room, watches},
};
use argus_testkit::homeserver::MATRIX_TOKEN;

use crate::support::{Env, analyst, backend_suite, token_keys};

backend_suite!(
    a_watched_room_is_kept_current_by_the_scheduler_as_its_owner,
    a_refused_token_pauses_the_watch_until_a_new_token_is_given,
    watch_tokens_are_sealed_at_rest_and_keys_rotate,
    watches_are_gated_like_rooms_and_bad_input_is_refused,
    replicas_share_due_watches_and_take_over_a_dead_replicas_lease,
    a_rate_limited_watch_waits_as_long_as_the_homeserver_asked,
    a_new_token_given_during_a_run_is_not_overwritten_by_it,
);

fn request(env: &Env, room: &str, token: &str, interval_secs: i64) -> WatchRequest {
    WatchRequest {
        homeserver_url: env.hs.uri(),
        access_token: AccessToken::new(token),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        interval_secs,
        recovery_key: None,
    }
}

fn scheduler(services: Arc<argus_ingest::Services>, replica: &str) -> Scheduler {
    Scheduler::new(
        services,
        SchedulerOptions {
            replica: replica.to_owned(),
            jitter: 0.0,
            tick: Duration::from_millis(200),
            ..SchedulerOptions::default()
        },
    )
}

async fn room_count(env: &Env, viewer: &Viewer, room: &str) -> i64 {
    let (v, r) = (viewer.clone(), room.parse().unwrap_or_else(|e| panic!("{e}")));
    env.with_store(move |s| s.room(&v, &r)).await.map_or(0, |r| r.message_count)
}

async fn a_watched_room_is_kept_current_by_the_scheduler_as_its_owner(env: Env) {
    let room = "!watched:tchap.test";
    env.hs.room(room, 30);
    let alice = analyst("dgsi");
    let watch = watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((watch.status, watch.interval_secs), (WatchStatus::Active, 1));
    let scheduler = scheduler(Arc::clone(&env.services), "replica-a");

    // Due at once: the first cycle reads the room.
    let first = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first.claimed, first.succeeded), (1, 1), "{first:?}");
    assert_eq!(room_count(&env, &alice, room).await, 30);
    // Not due again before its interval.
    assert_eq!(scheduler.cycle().await.map(|r| r.claimed).ok(), Some(0));

    // New messages arrive; after the interval the next cycle reads only them.
    env.hs.room(room, 45);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((second.claimed, second.succeeded), (1, 1), "{second:?}");
    assert_eq!(room_count(&env, &alice, room).await, 45);

    // Audited as the owner's, marked as scheduled; the chain verifies.
    let trail = env.trail(&alice).await;
    let seen: Vec<_> = trail
        .iter()
        .map(|r| (r.entry.actor.as_str().to_owned(), r.entry.scheduled, r.entry.message_count))
        .collect();
    assert_eq!(seen, [("alice".to_owned(), true, 30), ("alice".to_owned(), true, 15)]);
    let verified = env.with_store(|s| s.audit_verify(&[])).await;
    assert!(verified.iter().all(|c| c.is_ok()), "{verified:?}");
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_outcome.as_deref(), Some("SUCCEEDED"));
    assert!(listed[0].last_run_at.is_some());
}

async fn a_refused_token_pauses_the_watch_until_a_new_token_is_given(env: Env) {
    let room = "!paused:tchap.test";
    env.hs.room(room, 5);
    let alice = analyst("dgsi");
    // The homeserver took the token when the watch was made, and revoked it since.
    env.accept_once("syt_revoked_token_0123456").await;
    watch_room(&env.services, &alice, request(&env, room, "syt_revoked_token_0123456", 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let scheduler = scheduler(Arc::clone(&env.services), "replica-a");
    let report = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.paused), (1, 1), "{report:?}");
    let watch = &watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"))[0];
    assert_eq!(watch.status, WatchStatus::Paused);
    let reason = watch.status_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN"), "{reason}");
    assert!(!reason.contains("syt_revoked"));
    // Paused: not retried, however long it waits.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(scheduler.cycle().await.map(|r| r.claimed).ok(), Some(0));
    // The failed run is audited, without the token.
    let trail = env.trail(&alice).await;
    assert_eq!(trail.len(), 1);
    assert!(trail[0].entry.scheduled && trail[0].entry.error.as_deref().is_some_and(|e| !e.contains("syt_")));

    // A new token resumes it at once.
    let renewed = watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((renewed.status, renewed.status_reason), (WatchStatus::Active, None));
    let report = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(room_count(&env, &alice, room).await, 5);
}

async fn watch_tokens_are_sealed_at_rest_and_keys_rotate(env: Env) {
    let room = "!sealed:tchap.test";
    env.hs.room(room, 3);
    let alice = analyst("dgsi");
    let watch = watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!format!("{watch:?}").contains(MATRIX_TOKEN));
    let sealed = env.with_store(|s| s.sealed_watch_tokens()).await;
    assert_eq!(sealed.len(), 1);
    assert!(!sealed[0].token.ciphertext.contains(MATRIX_TOKEN) && !sealed[0].token.nonce.is_empty());
    if env.url.starts_with("sqlite://") {
        // Nowhere in the database file (nor its journal) in clear.
        let path = env.url.trim_start_matches("sqlite://");
        for file in [path.to_owned(), format!("{path}-wal")] {
            if let Ok(bytes) = std::fs::read(&file) {
                assert!(!bytes.windows(MATRIX_TOKEN.len()).any(|w| w == MATRIX_TOKEN.as_bytes()), "{file}");
            }
        }
    }

    // Rotation: a new current key, the old one kept to open; every token is re-sealed.
    let rotated = env.replica(|s| s.token_keys = Some(Arc::new(token_keys(&[43; 32], &[&[42; 32]]))));
    let rotation = rotate_token_keys(&rotated).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((rotation.resealed, rotation.current, rotation.unopened), (1, 0, 0));
    let again = rotate_token_keys(&rotated).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.resealed, again.current), (0, 1));
    // The old key can go: a replica holding only the new one runs the watch.
    let only_new = env.replica(|s| s.token_keys = Some(Arc::new(token_keys(&[43; 32], &[]))));
    let report = scheduler(only_new, "replica-new").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.succeeded, 1, "{report:?}");
    // A replica lacking the key that sealed it leaves the watch to the replicas that hold it:
    // released, not paused (renewed here, it is sealed under the first key again, due at once).
    watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let stranger = env.replica(|s| s.token_keys = Some(Arc::new(token_keys(&[44; 32], &[]))));
    let report = scheduler(stranger, "replica-other").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.lost, report.paused), (1, 1, 0), "{report:?}");
    let listed = watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed[0].status, WatchStatus::Active);
    assert!(
        listed[0].last_error.as_deref().is_some_and(|e| e.starts_with("TOKEN_KEY_MISSING")),
        "{listed:?}"
    );
    assert!(listed[0].next_run_at > time::OffsetDateTime::now_utc() + Duration::from_secs(50));
    // A replica that holds it runs it when it is due (here: renewed, due at once).
    watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report =
        scheduler(Arc::clone(&env.services), "replica-a").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.succeeded, 1, "{report:?}");
}

async fn watches_are_gated_like_rooms_and_bad_input_is_refused(env: Env) {
    let room = "!gated:tchap.test";
    env.hs.room(room, 3);
    let alice = analyst("dgsi");
    let mut secret = request(&env, room, MATRIX_TOKEN, 60);
    secret.classification = Classification::Secret;
    watch_room(&env.services, &alice, secret).await.unwrap_or_else(|e| panic!("{e}"));
    // Another organisation sees nothing of it and cannot remove it.
    let anssi = analyst("anssi");
    assert!(watches(&env.services, &anssi, 10, None).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert_eq!(unwatch_room(&env.services, &anssi, room).await.ok(), Some(false));
    // Someone of the organisation cleared below it neither.
    let low = Viewer::new(
        "bob".parse().unwrap_or_else(|e| panic!("{e}")),
        "dgsi".parse().unwrap_or_else(|e| panic!("{e}")),
        Classification::Restricted,
        [Scope::Ingest, Scope::Read],
    );
    assert!(watches(&env.services, &low, 10, None).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert_eq!(unwatch_room(&env.services, &low, room).await.ok(), Some(false));
    let over = watch_room(&env.services, &low, request(&env, room, MATRIX_TOKEN, 60)).await;
    assert_eq!(over.map(drop).map_err(|e| e.code()), Err("ABOVE_CLEARANCE"));
    // Bad input: clear codes, nothing stored.
    let cases = [
        (request(&env, room, MATRIX_TOKEN, 0), "INVALID_INPUT"),
        (request(&env, room, MATRIX_TOKEN, 30 * 24 * 3600), "INVALID_INPUT"),
        (request(&env, "#alias:tchap.test", MATRIX_TOKEN, 60), "INVALID_INPUT"),
        (request(&env, room, "", 60), "INVALID_INPUT"),
        (
            WatchRequest {
                homeserver_url: "http://10.1.2.3".into(),
                ..request(&env, "!other:tchap.test", MATRIX_TOKEN, 60)
            },
            "OUTBOUND_POLICY",
        ),
        (
            WatchRequest {
                classification: Classification::TopSecret,
                ..request(&env, "!other:tchap.test", MATRIX_TOKEN, 60)
            },
            "ABOVE_CLEARANCE",
        ),
    ];
    for (input, code) in cases {
        let result = watch_room(&env.services, &alice, input).await;
        assert_eq!(result.map(drop).map_err(|e| e.code()), Err(code));
    }
    let reader = Viewer::new(
        "carol".parse().unwrap_or_else(|e| panic!("{e}")),
        "dgsi".parse().unwrap_or_else(|e| panic!("{e}")),
        Classification::Secret,
        [Scope::Read],
    );
    let no_scope = watch_room(&env.services, &reader, request(&env, room, MATRIX_TOKEN, 60)).await;
    assert_eq!(no_scope.map(drop).map_err(|e| e.code()), Err("FORBIDDEN"));
    assert_eq!(watches(&env.services, &alice, 10, None).await.map(|w| w.len()).ok(), Some(1));
    assert_eq!(unwatch_room(&env.services, &alice, room).await.ok(), Some(true));
    assert_eq!(watches(&env.services, &alice, 10, None).await.map(|w| w.len()).ok(), Some(0));
}

async fn replicas_share_due_watches_and_take_over_a_dead_replicas_lease(env: Env) {
    let alice = analyst("dgsi");
    let rooms: Vec<String> = (0..12).map(|i| format!("!shared{i}:tchap.test")).collect();
    for room in &rooms {
        env.hs.room(room, 7);
        watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 3600))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A replica claims one watch and dies before running it.
    let now = time::OffsetDateTime::now_utc();
    let lease = Duration::from_millis(800);
    let dead = env.with_store(move |s| s.claim_due_watches(now, "replica-dead", lease, 1)).await;
    assert_eq!(dead.len(), 1);
    // Three live replicas run a cycle at once: the other eleven, each once.
    let replicas: Vec<Scheduler> =
        ["a", "b", "c"].iter().map(|r| scheduler(env.replica(|_| {}), &format!("replica-{r}"))).collect();
    let (a, b, c) = tokio::join!(replicas[0].cycle(), replicas[1].cycle(), replicas[2].cycle());
    let reports = [a, b, c].map(|r| r.unwrap_or_else(|e| panic!("{e}")));
    assert_eq!(reports.iter().map(|r| r.claimed).sum::<usize>(), 11, "{reports:?}");
    assert_eq!(reports.iter().map(|r| r.succeeded).sum::<usize>(), 11, "{reports:?}");
    // Its lease expired: another replica takes the dead one's watch over.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let takeover = replicas[1].cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((takeover.claimed, takeover.succeeded), (1, 1), "{takeover:?}");
    // Every room synced once: its messages once, one audit record each; the chain verifies.
    for room in &rooms {
        assert_eq!(room_count(&env, &alice, room).await, 7, "{room}");
    }
    let trail = env.trail(&alice).await;
    assert_eq!(trail.len(), 12);
    let mut audited: Vec<_> = trail.iter().map(|r| r.entry.room_id.clone()).collect();
    audited.sort();
    audited.dedup();
    assert_eq!(audited.len(), 12);
    let verified = env.with_store(|s| s.audit_verify(&[])).await;
    assert!(verified.iter().all(|c| c.is_ok()), "{verified:?}");
}

async fn a_rate_limited_watch_waits_as_long_as_the_homeserver_asked(env: Env) {
    let room = "!ratelimited:tchap.test";
    let alice = analyst("dgsi");
    // The homeserver read the room when the watch was made, and rate-limits it since.
    env.accept_once(MATRIX_TOKEN).await;
    watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A connector that does not wait itself: the scheduler's rescheduling is what is tested.
    let impatient = env.replica(|s| {
        s.connector = argus_matrix::Connector::new(argus_matrix::ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            max_retries: 0,
            ..argus_matrix::ConnectorConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
    });
    let before = time::OffsetDateTime::now_utc();
    let report = scheduler(impatient, "replica-a").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.failed, report.paused), (1, 1, 0), "{report:?}");
    let watch = &watches(&env.services, &alice, 10, None).await.unwrap_or_else(|e| panic!("{e}"))[0];
    assert_eq!(watch.status, WatchStatus::Active);
    assert!(watch.next_run_at >= before + Duration::from_secs(115), "due again at {}", watch.next_run_at);
    assert_eq!(watch.last_outcome.as_deref(), Some("FAILED"));
    assert!(
        watch.last_error.as_deref().is_some_and(|e| e.contains("rate limited")),
        "{:?}",
        watch.last_error
    );
}

async fn a_new_token_given_during_a_run_is_not_overwritten_by_it(env: Env) {
    let room = "!renewed:tchap.test";
    env.hs.room(room, 2);
    let alice = analyst("dgsi");
    // The homeserver took the old token when the watch was made.
    env.accept_once("syt_old_token_0123456789").await;
    watch_room(&env.services, &alice, request(&env, room, "syt_old_token_0123456789", 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // A replica claims it (its run, with the old token, is under way)…
    let now = time::OffsetDateTime::now_utc();
    let claimed =
        env.with_store(move |s| s.claim_due_watches(now, "replica-x", Duration::from_secs(60), 10)).await;
    assert_eq!(claimed.len(), 1);
    // …the owner gives a new token meanwhile…
    watch_room(&env.services, &alice, request(&env, room, MATRIX_TOKEN, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // …and the old run, refused, cannot pause the renewed watch.
    let id = claimed[0].watch.id;
    let run = argus_store::WatchRun {
        ran_at: now,
        next_run_at: now + time::Duration::hours(1),
        error: Some("refused".into()),
        pause: Some("HOMESERVER_UNAUTHORIZED: M_UNKNOWN_TOKEN".into()),
    };
    assert!(!env.with_store(move |s| s.record_watch_run(id, "replica-x", &run)).await);
    let report =
        scheduler(Arc::clone(&env.services), "replica-a").cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(room_count(&env, &alice, room).await, 2);
}
