//! The outbox relay over real SQLite stores: order, at-least-once across a crash, retries,
//! parking, per-organisation routing, and no outbox row for a failed ingestion.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use argus_domain::{Classification, IngestionOutcome, NewIngestion};
use argus_fusion::{
    JsonLinesSink, NetworkNode, Relay, RelayOptions, RelayReport, Sink, SinkFuture, WebhookSink, status,
};
use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};

use crate::{
    support::{TestStore, assert_valid, ingest_as, read_entities, read_jsonl, validator},
    webhook::{fast_options, hook_url, orgs_received},
};

fn options(park_after_attempts: u32) -> RelayOptions {
    RelayOptions { batch_size: 2, park_after_attempts, poll_interval: Duration::from_millis(20) }
}

fn webhook(default: Option<&MockServer>, per_org: &[(&str, &MockServer)]) -> anyhow::Result<Arc<dyn Sink>> {
    let default = default.map(hook_url).transpose()?;
    let org_urls = per_org
        .iter()
        .map(|(org, server)| Ok((org.parse()?, hook_url(server)?)))
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    Ok(Arc::new(WebhookSink::new(default, org_urls, fast_options())?))
}

async fn keys_at(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| r.headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn delivers_every_ingestion_in_order_and_conforming() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    let v1 = t.ingest("dgsi", "!a:agent.tchap.gouv.fr", "first", 2)?;
    let v2 = t.ingest("dgsi", "!b:agent.tchap.gouv.fr", "second", 0)?;
    let v3 = t.ingest("dgsi", "!a:agent.tchap.gouv.fr", "first, renamed", 5)?;
    t.ingest("anssi", "!a:agent.tchap.gouv.fr", "other org", 1)?;
    assert_eq!(status(&t.store)?.pending, 4);

    let sink: Arc<dyn Sink> = Arc::new(JsonLinesSink::new(t.jsonl_path()));
    let relay = Relay::new(t.store.clone(), vec![sink], options(3));
    assert_eq!(relay.run_once().await?, RelayReport { delivered: 4, failed: 0, parked: 0 });
    assert_eq!(relay.run_once().await?, RelayReport::default(), "nothing left to deliver");

    let entities = read_entities(&t.jsonl_path())?;
    let summary: Vec<_> =
        entities.iter().map(|e| (e.organisation.as_str(), e.version, e.name.as_deref())).collect();
    assert_eq!(
        summary,
        [
            ("dgsi", v1, Some("first")),
            ("dgsi", v2, Some("second")),
            ("dgsi", v3, Some("first, renamed")),
            ("anssi", 1, Some("other org")),
        ]
    );
    assert!(v1 < v2 && v2 < v3);
    // Same room, same org: same id, newer version; same room in another org: another id.
    assert_eq!(entities[0].id, entities[2].id);
    assert_ne!(entities[0].id, entities[3].id);
    assert_eq!((entities[0].message_count, entities[2].message_count), (2, 5));
    assert!(entities[0].last_activity.is_some() && entities[1].last_activity.is_none());
    assert!(entities.iter().all(|e| e.classification == Classification::Restricted));

    let validator = validator()?;
    for line in read_jsonl(&t.jsonl_path())? {
        assert_valid(&validator, &line)?;
    }
    let s = status(&t.store)?;
    assert_eq!((s.pending, s.delivered, s.parked), (0, 4, 0));
    Ok(())
}

/// A sink that never completes: the process "crashes" while it delivers.
#[derive(Default)]
struct Hang {
    /// Signalled when a delivery reaches this sink.
    reached: tokio::sync::Notify,
}

impl Sink for Hang {
    fn name(&self) -> &'static str {
        "hang"
    }
    fn deliver<'a>(&'a self, _: &'a NetworkNode) -> SinkFuture<'a> {
        self.reached.notify_one();
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn redelivers_after_a_crash_between_send_and_mark() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.ingest("dgsi", "!a:agent.tchap.gouv.fr", "room", 1)?;
    let receiver = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;

    // First process: the webhook receives the entity, then the process dies before marking it.
    let hang = Arc::new(Hang::default());
    let crashing =
        Relay::new(t.store.clone(), vec![webhook(Some(&receiver), &[])?, hang.clone()], options(3));
    tokio::select! {
        r = crashing.run_once() => anyhow::bail!("the relay was expected to hang: {r:?}"),
        () = hang.reached.notified() => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => anyhow::bail!("the relay never reached the sink"),
    }
    drop(crashing);
    assert_eq!(keys_at(&receiver).await.len(), 1);
    assert_eq!(status(&t.store)?.pending, 1, "the row was not marked");

    // Restarted process over the same database: the row is delivered again, and marked.
    let restarted = Relay::new(t.reopen()?, vec![webhook(Some(&receiver), &[])?], options(3));
    assert_eq!(restarted.run_once().await?.delivered, 1);
    let keys = keys_at(&receiver).await;
    assert_eq!(keys.len(), 2);
    assert_eq!(keys[0], keys[1], "the receiver can drop the duplicate by its Idempotency-Key");
    let s = status(&t.reopen()?)?;
    assert_eq!((s.pending, s.delivered), (0, 1));
    assert_eq!(restarted.run_once().await?, RelayReport::default());
    Ok(())
}

#[tokio::test]
async fn webhook_retries_within_a_pass_then_delivers() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.ingest("dgsi", "!a:agent.tchap.gouv.fr", "room", 0)?;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(5)))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&receiver).await;
    let relay = Relay::new(t.store.clone(), vec![webhook(Some(&receiver), &[])?], options(3));
    assert_eq!(relay.run_once().await?, RelayReport { delivered: 1, failed: 0, parked: 0 });
    assert_eq!(keys_at(&receiver).await.len(), 3, "500, timeout, then 200");
    Ok(())
}

/// One organisation's failing endpoint holds back its own later rows (its order is kept) and
/// no other organisation's; after repeated failures its row is parked and its next row goes.
#[tokio::test]
async fn parks_a_row_after_repeated_failures_without_blocking_the_rest() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.ingest("broken-org", "!a:agent.tchap.gouv.fr", "rejected", 0)?;
    t.ingest("dgsi", "!b:agent.tchap.gouv.fr", "fine", 0)?;
    t.ingest("broken-org", "!c:agent.tchap.gouv.fr", "after the rejected one", 0)?;
    let (rejecting, accepting) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400)).mount(&rejecting).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&accepting).await;
    let sinks = vec![webhook(Some(&accepting), &[("broken-org", &rejecting)])?];
    let relay = Relay::new(t.store.clone(), sinks, options(3));

    // Pass 1: broken-org's first row fails and holds back its second; dgsi's row goes through.
    assert_eq!(relay.run_once().await?, RelayReport { delivered: 1, failed: 1, parked: 0 });
    assert_eq!(keys_at(&accepting).await.len(), 1);
    let s = status(&t.store)?;
    assert_eq!((s.pending, s.delivered, s.parked), (2, 1, 0));
    // Pass 2: the same row fails again; its organisation's next row still waits.
    assert_eq!(relay.run_once().await?, RelayReport { delivered: 0, failed: 1, parked: 0 });
    assert_eq!(keys_at(&rejecting).await.len(), 2, "the held-back row was never sent");
    // Pass 3: parked, and broken-org's next row is tried (and fails in its turn).
    assert_eq!(relay.run_once().await?, RelayReport { delivered: 0, failed: 2, parked: 1 });
    let s = status(&t.store)?;
    assert_eq!((s.pending, s.delivered, s.parked), (1, 1, 1));
    let parked = &s.parked_rows[0];
    assert_eq!(parked.org.as_str(), "broken-org");
    assert_eq!(parked.attempts, 3);
    assert_eq!(parked.last_error.as_deref(), Some("webhook answered HTTP 400"));
    assert_eq!(keys_at(&rejecting).await.len(), 4, "4xx is not retried within a pass");
    Ok(())
}

/// A failing organisation with more pending rows than a batch holds does not hide the rows of
/// another organisation queued behind them.
#[tokio::test]
async fn a_failing_organisation_with_a_full_batch_does_not_hide_the_others() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    for i in 0..5 {
        t.ingest("broken-org", &format!("!b{i}:agent.tchap.gouv.fr"), "rejected", 0)?;
    }
    t.ingest("dgsi", "!d:agent.tchap.gouv.fr", "behind them", 0)?;
    let (rejecting, accepting) = (MockServer::start().await, MockServer::start().await);
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(400)).mount(&rejecting).await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&accepting).await;
    let sinks = vec![webhook(Some(&accepting), &[("broken-org", &rejecting)])?];
    let relay = Relay::new(t.store.clone(), sinks, RelayOptions { batch_size: 2, ..options(10) });
    assert_eq!(relay.run_once().await?, RelayReport { delivered: 1, failed: 1, parked: 0 });
    assert_eq!(keys_at(&accepting).await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn entities_go_only_to_their_organisations_webhook() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    for (org, room) in
        [("org-a", "!a:x.org"), ("org-b", "!b:x.org"), ("org-a", "!c:x.org"), ("org-b", "!a:x.org")]
    {
        t.ingest(org, room, room, 0)?;
    }
    let (a, b) = (MockServer::start().await, MockServer::start().await);
    for s in [&a, &b] {
        Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(s).await;
    }
    let relay =
        Relay::new(t.store.clone(), vec![webhook(None, &[("org-a", &a), ("org-b", &b)])?], options(3));
    assert_eq!(relay.run_once().await?.delivered, 4);
    assert_eq!(orgs_received(&a).await, ["org-a", "org-a"]);
    assert_eq!(orgs_received(&b).await, ["org-b", "org-b"]);
    Ok(())
}

#[tokio::test]
async fn a_failed_ingestion_leaves_no_outbox_row() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.store.record_failure(&NewIngestion {
        actor: "ingester".parse()?,
        org: "dgsi".parse()?,
        room_id: "!a:agent.tchap.gouv.fr".to_owned(),
        homeserver_url: "https://matrix.agent.tchap.gouv.fr".to_owned(),
        message_count: 0,
        classification: Classification::Restricted,
        started_at: time::OffsetDateTime::now_utc(),
        finished_at: Some(time::OffsetDateTime::now_utc()),
        outcome: IngestionOutcome::Failed,
        error: Some("homeserver unreachable".to_owned()),
        post: None,
        scheduled: false,
        rehomed_from: None,
    })?;
    let s = status(&t.store)?;
    assert_eq!((s.pending, s.delivered, s.parked), (0, 0, 0));
    let relay = Relay::new(t.store.clone(), vec![Arc::new(JsonLinesSink::new(t.jsonl_path()))], options(3));
    assert_eq!(relay.run_once().await?, RelayReport::default());
    assert!(!t.jsonl_path().exists());
    Ok(())
}

#[tokio::test]
async fn an_ingestion_rolled_back_mid_transaction_leaves_no_outbox_row() -> anyhow::Result<()> {
    use Classification::{Restricted, Secret};
    let t = TestStore::new()?;
    ingest_as(&t.store, "dgsi", (Secret, Secret), "!a:x.org", "secret room", 1)?;
    // The room is now SECRET: an ingester cleared RESTRICTED is refused after the room upsert
    // ran inside the transaction, which is rolled back whole (room name, messages, outbox).
    let refused = ingest_as(&t.store, "dgsi", (Restricted, Restricted), "!a:x.org", "lowered", 3);
    let err = refused.err().ok_or_else(|| anyhow::anyhow!("the ingestion was accepted"))?;
    assert!(matches!(err.downcast_ref::<argus_store::Error>(), Some(argus_store::Error::Withheld)), "{err}");
    let relay = Relay::new(t.store.clone(), vec![Arc::new(JsonLinesSink::new(t.jsonl_path()))], options(3));
    assert_eq!(relay.run_once().await?.delivered, 1);
    let entities = read_entities(&t.jsonl_path())?;
    assert_eq!(entities.len(), 1, "only the successful ingestion produced an entity");
    assert_eq!(entities[0].name.as_deref(), Some("secret room"));
    assert_eq!(entities[0].message_count, 1);
    assert_eq!(entities[0].classification, Secret);
    Ok(())
}

#[tokio::test]
async fn background_loop_delivers_until_shutdown() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    let sink: Arc<dyn Sink> = Arc::new(JsonLinesSink::new(t.jsonl_path()));
    let relay = Relay::new(t.store.clone(), vec![sink], options(3));
    let waker = relay.waker();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run(async {
        let _ = stop_rx.await;
    }));
    t.ingest("dgsi", "!a:x.org", "one", 0)?;
    waker.notify_one();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while status(&t.store)?.delivered < 1 {
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the loop did not deliver");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(5), task).await??;
    assert_eq!(read_entities(&t.jsonl_path())?.len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_relay_without_sinks_leaves_rows_pending() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.ingest("dgsi", "!a:x.org", "one", 0)?;
    let relay = Relay::new(t.store.clone(), Vec::new(), options(3));
    assert_eq!(relay.run_once().await?, RelayReport::default());
    assert_eq!(status(&t.store)?.pending, 1, "nothing may be marked delivered without a sink");
    Ok(())
}

/// A sink whose flush always fails, like a full disk.
struct FullDisk;

impl Sink for FullDisk {
    fn name(&self) -> &'static str {
        "full-disk"
    }
    fn deliver<'a>(&'a self, _: &'a NetworkNode) -> SinkFuture<'a> {
        Box::pin(async { Ok(()) })
    }
    fn flush(&self) -> SinkFuture<'_> {
        Box::pin(async { Err(std::io::Error::other("no space left on device").into()) })
    }
}

#[tokio::test]
async fn a_sink_that_cannot_flush_fails_the_pass_not_the_rows() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.ingest("dgsi", "!a:x.org", "one", 0)?;
    t.ingest("dgsi", "!b:x.org", "two", 0)?;
    let relay = Relay::new(t.store.clone(), vec![Arc::new(FullDisk)], options(1));
    for _ in 0..3 {
        assert!(relay.run_once().await.is_err());
    }
    let s = status(&t.store)?;
    assert_eq!((s.pending, s.delivered, s.parked), (2, 0, 0), "no row is marked or parked");
    Ok(())
}

#[tokio::test]
async fn shutdown_stops_the_loop_even_while_a_sink_hangs() -> anyhow::Result<()> {
    let t = TestStore::new()?;
    t.ingest("dgsi", "!a:x.org", "one", 0)?;
    let relay = Relay::new(t.store.clone(), vec![Arc::new(Hang::default())], options(3));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let started = tokio::time::Instant::now();
    let task = tokio::spawn(relay.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop_tx.send(());
    tokio::time::timeout(argus_fusion::SHUTDOWN_GRACE + Duration::from_secs(5), task).await??;
    assert!(started.elapsed() >= argus_fusion::SHUTDOWN_GRACE, "the pass was given its grace period");
    assert_eq!(status(&t.store)?.pending, 1, "the interrupted row is delivered after restart");
    Ok(())
}
