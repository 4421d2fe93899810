//! The ingestion mutation: success, re-ingestion, every failure audited, the token nowhere.

use argus_domain::Scope;
use argus_testkit::homeserver::MATRIX_TOKEN;
use serde_json::{Value, json};

use crate::harness::{ALL, Confidential, Harness, Restricted, Secret, TopSecret, error_code, ok, viewer};

const AUDIT: &str = r"{ tchapIngestions(first: 100) { totalCount edges { node { outcome error roomId homeserverUrl actor messageCount classification } } } }";

async fn audit(h: &Harness, org: &str) -> Value {
    ok(h.run(&viewer(org, TopSecret, &[Scope::Audit]), AUDIT, json!({})).await)["tchapIngestions"].clone()
}

#[tokio::test]
async fn ingests_a_room_and_reingestion_stores_nothing_twice() {
    let h = Harness::new().await;
    h.hs.room("!crise:tchap.test", 7);
    let alice = viewer("dgsi", Secret, &ALL);
    let data = ok(h.ingest(&alice, "!crise:tchap.test", Secret).await);
    let p = &data["ingestTchapRoom"];
    assert_eq!(p["messagesFetched"], 7);
    assert_eq!(p["messagesStored"], 7);
    assert_eq!(p["room"]["roomId"], "!crise:tchap.test");
    assert_eq!(p["room"]["name"], "Salle !crise:tchap.test");
    assert_eq!(p["room"]["topic"], "Cellule de crise");
    assert_eq!(p["room"]["memberCount"], 2);
    assert_eq!(p["room"]["classification"], "SECRET");
    assert_eq!(p["room"]["messageCount"], 7);
    // Fixed width: always milliseconds, so text order is time order.
    assert_eq!(p["room"]["lastActivityAt"], "2026-01-01T00:06:00.000Z");
    assert_eq!(p["ingestion"]["outcome"], "SUCCEEDED");
    assert_eq!(p["ingestion"]["actor"], "agent@dgsi");
    assert_eq!(p["ingestion"]["messageCount"], 7);
    assert_eq!(p["ingestion"]["seq"], 1);

    // Again at a lower level: nothing new stored, the classification stays SECRET.
    let again = ok(h.ingest(&alice, "!crise:tchap.test", Restricted).await);
    assert_eq!(again["ingestTchapRoom"]["messagesStored"], 0);
    assert_eq!(again["ingestTchapRoom"]["room"]["classification"], "SECRET");
    assert_eq!(again["ingestTchapRoom"]["room"]["messageCount"], 7);
    assert_eq!(again["ingestTchapRoom"]["ingestion"]["seq"], 2);

    let trail = audit(&h, "dgsi").await;
    assert_eq!(trail["totalCount"], 2);
    let m = h.services.app.metrics.ingestions_succeeded.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(m, 2);
}

#[tokio::test]
async fn every_failure_has_a_code_and_every_admitted_one_a_failed_audit_record_without_the_token() {
    let h = Harness::new().await;
    let alice = viewer("dgsi", Confidential, &ALL);
    let url = h.hs.uri();
    let base = |room: &str| json!({ "homeserverUrl": url, "accessToken": MATRIX_TOKEN, "roomId": room, "classification": "RESTRICTED" });
    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    let cases: Vec<(Value, &str)> = vec![
        (base("!forbidden:tchap.test"), "ROOM_FORBIDDEN"),
        (base("!missing:tchap.test"), "ROOM_NOT_FOUND"),
        (
            with(base("!ok:tchap.test"), "accessToken", json!("syt_wrong_token_123456")),
            "HOMESERVER_UNAUTHORIZED",
        ),
        (base("!a/b:tchap.test"), "INVALID_INPUT"),
        (base("#alias:tchap.test"), "INVALID_INPUT"),
        (with(base("!ok:tchap.test"), "homeserverUrl", json!("ftp://tchap.test")), "INVALID_INPUT"),
        (with(base("!ok:tchap.test"), "homeserverUrl", json!("http://10.1.2.3")), "OUTBOUND_POLICY"),
        (with(base("!ok:tchap.test"), "homeserverUrl", json!("http://169.254.169.254")), "OUTBOUND_POLICY"),
        (with(base("!ok:tchap.test"), "classification", json!("SECRET")), "ABOVE_CLEARANCE"),
        (with(base("!ok:tchap.test"), "maxMessages", json!(0)), "INVALID_INPUT"),
        (
            with(base("!ok:tchap.test"), "maxMessages", json!(argus_matrix::HARD_MAX_STREAMED_MESSAGES + 1)),
            "INVALID_INPUT",
        ),
        (with(base("!ok:tchap.test"), "accessToken", json!("")), "INVALID_INPUT"),
    ];
    // Malformed input is refused before anything runs: counted, not audited.
    let n = cases.iter().filter(|(_, code)| *code != "INVALID_INPUT").count();
    let refused = cases.len() - n;
    for (input, code) in cases {
        let response = h.ingest_with(&alice, input.clone()).await;
        assert_eq!(error_code(&response), Some(code), "{input}: {response:#}");
        assert!(response["data"].is_null(), "{response:#}");
        assert!(!response.to_string().contains(MATRIX_TOKEN), "token in {response}");
        assert!(!response.to_string().contains("syt_wrong_token"), "token in {response}");
    }
    let trail = audit(&h, "dgsi").await;
    assert_eq!(trail["totalCount"], n, "{trail:#}");
    let counted = h.services.app.metrics.ingestions_refused.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, refused as u64);
    for edge in trail["edges"].as_array().unwrap() {
        let node = &edge["node"];
        assert_eq!(node["outcome"], "FAILED");
        assert_eq!(node["messageCount"], 0);
        assert!(node["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert!(!trail.to_string().contains(MATRIX_TOKEN));
    assert!(!trail.to_string().contains("syt_wrong_token"));
    // Nothing but audit records was stored.
    let rooms = ok(h
        .run(&viewer("dgsi", TopSecret, &[Scope::Read]), "{ tchapRooms { totalCount } }", json!({}))
        .await);
    assert_eq!(rooms["tchapRooms"]["totalCount"], 0);
}

#[tokio::test]
async fn without_the_ingest_scope_the_mutation_is_forbidden_counted_and_not_audited() {
    let h = Harness::new().await;
    let reader = viewer("dgsi", Secret, &[Scope::Read]);
    // One caller without the scope cannot fill the permanent trail with 2 kB refusals.
    for _ in 0..20 {
        let response = h.ingest(&reader, "!crise:tchap.test", Restricted).await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"));
    }
    let trail = audit(&h, "dgsi").await;
    assert_eq!(trail["totalCount"], 0, "{trail:#}");
    assert_eq!(h.services.app.metrics.ingestions_refused.load(std::sync::atomic::Ordering::Relaxed), 20);
}

/// Ingestions running at once are bounded (in all and per homeserver), and one caller may
/// start only so many per minute: refusals are clear, retryable codes, counted, not audited.
#[tokio::test]
async fn concurrent_and_repeated_ingestions_are_bounded() {
    use argus_graphql::{Admission, AdmissionLimits};
    let limits = AdmissionLimits {
        max_concurrent: 2,
        max_concurrent_per_homeserver: 1,
        max_concurrent_per_caller: 2,
        per_caller_per_minute: 3,
    };
    let admission = Admission::new(limits);
    let first = admission.admit("dgsi/a", "https://hs1.gouv.fr").unwrap();
    let busy = admission.admit("dgsi/b", "https://hs1.gouv.fr").unwrap_err();
    assert_eq!(busy.code(), "BUSY");
    let second = admission.admit("dgsi/b", "https://hs2.gouv.fr").unwrap();
    let full = admission.admit("dgsi/c", "https://hs3.gouv.fr").unwrap_err();
    assert_eq!(full.code(), "BUSY");
    drop((first, second));
    // The caller "dgsi/a" has used one of its three per minute; two more, then refused.
    for _ in 0..2 {
        drop(admission.admit("dgsi/a", "https://hs1.gouv.fr").unwrap());
    }
    assert_eq!(admission.admit("dgsi/a", "https://hs1.gouv.fr").unwrap_err().code(), "TOO_MANY_REQUESTS");
    // Another caller is not affected.
    drop(admission.admit("anssi/a", "https://hs1.gouv.fr").unwrap());

    // Through the mutation: a caller over its rate gets TOO_MANY_REQUESTS, and no audit record.
    let mut h = Harness::new().await;
    h.hs.room("!rate:tchap.test", 1);
    h.app_mut().admission =
        Admission::new(AdmissionLimits { per_caller_per_minute: 2, ..AdmissionLimits::default() });
    let alice = viewer("dgsi", Secret, &ALL);
    for _ in 0..2 {
        ok(h.ingest(&alice, "!rate:tchap.test", Restricted).await);
    }
    let refused = h.ingest(&alice, "!rate:tchap.test", Restricted).await;
    assert_eq!(error_code(&refused), Some("TOO_MANY_REQUESTS"), "{refused:#}");
    assert_eq!(audit(&h, "dgsi").await["totalCount"], 2);
    // Calls that would fail, and be audited, are held to the rate too: the trail cannot be
    // flooded with failures by one caller.
    let bob = viewer("dgsi", Restricted, &ALL);
    h.app_mut().admission =
        Admission::new(AdmissionLimits { per_caller_per_minute: 3, ..AdmissionLimits::default() });
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(error_code(&h.ingest(&bob, "!rate:tchap.test", TopSecret).await).map(str::to_owned));
    }
    assert_eq!(codes.iter().filter(|c| c.as_deref() == Some("ABOVE_CLEARANCE")).count(), 3, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| c.as_deref() == Some("TOO_MANY_REQUESTS")).count(), 3, "{codes:?}");
    assert_eq!(audit(&h, "dgsi").await["totalCount"], 5);
}

#[tokio::test]
async fn room_ids_without_server_part_are_accepted() {
    let h = Harness::new().await;
    let room = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM";
    h.hs.room(room, 2);
    let data = ok(h.ingest(&viewer("dgsi", Secret, &ALL), room, Restricted).await);
    assert_eq!(data["ingestTchapRoom"]["messagesStored"], 2);
}

#[tokio::test]
async fn concurrent_ingestions_of_one_room_store_once_and_audit_twice() {
    let h = Harness::new().await;
    h.hs.room("!busy:tchap.test", 40);
    let a = viewer("dgsi", Secret, &ALL);
    let b = viewer("dgsi", Secret, &ALL);
    let (ra, rb) =
        tokio::join!(h.ingest(&a, "!busy:tchap.test", Secret), h.ingest(&b, "!busy:tchap.test", Secret));
    let stored = |r: &Value| r["data"]["ingestTchapRoom"]["messagesStored"].as_i64();
    let total = stored(&ra).unwrap_or(0) + stored(&rb).unwrap_or(0);
    assert_eq!(total, 40, "{ra:#} {rb:#}");
    let trail = audit(&h, "dgsi").await;
    assert_eq!(trail["totalCount"], 2);
}

#[tokio::test]
async fn a_successful_ingestion_wakes_the_fusion_relay_and_a_failed_one_does_not() {
    let mut h = Harness::new().await;
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    h.app_mut().on_ingested = Some(std::sync::Arc::clone(&wake));
    // `timeout` polls the wait once before looking at the clock: Ok exactly when a wake-up is
    // already pending.
    let woken = || tokio::time::timeout(std::time::Duration::ZERO, wake.notified());
    let alice = viewer("dgsi", Secret, &ALL);

    let failed = h.ingest(&alice, "!missing:tchap.test", Restricted).await;
    assert!(error_code(&failed).is_some(), "{failed}");
    assert!(woken().await.is_err(), "a failed ingestion woke the relay");

    h.hs.room("!crise:tchap.test", 3);
    ok(h.ingest(&alice, "!crise:tchap.test", Restricted).await);
    assert!(woken().await.is_ok(), "a successful ingestion did not wake the relay");
}

/// A token that may only ingest learns the counts of its call, not the stored room or the audit
/// record; an auditor without `tchap:audit:chain` sees no chain position (its gaps would count
/// the records above their clearance).
#[tokio::test]
async fn the_payload_and_the_chain_position_are_gated_by_scope() {
    let h = Harness::new().await;
    h.hs.room("!scopes:tchap.test", 3);
    let input = json!({ "input": {
        "homeserverUrl": h.hs.uri(), "accessToken": MATRIX_TOKEN, "roomId": "!scopes:tchap.test",
        "classification": "RESTRICTED"
    } });
    let ingest_only = viewer("dgsi", Secret, &[Scope::Ingest]);
    let counts = "mutation($input: IngestTchapRoomInput!) { ingestTchapRoom(input: $input) { messagesFetched messagesStored } }";
    let p = ok(h.run(&ingest_only, counts, input.clone()).await);
    assert_eq!(p["ingestTchapRoom"]["messagesStored"], 3);
    for (field, selection) in [("room", "room { name }"), ("ingestion", "ingestion { actor }")] {
        let query = format!(
            "mutation($input: IngestTchapRoomInput!) {{ ingestTchapRoom(input: $input) {{ messagesStored {selection} }} }}"
        );
        let response = h.run(&ingest_only, &query, input.clone()).await;
        assert_eq!(error_code(&response), Some("FORBIDDEN"), "{field}: {response:#}");
        assert!(!response.to_string().contains("Salle"), "{field}: {response:#}");
    }

    let chain = "{ tchapIngestions { edges { node { actor seq hash } } } }";
    let auditor = viewer("dgsi", TopSecret, &[Scope::Audit]);
    let response = h.run(&auditor, chain, json!({})).await;
    assert_eq!(error_code(&response), Some("FORBIDDEN"), "{response:#}");
    let plain =
        ok(h.run(&auditor, "{ tchapIngestions { totalCount edges { node { actor } } } }", json!({})).await);
    assert_eq!(plain["tchapIngestions"]["totalCount"], 3);
    let oversight = viewer("dgsi", TopSecret, &[Scope::Audit, Scope::AuditChain]);
    let nodes = ok(h.run(&oversight, chain, json!({})).await);
    assert_eq!(nodes["tchapIngestions"]["edges"][0]["node"]["seq"], 3);
}
