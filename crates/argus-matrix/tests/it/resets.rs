//! Connections reset by the homeserver (TCP RST), before the response or in the middle of its
//! body: retried with bounded backoff, never fatal on the first one, never endless.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use crate::mock::MockHomeserver as Hs;

/// What the server does with one `/messages` request.
#[derive(Debug, Clone, Copy)]
enum Answer {
    /// Resets the connection as soon as the request is read.
    ResetBeforeResponse,
    /// Sends the headers and part of the body, then resets.
    ResetMidBody,
    /// Answers one message.
    Page,
}

/// A raw homeserver: `/state` always answers; `/messages` answers `plan[n]` to its n-th request
/// (the last entry for every later one). Returns the base URL and the `/messages` count.
async fn serve(plan: Vec<Answer>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("bind: {e}"));
    let url = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("addr: {e}")));
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let (seen, plan) = (Arc::clone(&seen), plan.clone());
            tokio::spawn(async move { answer(socket, &seen, &plan).await });
        }
    });
    (url, count)
}

async fn answer(mut socket: TcpStream, seen: &AtomicUsize, plan: &[Answer]) {
    let mut request = Vec::new();
    let mut buf = [0_u8; 4096];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&request).lines().next().unwrap_or_default().to_owned();
    let path = line.split(' ').nth(1).unwrap_or_default().split('?').next().unwrap_or_default().to_owned();
    let body = if path.ends_with("/state") {
        "[]".to_owned()
    } else if path.ends_with("/messages") {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        match plan.get(n).or(plan.last()).copied().unwrap_or(Answer::Page) {
            Answer::ResetBeforeResponse => return reset(socket),
            Answer::ResetMidBody => {
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4000\r\n\r\n";
                let _ = socket.write_all(format!("{head}{{\"start\": \"s1\", \"chunk\": [").as_bytes()).await;
                let _ = socket.flush().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                return reset(socket);
            }
            Answer::Page => {
                serde_json::json!({ "start": "s1", "chunk": crate::mock::ev::texts_newest_first(0, 1) })
                    .to_string()
            }
        }
    } else {
        return;
    };
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = socket.write_all(response.as_bytes()).await;
    let _ = socket.shutdown().await;
}

/// Closes with RST rather than FIN.
fn reset(socket: TcpStream) {
    socket.set_zero_linger().unwrap_or_else(|e| panic!("linger: {e}"));
    drop(socket);
}

async fn fetch(url: &str, config: ConnectorConfig) -> argus_matrix::Result<argus_domain::RoomSnapshot> {
    let connector = Connector::new(config)?;
    connector
        .fetch_room(
            &Session::with_token(url.parse().unwrap_or_else(|e| panic!("url: {e}")), Hs::token()),
            &Hs::room(),
            &FetchOptions::default(),
        )
        .await
}

fn config() -> ConnectorConfig {
    ConnectorConfig { max_retries: 3, max_retry_wait: Duration::from_millis(200), ..Hs::config() }
}

#[tokio::test]
async fn resets_before_the_response_or_mid_body_are_retried_then_succeed() {
    for first in [Answer::ResetBeforeResponse, Answer::ResetMidBody] {
        let (url, count) = serve(vec![first, first, Answer::Page]).await;
        let snapshot = fetch(&url, config()).await.unwrap_or_else(|e| panic!("{first:?}: {e}"));
        assert_eq!(snapshot.messages.len(), 1, "{first:?}");
        assert_eq!(count.load(Ordering::SeqCst), 3, "{first:?}: two resets, then the page");
    }
}

#[tokio::test]
async fn persistent_resets_fail_retryably_after_bounded_retries() {
    for always in [Answer::ResetBeforeResponse, Answer::ResetMidBody] {
        let (url, count) = serve(vec![always]).await;
        let started = Instant::now();
        let err = fetch(&url, config()).await.unwrap_err();
        assert_eq!(err.code(), "HOMESERVER_UNREACHABLE", "{always:?}: {err}");
        assert!(err.is_retryable(), "{always:?}");
        assert_eq!(count.load(Ordering::SeqCst), 4, "{always:?}: one attempt and three retries");
        assert!(started.elapsed() < Duration::from_secs(5), "{always:?}: took {:?}", started.elapsed());
        assert!(!err.to_string().contains(crate::mock::TOKEN), "{err}");
    }
}
