//! A schema over a fresh SQLite store and a connector allowed to reach the mock homeserver.

use std::sync::Arc;

use argus_domain::{Classification, Scope, Viewer, testing::ViewerBuilder};
use argus_graphql::{Context, Schema, SchemaOptions, Services, build_schema};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::{Store, StoreOptions};
use argus_testkit::homeserver::{MATRIX_TOKEN, MockHomeserver};
use juniper::http::GraphQLRequest;
use serde_json::{Value, json};
use tempfile::TempDir;

pub(crate) use Classification::{Confidential, Restricted, Secret, TopSecret, Unclassified};

pub(crate) struct Harness {
    pub(crate) services: Arc<Services>,
    pub(crate) schema: Schema,
    pub(crate) hs: MockHomeserver,
    dir: TempDir,
}

pub(crate) const ALL: [Scope; 4] = [Scope::Read, Scope::Ingest, Scope::Audit, Scope::AuditChain];

pub(crate) fn viewer(org: &str, clearance: Classification, scopes: &[Scope]) -> Viewer {
    ViewerBuilder::new(org)
        .actor(&format!("agent@{org}"))
        .clearance(clearance)
        .scopes(scopes.iter().copied())
        .build()
}

impl Harness {
    pub(crate) async fn new() -> Self {
        Self::with_options(SchemaOptions::default()).await
    }

    pub(crate) async fn with_options(options: SchemaOptions) -> Self {
        let config = ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            ..ConnectorConfig::default()
        };
        Self::with(options, config, StoreOptions::default()).await
    }

    /// A harness whose store has `store` options (e.g. a short busy timeout).
    pub(crate) async fn with_store_options(store: StoreOptions) -> Self {
        let config = ConnectorConfig {
            allow_private_addresses: vec!["127.0.0.1".into()],
            ..ConnectorConfig::default()
        };
        Self::with(SchemaOptions::default(), config, store).await
    }

    /// A harness whose connector has `config` (e.g. the default policy, with no exception for
    /// the mock homeserver's address).
    pub(crate) async fn with_connector(config: ConnectorConfig) -> Self {
        Self::with(SchemaOptions::default(), config, StoreOptions::default()).await
    }

    async fn with(options: SchemaOptions, config: ConnectorConfig, store: StoreOptions) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let url = format!("sqlite://{}", dir.path().join("argus.db").display());
        let store = tokio::task::spawn_blocking(move || Store::open_with(&url, store))
            .await
            .unwrap_or_else(|e| panic!("join: {e}"))
            .unwrap_or_else(|e| panic!("store: {e}"));
        let connector = Connector::new(config).unwrap_or_else(|e| panic!("connector: {e}"));
        let hs = MockHomeserver::start_any_room().await;
        Self { services: Arc::new(Services::new(store, connector)), schema: build_schema(options), hs, dir }
    }

    /// The application services, for tests that change them before any request.
    pub(crate) fn app_mut(&mut self) -> &mut argus_ingest::Services {
        let services = Arc::get_mut(&mut self.services).unwrap_or_else(|| panic!("services are shared"));
        Arc::get_mut(&mut services.app).unwrap_or_else(|| panic!("application services are shared"))
    }

    /// The store's SQLite file, for tests that tamper with it as someone with file access would.
    pub(crate) fn database(&self) -> std::path::PathBuf {
        self.dir.path().join("argus.db")
    }

    /// Runs a GraphQL request as `viewer`, returning the JSON response (`data`, `errors`).
    pub(crate) async fn run(&self, viewer: &Viewer, query: &str, variables: Value) -> Value {
        let request: GraphQLRequest =
            serde_json::from_value(json!({ "query": query, "variables": variables }))
                .unwrap_or_else(|e| panic!("request: {e}"));
        let context = Context::new(viewer.clone(), Arc::clone(&self.services));
        let response = request.execute(&self.schema, &context).await;
        serde_json::to_value(&response).unwrap_or_else(|e| panic!("response: {e}"))
    }

    /// Stores `snapshot` straight into the store, as an ingestion by `viewer` at `classification`
    /// would.
    pub(crate) async fn store_snapshot(
        &self,
        viewer: &Viewer,
        classification: Classification,
        snapshot: argus_domain::RoomSnapshot,
    ) {
        let run = argus_store::IngestionRun {
            viewer: viewer.clone(),
            classification,
            started_at: time::OffsetDateTime::now_utc(),
        };
        let store = self.services.app.store.clone();
        tokio::task::spawn_blocking(move || store.record_ingestion(&run, &snapshot))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Ingests `room` from the mock homeserver as `viewer` at `classification`.
    pub(crate) async fn ingest(&self, viewer: &Viewer, room: &str, classification: Classification) -> Value {
        self.ingest_with(
            viewer,
            json!({
                "homeserverUrl": self.hs.uri(),
                "accessToken": MATRIX_TOKEN,
                "roomId": room,
                "classification": classification.as_str(),
            }),
        )
        .await
    }

    pub(crate) async fn ingest_with(&self, viewer: &Viewer, input: Value) -> Value {
        self.run(viewer, INGEST, json!({ "input": input })).await
    }
}

pub(crate) const INGEST: &str = r"
mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) {
    messagesFetched messagesStored
    room { id roomId name topic memberCount classification messageCount lastActivityAt lastIngestedAt }
    ingestion { id actor roomId outcome messageCount classification error seq }
  }
}";

/// The `extensions.code` of the first error, if any.
pub(crate) fn error_code(response: &Value) -> Option<&str> {
    response["errors"][0]["extensions"]["code"].as_str()
}

/// Panics with the response when it has errors.
pub(crate) fn ok(response: Value) -> Value {
    assert!(response.get("errors").is_none_or(Value::is_null), "unexpected errors: {response:#}");
    response["data"].clone()
}
