//! The access token never appears in an error, a Debug output or a log line.

use argus_matrix::{Connector, ConnectorConfig};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::mock::{MockHomeserver as Hs, ROOM, TOKEN, ev};

#[tokio::test]
async fn the_token_never_leaks_into_errors_or_logs() {
    let sink = argus_testkit::logs::capture();

    let hs = Hs::start().await;
    // A hostile homeserver echoes the token back in its errors.
    let echo = json!({"errcode": "M_FORBIDDEN", "error": format!("token {TOKEN} is not in the room")});
    hs.state(ROOM).respond(ResponseTemplate::new(403).set_body_json(echo)).mount().await;
    let mut errors = Vec::new();
    let c = Hs::connector();
    errors.push(hs.read_with(&c).await.unwrap_err());

    let hs2 = Hs::with_messages_response(
        ResponseTemplate::new(500).set_body_json(json!({"errcode": format!("M_{TOKEN}"), "error": TOKEN})),
    )
    .await;
    let c2 = Connector::new(ConnectorConfig { max_retries: 1, ..Hs::config() }).unwrap();
    errors.push(hs2.read_with(&c2).await.unwrap_err());

    let hs3 = Hs::with_messages_response(
        ResponseTemplate::new(200).set_body_raw(format!("{{\"chunk\": \"{TOKEN}"), "application/json"),
    )
    .await;
    errors.push(hs3.read_with(&c).await.unwrap_err());

    let hs4 = Hs::with_messages_response(
        ResponseTemplate::new(401)
            .set_body_json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": TOKEN, "soft_logout": true})),
    )
    .await;
    errors.push(hs4.read_with(&c).await.unwrap_err());

    // A successful read logs too.
    let hs5 = Hs::start().await;
    hs5.empty_state(ROOM).await;
    hs5.messages(ROOM).page(ev::texts_newest_first(0, 3)).mount().await;
    hs5.read_with(&c).await.unwrap();

    // Refusals by the policy.
    let strict = Connector::new(ConnectorConfig::default()).unwrap();
    errors.push(hs5.read_with(&strict).await.unwrap_err());

    assert_eq!(errors.len(), 5);
    for err in &errors {
        let text = format!("{err} {err:?}");
        assert!(!text.contains(TOKEN) && !text.contains("SECRETsecret"), "token leaked: {text}");
    }
    assert!(format!("{c:?}").len() > 10);
    assert!(!format!("{c:?} {:?}", Hs::token()).contains(TOKEN));
    assert!(!format!("{:?}", hs5.session()).contains(TOKEN));
    let logs = sink.text();
    // Our own lines are usually there, but another test's global subscriber can race the
    // interest cache; what matters is that whatever was captured holds no token.
    assert!(!logs.is_empty(), "logs were captured");
    assert!(!logs.contains("SECRETsecret"), "token leaked into logs");
}
