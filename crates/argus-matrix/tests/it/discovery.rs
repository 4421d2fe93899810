//! Server discovery of an account's homeserver: against the real Synapse (its own
//! `.well-known/matrix/client`, its server name being its listener) and a real identity server
//! on loopback; wiremock only for the faults neither produces (malformed files, redirects,
//! blocked base URLs, huge bodies).

use argus_domain::{AccessToken, HomeserverUrl};
use argus_matrix::{
    Connector, ConnectorConfig, Error, Session,
    discovery::{Account, MAX_DISCOVERY_BYTES, Owner},
};
use argus_testkit::{identity::IdentityServer, synapse::synapse};
use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

/// Text a hostile server puts in its answers: it must never reach an error.
const MARKER: &str = "SERVER-CHOSEN-TEXT";

fn connector(config: ConnectorConfig) -> Connector {
    let config = ConnectorConfig { allow_private_addresses: vec!["127.0.0.1".into()], ..config };
    Connector::new(config).unwrap_or_else(|e| panic!("connector: {e}"))
}

fn account(text: &str) -> Account {
    text.parse().unwrap_or_else(|e| panic!("account {text}: {e}"))
}

fn session(homeserver: &HomeserverUrl, token: &str) -> Session {
    Session::with_token(homeserver.clone(), AccessToken::new(token))
}

#[tokio::test]
async fn a_user_id_is_resolved_by_the_homeservers_own_well_known_and_its_token_confirmed() {
    let Some(server) = synapse() else { return };
    let alice = server.register("disco_alice").await.unwrap();
    let bob = server.register("disco_bob").await.unwrap();
    let connector = connector(ConnectorConfig::default());

    let resolved = connector.resolve_account(&account(&alice.user_id)).await.unwrap();
    let expected: HomeserverUrl = server.base_url().parse().unwrap();
    assert_eq!(resolved.homeserver, expected);
    assert_eq!(resolved.owner, Owner::User(alice.user_id.as_str().try_into().unwrap()));

    connector
        .confirm_account(&session(&resolved.homeserver, &alice.access_token), &resolved.owner)
        .await
        .unwrap();
    let err = connector
        .confirm_account(&session(&resolved.homeserver, &bob.access_token), &resolved.owner)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");
    assert!(!err.to_string().contains(&bob.user_id), "{err}");
}

#[tokio::test]
async fn a_user_id_written_with_capitals_is_the_lowercased_account_synapse_registered() {
    let Some(server) = synapse() else { return };
    let alice = server.register("Disco_Case").await.unwrap();
    let connector = connector(ConnectorConfig::default());
    let (localpart, rest) = alice.user_id.split_once(':').unwrap();
    let shouted = format!("{}:{rest}", localpart.to_uppercase());
    assert_ne!(shouted, alice.user_id);
    let resolved = connector.resolve_account(&account(&shouted)).await.unwrap();
    connector
        .confirm_account(&session(&resolved.homeserver, &alice.access_token), &resolved.owner)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_email_address_is_resolved_through_the_identity_server_then_discovery() {
    let Some(server) = synapse() else { return };
    // Registered under exactly the localpart Tchap derives from the address.
    let (alice, address) = server.register_for_email("alice.martin", "finances.gouv.fr").await.unwrap();
    let (bob, other_address) = server.register_for_email("bob.durand", "finances.gouv.fr").await.unwrap();
    let identity = IdentityServer::start([
        (address.as_str(), server.server_name()),
        (other_address.as_str(), server.server_name()),
    ])
    .await
    .unwrap();
    let connector =
        connector(ConnectorConfig { identity_server: Some(identity.url().into()), ..Default::default() });

    // Written with capitals: Tchap (and Synapse) lowercase the derived localpart.
    let resolved = connector.resolve_account(&account(&address.to_uppercase())).await.unwrap();
    assert_eq!(resolved.homeserver, server.base_url().parse::<HomeserverUrl>().unwrap());
    assert_eq!(resolved.owner, Owner::User(alice.user_id.as_str().try_into().unwrap()));
    connector
        .confirm_account(&session(&resolved.homeserver, &alice.access_token), &resolved.owner)
        .await
        .unwrap();
    // Another account of the same server is not the address's: its derivation is another user.
    let err = connector
        .confirm_account(&session(&resolved.homeserver, &bob.access_token), &resolved.owner)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");
    let of_bob = connector.resolve_account(&account(&other_address)).await.unwrap();
    let err = connector
        .confirm_account(&session(&of_bob.homeserver, &alice.access_token), &of_bob.owner)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ACCOUNT_MISMATCH");

    // An address the identity server does not know (`{}`).
    let err = connector.resolve_account(&account("inconnu@finances.gouv.fr")).await.unwrap_err();
    assert_eq!(err.code(), "DISCOVERY_FAILED");
    assert!(err.to_string().contains("knows no homeserver"), "{err}");

    // No identity server configured.
    let err = self::connector(ConnectorConfig::default())
        .resolve_account(&account("alice.martin@finances.gouv.fr"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "IDENTITY_SERVER_UNSET");
}

#[tokio::test]
async fn an_identity_server_that_knows_nothing_or_answers_nonsense_fails_discovery() {
    let mock = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/missing/_matrix/identity/api/v1/info"))
        .respond_with(
            ResponseTemplate::new(404).set_body_json(json!({"errcode": "M_NOT_FOUND", "error": MARKER})),
        )
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/garbage/_matrix/identity/api/v1/info"))
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("<html>{MARKER}</html>")))
        .mount(&mock)
        .await;
    Mock::given(method("GET"))
        .and(path("/bad-name/_matrix/identity/api/v1/info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"hs": format!("{MARKER} !")})))
        .mount(&mock)
        .await;
    for (base, why) in [
        ("missing", "knows no homeserver"),
        ("garbage", "not the JSON expected"),
        ("bad-name", "malformed server name"),
    ] {
        let identity_server = Some(format!("{}/{base}", mock.uri()));
        let err = connector(ConnectorConfig { identity_server, ..Default::default() })
            .lookup_email("alice@finances.gouv.fr")
            .await
            .unwrap_err();
        assert_eq!(err.code(), "DISCOVERY_FAILED", "{base}");
        assert!(err.to_string().contains(why) && !err.to_string().contains(MARKER), "{base}: {err}");
    }

    // A server name the identity server answered is never repeated in an error: here one whose
    // own server has no .well-known file.
    let empty = MockServer::start().await;
    let named = format!("127.0.0.1:{}", empty.address().port());
    Mock::given(method("GET"))
        .and(path("/named/_matrix/identity/api/v1/info"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "hs": named })))
        .mount(&mock)
        .await;
    let identity_server = Some(format!("{}/named", mock.uri()));
    let err = connector(ConnectorConfig { identity_server, ..Default::default() })
        .resolve_account(&account("alice@finances.gouv.fr"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "DISCOVERY_FAILED");
    assert_eq!(
        err.to_string(),
        "no usable homeserver for the account: the address's server has no .well-known file"
    );
}

/// A `.well-known` answer made knowing the mock's own URL.
type Answer = Box<dyn Fn(&str) -> ResponseTemplate>;

/// A mock whose server name is `127.0.0.1:PORT`, answering its `.well-known` file with `file`.
async fn well_known(file: ResponseTemplate) -> (MockServer, Account) {
    let mock = MockServer::start().await;
    Mock::given(method("GET")).and(path("/.well-known/matrix/client")).respond_with(file).mount(&mock).await;
    let port = mock.address().port();
    (mock, account(&format!("@agent:127.0.0.1:{port}")))
}

#[tokio::test]
async fn faulty_well_known_files_fail_discovery_in_our_own_words() {
    let connector = connector(ConnectorConfig::default());
    let huge = format!(
        r#"{{"m.homeserver": {{"base_url": "http://127.0.0.1/"}}, "x": "{}"}}"#,
        "a".repeat(MAX_DISCOVERY_BYTES)
    );
    let json = |value: serde_json::Value| ResponseTemplate::new(200).set_body_json(value);
    // Each answer is made knowing the mock's own URL.
    let cases: Vec<(Answer, &str)> = vec![
        (
            Box::new(|_| ResponseTemplate::new(200).set_body_string(format!("<html>{MARKER}</html>"))),
            "is not JSON",
        ),
        (Box::new(move |_| json(json!({"m.homeserver": {}, "x": MARKER}))), "names no homeserver"),
        (
            Box::new(move |_| json(json!({"m.homeserver": {"base_url": format!("ftp://{MARKER}")}}))),
            "not a valid homeserver URL",
        ),
        (
            Box::new(|_| {
                ResponseTemplate::new(302).insert_header("location", format!("http://127.0.0.1:1/{MARKER}"))
            }),
            "redirect (HTTP 302), which is not followed",
        ),
        (Box::new(|_| ResponseTemplate::new(500).set_body_string(MARKER)), "answered HTTP 500"),
        (
            Box::new(move |_| ResponseTemplate::new(200).set_body_string(huge.clone())),
            "answered more than 65536 bytes",
        ),
        // The mock serves no /versions: its base URL does not serve the client API.
        (
            Box::new(move |uri| json(json!({"m.homeserver": {"base_url": uri}}))),
            "does not serve the client API",
        ),
        // A 404: no conventional homeserver for a server name that is an address.
        (Box::new(|_| ResponseTemplate::new(404).set_body_string(MARKER)), "has no .well-known file"),
    ];
    for (file, why) in cases {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/.well-known/matrix/client"))
            .respond_with(file(&mock.uri()))
            .mount(&mock)
            .await;
        let who = account(&format!("@agent:127.0.0.1:{}", mock.address().port()));
        let err = connector.resolve_account(&who).await.unwrap_err();
        assert_eq!(err.code(), "DISCOVERY_FAILED", "{why}: {err}");
        let message = err.to_string();
        assert!(message.contains(why) && !message.contains(MARKER), "{why}: {message}");
    }
}

#[tokio::test]
async fn a_base_url_the_policy_refuses_is_refused_before_any_connection() {
    let connector = connector(ConnectorConfig::default());
    for blocked in ["http://10.0.0.1:8008", "https://169.254.169.254", "http://[::ffff:192.168.1.1]"] {
        let (_mock, who) = well_known(
            ResponseTemplate::new(200).set_body_json(json!({"m.homeserver": {"base_url": blocked}})),
        )
        .await;
        let err = connector.resolve_account(&who).await.unwrap_err();
        assert_eq!(err.code(), "OUTBOUND_POLICY", "{blocked}: {err}");
    }
    // A server name on a private address that is not exempt: its .well-known is not fetched.
    let err = connector.resolve_account(&account("@agent:10.1.2.3:8448")).await.unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
}

#[tokio::test]
async fn under_an_allow_list_only_listed_server_names_are_asked_and_the_result_must_be_listed() {
    let Some(server) = synapse() else { return };
    let alice = server.register("disco_listed").await.unwrap();
    let listed = connector(ConnectorConfig {
        allowed_homeservers: vec![server.server_name().into()],
        ..Default::default()
    });
    let resolved = listed.resolve_account(&account(&alice.user_id)).await.unwrap();
    assert_eq!(resolved.homeserver, server.base_url().parse::<HomeserverUrl>().unwrap());

    // The server name is not on the list: its .well-known is not fetched (and an address has
    // no conventional homeserver).
    let unlisted = connector(ConnectorConfig {
        allowed_homeservers: vec!["matrix.agent.tchap.gouv.fr".into()],
        ..Default::default()
    });
    let err = unlisted.resolve_account(&account(&alice.user_id)).await.unwrap_err();
    assert_eq!(err.code(), "DISCOVERY_FAILED", "{err}");

    // Listed server name, but its .well-known names a homeserver off the list.
    let (mock, who) = well_known(ResponseTemplate::new(200)).await;
    let port = mock.address().port();
    Mock::given(method("GET"))
        .and(path("/.well-known/matrix/client"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"m.homeserver": {"base_url": server.base_url()}})),
        )
        .with_priority(1)
        .mount(&mock)
        .await;
    let only_mock = connector(ConnectorConfig {
        allowed_homeservers: vec![format!("127.0.0.1:{port}")],
        ..Default::default()
    });
    let err = only_mock.resolve_account(&who).await.unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    assert!(matches!(err, Error::OutboundPolicy(_)));
}
