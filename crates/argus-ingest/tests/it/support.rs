//! Fixtures: application services over a fresh store on each backend and the mock homeserver.

use std::sync::Arc;

use argus_domain::{AccessToken, Classification, Scope, Viewer, testing::ViewerBuilder};
use argus_ingest::{
    Services,
    ingest::{IngestRequest, IngestSummary, JoinedRequest, Reach, Trigger},
};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::Store;
use argus_testkit::{
    homeserver::{MATRIX_TOKEN, MockHomeserver},
    postgres::PgCluster,
};

/// Instantiates an async suite written once: for each `async fn name(env: Env)` of the calling
/// module, `sqlite::name` and `postgres::name` (skipped when PostgreSQL is absent).
macro_rules! backend_suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(crate::support::Env::sqlite().await).await; } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() {
                   let Some(env) = crate::support::Env::postgres().await else { return };
                   super::$name(env).await;
               } )*
        }
    };
}
pub(crate) use backend_suite;

/// What keeps a test database alive.
#[derive(Debug)]
#[expect(dead_code, reason = "held for its Drop only")]
pub(crate) enum Guard {
    Sqlite(tempfile::TempDir),
    Postgres(argus_testkit::postgres::TestDatabase),
}

/// Application services over a fresh store, and the mock homeserver.
pub(crate) struct Env {
    pub(crate) services: Arc<Services>,
    pub(crate) hs: MockHomeserver,
    pub(crate) url: String,
    _guard: Guard,
}

/// A connector that reaches the mock homeserver on loopback and reads pages of 10 events.
pub(crate) fn connector() -> Connector {
    Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        page_size: 10,
        ..ConnectorConfig::default()
    })
    .unwrap_or_else(|e| panic!("connector: {e}"))
}

impl Env {
    async fn over(url: String, guard: Guard) -> Self {
        let open = url.clone();
        let store = tokio::task::spawn_blocking(move || Store::open(&open))
            .await
            .unwrap_or_else(|e| panic!("join: {e}"))
            .unwrap_or_else(|e| panic!("store: {e}"));
        let mut services = Services::new(store, connector());
        // Two pages per committed batch: a room of a few dozen messages spans several batches.
        services.limits.batch_pages = 2;
        services.token_keys = Some(Arc::new(token_keys(&[42; 32], &[])));
        services.watch_limits.min_interval_secs = 1;
        Self { services: Arc::new(services), hs: MockHomeserver::start_any_room().await, url, _guard: guard }
    }

    pub(crate) async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let url = format!("sqlite://{}", dir.path().join("argus.db").display());
        Self::over(url, Guard::Sqlite(dir)).await
    }

    pub(crate) async fn postgres() -> Option<Self> {
        let db = tokio::task::spawn_blocking(argus_testkit::postgres::fresh_database).await.ok()??;
        let url = db.url().to_owned();
        Some(Self::over(url, Guard::Postgres(db)).await)
    }

    /// Over a fresh database of `cluster` (one of the test's own, which it may stop and start).
    pub(crate) async fn postgres_on(cluster: &'static PgCluster) -> Self {
        let db = tokio::task::spawn_blocking(move || cluster.create_database())
            .await
            .unwrap_or_else(|e| panic!("join: {e}"))
            .unwrap_or_else(|e| panic!("database: {e:#}"));
        let url = db.url().to_owned();
        Self::over(url, Guard::Postgres(db)).await
    }

    /// Runs one ingestion of `room` by `viewer` at RESTRICTED.
    pub(crate) async fn ingest(
        &self,
        viewer: &Viewer,
        room: &str,
        max_messages: i64,
        reach: Reach,
    ) -> argus_ingest::Result<IngestSummary> {
        let request = request(self.hs.uri(), room, max_messages, reach);
        argus_ingest::ingest::ingest_room(&self.services, viewer, request, &mut |_| {}).await
    }

    /// The same database and homeserver with other application services (`change` edits a
    /// fresh copy of them: another replica, other keys).
    pub(crate) fn replica(&self, change: impl FnOnce(&mut Services)) -> Arc<Services> {
        let mut services = Services::new(self.services.store.clone(), connector());
        services.limits = self.services.limits;
        services.watch_limits = self.services.watch_limits;
        services.token_keys = self.services.token_keys.clone();
        change(&mut services);
        Arc::new(services)
    }

    /// Makes the homeserver let `token` read any room once (its state and a first, empty
    /// page), ahead of the any-room responder: the homeserver accepted the token when a watch
    /// was made with it, and answers as the responder does (refuses it, rate-limits the room)
    /// afterwards.
    pub(crate) async fn accept_once(&self, token: &str) {
        use wiremock::{
            Mock, ResponseTemplate,
            matchers::{header, method, path_regex},
        };
        let answers = [
            ("/state$", serde_json::json!([])),
            ("/messages$", serde_json::json!({ "chunk": [], "start": "t0" })),
        ];
        for (endpoint, body) in answers {
            Mock::given(method("GET"))
                .and(header("authorization", format!("Bearer {token}").as_str()))
                .and(path_regex(endpoint))
                .respond_with(ResponseTemplate::new(200).set_body_json(body))
                .up_to_n_times(1)
                .with_priority(1)
                .mount(self.hs.server())
                .await;
        }
    }

    /// The organisation's audit records as `viewer` sees them, oldest first (at most 200).
    pub(crate) async fn trail(&self, viewer: &Viewer) -> Vec<argus_domain::IngestionRecord> {
        let v = viewer.clone();
        let first = argus_domain::PageRequest::<argus_store::IngestionCursor> { first: 200, after: None };
        let mut items = self.with_store(move |s| s.ingestions(&v, &first)).await.items;
        items.reverse();
        items
    }

    /// A joined-rooms call of the mock homeserver's rooms with `token`, at RESTRICTED.
    pub(crate) fn joined(&self, token: &str) -> JoinedRequest {
        JoinedRequest {
            homeserver_url: self.hs.uri(),
            access_token: AccessToken::new(token),
            account: None,
            classification: Classification::Restricted,
            max_messages: None,
            recovery_key: None,
            refresh_token: None,
            oauth_client_id: None,
            since: None,
        }
    }

    /// Runs a blocking store call.
    pub(crate) async fn with_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> argus_store::Result<T> + Send + 'static,
    ) -> T {
        self.services.with_store(f).await.unwrap_or_else(|e| panic!("store: {e}"))
    }
}

/// A manual ingestion of `room` at RESTRICTED from the mock homeserver at `homeserver`, with
/// its token.
pub(crate) fn request(homeserver: String, room: &str, max_messages: i64, reach: Reach) -> IngestRequest {
    IngestRequest {
        homeserver_url: homeserver,
        access_token: AccessToken::new(MATRIX_TOKEN),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        max_messages: Some(max_messages),
        recovery_key: None,
        reach,
        trigger: Trigger::Manual,
        follow_upgrades: false,
    }
}

/// A manual ingestion of `room` from `homeserver` with `token`, at RESTRICTED, the server's
/// default cap.
pub(crate) fn request_from(
    homeserver: &str,
    token: &str,
    room: &str,
    follow_upgrades: bool,
) -> IngestRequest {
    IngestRequest {
        homeserver_url: homeserver.to_owned(),
        access_token: AccessToken::new(token),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: None,
        room_id: room.to_owned(),
        classification: Classification::Restricted,
        max_messages: None,
        recovery_key: None,
        reach: Reach::Current,
        trigger: Trigger::Manual,
        follow_upgrades,
    }
}

/// Token keys: `current` seals, `previous` only open.
pub(crate) fn token_keys(current: &[u8], previous: &[&[u8]]) -> argus_ingest::TokenKeys {
    let key = |k: &[u8]| argus_ingest::TokenKey::new(k).unwrap_or_else(|e| panic!("{e}"));
    argus_ingest::TokenKeys::new(key(current), previous.iter().map(|k| key(k)).collect())
}

/// An analyst of `org` cleared SECRET with every scope.
pub(crate) fn analyst(org: &str) -> Viewer {
    ViewerBuilder::new(org).actor("alice").scopes([Scope::Ingest, Scope::Read, Scope::Audit]).build()
}
