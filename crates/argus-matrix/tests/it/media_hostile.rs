//! Hostile answers to a download: redirects to refused or foreign hosts, too many of them,
//! bodies larger than declared or endless, dribbled or stalled bodies, and `mxc://` URIs the
//! outbound policy refuses. Each ends in a typed error, never a hang or an unbounded read.

use std::time::Duration;

use argus_domain::MxcUri;
use argus_matrix::{Connector, ConnectorConfig, Error, MediaLimits, MediaRoute, Session};
use futures::StreamExt as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::path};

use crate::{
    media::{AUTHENTICATED, LIMITS, V1, collect, download_with, encrypted_file, serve, uri},
    mock::MockHomeserver as Hs,
};

fn redirect(status: u16, location: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).insert_header("location", location)
}

#[tokio::test]
async fn a_redirect_to_another_host_is_followed_without_the_token() {
    let hs = Hs::start().await;
    let other = MockServer::start().await;
    Mock::given(path("/cdn/file"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(b"ailleurs".to_vec()))
        .mount(&other)
        .await;
    serve(hs.server(), V1, redirect(307, &format!("{}/cdn/file", other.uri()))).await;
    let got = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await;
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"ailleurs");
    let requests = other.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1);
    assert!(!requests[0].headers.contains_key("authorization"), "the token never crosses hosts");

    // Within the same origin (a relative Location too), the token stays.
    let hs = Hs::start().await;
    serve(hs.server(), V1, redirect(302, "/_matrix/media/elsewhere")).await;
    serve(
        hs.server(),
        "/_matrix/media/elsewhere",
        ResponseTemplate::new(200).set_body_bytes(b"ici".to_vec()),
    )
    .await;
    let got = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await;
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"ici");
}

#[tokio::test]
async fn a_redirect_to_a_blocked_address_is_refused() {
    let hs = Hs::start().await;
    let port = hs.server().address().port();
    for location in [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/file".to_owned(),
        format!("http://127.0.0.2:{port}/file"),
        format!("http://[::1]:{port}/file"),
        "file:///etc/passwd".to_owned(),
        "http://user:pw@example.org/file".to_owned(),
    ] {
        hs.server().reset().await;
        serve(hs.server(), V1, redirect(308, &location)).await;
        let err = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
        assert_eq!(err.code(), "OUTBOUND_POLICY", "{location}: {err}");
        assert!(!err.to_string().contains("pw"), "{err}");
    }
}

/// A homeserver whose file is `hops` redirects away.
async fn chain(hops: usize) -> Hs {
    let hs = Hs::start().await;
    serve(hs.server(), V1, redirect(307, "/r/1")).await;
    for k in 1..hops {
        serve(hs.server(), &format!("/r/{k}"), redirect(302, &format!("/r/{}", k + 1))).await;
    }
    serve(hs.server(), &format!("/r/{hops}"), ResponseTemplate::new(200).set_body_bytes(b"fin".to_vec()))
        .await;
    hs
}

#[tokio::test]
async fn at_most_three_redirects_are_followed() {
    assert_eq!(argus_matrix::MAX_REDIRECTS, 3);
    let hs = chain(3).await;
    let got = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await;
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"fin");
    let hs = chain(4).await;
    let err = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    assert_eq!(hs.request_count().await, 4, "the fourth redirect is not followed");
}

#[tokio::test]
async fn a_file_key_never_follows_a_redirect_to_another_host() {
    let hs = Hs::start().await;
    let scanner = MockServer::start().await;
    let other = MockServer::start().await;
    Mock::given(path("/_matrix/media_proxy/unstable/download_encrypted"))
        .respond_with(redirect(307, &format!("{}/steal", other.uri())))
        .mount(&scanner)
        .await;
    let config = ConnectorConfig {
        media_route: MediaRoute::ContentScanner {
            base_url: scanner.uri().parse().unwrap_or_else(|e| panic!("{e}")),
        },
        ..Hs::config()
    };
    let connector = Connector::new(config).unwrap_or_else(|e| panic!("{e}"));
    let file = encrypted_file();
    let err = download_with(&connector, &hs.uri(), &AUTHENTICATED, Some(&file)).await.unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    assert!(other.received_requests().await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn a_content_scanner_the_policy_refuses_is_never_reached() {
    let hs = Hs::start().await;
    let config = ConnectorConfig {
        media_route: MediaRoute::ContentScanner {
            base_url: "http://10.1.2.3/scan".parse().unwrap_or_else(|e| panic!("{e}")),
        },
        ..Hs::config()
    };
    let connector = Connector::new(config).unwrap_or_else(|e| panic!("{e}"));
    let err = download_with(&connector, &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
}

#[tokio::test]
async fn an_mxc_server_name_the_policy_refuses_is_refused_before_any_request() {
    let hs = Hs::start().await;
    serve(hs.server(), V1, ResponseTemplate::new(200).set_body_bytes(b"x".to_vec())).await;
    let session = hs.session();
    let refuse = |connector: Connector, mxc: &'static str| {
        let session = session.clone();
        async move {
            let uri: MxcUri = mxc.parse().unwrap_or_else(|e| panic!("{mxc}: {e}"));
            let err =
                connector.download_media(&session, &AUTHENTICATED, &uri, None, &LIMITS).await.unwrap_err();
            assert_eq!(err.code(), "OUTBOUND_POLICY", "{mxc}: {err}");
        }
    };
    for mxc in
        ["mxc://169.254.169.254/abc", "mxc://10.0.0.1/abc", "mxc://[::1]:8448/abc", "mxc://192.168.1.1/abc"]
    {
        refuse(Hs::connector(), mxc).await;
    }
    let allow_listed = ConnectorConfig {
        allowed_homeservers: vec!["127.0.0.1".into(), "tchap.test".into()],
        ..Hs::config()
    };
    refuse(Connector::new(allow_listed.clone()).unwrap_or_else(|e| panic!("{e}")), "mxc://evil.example/abc")
        .await;
    assert_eq!(hs.request_count().await, 0);
    // The same server name on the allow-list is fetched.
    let connector = Connector::new(allow_listed).unwrap_or_else(|e| panic!("{e}"));
    let got = collect(
        connector
            .download_media(&session, &AUTHENTICATED, &uri(), None, &LIMITS)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .await;
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"x");
    // Path characters never make an mxc URI.
    for bad in
        ["mxc://tchap.test/../x", "mxc://tchap.test/a/b", "mxc://tchap.test%2f/x", "mxc://tchap.test/a?b"]
    {
        assert!(bad.parse::<MxcUri>().is_err(), "{bad}");
    }
}

/// What a raw server writes after the request's head.
#[derive(Clone, Copy)]
enum Raw {
    /// A chunked body that never ends.
    Endless,
    /// Declares `declared` bytes and writes without end.
    Lying { declared: usize },
    /// A chunked body of one byte a second.
    Dribble,
    /// Declares 100 bytes, writes 10, then nothing.
    Stall,
}

async fn write_then_stop(socket: &mut TcpStream, bytes: &[u8]) -> bool {
    socket.write_all(bytes).await.is_ok()
}

async fn answer(mut socket: TcpStream, raw: Raw) {
    let mut head = Vec::new();
    let mut buf = [0_u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let chunked =
        "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    match raw {
        Raw::Endless => {
            let mut chunk = format!("{:x}\r\n", 16 * 1024).into_bytes();
            chunk.extend(std::iter::repeat_n(b'z', 16 * 1024));
            chunk.extend_from_slice(b"\r\n");
            if !write_then_stop(&mut socket, chunked.as_bytes()).await {
                return;
            }
            while write_then_stop(&mut socket, &chunk).await {}
        }
        Raw::Lying { declared } => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\n\r\n");
            if !write_then_stop(&mut socket, head.as_bytes()).await {
                return;
            }
            while write_then_stop(&mut socket, &[b'y'; 4096]).await {}
        }
        Raw::Dribble => {
            if !write_then_stop(&mut socket, chunked.as_bytes()).await {
                return;
            }
            while write_then_stop(&mut socket, b"1\r\nd\r\n").await {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        Raw::Stall => {
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
            tokio::time::sleep(Duration::from_secs(600)).await;
        }
    }
}

/// A homeserver on 127.0.0.1 that answers every request as `raw` says (wiremock holds bodies
/// in memory: it cannot write an endless or a slow one).
async fn raw_server(raw: Raw) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(answer(socket, raw));
        }
    });
    format!("http://{addr}")
}

/// Reads a download to its end or its first error: the bytes received before, and the error.
async fn drain(connector: &Connector, hs: &str, limits: &MediaLimits) -> (u64, argus_matrix::Result<()>) {
    let session = Session::with_token(hs.parse().unwrap_or_else(|e| panic!("{e}")), Hs::token());
    let mut body = match connector.download_media(&session, &AUTHENTICATED, &uri(), None, limits).await {
        Ok(download) => download.body,
        Err(e) => return (0, Err(e)),
    };
    let mut received = 0;
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(chunk) => received += chunk.len() as u64,
            Err(e) => return (received, Err(e)),
        }
    }
    (received, Ok(()))
}

#[tokio::test]
async fn an_endless_body_ends_at_the_cap() {
    let hs = raw_server(Raw::Endless).await;
    let limits = MediaLimits { max_file_bytes: 100_000 };
    let (received, result) = drain(&Hs::connector(), &hs, &limits).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::MediaTooLarge { cap: 100_000 }), "{err}");
    assert!(received <= 100_000, "{received} bytes handed over past the cap");
}

#[tokio::test]
async fn a_body_never_goes_past_its_declared_length() {
    let hs = raw_server(Raw::Lying { declared: 5000 }).await;
    let (received, result) = drain(&Hs::connector(), &hs, &LIMITS).await;
    result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(received, 5000);
    // Declared over the cap: refused before reading.
    let (received, result) = drain(&Hs::connector(), &hs, &MediaLimits { max_file_bytes: 4999 }).await;
    assert!(matches!(result, Err(Error::MediaTooLarge { cap: 4999 })), "{result:?}");
    assert_eq!(received, 0);
}

fn slow_config(idle: Duration, min_rate: u64, grace: Duration) -> Connector {
    Connector::new(ConnectorConfig {
        media_idle_timeout: idle,
        media_min_rate: min_rate,
        media_rate_grace: grace,
        ..Hs::config()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_dribbled_body_ends_when_it_falls_below_the_minimum_rate() {
    let hs = raw_server(Raw::Dribble).await;
    // The idle timeout alone would never end it: a byte comes every second.
    let connector = slow_config(Duration::from_secs(30), 64, Duration::from_millis(500));
    let (received, result) = drain(&connector, &hs, &LIMITS).await;
    let err = result.unwrap_err();
    assert!(matches!(err, Error::MediaStalled), "{err}");
    assert_eq!(err.code(), "MEDIA_STALLED");
    assert!(received < 5, "{received} bytes: ended long before the body would have");
}

#[tokio::test]
async fn a_stalled_body_ends_at_the_idle_timeout() {
    let hs = raw_server(Raw::Stall).await;
    let connector = slow_config(Duration::from_millis(300), 0, Duration::ZERO);
    let (received, result) = drain(&connector, &hs, &LIMITS).await;
    assert!(matches!(result, Err(Error::MediaStalled)), "{result:?}");
    assert_eq!(received, 10);
}

/// A content scanner fronts its own deployment: a session with a homeserver on another host
/// fetches from that homeserver, and the scanner never sees its token.
#[tokio::test]
async fn a_content_scanner_serves_only_sessions_of_its_own_host() {
    let hs = Hs::start().await;
    // The scanner named by another loopback address than the homeserver's (127.0.0.1).
    let scanner = MockServer::builder()
        .listener(std::net::TcpListener::bind("127.0.0.2:0").unwrap_or_else(|e| panic!("{e}")))
        .start()
        .await;
    let config = ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into(), "127.0.0.2".into()],
        media_route: MediaRoute::ContentScanner {
            base_url: scanner.uri().parse().unwrap_or_else(|e| panic!("{e}")),
        },
        ..Hs::config()
    };
    let connector = Connector::new(config).unwrap_or_else(|e| panic!("{e}"));
    // The homeserver has no such file: its answer, not the scanner's, is what comes back.
    let err = download_with(&connector, &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
    assert_eq!(err.code(), "MEDIA_NOT_FOUND", "{err}");
    assert!(scanner.received_requests().await.unwrap_or_default().is_empty(), "the scanner was asked");
}
