//! Account states through the API, on the real Synapse: `tchapWatches` shows a watch stopped by
//! an expired or a locked account as ACCOUNT_EXPIRED or ACCOUNT_LOCKED with its reason, and a
//! post of a suspended account answers `extensions.code` ACCOUNT_SUSPENDED and is audited so.

use std::sync::Arc;

use argus_domain::Scope;
use argus_testkit::synapse::{TestUser, synapse};
use serde_json::{Value, json};

use crate::harness::{Harness, Restricted, Secret, error_code, ok, viewer};

const WATCH: &str = r"
mutation($input: WatchTchapRoomInput!) { watchTchapRoom(input: $input) { roomId status } }";

const LIST: &str = r"{ tchapWatches { nodes { roomId status statusReason lastOutcome lastError } } }";

const POST: &str =
    r"mutation($input: PostTchapMessageInput!) { postTchapMessage(input: $input) { eventId } }";

const AUDIT: &str = r"{ tchapIngestions(first: 100) { edges { node { action outcome roomId error } } } }";

async fn harness() -> Harness {
    let mut h = Harness::new().await;
    let key = argus_ingest::TokenKey::new(&[7; 32]).unwrap_or_else(|e| panic!("{e}"));
    h.app_mut().token_keys = Some(Arc::new(argus_ingest::TokenKeys::new(key, Vec::new())));
    h
}

/// A new account of the homeserver at `base` with a room holding one message.
async fn account(name: &str) -> (TestUser, String) {
    let server = synapse().unwrap_or_else(|| unreachable!("checked by the caller"));
    let user = server.register(name).await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = user.create_room(Some("states"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    user.send_text(&room, "one").await.unwrap_or_else(|e| panic!("{e:#}"));
    (user, room)
}

fn room_input(base: &str, user: &TestUser, room: &str) -> Value {
    json!({
        "homeserverUrl": base, "accessToken": user.access_token, "roomId": room,
        "classification": "RESTRICTED",
    })
}

#[tokio::test]
async fn watches_show_the_account_states_and_a_suspended_post_has_its_code() {
    let Some(server) = synapse() else { return };
    let base = server.base_url();
    let admin = server.register_admin("api_admin").await.unwrap_or_else(|e| panic!("{e:#}"));
    let h = harness().await;
    let alice =
        viewer("dgsi", Secret, &[Scope::Read, Scope::Ingest, Scope::Audit, Scope::AuditChain, Scope::Post]);

    // Two watches, made while their accounts were usable; then one expires, the other is locked.
    let (expired, expired_room) = account("api_expired").await;
    let (locked, locked_room) = account("api_locked").await;
    for (user, room) in [(&expired, &expired_room), (&locked, &locked_room)] {
        let mut input = room_input(base, user, room);
        input["interval"] = json!(300);
        let made = ok(h.run(&alice, WATCH, json!({ "input": input })).await);
        assert_eq!(made["watchTchapRoom"]["status"], "ACTIVE");
    }
    admin.expire_account(&expired.user_id).await.unwrap_or_else(|e| panic!("{e:#}"));
    admin.set_account_locked(&locked.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    let options = argus_ingest::scheduler::SchedulerOptions {
        replica: "api".into(),
        jitter: 0.0,
        ..argus_ingest::scheduler::SchedulerOptions::default()
    };
    let report = argus_ingest::scheduler::Scheduler::new(Arc::clone(&h.services.app), options)
        .cycle()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((report.claimed, report.paused), (2, 2), "{report:?}");

    let listed = ok(h.run(&alice, LIST, json!({})).await);
    let shown = listed.to_string();
    assert!(!shown.contains(&expired.access_token) && !shown.contains(&locked.access_token));
    let nodes = listed["tchapWatches"]["nodes"].as_array().cloned().unwrap_or_default();
    for (room, status) in [(&expired_room, "ACCOUNT_EXPIRED"), (&locked_room, "ACCOUNT_LOCKED")] {
        let node =
            nodes.iter().find(|n| n["roomId"] == room.as_str()).unwrap_or_else(|| panic!("{listed:#}"));
        assert_eq!((node["status"].as_str(), node["lastOutcome"].as_str()), (Some(status), Some("FAILED")));
        let reason = node["statusReason"].as_str().unwrap_or_default();
        assert!(reason.starts_with(&format!("{status}: ")), "{reason}");
    }

    // A suspended account's room in the archive: its post is refused with the account's state.
    let (suspended, suspended_room) = account("api_suspended").await;
    ok(h.ingest_with(&alice, room_input(base, &suspended, &suspended_room)).await);
    admin.set_account_suspended(&suspended.user_id, true).await.unwrap_or_else(|e| panic!("{e:#}"));
    let mut note = room_input(base, &suspended, &suspended_room);
    note["body"] = json!("a note");
    note["classification"] = json!(Restricted.as_str());
    let refused = h.run(&alice, POST, json!({ "input": note })).await;
    assert_eq!(error_code(&refused), Some("ACCOUNT_SUSPENDED"), "{refused:#}");
    assert!(!refused.to_string().contains(&suspended.access_token));
    let audit = ok(h.run(&alice, AUDIT, json!({})).await);
    let post = audit["tchapIngestions"]["edges"]
        .as_array()
        .and_then(|edges| edges.iter().map(|e| &e["node"]).find(|n| n["action"] == "POST"))
        .cloned()
        .unwrap_or_else(|| panic!("no post record: {audit:#}"));
    assert_eq!(
        (post["outcome"].as_str(), post["roomId"].as_str()),
        (Some("FAILED"), Some(suspended_room.as_str()))
    );
    let error = post["error"].as_str().unwrap_or_default();
    assert!(error.contains("ACCOUNT_SUSPENDED") && error.contains("M_USER_SUSPENDED"), "{error}");
}
