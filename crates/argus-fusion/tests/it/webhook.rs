//! The webhook sink against a wiremock receiver: headers, retries on 5xx and timeouts, no
//! retry on 4xx, per-organisation routing.

use std::{collections::BTreeMap, time::Duration};

use argus_domain::Classification;
use argus_fusion::{
    Error, NetworkNode, SIGNATURE_HEADER, Sink, TIMESTAMP_HEADER, WebhookOptions, WebhookSecret, WebhookSink,
};
use reqwest::Url;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, header_exists, method, path},
};

use crate::support::room;

/// Fast retries and a short request timeout, so the tests take milliseconds.
pub(crate) fn fast_options() -> WebhookOptions {
    WebhookOptions {
        connect_timeout: Duration::from_secs(1),
        // Long enough for a loaded CI machine, short enough for the timeout tests.
        request_timeout: Duration::from_secs(1),
        max_retries: 3,
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        signing_secret: None,
    }
}

/// The organisations of the entities `server` received, in order.
pub(crate) async fn orgs_received(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| serde_json::from_slice::<NetworkNode>(&r.body).ok())
        .map(|n| n.organisation.to_string())
        .collect()
}

pub(crate) fn hook_url(server: &MockServer) -> anyhow::Result<Url> {
    Ok(Url::parse(&format!("{}/hook", server.uri()))?)
}

fn sink_to(server: &MockServer) -> anyhow::Result<WebhookSink> {
    Ok(WebhookSink::new(Some(hook_url(server)?), BTreeMap::new(), fast_options())?)
}

fn node(org: &str) -> anyhow::Result<NetworkNode> {
    Ok(NetworkNode::from_room(&room(org, "!abc:agent.tchap.gouv.fr", Classification::Restricted)?, 7))
}

#[tokio::test]
async fn posts_json_with_an_idempotency_key() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    let n = node("dgsi")?;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", n.idempotency_key().as_str()))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    sink_to(&server)?.deliver(&n).await?;
    let requests = server.received_requests().await.unwrap_or_default();
    let body: NetworkNode = serde_json::from_slice(&requests[0].body)?;
    assert_eq!(body, n);
    assert_eq!(n.idempotency_key(), format!("{}:7", n.id));
    Ok(())
}

#[tokio::test]
async fn retries_server_errors_then_succeeds() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let n = node("dgsi")?;
    sink_to(&server)?.deliver(&n).await?;
    let requests = server.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 3);
    let keys: Vec<_> = requests.iter().filter_map(|r| r.headers.get("idempotency-key").cloned()).collect();
    assert!(keys.iter().all(|k| k == n.idempotency_key().as_str()), "every retry carries the same key");
    Ok(())
}

#[tokio::test]
async fn retries_timeouts_then_succeeds() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    sink_to(&server)?.deliver(&node("dgsi")?).await?;
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 3);
    Ok(())
}

#[tokio::test]
async fn gives_up_after_bounded_retries() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let err = sink_to(&server)?.deliver(&node("dgsi")?).await.err();
    assert!(matches!(err, Some(Error::WebhookStatus(503))), "{err:?}");
    assert_eq!(server.received_requests().await.unwrap_or_default().len(), 4, "1 attempt + 3 retries");
    Ok(())
}

#[tokio::test]
async fn client_errors_are_not_retried_except_408_and_429() -> anyhow::Result<()> {
    for (status, expected_requests) in [(400, 1), (404, 1), (422, 1), (408, 2), (429, 2)] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status))
            .up_to_n_times(1)
            .mount(&server)
            .await;
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
        let result = sink_to(&server)?.deliver(&node("dgsi")?).await;
        let requests = server.received_requests().await.unwrap_or_default().len();
        assert_eq!(requests, expected_requests, "HTTP {status}");
        assert_eq!(result.is_ok(), expected_requests == 2, "HTTP {status}: {result:?}");
    }
    Ok(())
}

#[tokio::test]
async fn redirects_are_not_followed() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "http://169.254.169.254/"))
        .mount(&server)
        .await;
    let err = sink_to(&server)?.deliver(&node("dgsi")?).await.err();
    assert!(matches!(err, Some(Error::WebhookStatus(307))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn unreachable_errors_do_not_leak_the_url() -> anyhow::Result<()> {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let url = Url::parse(&format!("http://127.0.0.1:{port}/hook?token=s3cr3t"))?;
    let sink = WebhookSink::new(Some(url), BTreeMap::new(), fast_options())?;
    let err = sink.deliver(&node("dgsi")?).await.err().ok_or_else(|| anyhow::anyhow!("delivered"))?;
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(!text.contains("s3cr3t") && !text.contains("127.0.0.1"), "{text}");
    assert!(!format!("{sink:?}").contains("s3cr3t"));
    Ok(())
}

#[tokio::test]
async fn each_organisation_goes_to_its_own_receiver() -> anyhow::Result<()> {
    let (a, b, default) = (MockServer::start().await, MockServer::start().await, MockServer::start().await);
    for s in [&a, &b, &default] {
        Mock::given(method("POST"))
            .and(header_exists("idempotency-key"))
            .respond_with(ResponseTemplate::new(200))
            .mount(s)
            .await;
    }
    let org_urls = BTreeMap::from([("org-a".parse()?, hook_url(&a)?), ("org-b".parse()?, hook_url(&b)?)]);
    let sink = WebhookSink::new(Some(hook_url(&default)?), org_urls.clone(), fast_options())?;
    for org in ["org-a", "org-b", "org-a", "org-c"] {
        sink.deliver(&node(org)?).await?;
    }
    assert_eq!(orgs_received(&a).await, ["org-a", "org-a"]);
    assert_eq!(orgs_received(&b).await, ["org-b"]);
    assert_eq!(orgs_received(&default).await, ["org-c"]);

    // Without a default, an organisation without its own URL is sent nowhere.
    let only_orgs = WebhookSink::new(None, org_urls, fast_options())?;
    only_orgs.deliver(&node("org-c")?).await?;
    assert_eq!(a.received_requests().await.unwrap_or_default().len(), 2);
    assert_eq!(b.received_requests().await.unwrap_or_default().len(), 1);
    assert_eq!(default.received_requests().await.unwrap_or_default().len(), 1);
    Ok(())
}

#[tokio::test]
async fn signs_the_body_when_a_secret_is_configured() -> anyhow::Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let secret = WebhookSecret::new("correct horse battery staple");
    let options = WebhookOptions { signing_secret: Some(secret.clone()), ..fast_options() };
    let sink = WebhookSink::new(Some(hook_url(&server)?), BTreeMap::new(), options)?;
    sink.deliver(&node("dgsi")?).await?;
    let requests = server.received_requests().await.unwrap_or_default();
    let header = |name: &str| requests[0].headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // The signature covers a timestamp too: a replayed request shows its age.
    let timestamp = header(TIMESTAMP_HEADER).expect("a timestamp");
    let age = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs()
        - timestamp.parse::<u64>()?;
    assert!(age < 60, "{age}");
    assert_eq!(header(SIGNATURE_HEADER), Some(secret.sign(&timestamp, &requests[0].body)));
    assert_ne!(header(SIGNATURE_HEADER), Some(secret.sign("0", &requests[0].body)));
    assert!(!format!("{sink:?}").contains("horse"), "the secret never shows in Debug");
    // Unsigned by default.
    sink_to(&server)?.deliver(&node("dgsi")?).await?;
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests[1].headers.get(SIGNATURE_HEADER).is_none());
    Ok(())
}

/// Tells the child test where the receiver is.
const PROXY_CHILD_ENV: &str = "ARGUS_FUSION_PROXY_CHILD_RECEIVER";

/// Run in a child process whose environment names a proxy; does nothing when run directly.
#[tokio::test]
async fn proxy_environment_child() -> anyhow::Result<()> {
    let Ok(receiver) = std::env::var(PROXY_CHILD_ENV) else { return Ok(()) };
    let sink = WebhookSink::new(Some(Url::parse(&receiver)?), BTreeMap::new(), fast_options())?;
    sink.deliver(&node("dgsi")?).await?;
    Ok(())
}

/// Proxy variables of the environment are ignored: entities go straight to the receiver.
#[tokio::test]
async fn proxy_variables_are_ignored() -> anyhow::Result<()> {
    let (receiver, proxy) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    Mock::given(wiremock::matchers::any()).respond_with(ResponseTemplate::new(502)).mount(&proxy).await;
    let status = tokio::process::Command::new(std::env::current_exe()?)
        .args(["--exact", "webhook::proxy_environment_child", "--test-threads=1"])
        .env(PROXY_CHILD_ENV, hook_url(&receiver)?.as_str())
        .env("HTTP_PROXY", proxy.uri())
        .env("http_proxy", proxy.uri())
        .env("ALL_PROXY", proxy.uri())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .status()
        .await?;
    assert!(status.success());
    assert_eq!(proxy.received_requests().await.unwrap_or_default().len(), 0, "the proxy was used");
    assert_eq!(receiver.received_requests().await.unwrap_or_default().len(), 1);
    Ok(())
}
