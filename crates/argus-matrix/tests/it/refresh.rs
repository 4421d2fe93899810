//! Renewing tokens: the homeserver's own refreshable tokens on the real Synapse (4 s
//! lifetime), and a next-generation auth server's (OAuth 2.0 token endpoint found through
//! `auth_metadata`) on a mock; renewed once for every reader, before expiry or when refused,
//! each refresh token used once, never a token in an error, a `Debug` or a log line.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use argus_domain::{AccessToken, HomeserverUrl, Secret};
use argus_matrix::{
    Connector, ConnectorConfig, FetchOptions, PairKeeper, RefreshingTokens, Session, TokenPair, TokenSource,
};
use argus_testkit::{oauth::OAuthMock, synapse::synapse};
use futures::future::BoxFuture;
use serde_json::json;
use time::OffsetDateTime;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};

const CLIENT_ID: &str = "01JARGUSCLIENT";

fn connector() -> Connector {
    Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })
    .unwrap_or_else(|e| panic!("connector: {e}"))
}

fn url(server: &MockServer) -> HomeserverUrl {
    server.uri().parse().unwrap_or_else(|e| panic!("{e}"))
}

fn stale(refresh_token: &str) -> TokenPair {
    TokenPair::given(AccessToken::new("mat_stale_SECRETaccess"), Some(Secret::new(refresh_token)))
}

#[tokio::test]
async fn an_oauth_token_is_renewed_once_for_all_readers_at_the_auth_servers_token_endpoint() {
    let server = MockServer::start().await;
    let auth = OAuthMock::mount(&server, CLIENT_ID, 300).await;
    auth.mount_joined_rooms(&server, &["!a:tchap.test"]).await;
    let tokens = Arc::new(RefreshingTokens::new(
        connector(),
        url(&server),
        stale(OAuthMock::FIRST_REFRESH_TOKEN),
        Some(CLIENT_ID.into()),
        None,
    ));
    // Five reads at once, all refused with the stale token: one renewal for all of them.
    let reads = (0..5).map(|_| {
        let session = Session::shared(url(&server), Arc::clone(&tokens) as Arc<dyn TokenSource>);
        async move { connector().joined_rooms(&session).await.map(|rooms| rooms.len()) }
    });
    let answers = futures::future::join_all(reads).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(1))), "{answers:?}");
    assert_eq!((auth.uses(OAuthMock::FIRST_REFRESH_TOKEN), auth.issued()), (1, 1));
    let pair = tokens.pair();
    assert_eq!(pair.access_token.expose_secret(), auth.access_token());
    assert_eq!(pair.refresh_token.as_ref().map(|t| t.expose_secret().to_owned()), Some(auth.refresh_token()));
    assert_eq!(pair.lifetime, Some(Duration::from_secs(300)));
    assert!(!format!("{pair:?} {tokens:?}").contains("SECRET"));

    // A pair near its expiry is renewed before any request carries it.
    let before = server.received_requests().await.map_or(0, |r| r.len());
    let due = TokenPair {
        expires_at: Some(OffsetDateTime::now_utc() + time::Duration::seconds(1)),
        lifetime: Some(Duration::from_secs(300)),
        ..pair
    };
    let tokens =
        Arc::new(RefreshingTokens::new(connector(), url(&server), due, Some(CLIENT_ID.into()), None));
    let session = Session::shared(url(&server), Arc::clone(&tokens) as Arc<dyn TokenSource>);
    assert_eq!(connector().joined_rooms(&session).await.map(|r| r.len()).ok(), Some(1));
    let requests = server.received_requests().await.unwrap_or_default();
    let refused = requests[before..].iter().filter(|r| r.url.path().ends_with("joined_rooms")).count();
    assert_eq!(refused, 1, "one read, with the renewed token only");
    assert_eq!(auth.issued(), 2);
    assert!(auth.all_uses().values().all(|&n| n == 1), "{:?}", auth.all_uses());
}

#[tokio::test]
async fn a_refused_renewal_is_token_refresh_failed_and_never_shows_a_token() {
    let sink = argus_testkit::logs::capture();

    let server = MockServer::start().await;
    let auth = OAuthMock::mount(&server, CLIENT_ID, 300).await;
    auth.mount_joined_rooms(&server, &[]).await;
    let read = |pair: TokenPair, client_id: Option<&str>| {
        let tokens =
            RefreshingTokens::new(connector(), url(&server), pair, client_id.map(str::to_owned), None);
        let session = Session::new(url(&server), tokens);
        async move { connector().joined_rooms(&session).await }
    };
    let mut errors = Vec::new();
    // A refresh token the auth server does not know (used already): invalid_grant, whose
    // description repeats the token.
    errors.push(read(stale("mar_unknown_SECRETrefresh"), Some(CLIENT_ID)).await.unwrap_err());
    // The right refresh token for another client.
    errors.push(read(stale(OAuthMock::FIRST_REFRESH_TOKEN), Some("another")).await.unwrap_err());
    // No client id at all: renewed as a compatibility session at the homeserver's /refresh,
    // which this one does not serve.
    errors.push(read(stale(OAuthMock::FIRST_REFRESH_TOKEN), None).await.unwrap_err());
    for error in &errors {
        assert_eq!(error.code(), "TOKEN_REFRESH_FAILED", "{error}");
        assert!(!error.is_retryable());
    }
    // Without a refresh token the refusal stands.
    let bare = TokenPair::given(AccessToken::new("mat_stale_SECRETaccess"), None);
    let error = read(bare, Some(CLIENT_ID)).await.unwrap_err();
    assert_eq!(error.code(), "HOMESERVER_UNAUTHORIZED");
    errors.push(error);
    assert_eq!(auth.issued(), 0);

    // A token endpoint the outbound policy refuses, or one that redirects, is never followed.
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v1/auth_metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": "https://auth.example/", "token_endpoint": "http://10.11.12.13/oauth2/token",
        })))
        .mount(&elsewhere)
        .await;
    let tokens = RefreshingTokens::new(
        connector(),
        url(&elsewhere),
        TokenPair { expires_at: Some(OffsetDateTime::now_utc()), ..stale("mar_x_SECRETrefresh") },
        Some(CLIENT_ID.into()),
        None,
    );
    let error = tokens.ensure_fresh().await.unwrap_err();
    assert_eq!(error.code(), "OUTBOUND_POLICY", "{error}");
    errors.push(error);
    let redirecting = MockServer::start().await;
    let _auth = OAuthMock::mount(&redirecting, CLIENT_ID, 300).await;
    Mock::given(method("POST"))
        .and(path(OAuthMock::TOKEN_PATH))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "http://127.0.0.1:9/steal"))
        .with_priority(1)
        .mount(&redirecting)
        .await;
    let tokens = RefreshingTokens::new(
        connector(),
        url(&redirecting),
        TokenPair { expires_at: Some(OffsetDateTime::now_utc()), ..stale(OAuthMock::FIRST_REFRESH_TOKEN) },
        Some(CLIENT_ID.into()),
        None,
    );
    let error = tokens.ensure_fresh().await.unwrap_err();
    assert_eq!(error.code(), "OUTBOUND_POLICY", "{error}");
    errors.push(error);

    let logs = sink.text();
    for error in &errors {
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("SECRET") && !shown.contains("mar_"), "{shown}");
    }
    assert!(!logs.contains("SECRET"), "{logs}");
}

/// A keeper in memory that counts what it was asked to keep.
#[derive(Default)]
struct Kept {
    pairs: Mutex<Vec<TokenPair>>,
}

impl PairKeeper for Kept {
    fn load(&self) -> BoxFuture<'_, argus_matrix::Result<Option<TokenPair>>> {
        let last = self.pairs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last().cloned();
        Box::pin(async move { Ok(last) })
    }

    fn store(&self, _old: TokenPair, new: TokenPair) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        self.pairs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(new);
        Box::pin(async { Ok(true) })
    }
}

#[tokio::test]
async fn synapse_refreshable_tokens_are_renewed_kept_first_and_each_refresh_token_used_once() {
    let Some(server) = synapse() else { return };
    let user = server.register("refresher").await.unwrap_or_else(|e| panic!("{e:#}"));
    let room = user.create_room(Some("renewed"), None, false).await.unwrap_or_else(|e| panic!("{e:#}"));
    user.send_texts(&room, "before", 3, 1).await.unwrap_or_else(|e| panic!("{e:#}"));
    let login = user.login_refreshable().await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        login.expires_in_ms.is_some_and(|ms| (1..=4000).contains(&ms)),
        "{login:?}: the test homeserver's lifetime"
    );
    let homeserver: HomeserverUrl = server.base_url().parse().unwrap_or_else(|e| panic!("{e}"));
    let given = TokenPair {
        access_token: AccessToken::new(login.access_token.clone()),
        refresh_token: Some(Secret::new(login.refresh_token.clone())),
        // Due now: renewed before the first request.
        expires_at: Some(OffsetDateTime::now_utc()),
        lifetime: Some(Duration::from_secs(4)),
    };
    let keeper = Arc::new(Kept::default());
    let tokens = Arc::new(RefreshingTokens::new(
        connector(),
        homeserver.clone(),
        given.clone(),
        None,
        Some(Arc::clone(&keeper) as Arc<dyn PairKeeper>),
    ));
    let session = Session::shared(homeserver.clone(), Arc::clone(&tokens) as Arc<dyn TokenSource>);
    let room_id = room.parse().unwrap_or_else(|e| panic!("{e}"));
    let snapshot = connector()
        .fetch_room(&session, &room_id, &FetchOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot.messages.len(), 3);
    let renewed = tokens.pair();
    let kept = keeper.pairs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(kept, vec![renewed.clone()], "kept before it was used");
    assert_ne!(renewed.access_token.expose_secret(), login.access_token);
    assert_ne!(renewed.refresh_token.as_ref().map(Secret::expose_secret), Some(login.refresh_token.as_str()));
    assert!(renewed.lifetime.is_some_and(|l| l <= Duration::from_secs(4) && !l.is_zero()), "{renewed:?}");

    // The first refresh token, used once and its successor used since: Synapse refuses it.
    let again = RefreshingTokens::new(connector(), homeserver, given, None, None);
    let error = again.ensure_fresh().await.unwrap_err();
    assert_eq!(error.code(), "TOKEN_REFRESH_FAILED", "{error}");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(&login.refresh_token) && !shown.contains(&login.access_token), "{shown}");
}

/// A keeper whose storage fails `failures` times, then keeps; counts its renewal leases.
struct Failing {
    failures: Mutex<u32>,
    stored: Mutex<Vec<TokenPair>>,
    taken: Mutex<u32>,
    given_back: Mutex<u32>,
}

impl PairKeeper for Failing {
    fn load(&self) -> BoxFuture<'_, argus_matrix::Result<Option<TokenPair>>> {
        let last = self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last().cloned();
        Box::pin(async move { Ok(last) })
    }

    fn may_renew(&self) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        *self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Box::pin(async { Ok(true) })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        *self.given_back.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Box::pin(async {})
    }

    fn store(&self, _old: TokenPair, new: TokenPair) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *failures > 0 {
            *failures -= 1;
            return Box::pin(async { Err(argus_matrix::Error::TokenNotKept) });
        }
        self.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(new);
        Box::pin(async { Ok(true) })
    }
}

#[tokio::test]
async fn a_pair_that_could_not_be_stored_is_stored_later_and_its_refresh_token_never_used_again() {
    let server = MockServer::start().await;
    let auth = OAuthMock::mount(&server, CLIENT_ID, 300).await;
    auth.mount_joined_rooms(&server, &["!a:tchap.test"]).await;
    let keeper = Arc::new(Failing {
        failures: Mutex::new(2),
        stored: Mutex::new(Vec::new()),
        taken: Mutex::new(0),
        given_back: Mutex::new(0),
    });
    let tokens = Arc::new(RefreshingTokens::new(
        connector(),
        url(&server),
        stale(OAuthMock::FIRST_REFRESH_TOKEN),
        Some(CLIENT_ID.into()),
        Some(Arc::clone(&keeper) as Arc<dyn PairKeeper>),
    ));
    let session = Session::shared(url(&server), Arc::clone(&tokens) as Arc<dyn TokenSource>);
    // The server renewed, the storage failed: the read fails, retryable; the new pair is not
    // used, and the next reads try only to store it again.
    for _ in 0..2 {
        let error = connector().joined_rooms(&session).await.map(|r| r.len());
        let error = error.err().unwrap_or_else(|| panic!("a pair not stored was used"));
        assert_eq!(error.code(), "TOKEN_NOT_KEPT");
        assert!(error.is_retryable());
        assert_eq!(tokens.pair().access_token.expose_secret(), "mat_stale_SECRETaccess");
    }
    assert_eq!(connector().joined_rooms(&session).await.map(|r| r.len()).ok(), Some(1));
    assert_eq!((auth.uses(OAuthMock::FIRST_REFRESH_TOKEN), auth.issued()), (1, 1));
    assert_eq!(auth.all_uses().len(), 1, "{:?}", auth.all_uses());
    let stored = keeper.stored.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].access_token.expose_secret(), auth.access_token());
    assert_eq!(tokens.pair().access_token.expose_secret(), auth.access_token());
    // The lease stays taken while a pair the server issued is not stored (no other holder may
    // send its spent refresh token), taken again by the same holder to store it, and given back
    // once it is stored.
    let lock = |m: &Mutex<u32>| *m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert_eq!((lock(&keeper.taken), lock(&keeper.given_back)), (3, 1));
}

#[tokio::test]
async fn a_token_endpoint_off_its_issuers_origin_is_never_sent_the_refresh_token() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v1/auth_metadata"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "issuer": format!("{}/", server.uri()),
            "authorization_endpoint": format!("{}/authorize", server.uri()),
            "token_endpoint": format!("{}/oauth2/token", elsewhere.uri()),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "response_modes_supported": ["query", "fragment"],
            "code_challenge_methods_supported": ["S256"],
        })))
        .mount(&server)
        .await;
    let tokens = RefreshingTokens::new(
        connector(),
        url(&server),
        TokenPair { expires_at: Some(OffsetDateTime::now_utc()), ..stale("mar_SECRET_elsewhere") },
        Some(CLIENT_ID.into()),
        None,
    );
    let error = tokens.renew(&tokens.pair().access_token).await.err().unwrap_or_else(|| panic!("renewed"));
    assert_eq!(error.code(), "OUTBOUND_POLICY", "{error}");
    assert!(!error.to_string().contains("SECRET"));
    assert!(
        elsewhere.received_requests().await.unwrap_or_default().is_empty(),
        "the token endpoint was called"
    );
}

/// One account's pair as a store keeps it for several holders: a renewal lease, and a new pair
/// stored by compare-and-swap under it.
struct SharedPair {
    pair: Mutex<TokenPair>,
    lease: Mutex<Option<&'static str>>,
}

/// One holder's keeper of a [`SharedPair`]; with `paused`, its lease request first says it
/// arrived and waits to be let go.
struct Holder {
    name: &'static str,
    shared: Arc<SharedPair>,
    paused: Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl PairKeeper for Holder {
    fn load(&self) -> BoxFuture<'_, argus_matrix::Result<Option<TokenPair>>> {
        let pair = locked(&self.shared.pair).clone();
        Box::pin(async move { Ok(Some(pair)) })
    }

    fn may_renew(&self) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        Box::pin(async move {
            if let Some((arrived, go)) = &self.paused {
                arrived.notify_one();
                go.notified().await;
            }
            let mut lease = locked(&self.shared.lease);
            let free = lease.is_none_or(|holder| holder == self.name);
            if free {
                *lease = Some(self.name);
            }
            Ok(free)
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        let mut lease = locked(&self.shared.lease);
        if *lease == Some(self.name) {
            *lease = None;
        }
        Box::pin(async {})
    }

    fn store(&self, old: TokenPair, new: TokenPair) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        let leased = *locked(&self.shared.lease) == Some(self.name);
        let mut pair = locked(&self.shared.pair);
        let swapped = leased && pair.access_token == old.access_token;
        if swapped {
            *pair = new;
        }
        Box::pin(async move { Ok(swapped) })
    }
}

#[tokio::test]
async fn a_holder_that_read_the_pair_before_another_kept_its_renewal_and_left_does_not_spend_it_again() {
    let server = MockServer::start().await;
    let auth = OAuthMock::mount(&server, CLIENT_ID, 300).await;
    let shared = Arc::new(SharedPair {
        pair: Mutex::new(stale(OAuthMock::FIRST_REFRESH_TOKEN)),
        lease: Mutex::new(None),
    });
    let (arrived, go) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let source = |name, paused| {
        let keeper = Holder { name, shared: Arc::clone(&shared), paused };
        let pair = stale(OAuthMock::FIRST_REFRESH_TOKEN);
        let keeper = Some(Arc::new(keeper) as Arc<dyn PairKeeper>);
        Arc::new(RefreshingTokens::new(connector(), url(&server), pair, Some(CLIENT_ID.into()), keeper))
    };
    let (a, b) = (source("a", None), source("b", Some((Arc::clone(&arrived), Arc::clone(&go)))));
    let refused = b.pair().access_token;
    // B reads the kept pair (the first one) and asks for the lease; before it gets there, A
    // renews, keeps its new pair and gives the lease back.
    let late = tokio::spawn({
        let (b, refused) = (Arc::clone(&b), refused.clone());
        async move { b.renew(&refused).await }
    });
    arrived.notified().await;
    assert_eq!(a.renew(&refused).await.ok(), Some(true));
    assert_eq!((auth.uses(OAuthMock::FIRST_REFRESH_TOKEN), auth.issued()), (1, 1));
    assert_eq!(*locked(&shared.lease), None);
    // B takes the free lease: the pair it read is no longer the kept one, so it takes A's and
    // never sends the spent refresh token.
    go.notify_one();
    let late = late.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(late.ok(), Some(true));
    assert_eq!((auth.uses(OAuthMock::FIRST_REFRESH_TOKEN), auth.issued()), (1, 1), "{:?}", auth.all_uses());
    assert_eq!(auth.all_uses().len(), 1);
    for source in [&a, &b] {
        assert_eq!(source.pair().access_token.expose_secret(), auth.access_token());
    }
    assert_eq!(locked(&shared.pair).access_token.expose_secret(), auth.access_token());
    assert_eq!(*locked(&shared.lease), None, "the lease was given back");
}
