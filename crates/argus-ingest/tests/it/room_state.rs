//! What Tchap says about a room, ingested from a real Synapse on each backend: its retention
//! policy recorded and followed by the scheduler (a watched room with a short `max_lifetime` is
//! due sooner than its interval), its state history kept with each ingestion, and capture from
//! a date (`since`) on ingestions and on every run of a watch. The retention rule's floor (a
//! room's state never makes a watch run more often than the minimum interval), and runs that
//! did not read to the end (cut short by their cap, or failed) due as soon as the floor allows.

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use std::{sync::Arc, time::Duration};

use argus_domain::{AccessToken, Classification, Retention, RoomId, StoredRoom, Viewer};
use argus_ingest::{
    ingest::{IngestRequest, Reach, Trigger, ingest_room},
    scheduler::{Scheduler, SchedulerOptions},
    watch::{WatchRequest, watch_room},
};
use argus_testkit::synapse::{TestUser, synapse};
use serde_json::json;
use time::OffsetDateTime;

use crate::support::{Env, analyst, backend_suite};

backend_suite!(
    a_watched_room_with_a_short_max_lifetime_is_due_before_its_events_expire,
    state_changes_update_the_room_and_each_ingestion_keeps_its_state,
    an_ingestion_from_a_date_stores_only_what_was_sent_since,
    a_watchs_date_applies_to_every_run,
    a_room_s_retention_never_schedules_a_watch_below_the_floor,
    a_cut_short_run_of_a_retention_room_is_due_at_the_floor,
    a_failed_run_of_a_retention_room_is_still_due_before_expiry,
    a_later_run_with_an_earlier_date_reads_older_history_down_to_it,
    a_watch_given_again_without_a_date_reads_back_to_the_creation,
);

fn ingest_request(user: &TestUser, room: &str, since: Option<OffsetDateTime>) -> IngestRequest {
    IngestRequest {
        homeserver_url: synapse().unwrap().base_url().to_owned(),
        access_token: AccessToken::new(user.access_token.clone()),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
        reach: Reach::Current,
        trigger: Trigger::Manual,
        follow_upgrades: false,
    }
}

fn watch_request(
    user: &TestUser,
    room: &str,
    interval_secs: i64,
    since: Option<OffsetDateTime>,
) -> WatchRequest {
    WatchRequest {
        homeserver_url: synapse().unwrap().base_url().to_owned(),
        access_token: AccessToken::new(user.access_token.clone()),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        interval_secs,
        recovery_key: None,
    }
}

fn scheduler(env: &Env) -> Scheduler {
    Scheduler::new(
        Arc::clone(&env.services),
        SchedulerOptions { replica: "replica-r".into(), jitter: 0.0, ..SchedulerOptions::default() },
    )
}

async fn stored(env: &Env, viewer: &Viewer, room: &str) -> StoredRoom {
    let (v, r): (Viewer, RoomId) = (viewer.clone(), room.parse().unwrap());
    env.with_store(move |s| s.room(&v, &r)).await.unwrap()
}

async fn stored_ids(env: &Env, viewer: &Viewer, room: &str) -> Vec<String> {
    let (v, r): (Viewer, RoomId) = (viewer.clone(), room.parse().unwrap());
    let page = argus_domain::PageRequest { first: 1000, after: None };
    let messages = env.with_store(move |s| s.messages(&v, &r, &page)).await;
    messages.items.into_iter().map(|m| m.message.event_id.as_str().to_owned()).collect()
}

async fn due(env: &Env, viewer: &Viewer, room: &str) -> OffsetDateTime {
    let (v, r): (Viewer, RoomId) = (viewer.clone(), room.parse().unwrap());
    env.with_store(move |s| s.watch(&v, &r)).await.unwrap().next_run_at
}

async fn retention_room(user: &TestUser, max_lifetime_ms: u64) -> String {
    user.create_room_with(&json!({
        "preset": "private_chat",
        "initial_state": [{"type": "m.room.retention", "state_key": "", "content": {"max_lifetime": max_lifetime_ms}}],
    }))
    .await
    .unwrap()
}

async fn a_watched_room_with_a_short_max_lifetime_is_due_before_its_events_expire(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    // Five minutes: read again within four (the margin is a minute, more than 10 %).
    let short = retention_room(&user, 300_000).await;
    let plain = user.create_room(Some("Sans rétention"), None, false).await.unwrap();
    user.send_text(&short, "éphémère").await.unwrap();

    // Ingested once, not watched: at risk.
    ingest_room(&env.services, &alice, ingest_request(&user, &short, None), &mut |_| {}).await.unwrap();
    let room = stored(&env, &alice, &short).await;
    assert_eq!(
        room.metadata.retention,
        Some(Retention { max_lifetime_ms: Some(300_000), min_lifetime_ms: None })
    );
    assert!(room.history_complete && !room.watched && room.retention_risk());

    for room in [&short, &plain] {
        watch_room(&env.services, &alice, watch_request(&user, room, 86_400, None)).await.unwrap();
    }
    let started = OffsetDateTime::now_utc();
    let report = scheduler(&env).cycle().await.unwrap();
    assert_eq!((report.claimed, report.succeeded), (2, 2), "{report:?}");
    let short_due = due(&env, &alice, &short).await;
    assert!(short_due > started + Duration::from_secs(230), "{short_due} after {started}");
    assert!(
        short_due <= OffsetDateTime::now_utc() + Duration::from_secs(240),
        "due within the lifetime less the margin"
    );
    assert!(
        due(&env, &alice, &plain).await >= started + Duration::from_secs(86_400),
        "a room without a policy keeps its interval"
    );
    let room = stored(&env, &alice, &short).await;
    assert!(room.watched && !room.retention_risk(), "watched, its whole history captured");
    assert!(!stored(&env, &alice, &plain).await.retention_risk());
}

async fn state_changes_update_the_room_and_each_ingestion_keeps_its_state(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let room = retention_room(&user, 86_400_000).await;
    user.set_state(&room, "im.vector.room.access_rules", "", &json!({"rule": "restricted"})).await.unwrap();
    ingest_room(&env.services, &alice, ingest_request(&user, &room, None), &mut |_| {}).await.unwrap();
    let first = stored(&env, &alice, &room).await;
    assert_eq!(first.metadata.retention.and_then(|r| r.max_lifetime_ms), Some(86_400_000));
    assert_eq!(first.metadata.access_rule.as_deref(), Some("restricted"));
    assert!(first.metadata.room_version.is_some());

    user.set_state(
        &room,
        "m.room.retention",
        "",
        &json!({"max_lifetime": 3_600_000, "min_lifetime": 60_000}),
    )
    .await
    .unwrap();
    user.set_state(&room, "im.vector.room.access_rules", "", &json!({"rule": "unrestricted"})).await.unwrap();
    ingest_room(&env.services, &alice, ingest_request(&user, &room, None), &mut |_| {}).await.unwrap();
    user.set_state(&room, "m.room.retention", "", &json!({})).await.unwrap();
    ingest_room(&env.services, &alice, ingest_request(&user, &room, None), &mut |_| {}).await.unwrap();
    let last = stored(&env, &alice, &room).await;
    assert_eq!(last.metadata.retention, None, "the policy was removed");
    assert_eq!(last.metadata.access_rule.as_deref(), Some("unrestricted"));

    // The room as of each ingestion.
    let rows = env.with_store(|s| s.outbox_pending(100)).await;
    let history: Vec<(Option<Retention>, Option<String>)> = rows
        .into_iter()
        .filter(|row| row.room_id.as_str() == room)
        .map(|row| (row.payload.metadata.retention, row.payload.metadata.access_rule))
        .collect();
    let restricted = Some("restricted".to_owned());
    let unrestricted = Some("unrestricted".to_owned());
    assert_eq!(
        history,
        [
            (Some(Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: None }), restricted),
            (
                Some(Retention { max_lifetime_ms: Some(3_600_000), min_lifetime_ms: Some(60_000) }),
                unrestricted.clone()
            ),
            (None, unrestricted),
        ]
    );
}

/// Messages sent before and after a date (Synapse's timestamps are milliseconds: a second and
/// a half apart on each side).
async fn room_with_a_date(user: &TestUser) -> (String, Vec<String>, OffsetDateTime, Vec<String>) {
    let room = user.create_room(Some("Depuis"), None, false).await.unwrap();
    let before = user.send_texts(&room, "avant", 3, 1).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = user.send_texts(&room, "après", 2, 1).await.unwrap();
    (room, before, since, after)
}

async fn an_ingestion_from_a_date_stores_only_what_was_sent_since(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let (room, before, since, after) = room_with_a_date(&user).await;
    let summary = ingest_room(&env.services, &alice, ingest_request(&user, &room, Some(since)), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(summary.messages_stored, 2);
    assert_eq!(stored_ids(&env, &alice, &room).await, after);
    let r = stored(&env, &alice, &room).await;
    assert!(r.history_complete, "complete since the date");
    assert_eq!(r.history_since.map(argus_domain::to_unix_ms), Some(argus_domain::to_unix_ms(since)));

    // Again from the same date: nothing new, nothing older read.
    let again = ingest_room(&env.services, &alice, ingest_request(&user, &room, Some(since)), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(again.messages_stored, 0);
    // Without a date, older history is read after all, back to the room's creation.
    let whole =
        ingest_room(&env.services, &alice, ingest_request(&user, &room, None), &mut |_| {}).await.unwrap();
    assert_eq!(whole.messages_stored, 3);
    let ids = stored_ids(&env, &alice, &room).await;
    assert_eq!(ids, before.iter().chain(&after).cloned().collect::<Vec<_>>());
    let r = stored(&env, &alice, &room).await;
    assert!(r.history_complete && r.history_since.is_none());

    // A date in the future is refused before anything is read.
    let future = Some(OffsetDateTime::now_utc() + Duration::from_secs(3600));
    let refused = ingest_room(&env.services, &alice, ingest_request(&user, &room, future), &mut |_| {}).await;
    assert_eq!(refused.err().map(|e| e.code()), Some("INVALID_INPUT"));
    let refused = watch_room(&env.services, &alice, watch_request(&user, &room, 60, future)).await;
    assert_eq!(refused.err().map(|e| e.code()), Some("INVALID_INPUT"));
    // So is one before 1970 (`timestamp_to_event` counts from the Unix epoch): every run of it
    // would fail.
    let ancient = Some(OffsetDateTime::UNIX_EPOCH - Duration::from_secs(1));
    let refused =
        ingest_room(&env.services, &alice, ingest_request(&user, &room, ancient), &mut |_| {}).await;
    assert_eq!(refused.err().map(|e| e.code()), Some("INVALID_INPUT"));
    let refused = watch_room(&env.services, &alice, watch_request(&user, &room, 60, ancient)).await;
    assert_eq!(refused.err().map(|e| e.code()), Some("INVALID_INPUT"));
    // The epoch itself is a date like any other.
    let epoch = Some(OffsetDateTime::UNIX_EPOCH);
    ingest_room(&env.services, &alice, ingest_request(&user, &room, epoch), &mut |_| {}).await.unwrap();
}

async fn a_watchs_date_applies_to_every_run(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let (room, _before, since, after) = room_with_a_date(&user).await;
    let watch =
        watch_room(&env.services, &alice, watch_request(&user, &room, 60, Some(since))).await.unwrap();
    assert_eq!(watch.since.map(argus_domain::to_unix_ms), Some(argus_domain::to_unix_ms(since)));
    let report = scheduler(&env).cycle().await.unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
    assert_eq!(stored_ids(&env, &alice, &room).await, after);
    let r = stored(&env, &alice, &room).await;
    assert!(r.history_complete && r.history_since.is_some());
}

/// The floor of the tests below: the watch limits' minimum interval, two minutes.
const FLOOR: Duration = Duration::from_secs(120);

/// The services of `env` with a minimum watch interval of [`FLOOR`] (and, when `max_bytes` is
/// given, a connector whose runs fail past that many bytes).
fn floored(env: &Env, max_bytes: Option<u64>) -> Arc<argus_ingest::Services> {
    env.replica(|s| {
        s.watch_limits.min_interval_secs = 120;
        if let Some(max_bytes) = max_bytes {
            s.connector = argus_matrix::Connector::new(argus_matrix::ConnectorConfig {
                allow_private_addresses: vec!["127.0.0.1".into()],
                max_bytes,
                ..argus_matrix::ConnectorConfig::default()
            })
            .unwrap();
        }
    })
}

fn scheduler_over(services: Arc<argus_ingest::Services>, max_messages_per_run: u32) -> Scheduler {
    Scheduler::new(
        services,
        SchedulerOptions {
            replica: "replica-f".into(),
            jitter: 0.0,
            max_messages_per_run,
            ..SchedulerOptions::default()
        },
    )
}

/// Asserts that `due` is the floor after a run that started at or after `before`.
fn assert_at_floor(due: OffsetDateTime, before: OffsetDateTime, what: &str) {
    assert!(due >= before + FLOOR, "{what}: due at {due}, sooner than the floor after {before}");
    assert!(due <= OffsetDateTime::now_utc() + FLOOR, "{what}: due at {due}, later than the floor");
}

async fn a_room_s_retention_never_schedules_a_watch_below_the_floor(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    // 61 s: to be read within a second (the lifetime less its minute of margin).
    let second = retention_room(&user, 61_000).await;
    // 1 ms: no schedule can keep up (the room is at risk), and the watch keeps its interval.
    let instant = retention_room(&user, 1).await;
    // Past a thousand years: malformed, no policy.
    let absurd = retention_room(&user, argus_domain::MAX_LIFETIME_MS + 1).await;
    for room in [&second, &instant, &absurd] {
        user.send_text(room, "bref").await.unwrap();
        watch_room(&env.services, &alice, watch_request(&user, room, 86_400, None)).await.unwrap();
    }
    let before = OffsetDateTime::now_utc();
    let report = scheduler_over(floored(&env, None), 100).cycle().await.unwrap();
    assert_eq!((report.claimed, report.succeeded), (3, 3), "{report:?}");
    assert_at_floor(due(&env, &alice, &second).await, before, "61 s");
    let day = before + Duration::from_secs(86_400);
    assert!(due(&env, &alice, &instant).await >= day, "1 ms: its interval");
    assert!(due(&env, &alice, &absurd).await >= day, "malformed: its interval");
    let instant = stored(&env, &alice, &instant).await;
    assert_eq!(instant.metadata.retention.and_then(|r| r.max_lifetime_ms), Some(1));
    assert!(instant.watched && instant.retention_risk(), "no schedule keeps up: at risk");
    assert_eq!(stored(&env, &alice, &absurd).await.metadata.retention, None);
}

async fn a_cut_short_run_of_a_retention_room_is_due_at_the_floor(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let kept = retention_room(&user, 86_400_000).await;
    let plain = user.create_room(Some("Sans rétention"), None, false).await.unwrap();
    for room in [&kept, &plain] {
        user.send_texts(room, "beaucoup", 6, 1).await.unwrap();
        watch_room(&env.services, &alice, watch_request(&user, room, 86_400, None)).await.unwrap();
    }
    // Two messages a run: the first run stops short of the rooms' older history.
    let before = OffsetDateTime::now_utc();
    let report = scheduler_over(floored(&env, None), 2).cycle().await.unwrap();
    assert_eq!((report.claimed, report.succeeded), (2, 2), "{report:?}");
    assert_eq!(stored_ids(&env, &alice, &kept).await.len(), 2);
    assert!(!stored(&env, &alice, &kept).await.history_complete);
    // What it left may be as old as the room: read again as soon as allowed, not within the
    // day less its margin.
    assert_at_floor(due(&env, &alice, &kept).await, before, "cut short");
    // Without a policy nothing expires: the rest waits for the watch's interval.
    assert!(due(&env, &alice, &plain).await >= before + Duration::from_secs(86_400));
}

async fn a_failed_run_of_a_retention_room_is_still_due_before_expiry(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let room = retention_room(&user, 86_400_000).await;
    user.send_text(&room, "à garder").await.unwrap();
    watch_room(&env.services, &alice, watch_request(&user, &room, 86_400, None)).await.unwrap();
    let report = scheduler_over(floored(&env, None), 100).cycle().await.unwrap();
    assert_eq!(report.succeeded, 1, "{report:?}");
    // Read to the end: within the day less its margin.
    let within = Duration::from_secs(77_760);
    assert!(due(&env, &alice, &room).await <= OffsetDateTime::now_utc() + within);

    // Given again (due at once), and run by a replica whose reads fail (a byte budget of one):
    // the failed run read no state, the policy stored from the last read counts.
    user.send_text(&room, "pas encore lu").await.unwrap();
    watch_room(&env.services, &alice, watch_request(&user, &room, 86_400, None)).await.unwrap();
    let before = OffsetDateTime::now_utc();
    let report = scheduler_over(floored(&env, Some(1)), 100).cycle().await.unwrap();
    assert_eq!((report.claimed, report.failed), (1, 1), "{report:?}");
    let (v, r): (Viewer, RoomId) = (alice.clone(), room.parse().unwrap());
    let watch = env.with_store(move |s| s.watch(&v, &r)).await.unwrap();
    assert_eq!(watch.last_outcome.as_deref(), Some("FAILED"));
    assert_at_floor(watch.next_run_at, before, "failed");
}

/// Messages sent in three periods, a second and a half apart on each side of two dates.
async fn room_with_two_dates(user: &TestUser) -> (String, [Vec<String>; 3], [OffsetDateTime; 2]) {
    let room = user.create_room(Some("Deux dates"), None, false).await.unwrap();
    let pause = Duration::from_millis(1500);
    let oldest = user.send_texts(&room, "avant", 2, 1).await.unwrap();
    tokio::time::sleep(pause).await;
    let earlier = OffsetDateTime::now_utc();
    tokio::time::sleep(pause).await;
    let middle = user.send_texts(&room, "entre", 2, 1).await.unwrap();
    tokio::time::sleep(pause).await;
    let later = OffsetDateTime::now_utc();
    tokio::time::sleep(pause).await;
    let newest = user.send_texts(&room, "après", 2, 1).await.unwrap();
    (room, [oldest, middle, newest], [earlier, later])
}

async fn a_later_run_with_an_earlier_date_reads_older_history_down_to_it(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let (room, [_oldest, middle, newest], [earlier, later]) = room_with_two_dates(&user).await;
    ingest_room(&env.services, &alice, ingest_request(&user, &room, Some(later)), &mut |_| {}).await.unwrap();
    assert_eq!(stored_ids(&env, &alice, &room).await, newest);
    let r = stored(&env, &alice, &room).await;
    assert_eq!(r.history_since.map(argus_domain::to_unix_ms), Some(argus_domain::to_unix_ms(later)));

    // From the earlier date: what was sent between the two, not before.
    let summary =
        ingest_room(&env.services, &alice, ingest_request(&user, &room, Some(earlier)), &mut |_| {})
            .await
            .unwrap();
    assert_eq!(summary.messages_stored, 2);
    assert_eq!(
        stored_ids(&env, &alice, &room).await,
        middle.iter().chain(&newest).cloned().collect::<Vec<_>>()
    );
    let r = stored(&env, &alice, &room).await;
    assert!(r.history_complete);
    assert_eq!(r.history_since.map(argus_domain::to_unix_ms), Some(argus_domain::to_unix_ms(earlier)));

    // The later date again: the history already covers it, nothing is read or stored.
    let again = ingest_room(&env.services, &alice, ingest_request(&user, &room, Some(later)), &mut |_| {})
        .await
        .unwrap();
    assert_eq!(again.messages_stored, 0);
    let r = stored(&env, &alice, &room).await;
    assert_eq!(r.history_since.map(argus_domain::to_unix_ms), Some(argus_domain::to_unix_ms(earlier)));
}

async fn a_watch_given_again_without_a_date_reads_back_to_the_creation(env: Env) {
    let Some(server) = synapse() else { return };
    let user = server.register("owner").await.unwrap();
    let alice = analyst("dgsi");
    let (room, before, since, after) = room_with_a_date(&user).await;
    watch_room(&env.services, &alice, watch_request(&user, &room, 3600, Some(since))).await.unwrap();
    assert_eq!(scheduler(&env).cycle().await.unwrap().succeeded, 1);
    assert_eq!(stored_ids(&env, &alice, &room).await, after);

    // Given again without a date (due at once): the date is gone, and the next run reads the
    // older history back to the room's creation.
    let watch = watch_room(&env.services, &alice, watch_request(&user, &room, 3600, None)).await.unwrap();
    assert_eq!(watch.since, None);
    let (v, r): (Viewer, RoomId) = (alice.clone(), room.parse().unwrap());
    assert_eq!(env.with_store(move |s| s.watch(&v, &r)).await.unwrap().since, None, "as stored");
    assert_eq!(scheduler(&env).cycle().await.unwrap().succeeded, 1);
    assert_eq!(
        stored_ids(&env, &alice, &room).await,
        before.iter().chain(&after).cloned().collect::<Vec<_>>()
    );
    let r = stored(&env, &alice, &room).await;
    assert!(r.history_complete && r.history_since.is_none(), "complete since the creation");
}
