//! What one caller may take and learn: watch creation answers a room withheld from the caller as
//! it answers a missing one; a caller holds only so many ingestion places and an interactive run
//! only so long; watch creation is held to the caller's rate and to a cap per owner; a
//! joined-rooms call counts each room against the caller's rate, takes only so many rooms, and
//! summarises its failures past the first few in one audit record.

use std::{sync::Arc, time::Duration};

use argus_domain::{AccessToken, Classification, Scope, Viewer};
use argus_ingest::{
    Admission, AdmissionLimits,
    ingest::{IngestRequest, Reach, Trigger, ingest_joined, ingest_room},
    watch::{WatchRequest, watch_room, watches},
};
use argus_testkit::homeserver::MATRIX_TOKEN;

use crate::support::{Env, analyst, backend_suite};

backend_suite!(
    watch_creation_answers_a_withheld_room_as_a_missing_one,
    watch_refusals_take_the_same_time_for_withheld_and_missing_rooms,
    one_caller_holds_at_most_two_ingestion_places,
    an_interactive_run_stops_at_its_deadline_and_keeps_what_it_committed,
    watch_creation_is_held_to_the_callers_rate_and_a_cap_per_owner,
    a_joined_rooms_call_counts_each_room_caps_the_rooms_and_summarises_its_failures,
);

/// A token no homeserver knows.
const GARBAGE: &str = "syt_garbage_token_0123456789";

fn someone(actor: &str, clearance: Classification) -> Viewer {
    Viewer::new(
        actor.parse().unwrap_or_else(|e| panic!("{e}")),
        "dgsi".parse().unwrap_or_else(|e| panic!("{e}")),
        clearance,
        [Scope::Ingest, Scope::Read],
    )
}

fn watch_request(env: &Env, room: &str, token: &str, classification: Classification) -> WatchRequest {
    WatchRequest {
        homeserver_url: env.hs.uri(),
        access_token: AccessToken::new(token),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification,
        interval_secs: 60,
        recovery_key: None,
    }
}

fn ingest_request(env: &Env, room: &str, classification: Classification, trigger: Trigger) -> IngestRequest {
    IngestRequest {
        homeserver_url: env.hs.uri(),
        access_token: AccessToken::new(MATRIX_TOKEN),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification,
        max_messages: Some(1_000),
        recovery_key: None,
        reach: Reach::Current,
        trigger,
        follow_upgrades: false,
    }
}

/// Services over the same store whose callers may call as often as they like.
fn unlimited_rate(env: &Env) -> Arc<argus_ingest::Services> {
    env.replica(|s| {
        s.admission = Admission::new(AdmissionLimits {
            per_caller_per_minute: 1_000_000,
            ..AdmissionLimits::default()
        });
    })
}

/// A room stored SECRET, and a room not stored but watched SECRET, by a colleague cleared SECRET.
async fn withheld_rooms(env: &Env) -> [&'static str; 2] {
    let (stored, watched) = ("!stored-secret:tchap.test", "!watched-secret:tchap.test");
    env.hs.room(stored, 3);
    let alice = analyst("dgsi");
    ingest_room(
        &env.services,
        &alice,
        ingest_request(env, stored, Classification::Secret, Trigger::Manual),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    watch_room(&env.services, &alice, watch_request(env, watched, MATRIX_TOKEN, Classification::Secret))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    [stored, watched]
}

async fn watch_creation_answers_a_withheld_room_as_a_missing_one(env: Env) {
    let [stored, watched] = withheld_rooms(&env).await;
    let low = someone("low", Classification::Unclassified);
    // With a token the homeserver refuses: the same code and message for a missing room, a room
    // stored above the caller's clearance and a room watched above it; nothing is created.
    let mut answers = Vec::new();
    for room in ["!nowhere:tchap.test", stored, watched] {
        let result =
            watch_room(&env.services, &low, watch_request(&env, room, GARBAGE, Classification::Unclassified))
                .await;
        let error = result.map(|w| format!("{:?}", w.status)).map_err(|e| (e.code(), e.public_message()));
        answers.push(error);
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].as_ref().map_err(|e| e.0), Err("HOMESERVER_UNAUTHORIZED"));
    assert!(watches(&env.services, &low, 10, None).await.unwrap_or_else(|e| panic!("{e}")).is_empty());
    let alice = analyst("dgsi");
    assert_eq!(watches(&env.services, &alice, 10, None).await.map(|w| w.len()).ok(), Some(1));
    // A room the homeserver does not let the token read: alike too (the archive is not asked).
    let forbidden = watch_room(
        &env.services,
        &low,
        watch_request(&env, "!forbidden-x:tchap.test", MATRIX_TOKEN, Classification::Unclassified),
    )
    .await;
    assert_eq!(forbidden.map(drop).map_err(|e| e.code()), Err("ROOM_FORBIDDEN"));
    // Only a token the homeserver lets read the room reaches the archive, which then answers as
    // an ingestion would: the caller is a member of the room, and learns only that the archive
    // holds it above their clearance.
    for room in [stored, watched] {
        let member = watch_room(
            &env.services,
            &low,
            watch_request(&env, room, MATRIX_TOKEN, Classification::Unclassified),
        )
        .await;
        assert_eq!(member.map(drop).map_err(|e| e.code()), Err("ABOVE_CLEARANCE"), "{room}");
    }
}

/// Median of `samples`.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_unstable_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A withheld room must not be told apart from a missing one by how long the refusal takes:
/// every round times each kind once, in turn first, and a kind's cost is the median over rounds
/// of its time divided by the missing room's in the same round.
async fn watch_refusals_take_the_same_time_for_withheld_and_missing_rooms(env: Env) {
    let [stored, watched] = withheld_rooms(&env).await;
    let services = unlimited_rate(&env);
    let low = someone("low", Classification::Unclassified);
    let rooms = ["!nowhere:tchap.test", stored, watched];
    let mut ratios = [Vec::new(), Vec::new()];
    for round in 0..330 {
        let mut times = [0f64; 3];
        for k in 0..rooms.len() {
            let i = (k + round) % rooms.len();
            let request = watch_request(&env, rooms[i], GARBAGE, Classification::Unclassified);
            let started = std::time::Instant::now();
            let result = watch_room(&services, &low, request).await;
            times[i] = started.elapsed().as_nanos() as f64;
            assert_eq!(result.map(drop).map_err(|e| e.code()), Err("HOMESERVER_UNAUTHORIZED"));
        }
        if round >= 30 {
            ratios[0].push(times[1] / times[0]);
            ratios[1].push(times[2] / times[0]);
        }
    }
    let [stored, watched] = ratios.map(median);
    eprintln!("median time over a missing room's: stored above {stored:.2}, watched above {watched:.2}");
    for (what, r) in [("stored above", stored), ("watched above", watched)] {
        assert!(
            (1.0 / 1.2..1.2).contains(&r),
            "a room {what} the caller's clearance takes {r:.2}x a missing one"
        );
    }
}

async fn one_caller_holds_at_most_two_ingestion_places(env: Env) {
    // Two slow rooms (a page every 40 ms, 30 pages each) read by one caller at once.
    let alice = analyst("dgsi");
    let (started, mut running) = tokio::sync::mpsc::unbounded_channel();
    let mut runs = Vec::new();
    for room in ["!slow-a:tchap.test", "!slow-b:tchap.test"] {
        env.hs.room(room, 300);
        let (services, viewer, started) = (Arc::clone(&env.services), alice.clone(), started.clone());
        let request = ingest_request(&env, room, Classification::Restricted, Trigger::Manual);
        runs.push(tokio::spawn(async move {
            let mut first = Some(started);
            ingest_room(&services, &viewer, request, &mut |_| {
                if let Some(started) = first.take() {
                    let _ = started.send(());
                }
            })
            .await
        }));
    }
    for _ in 0..2 {
        running.recv().await.unwrap_or_else(|| panic!("a run ended before its first page"));
    }
    // While both run, a third ingestion of the same caller is refused (not audited)...
    env.hs.room("!third:tchap.test", 2);
    let third = |viewer: &Viewer| {
        let request = ingest_request(&env, "!third:tchap.test", Classification::Restricted, Trigger::Manual);
        let viewer = viewer.clone();
        let services = Arc::clone(&env.services);
        async move { ingest_room(&services, &viewer, request, &mut |_| {}).await.map(|s| s.messages_stored) }
    };
    assert_eq!(third(&alice).await.map_err(|e| e.code()), Err("CALLER_BUSY"));
    // ...and another caller's runs.
    let bob = someone("bob", Classification::Restricted);
    assert_eq!(third(&bob).await.map_err(|e| e.code()), Ok(2));
    for run in runs {
        let done = run.await.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(done.messages_stored, 300);
    }
    // Once they ended, the caller has their places back.
    assert_eq!(third(&alice).await.map_err(|e| e.code()), Ok(0));
    assert_eq!(env.trail(&alice).await.len(), 4, "the refusal is not audited");
}

async fn an_interactive_run_stops_at_its_deadline_and_keeps_what_it_committed(env: Env) {
    let room = "!slow-long:tchap.test";
    // 30 pages of 40 ms: over a second to read.
    env.hs.room(room, 300);
    let services = env.replica(|s| s.limits.interactive_run_deadline = Duration::from_millis(300));
    let alice = analyst("dgsi");
    let cut = ingest_room(
        &services,
        &alice,
        ingest_request(&env, room, Classification::Restricted, Trigger::Manual),
        &mut |_| {},
    )
    .await;
    assert_eq!(cut.map(drop).map_err(|e| e.code()), Err("DEADLINE_EXCEEDED"));
    let records = env.trail(&alice).await;
    assert_eq!(records.len(), 1);
    let kept = records[0].entry.message_count;
    assert_eq!(records[0].entry.outcome, argus_domain::IngestionOutcome::Failed);
    assert!((1..300).contains(&kept), "the run kept {kept} messages");
    // A scheduled run is not an interactive one: it reads the rest of the room.
    let scheduled = ingest_room(
        &services,
        &alice,
        ingest_request(&env, room, Classification::Restricted, Trigger::Scheduled),
        &mut |_| {},
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(kept + scheduled.messages_stored, 300);
}

async fn watch_creation_is_held_to_the_callers_rate_and_a_cap_per_owner(env: Env) {
    let services = env.replica(|s| {
        s.admission =
            Admission::new(AdmissionLimits { per_caller_per_minute: 4, ..AdmissionLimits::default() });
        s.watch_limits.max_per_owner = 2;
    });
    let alice = analyst("dgsi");
    let mut codes = Vec::new();
    for room in ["!w1:tchap.test", "!w2:tchap.test", "!w3:tchap.test", "!w1:tchap.test", "!w2:tchap.test"] {
        let result = watch_room(
            &services,
            &alice,
            watch_request(&env, room, MATRIX_TOKEN, Classification::Restricted),
        )
        .await;
        codes.push(result.map(drop).map_err(|e| e.code()));
    }
    // Two watches, the third refused by the cap, a renewal still allowed, then the rate.
    assert_eq!(codes, [Ok(()), Ok(()), Err("TOO_MANY_WATCHES"), Ok(()), Err("TOO_MANY_REQUESTS")]);
    // Another owner has a cap and a rate of their own.
    let bob = someone("bob", Classification::Restricted);
    let other = watch_room(
        &services,
        &bob,
        watch_request(&env, "!w3:tchap.test", MATRIX_TOKEN, Classification::Restricted),
    )
    .await;
    assert!(other.is_ok(), "{:?}", other.err());
}

async fn a_joined_rooms_call_counts_each_room_caps_the_rooms_and_summarises_its_failures(env: Env) {
    // Twelve joined rooms, each refusing the account.
    let rooms: Vec<String> = (0..12).map(|i| format!("!forbidden-{i:02}:tchap.test")).collect();
    for room in &rooms {
        env.hs.room(room, 1);
    }
    // Ten rooms a call, three failures recorded one by one, and eleven calls a minute: the
    // discovery and the ten rooms.
    let services = env.replica(|s| {
        s.limits.joined_rooms_per_call = 10;
        s.limits.joined_failures_recorded = 3;
        s.admission =
            Admission::new(AdmissionLimits { per_caller_per_minute: 11, ..AdmissionLimits::default() });
    });
    let alice = analyst("dgsi");
    let request = env.joined(MATRIX_TOKEN);
    let outcomes =
        ingest_joined(&services, &alice, request, &mut |_, _| {}).await.unwrap_or_else(|e| panic!("{e}"));
    let seen: Vec<(&str, &str)> = outcomes
        .iter()
        .map(|o| (o.room_id.as_str(), o.result.as_ref().err().map_or("OK", |e| e.0)))
        .collect();
    let expected: Vec<(&str, &str)> = rooms
        .iter()
        .enumerate()
        .map(|(i, r)| (r.as_str(), if i < 10 { "ROOM_FORBIDDEN" } else { "TOO_MANY_ROOMS" }))
        .collect();
    assert_eq!(seen, expected);
    // Three records of their own, then one naming the other seven.
    let records = env.trail(&alice).await;
    let audited: Vec<&str> = records.iter().map(|r| r.entry.room_id.as_str()).collect();
    assert_eq!(audited, [rooms[0].as_str(), rooms[1].as_str(), rooms[2].as_str(), "*"]);
    let summary = &records[3].entry;
    assert_eq!((summary.outcome, summary.message_count), (argus_domain::IngestionOutcome::Failed, 0));
    let text = summary.error.as_deref().unwrap_or_default();
    assert!(text.starts_with("7 more rooms") && text.contains("ROOM_FORBIDDEN: 7"), "{text}");
    assert!(!text.contains(MATRIX_TOKEN));
    // Every room counted against the caller's rate: nothing is left of it this minute.
    env.hs.room("!next:tchap.test", 1);
    let next = ingest_room(
        &services,
        &alice,
        ingest_request(&env, "!next:tchap.test", Classification::Restricted, Trigger::Manual),
        &mut |_| {},
    )
    .await;
    assert_eq!(next.map(drop).map_err(|e| e.code()), Err("TOO_MANY_REQUESTS"));
    let verified = env.with_store(|s| s.audit_verify(&[])).await;
    assert!(verified.iter().all(|c| c.is_ok()), "{verified:?}");
    // No run is left open to be audited later as interrupted.
    let later = time::OffsetDateTime::now_utc() + Duration::from_secs(24 * 3600);
    assert!(env.with_store(move |s| s.close_interrupted_runs(later)).await.is_empty());
}
