//! The audit records the use-cases append: a run's own (through the store's run journal), a
//! call that failed before its run began, and a post, sent or refused. The records of calls
//! are built here from who called and what they asked for ([`Call::record`]), so that a run
//! and a post say the same things the same way and never hold the token.

use argus_domain::{AccessToken, Classification, IngestionOutcome, NewIngestion, PostEvidence, Viewer};
use argus_store::RunTicket;
use time::OffsetDateTime;

use crate::{Error, Result, Services};

/// One audited call, as the caller gave it.
pub(crate) struct Call<'a> {
    /// Who called.
    pub(crate) viewer: &'a Viewer,
    /// The homeserver as requested; the store keeps only its origin.
    pub(crate) homeserver_url: &'a str,
    /// The room id as requested; the store bounds and sanitises it.
    pub(crate) room_id: &'a str,
    /// The classification asked for.
    pub(crate) classification: Classification,
    /// When the call began.
    pub(crate) started_at: OffsetDateTime,
    /// The token of the call: scrubbed from the error should it ever appear there.
    pub(crate) token: &'a AccessToken,
    /// Whether the scheduler made it, for a watched room.
    pub(crate) scheduled: bool,
}

impl Call<'_> {
    /// The record of the call, ending now: SUCCEEDED when `error` is `None`, else FAILED with
    /// the error's public message.
    pub(crate) fn record(&self, error: Option<&Error>, post: Option<PostEvidence>) -> NewIngestion {
        NewIngestion {
            actor: self.viewer.actor.clone(),
            org: self.viewer.org.clone(),
            // The store bounds and sanitises both, and keeps only the URL's origin
            // (`Store::record_failure`).
            room_id: self.room_id.to_owned(),
            homeserver_url: self.homeserver_url.to_owned(),
            message_count: 0,
            classification: self.classification,
            started_at: self.started_at,
            finished_at: Some(OffsetDateTime::now_utc()),
            outcome: if error.is_some() { IngestionOutcome::Failed } else { IngestionOutcome::Succeeded },
            error: error.map(|e| e.message_without(self.token)),
            post,
            scheduled: self.scheduled,
            rehomed_from: None,
        }
    }
}

/// Appends the run's audit record; while the store is busy or unreachable, retried in the
/// background (the run's lease covers a process that stops meanwhile).
pub(crate) async fn finish(
    services: &Services,
    ticket: &RunTicket,
    error: Option<String>,
) -> Result<argus_store::RunRecord> {
    let (t, e) = (ticket.clone(), error.clone());
    match services.with_store(move |store| store.finish_run(&t, e)).await {
        Err(Error::Store(store_error)) if store_error.is_retryable() => {
            tracing::warn!(error = %store_error, "the run's audit record will be retried");
            let (store, ticket) = (services.store.clone(), ticket.clone());
            tokio::task::spawn_blocking(move || {
                retry_record(|| store.finish_run(&ticket, error.clone()).map(drop))
            });
            Err(Error::Store(store_error))
        }
        other => other,
    }
}

/// What the record of a call over several rooms names as its room.
pub(crate) const SEVERAL_ROOMS: &str = "*";

/// Appends the FAILED record of a run that failed before it began (best effort: retried in the
/// background while the store is busy or unreachable).
pub(crate) async fn record_failure(services: &Services, call: &Call<'_>, error: &Error) {
    let entry = call.record(Some(error), None);
    tracing::warn!(
        actor = %call.viewer.actor, org = %call.viewer.org, code = error.code(), error = %entry.error.as_deref().unwrap_or(""),
        "ingestion failed"
    );
    append_failure(services, entry).await;
}

/// Appends one FAILED record for failures of `call` that were not recorded one by one, its
/// `message` naming how many and why (best effort, as [`record_failure`]).
pub(crate) async fn record_summary(services: &Services, call: &Call<'_>, message: String) {
    let mut entry = call.record(None, None);
    entry.outcome = IngestionOutcome::Failed;
    entry.error = Some(call.token.scrub(message));
    tracing::warn!(
        actor = %call.viewer.actor, org = %call.viewer.org, error = %entry.error.as_deref().unwrap_or(""),
        "failures summarised in one audit record"
    );
    append_failure(services, entry).await;
}

/// Appends a FAILED record, retried in the background while the store is busy or unreachable.
async fn append_failure(services: &Services, entry: NewIngestion) {
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
            tokio::task::spawn_blocking(move || retry_record(|| store.record_failure(&entry).map(drop)));
        }
        Ok((Err(e), ..)) => {
            tracing::error!(error = %e, "cannot record the failed ingestion in the audit trail")
        }
        Err(_) => tracing::error!("the failed ingestion's audit record was abandoned"),
    }
}

/// Writes an audit record while the store reports a retryable error, with exponential backoff
/// for about half a minute; logs when it gives up.
fn retry_record(write: impl FnMut() -> argus_store::Result<()>) {
    use backon::{BlockingRetryable as _, ExponentialBuilder};
    let backoff = ExponentialBuilder::default()
        .with_min_delay(FAILURE_RECORD_FIRST_DELAY)
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_max_times(FAILURE_RECORD_RETRIES);
    let result = write.retry(backoff).sleep(std::thread::sleep).when(argus_store::Error::is_retryable).call();
    match result {
        Ok(()) => tracing::info!("the audit record was written after retries"),
        Err(e) => tracing::error!(error = %e, "cannot write the audit record"),
    }
}

/// First wait before retrying an audit record the store refused as busy or unavailable.
const FAILURE_RECORD_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(200);

/// Retries of an audit record (200 ms doubling to 5 s: about half a minute in all).
const FAILURE_RECORD_RETRIES: usize = 8;
