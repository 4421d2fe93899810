//! A next-generation auth server (OAuth 2.0 API, spec v1.15; the Matrix Authentication
//! Service is not installable here) on a wiremock server: `GET
//! /_matrix/client/v1/auth_metadata` names its token endpoint, which renews a chain of token
//! pairs with `grant_type=refresh_token`, each refresh token valid once (`invalid_grant`
//! afterwards, as the real one answers), and counts every use of every refresh token.
//!
//! ```no_run
//! # async fn demo() {
//! use argus_testkit::oauth::OAuthMock;
//! let server = wiremock::MockServer::start().await;
//! let auth = OAuthMock::mount(&server, "client-1", 300).await;
//! assert_eq!(auth.uses(OAuthMock::FIRST_REFRESH_TOKEN), 0);
//! # }
//! ```

use std::{
    collections::HashMap,
    sync::{Arc, Condvar, Mutex, PoisonError},
};

use serde_json::json;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{method, path},
};

/// The priority of these mocks: before a mock homeserver's catch-all responders (wiremock's
/// default is 5), after a test's own overrides at priority 1.
const MOUNTED_FIRST: u8 = 2;

/// What the auth server has issued and seen.
#[derive(Debug, Default)]
struct State {
    /// Uses of each refresh token presented, valid or not.
    uses: HashMap<String, u32>,
    /// The refresh token that renews now.
    refresh_token: String,
    /// The access token issued last.
    access_token: String,
    /// Pairs issued.
    issued: u32,
}

/// Whether the token endpoint holds its answers (after issuing a pair) until released.
type Gate = Arc<(Mutex<bool>, Condvar)>;

/// The mock auth server. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OAuthMock {
    state: Arc<Mutex<State>>,
    gate: Gate,
}

impl OAuthMock {
    /// The access token of the first pair (what a caller starts with).
    pub const FIRST_ACCESS_TOKEN: &'static str = "mat_first_SECRETaccess_0000";
    /// The refresh token of the first pair.
    pub const FIRST_REFRESH_TOKEN: &'static str = "mar_first_SECRETrefresh_0000";
    /// The path of the token endpoint on the mock server.
    pub const TOKEN_PATH: &'static str = "/oauth2/token";

    /// Mounts the metadata and the token endpoint on `server`, for the client `client_id`,
    /// issuing access tokens that live `lifetime_secs`.
    pub async fn mount(server: &MockServer, client_id: &str, lifetime_secs: u64) -> Self {
        let state = State {
            refresh_token: Self::FIRST_REFRESH_TOKEN.to_owned(),
            access_token: Self::FIRST_ACCESS_TOKEN.to_owned(),
            ..State::default()
        };
        let mock = Self { state: Arc::new(Mutex::new(state)), gate: Gate::default() };
        let issuer = format!("{}/", server.uri());
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v1/auth_metadata"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{}/authorize", server.uri()),
                "token_endpoint": format!("{}{}", server.uri(), Self::TOKEN_PATH),
                "registration_endpoint": format!("{}/oauth2/registration", server.uri()),
                "revocation_endpoint": format!("{}/oauth2/revoke", server.uri()),
                "response_types_supported": ["code"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "response_modes_supported": ["query", "fragment"],
                "code_challenge_methods_supported": ["S256"],
            })))
            .with_priority(MOUNTED_FIRST)
            .mount(server)
            .await;
        Mock::given(method("POST"))
            .and(path(Self::TOKEN_PATH))
            .respond_with(TokenEndpoint {
                state: Arc::clone(&mock.state),
                gate: Arc::clone(&mock.gate),
                client_id: client_id.to_owned(),
                lifetime_secs,
            })
            .with_priority(MOUNTED_FIRST)
            .mount(server)
            .await;
        mock
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many times `refresh_token` was presented to the token endpoint.
    pub fn uses(&self, refresh_token: &str) -> u32 {
        self.state().uses.get(refresh_token).copied().unwrap_or(0)
    }

    /// Every refresh token presented, with its uses.
    pub fn all_uses(&self) -> HashMap<String, u32> {
        self.state().uses.clone()
    }

    /// From now on the token endpoint issues a pair (counted at once) but holds its answer
    /// until [`OAuthMock::release`]: a test does something while a renewal is in flight.
    pub fn hold(&self) {
        *self.gate.0.lock().unwrap_or_else(PoisonError::into_inner) = true;
    }

    /// Lets held answers go, and the next ones.
    pub fn release(&self) {
        *self.gate.0.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.gate.1.notify_all();
    }

    /// Pairs issued so far.
    pub fn issued(&self) -> u32 {
        self.state().issued
    }

    /// The access token issued last (the first one before any renewal).
    pub fn access_token(&self) -> String {
        self.state().access_token.clone()
    }

    /// The refresh token that renews now.
    pub fn refresh_token(&self) -> String {
        self.state().refresh_token.clone()
    }

    /// Mounts `GET /_matrix/client/v3/joined_rooms` answering `rooms` to the access token issued
    /// last and `M_UNKNOWN_TOKEN` (401) to any other: a homeserver whose tokens come from this
    /// auth server.
    pub async fn mount_joined_rooms(&self, server: &MockServer, rooms: &[&str]) {
        Mock::given(method("GET"))
            .and(path("/_matrix/client/v3/joined_rooms"))
            .respond_with(CurrentTokenOnly {
                state: Arc::clone(&self.state),
                answer: json!({ "joined_rooms": rooms }),
            })
            .with_priority(MOUNTED_FIRST)
            .mount(server)
            .await;
    }
}

/// The token endpoint.
struct TokenEndpoint {
    state: Arc<Mutex<State>>,
    gate: Gate,
    client_id: String,
    lifetime_secs: u64,
}

impl Respond for TokenEndpoint {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body);
        let form: HashMap<String, String> = reqwest::Url::parse(&format!("http://form/?{body}"))
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default();
        let field = |name: &str| form.get(name).map(String::as_str).unwrap_or_default();
        if field("client_id") != self.client_id {
            return ResponseTemplate::new(401).set_body_json(json!({"error": "invalid_client"}));
        }
        if field("grant_type") != "refresh_token" {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "unsupported_grant_type"}));
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let presented = field("refresh_token").to_owned();
        *state.uses.entry(presented.clone()).or_default() += 1;
        if presented != state.refresh_token {
            return ResponseTemplate::new(400).set_body_json(json!({
                "error": "invalid_grant",
                "error_description": format!("refresh token {presented} was used already"),
            }));
        }
        state.issued += 1;
        let n = state.issued;
        state.access_token = format!("mat_{n}_SECRETaccess_{n:04}");
        state.refresh_token = format!("mar_{n}_SECRETrefresh_{n:04}");
        let answer = json!({
            "access_token": state.access_token,
            "token_type": "Bearer",
            "expires_in": self.lifetime_secs,
            "refresh_token": state.refresh_token,
            "scope": "urn:matrix:org.matrix.msc2967.client:api:*",
        });
        drop(state);
        let mut held = self.gate.0.lock().unwrap_or_else(PoisonError::into_inner);
        while *held {
            held = self.gate.1.wait(held).unwrap_or_else(PoisonError::into_inner);
        }
        ResponseTemplate::new(200).set_body_json(answer)
    }
}

/// A homeserver route open to the access token issued last only.
struct CurrentTokenOnly {
    state: Arc<Mutex<State>>,
    answer: serde_json::Value,
}

impl Respond for CurrentTokenOnly {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let current = self.state.lock().unwrap_or_else(PoisonError::into_inner).access_token.clone();
        let given = request.headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default();
        if given == format!("Bearer {current}") {
            ResponseTemplate::new(200).set_body_json(self.answer.clone())
        } else {
            ResponseTemplate::new(401).set_body_json(json!({
                "errcode": "M_UNKNOWN_TOKEN",
                "error": "Token is not active",
                "soft_logout": false,
            }))
        }
    }
}
