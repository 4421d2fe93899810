//! Shared fixtures: stored rooms, the schema validator, JSON Lines readers.

use std::path::Path;

use anyhow::{Context, Result};
use argus_domain::{
    Classification, Scope, StoredRoom,
    testing::{MessageRecordBuilder, RoomSnapshotBuilder, ViewerBuilder},
};
use argus_fusion::NetworkNode;
use serde_json::Value;
use time::macros::datetime;

/// A stored room of `org` with every optional field set.
pub(crate) fn room(org: &str, room_id: &str, classification: Classification) -> Result<StoredRoom> {
    Ok(StoredRoom {
        id: 1,
        org: org.parse()?,
        room_id: room_id.parse()?,
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse()?,
        name: Some("Cellule de crise".to_owned()),
        topic: Some("Coordination \"inondations\"\nzone sud".to_owned()),
        canonical_alias: Some("#crise:agent.tchap.gouv.fr".to_owned()),
        member_count: 42,
        encrypted: true,
        classification,
        first_seen_at: datetime!(2026-03-01 08:00:00.123 +02:00),
        last_activity_at: Some(datetime!(2026-03-02 07:59:59 UTC)),
        last_ingested_at: datetime!(2026-03-02 08:00 UTC),
        message_count: 1234,
        resume_token: Some("t123-456".to_owned()),
        backfill_token: None,
        history_complete: false,
        predecessor: None,
        successor: None,
        metadata: Default::default(),
        history_since: None,
        watched: false,
    })
}

/// A stored room with every optional field empty (room version 12 id, no messages).
pub(crate) fn bare_room(org: &str) -> Result<StoredRoom> {
    let mut r = room(org, "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM", Classification::Unclassified)?;
    r.name = None;
    r.topic = None;
    r.canonical_alias = None;
    r.last_activity_at = None;
    r.message_count = 0;
    r.member_count = 0;
    r.encrypted = false;
    Ok(r)
}

/// The entity schema, compiled (draft 2020-12, formats checked).
pub(crate) fn validator() -> Result<jsonschema::Validator> {
    let schema: Value = serde_json::from_str(argus_fusion::network_node_schema())?;
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .map_err(|e| anyhow::anyhow!("schema does not compile: {e}"))
}

/// Fails with every schema error of `instance`.
pub(crate) fn assert_valid(validator: &jsonschema::Validator, instance: &Value) -> Result<()> {
    let errors: Vec<String> =
        validator.iter_errors(instance).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    anyhow::ensure!(errors.is_empty(), "entity violates the schema: {errors:?}\n{instance:#}");
    Ok(())
}

/// Every line of a JSON Lines file, parsed.
pub(crate) fn read_jsonl(path: &Path) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).context("reading the JSON Lines file")?;
    text.lines().map(|l| serde_json::from_str(l).context("a line is not JSON")).collect()
}

/// Every line of a JSON Lines file as an entity.
pub(crate) fn read_entities(path: &Path) -> Result<Vec<NetworkNode>> {
    read_jsonl(path)?.into_iter().map(|v| Ok(serde_json::from_value(v)?)).collect()
}

/// A fresh SQLite store in its own directory, removed on drop; reopenable (a "restart").
pub(crate) struct TestStore {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) store: argus_store::Store,
}

impl TestStore {
    pub(crate) fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let store = Self::open_in(dir.path())?;
        Ok(Self { dir, store })
    }

    fn open_in(dir: &Path) -> Result<argus_store::Store> {
        let url = format!("sqlite://{}", dir.join("argus.db").display());
        Ok(argus_store::Store::open(&url)?)
    }

    /// Opens the same database again, as a restarted process would.
    pub(crate) fn reopen(&self) -> Result<argus_store::Store> {
        Self::open_in(self.dir.path())
    }

    /// Where a JSON Lines sink of this test writes.
    pub(crate) fn jsonl_path(&self) -> std::path::PathBuf {
        self.dir.path().join("nodes.jsonl")
    }

    /// Records one successful ingestion of `room_id` by an ingester of `org`; returns the
    /// audit seq (the entity version).
    pub(crate) fn ingest(&self, org: &str, room_id: &str, name: &str, messages: u32) -> Result<i64> {
        ingest(&self.store, org, room_id, name, messages)
    }
}

/// Records one successful ingestion into `store` at RESTRICTED; returns the audit seq.
pub(crate) fn ingest(
    store: &argus_store::Store,
    org: &str,
    room_id: &str,
    name: &str,
    messages: u32,
) -> Result<i64> {
    let levels = (Classification::Secret, Classification::Restricted);
    Ok(ingest_as(store, org, levels, room_id, name, messages)?.ingestion.seq)
}

/// Records one ingestion by an ingester of `org` with clearance `levels.0` at classification
/// `levels.1`.
pub(crate) fn ingest_as(
    store: &argus_store::Store,
    org: &str,
    (clearance, classification): (Classification, Classification),
    room_id: &str,
    name: &str,
    messages: u32,
) -> Result<argus_store::IngestionResult> {
    Ok(store.record_ingestion(&run(org, clearance, classification)?, &snapshot(room_id, name, messages)?)?)
}

fn run(
    org: &str,
    clearance: Classification,
    classification: Classification,
) -> Result<argus_store::IngestionRun> {
    let viewer =
        ViewerBuilder::new(org).actor("ingester").clearance(clearance).scopes([Scope::Ingest]).build();
    Ok(argus_store::IngestionRun { viewer, classification, started_at: time::OffsetDateTime::now_utc() })
}

fn snapshot(room_id: &str, name: &str, messages: u32) -> Result<argus_domain::RoomSnapshot> {
    let base = datetime!(2026-03-01 08:00 UTC);
    let tag = room_id.trim_start_matches('!').replace(':', "_");
    let messages = (0..messages).map(|i| {
        MessageRecordBuilder::new(&format!("${tag}-{i}"))
            .sender("@agent:agent.tchap.gouv.fr")
            .body(format!("message {i}"))
            .sent_at(base + time::Duration::seconds(i64::from(i)))
            .build()
    });
    Ok(RoomSnapshotBuilder::new(room_id).name(name).member_count(3).messages(messages).build())
}
