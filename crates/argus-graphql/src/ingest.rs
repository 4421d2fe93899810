//! The ingestion use-case shared by the `ingestTchapRoom` mutation and the `ingest` command:
//! validate -> connector -> store (one transaction) -> audit.
//!
//! Every failure of an admitted call appends a FAILED audit record (never with the token in
//! it) and stores nothing else. Calls refused before anything runs (a token without
//! `tchap:ingest`, malformed input, too many ingestions running or started by the caller) are
//! counted and logged instead: the permanent trail is not for refusals anyone can repeat.

use argus_domain::{
    AccessToken, Classification, FetchReport, HomeserverUrl, IngestionOutcome, IngestionRecord, NewIngestion,
    RoomId, Scope, StoredRoom, Viewer, policy,
};
use argus_matrix::FetchOptions;
use argus_store::IngestionRun;
use time::OffsetDateTime;

use crate::{Error, Metrics, Result, Services};

/// What to ingest, as the caller gave it (validated by [`ingest_room`]). `Debug` shows the
/// token as `[redacted]`.
#[derive(Debug)]
pub struct IngestRequest {
    /// Base URL of the homeserver.
    pub homeserver_url: String,
    /// The caller's Matrix access token, for this call only.
    pub access_token: AccessToken,
    /// The Matrix room id.
    pub room_id: String,
    /// Classification of the room and every message stored.
    pub classification: Classification,
    /// Cap on message events; `None` for the server default.
    pub max_messages: Option<i64>,
    /// The account's recovery key, for this call only: encrypted history is decrypted from the
    /// account's key backup.
    pub recovery_key: Option<argus_domain::Secret>,
}

/// What a successful ingestion did.
#[derive(Debug, Clone)]
pub struct IngestSummary {
    /// The room after commit, as the caller sees it.
    pub room: StoredRoom,
    /// Messages newly stored.
    pub messages_stored: i64,
    /// The SUCCEEDED audit record.
    pub ingestion: IngestionRecord,
    /// The connector's completeness report (`report.messages`: message events received).
    pub report: FetchReport,
}

struct Validated {
    homeserver: HomeserverUrl,
    room_id: RoomId,
    max_messages: u32,
}

fn validate(services: &Services, viewer: &Viewer, request: &IngestRequest) -> Result<Validated> {
    policy::require_scope(viewer, Scope::Ingest)?;
    let homeserver: HomeserverUrl = request.homeserver_url.parse()?;
    let room_id: RoomId = request.room_id.parse()?;
    if !request.access_token.is_well_formed() {
        return Err(Error::InvalidInput("the access token is empty or malformed".into()));
    }
    policy::check_may_classify(viewer, request.classification)?;
    let limits = services.limits;
    let max_messages = match request.max_messages {
        None => limits.default_max_messages.min(limits.hard_max_messages),
        Some(n) => {
            u32::try_from(n).ok().filter(|n| (1..=limits.hard_max_messages).contains(n)).ok_or_else(|| {
                Error::InvalidInput(format!("maxMessages must be between 1 and {}", limits.hard_max_messages))
            })?
        }
    };
    services.connector.check_homeserver(&homeserver)?;
    Ok(Validated { homeserver, room_id, max_messages })
}

/// Runs one ingestion for `viewer`, calling `on_page` after every page the connector reads.
///
/// On failure a FAILED audit record is appended (best effort: if that fails too, it is logged)
/// and the error is returned.
pub async fn ingest_room(
    services: &Services,
    viewer: &Viewer,
    request: IngestRequest,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<IngestSummary> {
    let started_at = OffsetDateTime::now_utc();
    let caller = format!("{}/{}", viewer.org, viewer.actor);
    let admitted = services
        .admission
        .check_caller(&caller)
        .and_then(|()| validate(services, viewer, &request))
        .and_then(|valid| {
            let origin = NewIngestion::origin_of(valid.homeserver.as_str());
            let admitted = services.admission.acquire(&origin)?;
            Ok((valid, admitted))
        });
    let (valid, _admitted) = match admitted {
        Ok(admitted) => admitted,
        Err(error) if is_refusal(&error) => {
            Metrics::add(&services.metrics.ingestions_refused, 1);
            tracing::warn!(
                actor = %viewer.actor, org = %viewer.org, code = error.code(), error = %error,
                "ingestion refused (not audited)"
            );
            return Err(error);
        }
        Err(error) => {
            Metrics::add(&services.metrics.ingestions_failed, 1);
            record_failure(services, viewer, &request, started_at, &error).await;
            return Err(error);
        }
    };
    let result = run(services, viewer, &request, valid, started_at, on_page).await;
    match result {
        Ok(summary) => {
            Metrics::add(&services.metrics.ingestions_succeeded, 1);
            Metrics::add(&services.metrics.messages_fetched, summary.report.messages);
            Metrics::add(
                &services.metrics.messages_stored,
                u64::try_from(summary.messages_stored).unwrap_or(0),
            );
            tracing::info!(
                actor = %viewer.actor, org = %viewer.org, room = %summary.room.room_id,
                fetched = summary.report.messages, stored = summary.messages_stored,
                "ingestion succeeded"
            );
            // New outbox row committed: wake the fusion relay rather than wait for its next poll.
            if let Some(wake) = &services.on_ingested {
                wake.notify_one();
            }
            Ok(summary)
        }
        Err(error) => {
            Metrics::add(&services.metrics.ingestions_failed, 1);
            record_failure(services, viewer, &request, started_at, &error).await;
            Err(error)
        }
    }
}

/// Whether `error` refuses the call before anything ran, without an audit record.
fn is_refusal(error: &Error) -> bool {
    matches!(error, Error::Forbidden(_) | Error::InvalidInput(_) | Error::Busy(_) | Error::TooManyRequests)
}

async fn run(
    services: &Services,
    viewer: &Viewer,
    request: &IngestRequest,
    valid: Validated,
    started_at: OffsetDateTime,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<IngestSummary> {
    // Read forward from where the last ingestion of this room (from the same homeserver) ended.
    let since = {
        let (v, room) = (viewer.clone(), valid.room_id.clone());
        let stored = services.with_store(move |store| store.room(&v, &room)).await?;
        stored.filter(|r| r.homeserver_url == valid.homeserver).and_then(|r| r.resume_token)
    };
    let options = FetchOptions { max_messages: valid.max_messages, since };
    // The room's keys from the account's key backup, held for this run only.
    let keys = match &request.recovery_key {
        Some(text) => {
            let key: argus_matrix::backup::RecoveryKey = text.expose_secret().parse()?;
            let loaded = services
                .connector
                .load_room_keys(&valid.homeserver, &request.access_token, &valid.room_id, &key)
                .await?;
            Some(loaded.keys)
        }
        None => None,
    };
    let snapshot = services
        .connector
        .fetch_room_decrypting(
            &valid.homeserver,
            &request.access_token,
            &valid.room_id,
            &options,
            keys,
            on_page,
        )
        .await?;
    let report = snapshot.report.clone();
    let run = IngestionRun { viewer: viewer.clone(), classification: request.classification, started_at };
    let result = services
        .with_store(move |store| {
            let result = store.record_ingestion(&run, &snapshot);
            // Freeing a large snapshot (every message's strings) takes tens of milliseconds: do
            // it on another blocking thread rather than before the caller gets its answer.
            tokio::task::spawn_blocking(move || drop(snapshot));
            result
        })
        .await?;
    // What the store decided about edits and redactions of earlier-stored messages completes
    // the connector's report.
    let mut report = report;
    report.edits_applied += result.edits_applied;
    report.edits_ignored += result.edits_ignored;
    report.redactions_ignored += result.redactions_ignored;
    Ok(IngestSummary {
        room: result.room,
        messages_stored: result.messages_stored,
        ingestion: result.ingestion,
        report,
    })
}

async fn record_failure(
    services: &Services,
    viewer: &Viewer,
    request: &IngestRequest,
    started_at: OffsetDateTime,
    error: &Error,
) {
    let entry = NewIngestion {
        actor: viewer.actor.clone(),
        org: viewer.org.clone(),
        // The store bounds and sanitises both, and keeps only the URL's origin
        // (`Store::record_failure`).
        room_id: request.room_id.clone(),
        homeserver_url: request.homeserver_url.clone(),
        message_count: 0,
        classification: request.classification,
        started_at,
        finished_at: Some(OffsetDateTime::now_utc()),
        outcome: IngestionOutcome::Failed,
        error: Some(error.message_without(&request.access_token)),
        post: None,
    };
    tracing::warn!(
        actor = %viewer.actor, org = %viewer.org, code = error.code(), error = %entry.error.as_deref().unwrap_or(""),
        "ingestion failed"
    );
    let store = services.store.clone();
    let first = tokio::task::spawn_blocking(move || {
        let result = store.record_failure(&entry);
        (result, store, entry)
    })
    .await;
    match first {
        Ok((Ok(_), ..)) => {}
        // The database is busy or unreachable (often the very reason the ingestion failed): keep
        // trying in the background, so the record is not lost and the caller is not kept waiting.
        Ok((Err(e), store, entry)) if e.is_retryable() => {
            tracing::warn!(error = %e, "the failed ingestion's audit record will be retried");
            tokio::task::spawn_blocking(move || retry_failure_record(&store, &entry));
        }
        Ok((Err(e), ..)) => {
            tracing::error!(error = %e, "cannot record the failed ingestion in the audit trail")
        }
        Err(_) => tracing::error!("the failed ingestion's audit record was abandoned"),
    }
}

/// Writes a FAILED audit record while the store reports a retryable error, with exponential
/// backoff for about half a minute; logs when it gives up.
fn retry_failure_record(store: &argus_store::Store, entry: &NewIngestion) {
    use backon::{BlockingRetryable as _, ExponentialBuilder};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FAILURE_RECORD_FIRST_DELAY)
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_max_times(FAILURE_RECORD_RETRIES);
    let result = (|| store.record_failure(entry))
        .retry(backoff)
        .sleep(std::thread::sleep)
        .when(argus_store::Error::is_retryable)
        .call();
    match result {
        Ok(_) => tracing::info!("the failed ingestion's audit record was written after retries"),
        Err(e) => tracing::error!(error = %e, "cannot record the failed ingestion in the audit trail"),
    }
}

/// First wait before retrying a FAILED audit record the store refused as busy or unavailable.
const FAILURE_RECORD_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Retries of a FAILED audit record (200 ms doubling to 5 s: about half a minute in all).
const FAILURE_RECORD_RETRIES: usize = 8;
