//! The outbound policy: refused homeservers never see a connection.

use argus_domain::HomeserverUrl;
use argus_matrix::{Connector, ConnectorConfig, FetchOptions, Session};

use crate::mock::{MockHomeserver as Hs, ROOM, ev};

#[expect(clippy::unwrap_used, reason = "test helper: an accepted URL fails the test")]
async fn refused(connector: &Connector, url: &str) {
    let hs: HomeserverUrl = url.parse().unwrap_or_else(|e| panic!("{url}: {e}"));
    let err = connector.check_homeserver(&hs).unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{url}: {err}");
    let err = connector
        .fetch_room(&Session::with_token(hs.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{url}: {err}");
}

#[tokio::test]
async fn private_and_reserved_literals_are_refused_before_connecting() {
    let strict = Connector::new(ConnectorConfig::default()).unwrap();
    for url in [
        "https://127.0.0.1",
        "https://127.0.0.1:8448",
        "https://10.0.0.1",
        "https://172.16.5.4",
        "https://192.168.0.1",
        "https://100.64.0.1",
        "https://169.254.169.254",
        "https://0.0.0.0",
        "https://[::1]",
        "https://[::]",
        "https://[::ffff:127.0.0.1]",
        "https://[::ffff:169.254.169.254]",
        "https://[fd00::1]",
        "https://[fe80::1]",
        "https://[64:ff9b::7f00:1]",
        "https://[64:ff9b::a9fe:a9fe]",
        // SIIT (`::ffff:0:0:0/96`), Teredo (`2001::/32`: a loopback server, client or last 32
        // bits), 6to4 (`2002::/16`).
        "https://[::ffff:0:127.0.0.1]",
        "https://[::ffff:0:a9fe:a9fe]",
        "https://[2001::7f00:1]",
        "https://[2001:0:a00:1::a247:27dd]",
        "https://[2001:0:808:808::80ff:fffe]",
        "https://[2002:7f00:1::]",
        "https://[2002:a9fe:a9fe::1]",
        "https://2130706433",
        "https://0x7f000001",
        "https://017700000001",
        "http://matrix.org",
    ] {
        refused(&strict, url).await;
    }
}

#[test]
fn non_http_schemes_and_userinfo_never_become_homeservers() {
    for url in [
        "file:///etc/passwd",
        "gopher://x",
        "ftp://matrix.org",
        "https://user:pw@matrix.org",
        "https://alice@matrix.org",
    ] {
        assert!(url.parse::<HomeserverUrl>().is_err(), "{url}");
    }
}

#[tokio::test]
async fn the_mock_homeserver_is_refused_without_an_exception() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    let strict = Connector::new(ConnectorConfig::default()).unwrap();
    refused(&strict, &hs.server().uri()).await;
    // Exempting another address does not help.
    let other = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["10.9.9.9".into()],
        ..ConnectorConfig::default()
    })
    .unwrap();
    refused(&other, &hs.server().uri()).await;
    assert_eq!(hs.request_count().await, 0);
}

#[tokio::test]
async fn a_host_name_resolving_to_a_private_address_is_refused_without_connection() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    let port = hs.server().address().port();
    // https: resolved by the policy resolver, 127.0.0.1 is refused.
    let https = Connector::new(ConnectorConfig { max_retries: 0, ..ConnectorConfig::default() }).unwrap();
    let url: HomeserverUrl = format!("https://localhost:{port}").parse().unwrap();
    https.check_homeserver(&url).unwrap();
    let err = https
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    assert!(err.to_string().contains("localhost"), "{err}");
    // Plain http to a name is refused unless all its addresses are exempt.
    let http = Connector::new(ConnectorConfig { max_retries: 0, ..ConnectorConfig::default() }).unwrap();
    let url: HomeserverUrl = format!("http://localhost:{port}").parse().unwrap();
    let err = http
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    assert_eq!(hs.request_count().await, 0);
}

#[tokio::test]
async fn an_exempt_host_name_may_be_read_over_plain_http() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(0, 1)).mount().await;
    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.0/8".into(), "::1".into()],
        ..Hs::config()
    })
    .unwrap();
    let url: HomeserverUrl = format!("http://localhost:{}", hs.server().address().port()).parse().unwrap();
    let s = connector
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(s.messages.len(), 1);
}

#[tokio::test]
async fn the_allow_list_restricts_homeservers() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    let connector = Connector::new(ConnectorConfig {
        allowed_homeservers: vec!["matrix.agent.tchap.gouv.fr".into()],
        ..Hs::config()
    })
    .unwrap();
    refused(&connector, &hs.server().uri()).await;
    assert!(connector.check_homeserver(&"https://matrix.agent.tchap.gouv.fr".parse().unwrap()).is_ok());
    assert_eq!(hs.request_count().await, 0);
}

/// Run in a child process with proxy variables set (the test process cannot set its own
/// environment safely); does nothing when run directly.
#[tokio::test]
async fn proxy_child() {
    let Ok(homeserver) = std::env::var("ARGUS_PROXY_TEST_HOMESERVER") else {
        return;
    };
    let url: HomeserverUrl = homeserver.parse().unwrap();
    let s = Hs::connector()
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(s.messages.len(), 1);
}

#[tokio::test]
async fn proxy_variables_are_ignored() {
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(0, 1)).mount().await;
    let proxy = Hs::start().await;
    let exe = std::env::current_exe().unwrap();
    let status = tokio::process::Command::new(exe)
        .args(["--exact", "policy::proxy_child", "--nocapture"])
        .env("ARGUS_PROXY_TEST_HOMESERVER", hs.server().uri())
        .env("HTTP_PROXY", proxy.server().uri())
        .env("http_proxy", proxy.server().uri())
        .env("HTTPS_PROXY", proxy.server().uri())
        .env("ALL_PROXY", proxy.server().uri())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(proxy.request_count().await, 0, "the proxy was used");
    assert_eq!(hs.request_count().await, 2);
}

/// Names of the mixed-resolution test, written into the child's own `/etc/hosts`.
const MIXED_HOSTS: &str = "127.0.0.1 localhost\n\
    127.0.0.1 single.argus.test\n\
    127.0.0.1 mixed.argus.test\n\
    10.0.0.1 mixed.argus.test\n\
    93.184.216.34 public-and-private.argus.test\n\
    127.0.0.1 public-and-private.argus.test\n";

/// Run in a child process whose `/etc/hosts` is [`MIXED_HOSTS`]; does nothing when run directly.
#[tokio::test]
async fn mixed_resolution_child() {
    let Ok(port) = std::env::var("ARGUS_MIXED_TEST_PORT") else {
        return;
    };
    let resolve = |name: &'static str| async move {
        let addrs: Vec<_> = tokio::net::lookup_host((name, 0)).await.unwrap().map(|a| a.ip()).collect();
        assert_eq!(addrs.len(), 2, "{name} resolves to {addrs:?}: the premise of the test does not hold");
    };
    resolve("mixed.argus.test").await;
    resolve("public-and-private.argus.test").await;
    let exempt = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        max_retries: 0,
        ..Hs::config()
    })
    .unwrap();
    // Control: a name with only the exempt address is read.
    let url: HomeserverUrl = format!("http://single.argus.test:{port}").parse().unwrap();
    let s = exempt
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(s.messages.len(), 1);
    // One exempt and one refused address: the whole name is refused, the exempt one included.
    let url: HomeserverUrl = format!("http://mixed.argus.test:{port}").parse().unwrap();
    let err = exempt
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    assert!(err.to_string().contains("mixed.argus.test"), "{err}");
    // What the name resolved to stays in the log.
    assert!(!err.to_string().contains("10.0.0.1") && !err.to_string().contains("127.0.0.1"), "{err}");
    // A public and a loopback address over https, no exception: refused before any connection
    // (not a connection attempt to the public address that fails).
    let strict = Connector::new(ConnectorConfig { max_retries: 0, ..ConnectorConfig::default() }).unwrap();
    let url: HomeserverUrl = format!("https://public-and-private.argus.test:{port}").parse().unwrap();
    let err = strict
        .fetch_room(&Session::with_token(url.clone(), Hs::token()), &Hs::room(), &FetchOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "OUTBOUND_POLICY", "{err}");
    println!("mixed-resolution-checked");
}

#[tokio::test]
async fn a_host_name_resolving_to_a_mix_of_addresses_is_refused_without_connection() {
    // The names need a hosts file of their own: the child runs in a mount namespace with one
    // bound over /etc/hosts. Skipped (loudly) where namespaces are not available.
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let hosts = Removed(std::env::temp_dir().join(format!("argus-mixed-hosts-{}", std::process::id())));
    std::fs::write(&hosts.0, MIXED_HOSTS).unwrap();
    mixed_resolution_in_a_namespace(&hosts.0).await;
}

async fn mixed_resolution_in_a_namespace(hosts: &std::path::Path) {
    let probe = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind \"$1\" /etc/hosts", "sh"])
        .arg(hosts)
        .output();
    if !probe.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("SKIPPED: no mount namespace for a private /etc/hosts ({probe:?})");
        return;
    }
    let hs = Hs::start().await;
    hs.empty_state(ROOM).await;
    hs.messages(ROOM).page(ev::texts_newest_first(0, 1)).mount().await;
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("test binary: {e}"));
    let output = tokio::process::Command::new("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/hosts && exec \"$2\" --exact policy::mixed_resolution_child --nocapture",
            "sh",
        ])
        .arg(hosts)
        .arg(&exe)
        .env("ARGUS_MIXED_TEST_PORT", hs.server().address().port().to_string())
        .output()
        .await
        .unwrap_or_else(|e| panic!("unshare: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("mixed-resolution-checked"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Only the control's two requests (state and messages) reached the homeserver.
    assert_eq!(hs.request_count().await, 2);
}
