//! Account states through the scheduler, on the real Synapse and both store backends: an
//! account an admin expired or locked stops its watch with a status of its own (its reason and
//! the run's audit record naming it), until the account is usable again and the watch is given
//! again; a suspended account's watch keeps capturing while its post is refused and audited.

use std::{sync::Arc, time::Duration};

use argus_domain::{
    AccessToken, Classification, IngestionOutcome, IngestionRecord, Scope, Viewer, WatchStatus,
    testing::ViewerBuilder,
};
use argus_ingest::{
    post::{PostRequest, post_note},
    scheduler::{CycleReport, Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room, watches},
};
use argus_testkit::synapse::{Synapse, TestUser, synapse};

use crate::support::{Env, backend_suite};

backend_suite!(
    an_expired_account_stops_its_watch_until_it_is_renewed_and_given_again,
    a_locked_account_stops_its_watch_until_it_is_unlocked_and_given_again,
    a_suspended_account_keeps_capturing_and_its_post_is_refused_and_audited,
    a_suspended_refusal_of_a_read_is_the_runs_error_and_pauses_nothing,
);

/// The analyst of `dgsi` who watches and posts (cleared SECRET).
fn owner() -> Viewer {
    ViewerBuilder::new("dgsi")
        .actor("alice")
        .scopes([Scope::Ingest, Scope::Read, Scope::Audit, Scope::Post])
        .build()
}

fn watch_request(homeserver: &str, user: &TestUser, room: &str) -> WatchRequest {
    WatchRequest {
        homeserver_url: homeserver.to_owned(),
        access_token: AccessToken::new(user.access_token.clone()),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        interval_secs: 1,
        recovery_key: None,
    }
}

fn scheduler(env: &Env) -> Scheduler {
    Scheduler::new(
        Arc::clone(&env.services),
        SchedulerOptions { replica: "replica-a".into(), jitter: 0.0, ..SchedulerOptions::default() },
    )
}

/// The next cycle once the watch (interval 1 s) is due again.
async fn next_cycle(scheduler: &Scheduler) -> CycleReport {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"))
}

async fn room_count(env: &Env, viewer: &Viewer, room: &str) -> i64 {
    let (v, r) = (viewer.clone(), room.parse().unwrap_or_else(|e| panic!("{e}")));
    env.with_store(move |s| s.room(&v, &r)).await.map_or(0, |r| r.message_count)
}

async fn the_watch(env: &Env, viewer: &Viewer) -> argus_domain::Watch {
    let listed = watches(&env.services, viewer, 10, None).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed.len(), 1);
    listed.into_iter().next().unwrap_or_else(|| unreachable!())
}

/// The error of a call that must fail.
fn refusal<T>(result: argus_ingest::Result<T>) -> argus_ingest::Error {
    match result {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => e,
    }
}

/// The newest audit record of the organisation.
async fn last_record(env: &Env, viewer: &Viewer) -> IngestionRecord {
    env.trail(viewer).await.pop().unwrap_or_else(|| panic!("no audit record"))
}

/// The server, an admin of it, and a new account with a room holding one message.
async fn account(name: &str) -> Option<(&'static Synapse, TestUser, TestUser, String)> {
    let server = synapse()?;
    let admin = server.register_admin("states_admin").await.unwrap_or_else(|e| panic!("{e:#}"));
    let user = server.register(name).await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = user.create_room(Some("watched"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    user.send_text(&room, "one").await.unwrap_or_else(|e| panic!("{e:#}"));
    Some((server, admin, user, room))
}

/// An account stopped by the homeserver stops its watch with `status` (its reason beginning
/// with the status's code), the run's audit record naming the code, and no cycle runs it; a
/// new watch of it is refused the same way while the account is unusable.
async fn assert_stopped(
    env: &Env,
    scheduler: &Scheduler,
    server: &Synapse,
    user: &TestUser,
    room: &str,
    status: WatchStatus,
) {
    let alice = owner();
    let report = next_cycle(scheduler).await;
    assert_eq!((report.claimed, report.paused), (1, 1), "{report:?}");
    let watch = the_watch(env, &alice).await;
    let code = status.as_str();
    assert_eq!(watch.status, status);
    let reason = watch.status_reason.as_deref().unwrap_or_default();
    assert!(reason.starts_with(&format!("{code}: ")), "{reason}");
    let error = watch.last_error.as_deref().unwrap_or_default();
    assert!(error.starts_with(&format!("{code}: ")), "{error}");
    for shown in [reason, error] {
        assert!(!shown.contains(&user.access_token), "the token leaked: {shown}");
    }
    let record = last_record(env, &alice).await;
    let audited = record.entry.error.as_deref().unwrap_or_default();
    assert!(record.entry.scheduled && record.entry.outcome == IngestionOutcome::Failed, "{record:?}");
    assert!(audited.contains(code) && !audited.contains(&user.access_token), "{audited}");
    // Stopped: not run again, however long it waits.
    assert_eq!(next_cycle(scheduler).await.claimed, 0);
    // Given again while the account is unusable: refused with the same code, still stopped.
    let refused =
        refusal(watch_room(&env.services, &alice, watch_request(server.base_url(), user, room)).await);
    assert_eq!(refused.code(), code);
    assert_eq!(the_watch(env, &alice).await.status, status);
}

/// Once the account is usable again, the watch given again is active and captures what was sent.
async fn assert_resumes(
    env: &Env,
    scheduler: &Scheduler,
    server: &Synapse,
    user: &TestUser,
    room: &str,
    before: i64,
) {
    let alice = owner();
    user.send_text(room, "after").await.unwrap_or_else(|e| panic!("{e:#}"));
    let renewed = watch_room(&env.services, &alice, watch_request(server.base_url(), user, room))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((renewed.status, renewed.status_reason), (WatchStatus::Active, None));
    let report = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.succeeded), (1, 1), "{report:?}");
    assert_eq!(room_count(env, &alice, room).await, before + 1);
}

async fn an_expired_account_stops_its_watch_until_it_is_renewed_and_given_again(env: Env) {
    let Some((server, admin, user, room)) = account("watch_expired").await else { return };
    let alice = owner();
    watch_room(&env.services, &alice, watch_request(server.base_url(), &user, &room))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let scheduler = scheduler(&env);
    let first = scheduler.cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((first.claimed, first.succeeded), (1, 1), "{first:?}");
    let before = room_count(&env, &alice, &room).await;
    assert!(before >= 1);

    admin.expire_account(&user.user_id).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_stopped(&env, &scheduler, server, &user, &room, WatchStatus::AccountExpired).await;
    let reason = the_watch(&env, &alice).await.status_reason.unwrap_or_default();
    assert!(reason.contains("renewed"), "{reason}");

    admin.renew_account(&user.user_id).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_resumes(&env, &scheduler, server, &user, &room, before).await;
}

async fn a_locked_account_stops_its_watch_until_it_is_unlocked_and_given_again(env: Env) {
    let Some((server, admin, user, room)) = account("watch_locked").await else { return };
    let alice = owner();
    watch_room(&env.services, &alice, watch_request(server.base_url(), &user, &room))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let scheduler = scheduler(&env);
    assert_eq!(scheduler.cycle().await.map(|r| r.succeeded).ok(), Some(1));
    let before = room_count(&env, &alice, &room).await;

    // Synapse answers 401 with soft_logout: still the lock, not a refused token.
    admin.set_account_locked(&user.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_stopped(&env, &scheduler, server, &user, &room, WatchStatus::AccountLocked).await;
    let reason = the_watch(&env, &alice).await.status_reason.unwrap_or_default();
    assert!(reason.contains("unlocked"), "{reason}");

    admin.set_account_locked(&user.user_id, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_resumes(&env, &scheduler, server, &user, &room, before).await;
}

async fn a_suspended_account_keeps_capturing_and_its_post_is_refused_and_audited(env: Env) {
    let Some((server, admin, user, room)) = account("watch_suspended").await else { return };
    let bob = server.register("colleague").await.unwrap_or_else(|e| panic!("{e:#}"));
    user.invite(&room, &bob.user_id).await.unwrap_or_else(|e| panic!("{e:#}"));
    bob.join(&room).await.unwrap_or_else(|e| panic!("{e:#}"));
    let alice = owner();
    watch_room(&env.services, &alice, watch_request(server.base_url(), &user, &room))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let scheduler = scheduler(&env);
    assert_eq!(scheduler.cycle().await.map(|r| r.succeeded).ok(), Some(1));
    let before = room_count(&env, &alice, &room).await;

    admin.set_account_suspended(&user.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    // The room goes on without the suspended account; its watch captures what is said.
    bob.send_text(&room, "while suspended").await.unwrap_or_else(|e| panic!("{e:#}"));
    let report = next_cycle(&scheduler).await;
    assert_eq!((report.claimed, report.succeeded, report.paused), (1, 1, 0), "{report:?}");
    assert_eq!(room_count(&env, &alice, &room).await, before + 1);
    let watch = the_watch(&env, &alice).await;
    assert_eq!((watch.status, watch.last_outcome.as_deref()), (WatchStatus::Active, Some("SUCCEEDED")));

    // Posting is refused with the account's state, and the refusal is audited with it.
    let request = PostRequest {
        homeserver_url: server.base_url().to_owned(),
        account: None,
        access_token: AccessToken::new(user.access_token.clone()),
        room_id: room.clone(),
        body: "a note from the archive".into(),
        classification: Classification::Restricted,
        reply_to: None,
        transaction_id: None,
    };
    let refused = refusal(post_note(&env.services, &alice, request).await);
    assert_eq!(refused.code(), "ACCOUNT_SUSPENDED");
    assert!(!refused.public_message().contains(&user.access_token));
    let record = last_record(&env, &alice).await;
    assert!(record.entry.post.is_some() && record.entry.outcome == IngestionOutcome::Failed, "{record:?}");
    let audited = record.entry.error.as_deref().unwrap_or_default();
    assert!(audited.contains("ACCOUNT_SUSPENDED") && audited.contains("M_USER_SUSPENDED"), "{audited}");
    assert!(!audited.contains(&user.access_token));
    // Nothing reached the room.
    let bodies: Vec<String> = bob
        .all_messages(&room)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
        .iter()
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect();
    assert!(!bodies.iter().any(|b| b.contains("a note from the archive")), "{bodies:?}");
}

/// Synapse lets a suspended account read; should a homeserver refuse a read with
/// `M_USER_SUSPENDED` anyway (a fault Synapse does not produce: the mock homeserver), the run
/// fails with it and the watch stays active.
async fn a_suspended_refusal_of_a_read_is_the_runs_error_and_pauses_nothing(env: Env) {
    use wiremock::{
        Mock, ResponseTemplate,
        matchers::{method, path_regex},
    };
    let room = "!suspendedread:tchap.test";
    env.hs.room(room, 3);
    let alice = owner();
    let request = WatchRequest {
        homeserver_url: env.hs.uri(),
        access_token: AccessToken::new(argus_testkit::homeserver::MATRIX_TOKEN),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        interval_secs: 1,
        recovery_key: None,
    };
    watch_room(&env.services, &alice, request).await.unwrap_or_else(|e| panic!("{e}"));
    let suspended = serde_json::json!({ "errcode": "M_USER_SUSPENDED", "error": "suspended" });
    Mock::given(method("GET"))
        .and(path_regex("/rooms/[^/]*suspendedread[^/]*/(state|messages)$"))
        .respond_with(ResponseTemplate::new(403).set_body_json(suspended))
        .with_priority(1)
        .mount(env.hs.server())
        .await;
    let report = scheduler(&env).cycle().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.failed, report.paused), (1, 1, 0), "{report:?}");
    let watch = the_watch(&env, &alice).await;
    assert_eq!((watch.status, watch.status_reason.as_deref()), (WatchStatus::Active, None));
    let error = watch.last_error.as_deref().unwrap_or_default();
    assert!(error.starts_with("ACCOUNT_SUSPENDED: "), "{error}");
    assert_eq!(watch.last_outcome.as_deref(), Some("FAILED"));
}
