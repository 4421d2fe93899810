//! `account` instead of `homeserverUrl`: exactly one of the two on every input that names a
//! homeserver (INVALID_INPUT otherwise, naming both), and `ingestTchapRoom` by account end to
//! end against the real Synapse (its server name is its own listener) and a loopback identity
//! server.

use std::sync::Arc;

use argus_matrix::ConnectorConfig;
use argus_testkit::{homeserver::MATRIX_TOKEN, identity::IdentityServer, synapse::synapse};
use serde_json::{Value, json};

use crate::harness::{ALL, Harness, INGEST, Secret, error_code, ok, viewer};

const WATCH: &str =
    r"mutation($input: WatchTchapRoomInput!) { watchTchapRoom(input: $input) { homeserverUrl } }";
const POST: &str =
    r"mutation($input: PostTchapMessageInput!) { postTchapMessage(input: $input) { eventId } }";
const JOINED: &str = r"mutation($input: IngestJoinedTchapRoomsInput!) { ingestJoinedTchapRooms(input: $input) { rooms { roomId } } }";
const AUDIT: &str =
    r"{ tchapIngestions(first: 10) { totalCount edges { node { outcome roomId homeserverUrl } } } }";

async fn harness(identity_server: Option<String>) -> Harness {
    let config = ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        identity_server,
        ..ConnectorConfig::default()
    };
    let mut h = Harness::with_connector(config).await;
    let key = argus_ingest::TokenKey::new(&[5; 32]).unwrap_or_else(|e| panic!("{e}"));
    h.app_mut().token_keys = Some(Arc::new(argus_ingest::TokenKeys::new(key, Vec::new())));
    h
}

#[tokio::test]
async fn both_or_neither_of_homeserver_url_and_account_is_invalid_input_everywhere() {
    let h = harness(None).await;
    let alice = viewer("dgsi", Secret, &[ALL.as_slice(), &[argus_domain::Scope::Post]].concat());
    let url = h.hs.uri();
    let common =
        json!({ "accessToken": MATRIX_TOKEN, "roomId": "!r:tchap.test", "classification": "RESTRICTED" });
    let variants = [
        json!({}),
        json!({ "homeserverUrl": "" }),
        json!({ "homeserverUrl": url, "account": "@jean:agent.tchap.gouv.fr" }),
        json!({ "homeserverUrl": "", "account": null }),
    ];
    let mutations: [(&str, Value); 4] = [
        (INGEST, json!({})),
        (WATCH, json!({ "interval": 3600 })),
        (POST, json!({ "body": "note" })),
        (JOINED, json!({})),
    ];
    for (mutation, extra) in &mutations {
        for variant in &variants {
            let mut input = common.clone();
            for (k, v) in
                variant.as_object().into_iter().flatten().chain(extra.as_object().into_iter().flatten())
            {
                input[k] = v.clone();
            }
            if *mutation == JOINED {
                input.as_object_mut().map(|o| o.remove("roomId"));
            }
            let response = h.run(&alice, mutation, json!({ "input": input })).await;
            assert_eq!(error_code(&response), Some("INVALID_INPUT"), "{input}: {response:#}");
            let message = response["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains("homeserverUrl") && message.contains("account"), "{message}");
        }
    }
    // An account that is neither a user id nor an address.
    let mut input = common.clone();
    input["account"] = json!("jean.dupont");
    let response = h.run(&alice, INGEST, json!({ "input": input })).await;
    assert_eq!(error_code(&response), Some("INVALID_INPUT"), "{response:#}");
    // Refusals: the homeserver was never called, nothing audited.
    assert_eq!(h.hs.request_count().await, 0);
    assert_eq!(ok(h.run(&alice, AUDIT, json!({})).await)["tchapIngestions"]["totalCount"], 0);
}

#[tokio::test]
async fn ingest_tchap_room_by_account_records_the_discovered_homeserver() {
    let Some(server) = synapse() else { return };
    // Registered under the localpart Tchap derives from her address.
    let (alice, address) =
        server.register_for_email("gql_agent", "interieur.gouv.fr").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = alice.create_room(Some("Cellule"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    alice.send_text(&room, "premier message").await.unwrap_or_else(|e| panic!("{e:#}"));
    let identity = IdentityServer::start([(address.as_str(), server.server_name())])
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let h = harness(Some(identity.url().to_owned())).await;
    let analyst = viewer("dgsi", Secret, &ALL);

    for (account, stored) in [(alice.user_id.as_str(), 1), (address.as_str(), 0)] {
        let input = json!({
            "account": account, "accessToken": alice.access_token, "roomId": room, "classification": "RESTRICTED",
        });
        let data = ok(h.run(&analyst, INGEST, json!({ "input": input })).await);
        assert_eq!(data["ingestTchapRoom"]["messagesStored"], stored, "{account}");
        assert_eq!(data["ingestTchapRoom"]["ingestion"]["outcome"], "SUCCEEDED");
    }
    let trail = ok(h.run(&analyst, AUDIT, json!({})).await);
    let edges = trail["tchapIngestions"]["edges"].as_array().cloned().unwrap_or_default();
    assert_eq!(edges.len(), 2);
    for edge in edges {
        assert_eq!(edge["node"]["homeserverUrl"], server.base_url(), "{edge}");
    }

    // Another account's token: ACCOUNT_MISMATCH in the error's extensions, nothing more audited.
    let bob = server.register("gql_other").await.unwrap_or_else(|e| panic!("{e:#}"));
    let input = json!({
        "account": alice.user_id, "accessToken": bob.access_token, "roomId": room, "classification": "RESTRICTED",
    });
    let response = h.run(&analyst, INGEST, json!({ "input": input })).await;
    assert_eq!(error_code(&response), Some("ACCOUNT_MISMATCH"), "{response:#}");
    assert!(!response.to_string().contains(&bob.access_token));
    assert_eq!(ok(h.run(&analyst, AUDIT, json!({})).await)["tchapIngestions"]["totalCount"], 2);
    // Her address with bob's token: bob is on the same server, but is not the address's account.
    let input = json!({
        "account": address, "accessToken": bob.access_token, "roomId": room, "classification": "RESTRICTED",
    });
    let response = h.run(&analyst, INGEST, json!({ "input": input })).await;
    assert_eq!(error_code(&response), Some("ACCOUNT_MISMATCH"), "{response:#}");
    assert_eq!(ok(h.run(&analyst, AUDIT, json!({})).await)["tchapIngestions"]["totalCount"], 2);

    // An e-mail address without an identity server configured.
    let bare = harness(None).await;
    let input = json!({
        "account": "agent@interieur.gouv.fr", "accessToken": alice.access_token, "roomId": room,
        "classification": "RESTRICTED",
    });
    let response = bare.run(&analyst, INGEST, json!({ "input": input })).await;
    assert_eq!(error_code(&response), Some("IDENTITY_SERVER_UNSET"), "{response:#}");
}

#[tokio::test]
async fn ingest_joined_tchap_rooms_takes_a_refresh_token_and_a_start_date() {
    let Some(server) = synapse() else { return };
    let alice = server.register("gql_joined_since").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = alice.create_room(Some("Cellule"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    alice.send_text(&room, "premier message").await.unwrap_or_else(|e| panic!("{e:#}"));
    let h = harness(None).await;
    let analyst = viewer("dgsi", Secret, &ALL);
    let login = alice.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    let input = |since: &str| {
        json!({
            "account": alice.user_id, "accessToken": login.access_token, "refreshToken": login.refresh_token,
            "classification": "RESTRICTED", "since": since,
        })
    };
    // A start date in the future: refused before anything is read.
    let response = h.run(&analyst, JOINED, json!({ "input": input("2999-01-01T00:00:00Z") })).await;
    assert_eq!(error_code(&response), Some("INVALID_INPUT"), "{response:#}");
    let data = ok(h.run(&analyst, JOINED, json!({ "input": input("2020-01-01T00:00:00Z") })).await);
    assert_eq!(data["ingestJoinedTchapRooms"]["rooms"][0]["roomId"], room.as_str(), "{data:#}");
    let rooms = ok(h
        .run(&analyst, r"{ tchapRooms(first: 5) { edges { node { roomId historySince } } } }", json!({}))
        .await);
    let node = &rooms["tchapRooms"]["edges"][0]["node"];
    assert_eq!(node["roomId"], room.as_str(), "{rooms:#}");
    assert_eq!(node["historySince"], "2020-01-01T00:00:00.000Z", "{rooms:#}");
    assert!(!response.to_string().contains(&login.refresh_token));
}
