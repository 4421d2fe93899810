//! Routes, GraphQL over HTTP, limits, error shapes, metrics and an ingestion end to end
//! against the mock homeserver.

use std::time::Duration;

use argus_domain::{
    Classification::{Restricted, Secret},
    Scope,
};
use argus_testkit::homeserver::{MATRIX_TOKEN, MockHomeserver};
use serde_json::{Value, json};

use crate::harness::TestServer;

const ALL: [Scope; 4] = [Scope::Read, Scope::Ingest, Scope::Audit, Scope::AuditChain];

#[tokio::test]
async fn health_readiness_metrics_and_request_ids() {
    let server = TestServer::start().await;
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(health.headers().get("x-request-id").is_some());
    let ready =
        server.client.get(server.url("/readyz")).header("x-request-id", "abc-123").send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    assert_eq!(ready.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("abc-123"));
    let odd =
        server.client.get(server.url("/healthz")).header("x-request-id", "a b\"c").send().await.unwrap();
    assert_ne!(odd.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("a b\"c"));
    let token = server.token("dgsi", Secret, &[Scope::Read]);
    server.graphql(&token, "{ tchapStats { totalRooms } }", json!({})).await;
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("argus_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("argus_graphql_operations_total{kind=\"query\",outcome=\"ok\"} 1"), "{metrics}");
    assert!(metrics.contains("argus_ingestions_total{outcome=\"succeeded\"} 0"), "{metrics}");
    let missing = server.client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    server.stop().await;
}

/// Made-up methods and paths never become label values: 300 requests with 300 invented
/// methods add at most one series per route and status.
#[tokio::test]
async fn metric_labels_come_from_fixed_sets() {
    let server = TestServer::start().await;
    let count_series =
        |text: &str| text.lines().filter(|l| l.starts_with("argus_http_requests_total{")).count();
    let before = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for i in 0..300 {
        let method = reqwest::Method::from_bytes(format!("FORGED{i}").as_bytes()).unwrap();
        let path = if i % 2 == 0 { "/healthz".to_owned() } else { format!("/made/up/{i}") };
        server.client.request(method, server.url(&path)).send().await.unwrap();
    }
    let after = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(count_series(&after) <= count_series(&before) + 4, "{after}");
    assert!(!after.contains("FORGED") && !after.contains("/made/up"), "{after}");
    assert!(after.contains("method=\"other\""), "{after}");
    server.stop().await;
}

#[tokio::test]
async fn get_runs_queries_but_never_mutations() {
    let server = TestServer::start().await;
    let token = server.token("dgsi", Secret, &ALL);
    let get = |query: &str| {
        server.client.get(server.url("/graphql")).query(&[("query", query)]).bearer_auth(&token).send()
    };
    let body: Value = get("{ tchapStats { totalRooms } }").await.unwrap().json().await.unwrap();
    assert_eq!(body["data"]["tchapStats"]["totalRooms"], 0);
    let mutation = r#"mutation { ingestTchapRoom(input: { homeserverUrl: "http://127.0.0.1:1", accessToken: "x", roomId: "!a:b", classification: SECRET }) { messagesStored } }"#;
    let body: Value = get(mutation).await.unwrap().json().await.unwrap();
    assert!(body["errors"].is_array() && body["data"].is_null(), "{body}");
    let unauthenticated = server
        .client
        .get(server.url("/graphql"))
        .query(&[("query", "{ tchapStats { totalRooms } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status().as_u16(), 401);
    // No audit record: the mutation never ran.
    let (_, audit) = server.graphql(&token, "{ tchapIngestions { totalCount } }", json!({})).await;
    assert_eq!(audit["data"]["tchapIngestions"]["totalCount"], 0);
    server.stop().await;
}

#[tokio::test]
async fn bodies_batches_and_documents_are_bounded() {
    let server = TestServer::start().await;
    let token = server.token("dgsi", Secret, &ALL);
    let bearer = format!("Bearer {token}");
    let huge = json!({ "query": format!("{{ tchapStats {{ totalRooms }} }} #{}", "x".repeat(100_000)) });
    let response = server.post_raw(Some(&bearer), huge.to_string().into_bytes()).await;
    assert_eq!(response.status().as_u16(), 413);
    let response = server.post_raw(Some(&bearer), b"{not json".to_vec()).await;
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    let one = json!({ "query": "{ tchapStats { totalRooms } }" });
    let batch = Value::Array(vec![one.clone(); 3]);
    let response = server.post_raw(Some(&bearer), batch.to_string().into_bytes()).await;
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body.as_array().map(Vec::len), Some(3));
    let batch = Value::Array(vec![one; 11]);
    let response = server.post_raw(Some(&bearer), batch.to_string().into_bytes()).await;
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BATCH_TOO_LARGE");
    let nested = "{ tchapRooms { edges { node { messages { edges { node { id } } } } } } }";
    let (_, body) = server.graphql(&token, nested, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    let aliases: String = (0..400).map(|i| format!("a{i}: tchapStats {{ totalRooms }} ")).collect();
    let (status, body) = server.graphql(&token, &format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_array() && body["data"].is_null(), "{body}");
    // Development mode: introspection and GraphiQL are on.
    let (_, body) = server.graphql(&token, "{ __schema { queryType { name } } }", json!({})).await;
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    let graphiql = server.client.get(server.url("/graphiql")).send().await.unwrap();
    assert_eq!(graphiql.status().as_u16(), 200);
    server.stop().await;
}

#[tokio::test]
async fn an_ingestion_over_http_is_stored_audited_relayed_and_counted() {
    let server = TestServer::start().await;
    let hs = MockHomeserver::start_any_room().await;
    hs.room("!crise:tchap.test", 5);
    let token = server.token("dgsi", Secret, &ALL);
    let mutation = r"mutation($input: IngestTchapRoomInput!) {
        ingestTchapRoom(input: $input) { messagesFetched messagesStored room { roomId classification } ingestion { outcome } } }";
    let input = json!({ "homeserverUrl": hs.uri(), "accessToken": MATRIX_TOKEN, "roomId": "!crise:tchap.test", "classification": "RESTRICTED" });
    let (status, body) = server.graphql(&token, mutation, json!({ "input": input })).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"]["ingestTchapRoom"]["messagesStored"], 5, "{body}");
    assert!(!body.to_string().contains(MATRIX_TOKEN));
    // A failure: error code, FAILED record, never the token.
    let bad = json!({ "homeserverUrl": hs.uri(), "accessToken": MATRIX_TOKEN, "roomId": "!forbidden:tchap.test", "classification": "RESTRICTED" });
    let (_, body) = server.graphql(&token, mutation, json!({ "input": bad })).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "ROOM_FORBIDDEN");
    assert!(!body.to_string().contains(MATRIX_TOKEN));
    let low = server.token("dgsi", Restricted, &[Scope::Read]);
    let (_, rooms) = server
        .graphql(&low, "{ tchapRooms { totalCount edges { node { roomId messageCount } } } }", json!({}))
        .await;
    assert_eq!(rooms["data"]["tchapRooms"]["totalCount"], 1);
    assert_eq!(rooms["data"]["tchapRooms"]["edges"][0]["node"]["messageCount"], 5);
    let metrics = server.client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("argus_ingestions_total{outcome=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("argus_ingestions_total{outcome=\"failed\"} 1"), "{metrics}");
    assert!(metrics.contains("argus_messages_stored_total 5"), "{metrics}");
    assert!(
        metrics.contains("argus_graphql_operations_total{kind=\"mutation\",outcome=\"error\"} 1"),
        "{metrics}"
    );
    // The relay delivers the network-node entity to the JSON Lines file.
    let path = server.config.fusion.jsonl_path.clone().unwrap();
    let mut delivered = String::new();
    for _ in 0..100 {
        delivered = std::fs::read_to_string(&path).unwrap_or_default();
        if !delivered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(delivered.contains("!crise:tchap.test"), "{delivered}");
    assert!(!delivered.contains(MATRIX_TOKEN));
    server.stop().await;
}

/// Development mode (anyone holding the generated secret mints tokens) is refused on a
/// non-loopback address unless explicitly allowed.
#[tokio::test]
async fn development_mode_refuses_a_non_loopback_bind() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = argus_server::Config {
        database_url: argus_store::DatabaseUrl::sqlite_file(dir.path().join("a.db")),
        ..argus_server::Config::default()
    };
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let err = argus_server::spawn(listener, config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
    config.allow_remote_development = true;
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let running = argus_server::spawn(listener, config).await.unwrap();
    running.stop().await.unwrap();
}

/// GraphQL over HTTP: a client that accepts `application/graphql-response+json` gets it, and a
/// 400 for a document that never executes; every such error carries `extensions.code`, under
/// either media type.
#[tokio::test]
async fn graphql_over_http_media_types_statuses_and_codes() {
    let server = TestServer::start().await;
    let token = server.token("dgsi", Secret, &ALL);
    let post = |query: &str, accept: Option<&'static str>| {
        let mut request =
            server.client.post(server.url("/graphql")).bearer_auth(&token).json(&json!({ "query": query }));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        request.send()
    };
    let modern = Some("application/graphql-response+json, application/json;q=0.9");
    let cases = [
        ("{ tchapStats { totalRooms ", "GRAPHQL_PARSE_FAILED"),
        ("{ tchapStats { noSuchField } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "{ a { b { c { d { e { f { g { h { i { j { k { l { m { n { o { p { q } } } } } } } } } } } } } } } } }",
            "LIMIT_EXCEEDED",
        ),
    ];
    for (query, code) in cases {
        let response = post(query, modern).await.unwrap();
        assert_eq!(response.status().as_u16(), 400, "{query}");
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("application/graphql-response+json"), "{content_type}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{query}: {body}");
        assert!(body.get("data").is_none(), "{body}");

        let legacy = post(query, None).await.unwrap();
        assert_eq!(legacy.status().as_u16(), 200, "{query}");
        let body: Value = legacy.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{query}: {body}");
    }
    // An operation that executes is a 200 under either media type, field errors included.
    let ok = post("{ tchapStats { totalRooms } }", modern).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    assert!(ok.headers()["content-type"].to_str().unwrap().starts_with("application/graphql-response+json"));
    server.stop().await;
}

/// The data directory (and the database's directory) the server creates are owner-only; the
/// database file too.
#[cfg(unix)]
#[tokio::test]
async fn created_directories_and_the_database_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("var").join("argus");
    let config = argus_server::Config {
        database_url: argus_store::DatabaseUrl::sqlite_file(data.join("tchap.db")),
        ..argus_server::Config::default()
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let running = argus_server::spawn(listener, config).await.unwrap();
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("tchap.db")), 0o600);
    assert_eq!(mode(&data.join(argus_server::config::DEV_SECRET_FILE)), 0o600);
    running.stop().await.unwrap();
}

/// GraphiQL loads nothing from outside the server: an air-gapped network gets a working page,
/// and only code shipped with the server runs in it.
#[tokio::test]
async fn graphiql_is_served_from_the_binary() {
    let server = TestServer::start().await;
    let page = server.client.get(server.url("/graphiql")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-security-policy"].to_str().unwrap().starts_with("default-src 'self'"));
    let html = page.text().await.unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"), "{html}");
    let mut srcs: Vec<String> =
        html.split(['"', '\'']).filter(|s| s.starts_with("/graphiql/assets/")).map(str::to_owned).collect();
    srcs.sort();
    srcs.dedup();
    assert_eq!(srcs.len(), 5, "{srcs:?}");
    for src in srcs {
        // No automatic decompression: the raw gzip stream as sent.
        let client = reqwest::Client::builder().no_gzip().build().unwrap();
        let asset = client.get(server.url(&src)).send().await.unwrap();
        assert_eq!(asset.status().as_u16(), 200, "{src}");
        let bytes = asset.bytes().await.unwrap();
        assert!(bytes.len() > 100, "{src}");
    }
    let missing = server.client.get(server.url("/graphiql/assets/../../etc/passwd")).send().await.unwrap();
    assert_ne!(missing.status().as_u16(), 200);
    server.stop().await;
}
