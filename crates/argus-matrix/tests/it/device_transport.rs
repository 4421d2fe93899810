//! The transport of the account's device ([`DeviceTransport`]) against the real Synapse: key
//! uploads and queries answered as the account, a Matrix error handed back as an answer, a
//! refused token renewed once like any call's, paths outside the Client-Server API refused;
//! and (a fault the test homeserver cannot make) an oversized answer refused.

#![expect(clippy::unwrap_used, reason = "a fixture or step that fails is a failed test")]

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use argus_crypto::device::{HttpAnswer, HttpCall, Transport};
use argus_domain::{AccessToken, HomeserverUrl};
use argus_matrix::{
    Connector, ConnectorConfig, DeviceTransport, MAX_DEVICE_RESPONSE_BYTES, Session, TokenSource,
};
use argus_testkit::synapse::{TestUser, synapse};
use futures::future::BoxFuture;
use serde_json::{Value, json};
use wiremock::{Mock, ResponseTemplate, matchers};

use crate::mock::MockHomeserver;

fn connector() -> Connector {
    Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..Default::default()
    })
    .unwrap()
}

fn homeserver() -> HomeserverUrl {
    synapse().unwrap().base_url().parse().unwrap()
}

fn transport(user: &TestUser) -> DeviceTransport {
    let session = Session::with_token(homeserver(), AccessToken::new(user.access_token.clone()));
    DeviceTransport::new(&connector(), session)
}

fn call(method: &'static str, path: &str, body: &Value) -> HttpCall {
    HttpCall { method, path_and_query: path.to_owned(), body: body.to_string().into_bytes() }
}

fn json_of(answer: &HttpAnswer) -> Value {
    serde_json::from_slice(&answer.body).unwrap()
}

/// The device keys of `user`'s device, as a client uploads them (unsigned: Synapse stores them).
fn device_keys(user: &TestUser) -> Value {
    json!({"user_id": user.user_id, "device_id": user.device_id,
           "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
           "keys": {format!("curve25519:{}", user.device_id): "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs",
                    format!("ed25519:{}", user.device_id): "9VOOxQ2cQmQ4Q0tVbWN2CKKPMMnkIVM9iBXHF5fmL6g"},
           "signatures": {}})
}

#[tokio::test]
async fn keys_are_uploaded_and_queried_as_the_account() {
    let Some(server) = synapse() else { return };
    let alice = server.register("devtr_alice").await.unwrap();
    let bob = server.register("devtr_bob").await.unwrap();

    let upload = json!({"device_keys": device_keys(&alice),
                        "one_time_keys": {"curve25519:AAAAAQ": "zKbLg+NrIjpnagy+pIY6uPL4ZwEG2v+8F9lmgsnlZzs"}});
    let answer =
        transport(&alice).send(call("POST", "/_matrix/client/v3/keys/upload", &upload)).await.unwrap();
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(json_of(&answer)["one_time_key_counts"]["curve25519"], json!(1));

    let query = json!({"device_keys": {&alice.user_id: []}});
    let answer = transport(&bob).send(call("POST", "/_matrix/client/v3/keys/query", &query)).await.unwrap();
    assert_eq!(answer.status, 200);
    let devices = &json_of(&answer)["device_keys"][&alice.user_id];
    assert_eq!(devices[&alice.device_id]["device_id"], json!(alice.device_id), "{devices}");
    assert_eq!(
        devices[&alice.device_id]["keys"][format!("ed25519:{}", alice.device_id)],
        json!("9VOOxQ2cQmQ4Q0tVbWN2CKKPMMnkIVM9iBXHF5fmL6g")
    );

    // A GET without a body, and a Matrix error handed back as the answer it is.
    let answer = transport(&alice)
        .send(HttpCall {
            method: "GET",
            path_and_query: "/_matrix/client/v3/devices".into(),
            body: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(answer.status, 200);
    assert!(json_of(&answer)["devices"].as_array().is_some_and(|d| !d.is_empty()));
    let absent = format!("/_matrix/client/v3/user/{}/account_data/org.example.absent", alice.user_id);
    let answer = transport(&alice)
        .send(HttpCall { method: "GET", path_and_query: absent, body: Vec::new() })
        .await
        .unwrap();
    assert_eq!(answer.status, 404, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(json_of(&answer)["errcode"], json!("M_NOT_FOUND"));
}

/// A token source whose first token the homeserver refuses, renewed into the account's own.
struct RefusedFirst {
    good: AccessToken,
    renewed: AtomicU32,
}

impl TokenSource for RefusedFirst {
    fn access_token(&self) -> AccessToken {
        if self.renewed.load(Ordering::SeqCst) == 0 {
            AccessToken::new("syt_cmVmdXNlZA_refused_0001")
        } else {
            self.good.clone()
        }
    }

    fn renew<'a>(&'a self, _refused: &'a AccessToken) -> BoxFuture<'a, argus_matrix::Result<bool>> {
        Box::pin(async move {
            self.renewed.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        })
    }
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_or_the_call_fails_without_it() {
    let Some(server) = synapse() else { return };
    let alice = server.register("devtr_renew").await.unwrap();
    let tokens =
        Arc::new(RefusedFirst { good: AccessToken::new(alice.access_token.clone()), renewed: 0.into() });
    let session = Session::shared(homeserver(), tokens.clone());
    let query = call("POST", "/_matrix/client/v3/keys/query", &json!({"device_keys": {&alice.user_id: []}}));
    let answer = DeviceTransport::new(&connector(), session).send(query.clone()).await.unwrap();
    assert_eq!((answer.status, tokens.renewed.load(Ordering::SeqCst)), (200, 1));

    // A token that cannot be renewed: an error, in our words, without the token.
    let session = Session::with_token(homeserver(), AccessToken::new("syt_cmVmdXNlZA_refused_0002"));
    let err = DeviceTransport::new(&connector(), session).send(query).await.unwrap_err();
    assert!(matches!(err, argus_crypto::Error::DeviceTransport(_)), "{err:?}");
    assert!(
        err.to_string().contains("M_UNKNOWN_TOKEN") && !err.to_string().contains("refused_0002"),
        "{err}"
    );
}

#[tokio::test]
async fn paths_outside_the_client_server_api_and_other_methods_are_refused() {
    let Some(server) = synapse() else { return };
    let alice = server.register("devtr_paths").await.unwrap();
    let transport = transport(&alice);
    for path in
        ["/_matrix/media/v3/config", "/_synapse/admin/v1/server_version", "/_matrix/client/../key/v2/server"]
    {
        let err = transport.send(call("GET", path, &json!({}))).await.unwrap_err();
        assert!(matches!(err, argus_crypto::Error::DeviceTransport(_)), "{path}: {err:?}");
        assert!(!err.to_string().contains(&alice.access_token));
    }
    let err = transport.send(call("DELETE", "/_matrix/client/v3/devices/X", &json!({}))).await.unwrap_err();
    assert!(matches!(err, argus_crypto::Error::DeviceTransport(_)), "{err:?}");
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let hs = MockHomeserver::start().await;
    Mock::given(matchers::path("/_matrix/client/v3/keys/query"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw(vec![b' '; MAX_DEVICE_RESPONSE_BYTES + 1], "application/json"),
        )
        .mount(hs.server())
        .await;
    let transport = DeviceTransport::new(&MockHomeserver::connector(), hs.session());
    let err = transport.send(call("POST", "/_matrix/client/v3/keys/query", &json!({}))).await.unwrap_err();
    assert!(matches!(err, argus_crypto::Error::DeviceTransport(_)), "{err:?}");
    assert!(err.to_string().contains(&format!("larger than {MAX_DEVICE_RESPONSE_BYTES} bytes")), "{err}");
}
