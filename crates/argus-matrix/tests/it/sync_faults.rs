//! `/sync` faults a real homeserver does not produce: answers past the sync's own size bound,
//! malformed answers, a long-poll that never answers. And what a sync asks for.

use std::time::{Duration, Instant};

use argus_matrix::{ConnectorConfig, Error, MAX_SYNC_RESPONSE_BYTES, SyncRequest};
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{method, path, query_param},
};

use crate::mock::MockHomeserver as Hs;

const SYNC: &str = "/_matrix/client/v3/sync";

async fn with_sync_answer(response: ResponseTemplate) -> Hs {
    let hs = Hs::start().await;
    Mock::given(method("GET")).and(path(SYNC)).respond_with(response).mount(hs.server()).await;
    hs
}

fn request(timeout: Duration) -> SyncRequest {
    SyncRequest { since: Some("s1".into()), filter_id: Some("7".into()), timeout }
}

/// A valid sync answer of about `bytes` bytes (a field the answer may carry, padded).
fn padded_answer(bytes: usize) -> Vec<u8> {
    let mut body = br#"{"next_batch":"s2","padding":""#.to_vec();
    body.resize(bytes.saturating_sub(2), b'x');
    body.extend_from_slice(br#""}"#);
    body
}

#[tokio::test]
async fn a_sync_answer_may_pass_the_page_cap_but_not_its_own() {
    // Over the configured cap of a page (16 MiB by default), under the sync's own: taken.
    let hs = Hs::start().await;
    Mock::given(method("GET"))
        .and(path(SYNC))
        .and(query_param("since", "s1"))
        .and(query_param("filter", "7"))
        .and(query_param("timeout", "1000"))
        .and(query_param("set_presence", "offline"))
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(padded_answer(20 * 1024 * 1024), "application/json"),
        )
        .mount(hs.server())
        .await;
    let update = Hs::connector().sync(&hs.session(), &request(Duration::from_secs(1))).await.unwrap();
    assert_eq!(update.next_batch, "s2");
    assert!(update.joined.is_empty());

    let hs = with_sync_answer(
        ResponseTemplate::new(200)
            .set_body_raw(padded_answer(MAX_SYNC_RESPONSE_BYTES + 1), "application/json"),
    )
    .await;
    let err = Hs::connector().sync(&hs.session(), &request(Duration::ZERO)).await.unwrap_err();
    assert!(matches!(err, Error::ResponseTooLarge { limit: MAX_SYNC_RESPONSE_BYTES }), "{err:?}");
}

#[tokio::test]
async fn a_malformed_sync_answer_is_refused_in_our_own_words() {
    for body in [
        r#"{"next_batch": "s2", "rooms": {"join": {"!r:a.fr": {"timeline": {"events": [{"content": {"body": "confidentiel"#,
        r#"{"next_batch": 42, "rooms": {"join": {}}, "note": "confidentiel"}"#,
        r#"{"rooms": {"join": {"!r:a.fr": {"timeline": {"events": "confidentiel"}}}}, "next_batch": "s2"}"#,
        // Not a room id at all (Ruma's own check): the whole answer, not one room.
        r##"{"next_batch": "s2", "rooms": {"join": {"#pas-une-salle:a.fr": {"timeline": {"events": []}}}}}"##,
    ] {
        let hs = with_sync_answer(ResponseTemplate::new(200).set_body_raw(body, "application/json")).await;
        let err = Hs::connector().sync(&hs.session(), &request(Duration::ZERO)).await.unwrap_err();
        assert_eq!(err.code(), "MALFORMED_RESPONSE", "{body}: {err}");
        let message = err.to_string();
        assert!(!message.contains("confidentiel") && !message.contains("pas-une-salle"), "{message}");
    }
}

#[tokio::test]
async fn a_long_poll_that_never_answers_ends_at_its_timeout_and_margin() {
    let hs = with_sync_answer(
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"next_batch": "s2"}))
            .set_delay(Duration::from_secs(30)),
    )
    .await;
    let config = ConnectorConfig {
        request_timeout: Duration::from_millis(500),
        run_deadline: Duration::from_secs(2),
        max_retries: 0,
        ..Hs::config()
    };
    let connector = argus_matrix::Connector::new(config).unwrap();
    let started = Instant::now();
    let err = connector.sync(&hs.session(), &request(Duration::from_millis(500))).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    // The poll (0.5 s) and its margin (the request timeout, 0.5 s): not the 30 s of the answer.
    assert!(elapsed >= Duration::from_millis(950) && elapsed < Duration::from_secs(5), "{elapsed:?}");
}
