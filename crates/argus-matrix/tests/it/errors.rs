//! Errors by `errcode`, retries, timeouts and body limits.

use std::time::{Duration, Instant};

use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::mock::{MockHomeserver as Hs, ROOM, ev};

async fn fetch_with(hs: &Hs, config: ConnectorConfig) -> argus_matrix::Result<argus_domain::RoomSnapshot> {
    let connector = Connector::new(config)?;
    hs.read_with(&connector).await
}

async fn fetch(hs: &Hs) -> argus_matrix::Result<argus_domain::RoomSnapshot> {
    fetch_with(hs, Hs::config()).await
}

fn matrix_error(status: u16, errcode: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "nope" }))
}

/// `M_LIMIT_EXCEEDED` asking to wait `ms` milliseconds in the body (`retry_after_ms`).
fn limit_exceeded_ms(ms: u64) -> ResponseTemplate {
    ResponseTemplate::new(429).set_body_json(json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": ms}))
}

#[tokio::test]
async fn rate_limit_with_retry_after_header_is_retried() {
    let hs = Hs::start().await;
    hs.first_page_fails(ROOM, matrix_error(429, "M_LIMIT_EXCEEDED").insert_header("Retry-After", "1"), 1, 2)
        .await;
    let started = Instant::now();
    let snapshot = fetch(&hs).await.unwrap();
    assert_eq!(snapshot.messages.len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn rate_limit_with_retry_after_ms_is_retried() {
    let hs = Hs::start().await;
    hs.first_page_fails(ROOM, limit_exceeded_ms(300), 2, 2).await;
    let started = Instant::now();
    let snapshot = fetch(&hs).await.unwrap();
    assert_eq!(snapshot.messages.len(), 2);
    assert!(started.elapsed() >= Duration::from_millis(580), "waited {:?}", started.elapsed());
}

#[tokio::test]
async fn huge_retry_after_fails_inside_the_deadline() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM)
        .respond(matrix_error(429, "M_LIMIT_EXCEEDED").insert_header("Retry-After", "86400"))
        .mount()
        .await;
    let config = ConnectorConfig {
        run_deadline: Duration::from_secs(3),
        max_retry_wait: Duration::from_secs(1),
        max_retries: 100,
        ..Hs::config()
    };
    let started = Instant::now();
    let err = fetch_with(&hs, config).await.unwrap_err();
    assert_eq!(err.code(), "RATE_LIMITED");
    assert!(err.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert!(err.to_string().contains("86400000 ms"), "{err}");
}

#[tokio::test]
async fn rate_limit_gives_up_after_max_retries() {
    let hs = Hs::with_messages_response(limit_exceeded_ms(10)).await;
    let err = fetch_with(&hs, ConnectorConfig { max_retries: 2, ..Hs::config() }).await.unwrap_err();
    assert_eq!(err.code(), "RATE_LIMITED");
    // Three attempts at the page.
    assert_eq!(hs.requests_to("messages").await, 3);
}

#[tokio::test]
async fn server_error_then_success_is_retried_with_backoff() {
    let hs = Hs::start().await;
    hs.first_page_fails(ROOM, ResponseTemplate::new(502).set_body_string("bad gateway"), 2, 1).await;
    let snapshot = fetch(&hs).await.unwrap();
    assert_eq!(snapshot.messages.len(), 1);
}

#[tokio::test]
async fn persistent_server_errors_fail_retryably() {
    let hs = Hs::start().await;
    hs.state(ROOM).respond(matrix_error(500, "M_UNKNOWN")).mount().await;
    let err = fetch_with(&hs, ConnectorConfig { max_retries: 1, ..Hs::config() }).await.unwrap_err();
    assert_eq!(err.code(), "HOMESERVER_ERROR");
    assert!(err.is_retryable());
    assert_eq!(err.to_string(), "homeserver error: HTTP 500 M_UNKNOWN");
    assert_eq!(hs.requests_to("state").await, 2);
}

#[tokio::test]
async fn errcodes_map_to_typed_errors_without_retry() {
    for (status, body, code) in [
        (401, json!({"errcode": "M_UNKNOWN_TOKEN", "error": "x"}), "HOMESERVER_UNAUTHORIZED"),
        (
            401,
            json!({"errcode": "M_UNKNOWN_TOKEN", "error": "x", "soft_logout": true}),
            "HOMESERVER_UNAUTHORIZED",
        ),
        (401, json!({"errcode": "M_MISSING_TOKEN", "error": "x"}), "HOMESERVER_UNAUTHORIZED"),
        (403, json!({"errcode": "M_FORBIDDEN", "error": "not in room"}), "ROOM_FORBIDDEN"),
        (404, json!({"errcode": "M_NOT_FOUND", "error": "x"}), "ROOM_NOT_FOUND"),
        (400, json!({"errcode": "M_BAD_JSON", "error": "x"}), "HOMESERVER_ERROR"),
    ] {
        let hs = Hs::start().await;
        hs.state(ROOM).respond(ResponseTemplate::new(status).set_body_json(body.clone())).mount().await;
        let err = fetch(&hs).await.unwrap_err();
        assert_eq!(err.code(), code, "{body}");
        assert!(!err.is_retryable(), "{body}");
        assert_eq!(hs.requests_to("state").await, 1, "no retry for {body}");
        if body.get("soft_logout").is_some() {
            assert!(matches!(err, argus_matrix::Error::Unauthorized { soft_logout: true, .. }));
        }
    }
}

#[tokio::test]
async fn malformed_and_truncated_bodies_are_malformed_responses() {
    for body in
        ["not json at all", r#"{"start": "s", "chunk": [{"type": "m.room.mess"#, r#"{"chunk": "nope"}"#]
    {
        let hs =
            Hs::with_messages_response(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
                .await;
        let err = fetch(&hs).await.unwrap_err();
        assert_eq!(err.code(), "MALFORMED_RESPONSE", "{body}: {err}");
        assert!(!err.to_string().contains("m.room.mess"), "the body is not echoed: {err}");
    }
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(0, 200)).mount().await;
    let err =
        fetch_with(&hs, ConnectorConfig { max_response_bytes: 4096, ..Hs::config() }).await.unwrap_err();
    assert_eq!(err.code(), "RESPONSE_TOO_LARGE");
}

#[tokio::test]
async fn a_slow_homeserver_times_out_per_request_and_per_run() {
    let hs = Hs::with_messages_response(
        ResponseTemplate::new(200)
            .set_body_json(json!({"start": "s", "chunk": []}))
            .set_delay(Duration::from_secs(10)),
    )
    .await;
    let config = ConnectorConfig {
        request_timeout: Duration::from_millis(300),
        run_deadline: Duration::from_secs(2),
        max_retries: 1,
        max_retry_wait: Duration::from_millis(100),
        ..Hs::config()
    };
    let started = Instant::now();
    let err = fetch_with(&hs, config.clone()).await.unwrap_err();
    assert_eq!(err.code(), "HOMESERVER_UNREACHABLE", "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let config = ConnectorConfig {
        request_timeout: Duration::from_secs(30),
        run_deadline: Duration::from_millis(700),
        ..config
    };
    let started = Instant::now();
    let err = fetch_with(&hs, config).await.unwrap_err();
    assert_eq!(err.code(), "DEADLINE_EXCEEDED", "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_trickling_body_is_cut_by_the_request_timeout() {
    // A raw server that sends headers, then one byte at a time.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n[")
                    .await;
                for _ in 0..1000 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if socket.write_all(b" ").await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let connector = Connector::new(ConnectorConfig {
        request_timeout: Duration::from_millis(500),
        max_retries: 0,
        ..Hs::config()
    })
    .unwrap();
    let url = format!("http://{addr}").parse().unwrap();
    let started = Instant::now();
    let err = connector
        .fetch_room(&Session::with_token(url, Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "HOMESERVER_UNREACHABLE", "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let hs = Hs::start().await;
    let internal = Hs::start().await;
    internal.empty_state(ROOM).await;
    hs.state(ROOM)
        .respond(ResponseTemplate::new(302).insert_header(
            "Location",
            format!("{}/_matrix/client/v3/rooms/x/state", internal.server().uri()).as_str(),
        ))
        .mount()
        .await;
    let err = fetch(&hs).await.unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY");
    assert!(err.to_string().contains("redirect"), "{err}");
    assert_eq!(internal.request_count().await, 0);
}

#[tokio::test]
async fn a_closed_port_is_unreachable_and_retryable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let connector = Connector::new(ConnectorConfig { max_retries: 1, ..Hs::config() }).unwrap();
    let url = format!("http://{addr}").parse().unwrap();
    let err = connector
        .fetch_room(&Session::with_token(url, Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "HOMESERVER_UNREACHABLE", "{err}");
    assert!(err.is_retryable());
    // The OS error text stays in the log.
    let text = err.to_string();
    assert!(!text.contains("os error") && !text.to_lowercase().contains("refused"), "{text}");
}

#[tokio::test]
async fn bare_status_codes_without_a_matrix_body_are_still_typed() {
    for (status, code, retryable) in [
        (429, "RATE_LIMITED", true),
        (401, "HOMESERVER_UNAUTHORIZED", false),
        (404, "HOMESERVER_ERROR", false),
        (503, "HOMESERVER_ERROR", true),
    ] {
        let hs = Hs::start().await;
        hs.state(ROOM)
            .respond(ResponseTemplate::new(status).set_body_string("<html>proxy error</html>"))
            .mount()
            .await;
        let err = fetch_with(
            &hs,
            ConnectorConfig { max_retries: 1, max_retry_wait: Duration::from_millis(50), ..Hs::config() },
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), code, "HTTP {status}: {err}");
        assert_eq!(err.is_retryable(), retryable, "HTTP {status}");
        assert!(!err.to_string().contains("proxy error"), "the body is not echoed: {err}");
    }
}

#[tokio::test]
async fn a_token_expiring_mid_run_stops_without_retry() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(10, 2)).end("t1").mount().await;
    hs.messages(ROOM).from("t1").respond(matrix_error(401, "M_UNKNOWN_TOKEN")).mount().await;
    let err = fetch(&hs).await.unwrap_err();
    assert_eq!(err.code(), "HOMESERVER_UNAUTHORIZED");
    assert_eq!(hs.requests_to("messages").await, 2);
}
