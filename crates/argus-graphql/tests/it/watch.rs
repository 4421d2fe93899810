//! Watched rooms through the API: `watchTchapRoom` (token sealed, never returned),
//! `tchapWatches` (gated and paged), `unwatchTchapRoom`; scopes, bounds and a server without
//! token keys.

use std::sync::Arc;

use argus_domain::{
    Classification::{Restricted, Secret},
    Scope,
};
use argus_testkit::homeserver::MATRIX_TOKEN;
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, error_code, ok, viewer};

const WATCH: &str = r"
mutation($input: WatchTchapRoomInput!) {
  watchTchapRoom(input: $input) { id roomId homeserverUrl owner classification interval status statusReason nextRunAt lastRunAt }
}";

const LIST: &str = r"
query($first: Int, $after: String) {
  tchapWatches(first: $first, after: $after) { nodes { roomId status classification } endCursor }
}";

const UNWATCH: &str = r"mutation($room: String!) { unwatchTchapRoom(roomId: $room) }";

fn input(h: &Harness, room: &str, classification: &str, interval: i64) -> Value {
    json!({ "input": {
        "homeserverUrl": h.hs.uri(), "accessToken": MATRIX_TOKEN, "roomId": room,
        "classification": classification, "interval": interval,
    }})
}

async fn harness() -> Harness {
    let mut h = Harness::new().await;
    let key = argus_ingest::TokenKey::new(&[5; 32]).unwrap_or_else(|e| panic!("{e}"));
    h.app_mut().token_keys = Some(Arc::new(argus_ingest::TokenKeys::new(key, Vec::new())));
    h
}

#[tokio::test]
async fn a_watch_is_created_listed_paged_and_removed_without_ever_showing_its_token() {
    let h = harness().await;
    let alice = viewer("dgsi", Secret, &ALL);
    for i in 0..3 {
        let data = ok(h.run(&alice, WATCH, input(&h, &format!("!w{i}:tchap.test"), "RESTRICTED", 300)).await);
        let watch = &data["watchTchapRoom"];
        assert_eq!((watch["status"].as_str(), watch["interval"].as_i64()), (Some("ACTIVE"), Some(300)));
        assert_eq!(watch["owner"], "agent@dgsi");
        assert!(!data.to_string().contains(MATRIX_TOKEN));
    }
    let first = ok(h.run(&alice, LIST, json!({ "first": 2 })).await);
    assert_eq!(first["tchapWatches"]["nodes"].as_array().map(Vec::len), Some(2));
    let cursor = first["tchapWatches"]["endCursor"].clone();
    let rest = ok(h.run(&alice, LIST, json!({ "first": 2, "after": cursor })).await);
    assert_eq!(rest["tchapWatches"]["nodes"][0]["roomId"], "!w2:tchap.test");
    assert!(rest["tchapWatches"]["endCursor"].is_null());
    // A cursor is the caller's: another organisation's use of it is refused.
    let anssi = viewer("anssi", Secret, &ALL);
    let stolen = h.run(&anssi, LIST, json!({ "first": 2, "after": cursor })).await;
    assert_eq!(error_code(&stolen), Some("BAD_CURSOR"));
    assert_eq!(ok(h.run(&anssi, LIST, json!({})).await)["tchapWatches"]["nodes"], json!([]));
    // Removed by its organisation only.
    assert_eq!(
        ok(h.run(&anssi, UNWATCH, json!({ "room": "!w0:tchap.test" })).await)["unwatchTchapRoom"],
        false
    );
    assert_eq!(
        ok(h.run(&alice, UNWATCH, json!({ "room": "!w0:tchap.test" })).await)["unwatchTchapRoom"],
        true
    );
    let left = ok(h.run(&alice, LIST, json!({})).await);
    assert_eq!(left["tchapWatches"]["nodes"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn watch_calls_are_gated_and_bad_input_gets_clear_codes() {
    let h = harness().await;
    let alice = viewer("dgsi", Secret, &ALL);
    ok(h.run(&alice, WATCH, input(&h, "!secret:tchap.test", "SECRET", 300)).await);
    let low = viewer("dgsi", Restricted, &ALL);
    assert_eq!(ok(h.run(&low, LIST, json!({})).await)["tchapWatches"]["nodes"], json!([]));
    let cases = [
        (low.clone(), input(&h, "!secret:tchap.test", "RESTRICTED", 300), "ABOVE_CLEARANCE"),
        (alice.clone(), input(&h, "!a:tchap.test", "RESTRICTED", 10), "INVALID_INPUT"),
        (alice.clone(), input(&h, "#alias:tchap.test", "RESTRICTED", 300), "INVALID_INPUT"),
        (low.clone(), input(&h, "!b:tchap.test", "SECRET", 300), "ABOVE_CLEARANCE"),
        (viewer("dgsi", Secret, &[Scope::Read]), input(&h, "!c:tchap.test", "RESTRICTED", 300), "FORBIDDEN"),
    ];
    for (who, variables, code) in cases {
        let response = h.run(&who, WATCH, variables.clone()).await;
        assert_eq!(error_code(&response), Some(code), "{variables}: {response:#}");
        assert!(!response.to_string().contains(MATRIX_TOKEN));
    }
    let no_read = h.run(&viewer("dgsi", Secret, &[Scope::Ingest]), LIST, json!({})).await;
    assert_eq!(error_code(&no_read), Some("FORBIDDEN"));
    assert_eq!(
        ok(h.run(&alice, LIST, json!({})).await)["tchapWatches"]["nodes"].as_array().map(Vec::len),
        Some(1)
    );

    // A server with no token key refuses watches with a clear code.
    let bare = Harness::new().await;
    let refused = bare.run(&alice, WATCH, input(&bare, "!a:tchap.test", "RESTRICTED", 300)).await;
    assert_eq!(error_code(&refused), Some("WATCHES_DISABLED"));
}

#[tokio::test]
async fn a_scheduled_run_shows_as_scheduled_in_the_trail() {
    let h = harness().await;
    let alice = viewer("dgsi", Secret, &ALL);
    h.hs.room("!sched:tchap.test", 2);
    ok(h.run(&alice, WATCH, input(&h, "!sched:tchap.test", "RESTRICTED", 300)).await);
    ok(h.ingest(&alice, "!sched:tchap.test", Restricted).await);
    let options = argus_ingest::scheduler::SchedulerOptions {
        replica: "test".into(),
        ..argus_ingest::scheduler::SchedulerOptions::default()
    };
    let report = argus_ingest::scheduler::Scheduler::new(Arc::clone(&h.services.app), options)
        .cycle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report.succeeded, 1, "{report:?}");
    let trail = ok(h
        .run(
            &alice,
            "{ tchapIngestions(first: 5) { edges { node { actor scheduled messageCount } } } }",
            json!({}),
        )
        .await);
    let seen: Vec<(bool, i64)> = trail["tchapIngestions"]["edges"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|n| (n["node"]["scheduled"] == true, n["node"]["messageCount"].as_i64().unwrap_or(-1)))
                .collect()
        })
        .unwrap_or_default();
    // Newest first: the scheduled run (nothing new), then the call.
    assert_eq!(seen, [(true, 0), (false, 2)]);
}

/// Aliased `watchTchapRoom` calls in one document are each held to the cap per owner and to the
/// caller's rate, with codes of their own; nothing past them is created.
#[tokio::test]
async fn aliased_watch_calls_are_held_to_the_callers_rate_and_cap() {
    let mut h = harness().await;
    h.app_mut().admission = argus_graphql::Admission::new(argus_graphql::AdmissionLimits {
        per_caller_per_minute: 5,
        ..argus_graphql::AdmissionLimits::default()
    });
    h.app_mut().watch_limits.max_per_owner = 3;
    let alice = viewer("dgsi", Secret, &ALL);
    let aliased = |rooms: std::ops::Range<usize>| {
        let calls: String = rooms
            .map(|i| {
                format!(
                    r#"w{i}: watchTchapRoom(input: {{ homeserverUrl: "{}", accessToken: "{MATRIX_TOKEN}", roomId: "!many{i}:tchap.test", classification: RESTRICTED, interval: 300 }}) {{ status }} "#,
                    h.hs.uri()
                )
            })
            .collect::<String>();
        format!("mutation {{ {calls} }}")
    };
    // Four aliases: three watches, the fourth past the cap (mutations run in turn, and stop at
    // the first error).
    let response = h.run(&alice, &aliased(0..4), json!({})).await;
    assert_eq!(error_code(&response), Some("TOO_MANY_WATCHES"), "{response:#}");
    assert_eq!(response["errors"][0]["path"][0], "w3");
    // A renewal is no new watch; then the caller's rate (five a minute) is spent.
    ok(h.run(&alice, &aliased(0..1), json!({})).await);
    let limited = h.run(&alice, &aliased(0..1), json!({})).await;
    assert_eq!(error_code(&limited), Some("TOO_MANY_REQUESTS"), "{limited:#}");
    let listed = ok(h.run(&alice, LIST, json!({})).await);
    assert_eq!(listed["tchapWatches"]["nodes"].as_array().map(Vec::len), Some(3));
}
