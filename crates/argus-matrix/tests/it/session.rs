//! A session's token source: asked once to renew when the homeserver refuses its token, and the
//! request sent again with the new one; a fixed token's refusal stands.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use argus_domain::AccessToken;
use argus_matrix::{Error, Session, TokenSource};
use futures::future::BoxFuture;
use serde_json::json;
use wiremock::{
    Mock, ResponseTemplate,
    matchers::{header, method, path},
};

use crate::mock::MockHomeserver as Hs;

const RENEWED: &str = "syt_renewed_token_0123";

/// A source that renews to `renew_to` when it has one, counting the renewals it was asked for.
struct Renewing {
    current: Mutex<AccessToken>,
    asked: AtomicUsize,
    renew_to: Option<&'static str>,
}

impl Renewing {
    fn new(renew_to: Option<&'static str>) -> Self {
        Self { current: Mutex::new(Hs::token()), asked: AtomicUsize::new(0), renew_to }
    }
}

impl TokenSource for Renewing {
    fn access_token(&self) -> AccessToken {
        self.current.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn renew<'a>(&'a self, refused: &'a AccessToken) -> BoxFuture<'a, argus_matrix::Result<bool>> {
        Box::pin(async move {
            self.asked.fetch_add(1, Ordering::SeqCst);
            assert_eq!(refused.expose_secret(), self.access_token().expose_secret());
            if let Some(token) = self.renew_to {
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) = AccessToken::new(token);
            }
            Ok(self.renew_to.is_some())
        })
    }
}

/// A homeserver that knows only [`RENEWED`]: `/joined_rooms` answers it, refuses any other.
async fn homeserver() -> Hs {
    let hs = Hs::start().await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/joined_rooms"))
        .and(header("authorization", format!("Bearer {RENEWED}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "joined_rooms": ["!a:tchap.test"] })))
        .with_priority(1)
        .mount(hs.server())
        .await;
    Mock::given(method("GET"))
        .and(path("/_matrix/client/v3/joined_rooms"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({ "errcode": "M_UNKNOWN_TOKEN", "error": "unknown token" })),
        )
        .mount(hs.server())
        .await;
    hs
}

#[tokio::test]
async fn a_refused_token_is_renewed_once_and_the_request_sent_again() {
    let hs = homeserver().await;
    let source = Arc::new(Renewing::new(Some(RENEWED)));
    let session = Session::new(hs.url(), source.clone());
    let rooms = Hs::connector().joined_rooms(&session).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rooms.iter().map(|r| r.as_str()).collect::<Vec<_>>(), ["!a:tchap.test"]);
    assert_eq!(source.asked.load(Ordering::SeqCst), 1);
    assert_eq!(hs.requests_to("joined_rooms").await, 2);
    assert!(!format!("{session:?}").contains(RENEWED));
}

#[tokio::test]
async fn a_refusal_stands_when_the_source_cannot_renew_or_is_refused_again() {
    let hs = homeserver().await;
    let fixed = Session::with_token(hs.url(), Hs::token());
    let err = Hs::connector().joined_rooms(&fixed).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(hs.requests_to("joined_rooms").await, 1);

    let source = Arc::new(Renewing::new(None));
    let session = Session::new(hs.url(), source.clone());
    let err = Hs::connector().joined_rooms(&session).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(source.asked.load(Ordering::SeqCst), 1);
    assert_eq!(hs.requests_to("joined_rooms").await, 2);

    // Renewed to a token the homeserver refuses too: asked once, never in a loop.
    let source = Arc::new(Renewing::new(Some("syt_also_refused_0123")));
    let session = Session::new(hs.url(), source.clone());
    let err = Hs::connector().joined_rooms(&session).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err}");
    assert_eq!(source.asked.load(Ordering::SeqCst), 1);
    assert_eq!(hs.requests_to("joined_rooms").await, 4);
}
