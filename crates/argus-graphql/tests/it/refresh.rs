//! Tokens that expire, through the API: `ingestTchapRoom` renews an expired access token with
//! its `refreshToken` on the real Synapse (refreshable tokens live 4 s there);
//! `watchTchapRoom` takes a refresh token and an `oauthClientId`, seals them and never returns
//! them.

use std::{sync::Arc, time::Duration};

use argus_domain::Classification::Secret;
use argus_testkit::{homeserver::MATRIX_TOKEN, oauth::OAuthMock, synapse::synapse};
use serde_json::json;

use crate::harness::{ALL, Harness, error_code, ok, viewer};

#[tokio::test]
async fn ingest_tchap_room_renews_an_expired_token_with_its_refresh_token() {
    let Some(server) = synapse() else { return };
    let user = server.register("graphql_refresh").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = user.create_room(Some("expiring"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    user.send_texts(&room, "kept", 3, 1).await.unwrap_or_else(|e| panic!("{e:#}"));
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let h = Harness::new().await;
    let alice = viewer("dgsi", Secret, &ALL);
    let input = |refresh: Option<&str>| {
        json!({
            "homeserverUrl": server.base_url(), "accessToken": login.access_token, "refreshToken": refresh,
            "roomId": room, "classification": "RESTRICTED",
        })
    };
    let refused = h.ingest_with(&alice, input(None)).await;
    assert_eq!(error_code(&refused), Some("HOMESERVER_UNAUTHORIZED"), "{refused}");
    let answer = h.ingest_with(&alice, input(Some(&login.refresh_token))).await;
    let shown = answer.to_string();
    assert_eq!(ok(answer)["ingestTchapRoom"]["messagesStored"], 3);
    // Used once: the same refresh token again is refused, in our own words.
    let again = h.ingest_with(&alice, input(Some(&login.refresh_token))).await;
    assert_eq!(error_code(&again), Some("TOKEN_REFRESH_FAILED"), "{again}");
    for text in [shown, refused.to_string(), again.to_string()] {
        assert!(!text.contains(&login.access_token) && !text.contains(&login.refresh_token), "{text}");
    }
}

#[tokio::test]
async fn watch_tchap_room_takes_a_refresh_token_and_oauth_client_id_and_never_returns_them() {
    let mut h = Harness::new().await;
    let key = argus_ingest::TokenKey::new(&[5; 32]).unwrap_or_else(|e| panic!("{e}"));
    h.app_mut().token_keys = Some(Arc::new(argus_ingest::TokenKeys::new(key, Vec::new())));
    let _auth = OAuthMock::mount(h.hs.server(), "01JCLIENT", 300).await;
    // The pair is kept for the account the homeserver names.
    wiremock::Mock::given(wiremock::matchers::method("GET"))
        .and(wiremock::matchers::path("/_matrix/client/v3/account/whoami"))
        .respond_with(
            wiremock::ResponseTemplate::new(200).set_body_json(json!({"user_id": "@alice:tchap.test"})),
        )
        .with_priority(1)
        .mount(h.hs.server())
        .await;
    let alice = viewer("dgsi", Secret, &ALL);
    let query = r"mutation($input: WatchTchapRoomInput!) {
        watchTchapRoom(input: $input) { roomId status statusReason } }";
    let input = json!({ "input": {
        "homeserverUrl": h.hs.uri(), "accessToken": MATRIX_TOKEN, "refreshToken": OAuthMock::FIRST_REFRESH_TOKEN,
        "oauthClientId": "01JCLIENT", "roomId": "!oauth:tchap.test", "classification": "RESTRICTED", "interval": 60,
    }});
    let answer = h.run(&alice, query, input).await;
    let text = answer.to_string();
    assert_eq!(ok(answer)["watchTchapRoom"]["status"], "ACTIVE");
    assert!(!text.contains(MATRIX_TOKEN) && !text.contains(OAuthMock::FIRST_REFRESH_TOKEN), "{text}");
}
