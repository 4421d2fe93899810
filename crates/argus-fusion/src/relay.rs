//! The outbox relay: drains the store's outbox in id order, delivers each row's entity to the
//! sinks, and marks it delivered, or failed and eventually parked.

use std::{future::Future, sync::Arc, time::Duration};

use argus_store::{OutboxRow, OutboxStatus, Store};
use tokio::sync::Notify;

use crate::{Error, NetworkNode, Result, Sink};

/// How the relay reads the outbox and when it gives up on a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayOptions {
    /// Rows read, delivered and synced per batch.
    pub batch_size: u32,
    /// Failed passes after which a row is parked (no longer delivered, shown by status).
    pub park_after_attempts: u32,
    /// Time between two polls when the outbox is empty or a row is failing.
    pub poll_interval: Duration,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self { batch_size: 500, park_after_attempts: 8, poll_interval: Duration::from_secs(1) }
    }
}

/// Longest wait between two passes while deliveries keep failing.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// How long a pass in progress may go on once shutdown was asked for.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The wait before the next pass after `failures` failed passes in a row: the poll interval,
/// doubled per failure, at most [`MAX_RETRY_DELAY`] (or the poll interval if that is longer).
fn retry_delay(poll_interval: Duration, failures: u32) -> Duration {
    let factor = 1u32.checked_shl(failures.min(16)).unwrap_or(u32::MAX);
    poll_interval.saturating_mul(factor).min(MAX_RETRY_DELAY.max(poll_interval))
}

/// What one [`Relay::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Rows delivered to every sink and marked delivered.
    pub delivered: u64,
    /// Rows whose delivery failed (their attempt count was increased).
    pub failed: u64,
    /// Of the failed rows, those parked by this pass.
    pub parked: u64,
}

impl std::fmt::Display for RelayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} delivered, {} failed, {} parked", self.delivered, self.failed, self.parked)
    }
}

/// The outbox status (pending, delivered, parked rows with their last error), for
/// `argus-tchap fusion status`.
pub fn status(store: &Store) -> Result<OutboxStatus> {
    Ok(store.outbox_status()?)
}

/// Delivers outbox rows to sinks, at least once, in outbox order.
///
/// Each batch: read up to `batch_size` pending rows (id order) of the organisations not held
/// back, deliver each row's entity to every sink, flush every sink, mark the delivered rows,
/// then record the failures. A row that fails holds back the later rows of its organisation
/// for the rest of the pass (the next pass retries it first, so an organisation's rows are
/// never delivered out of order), and only those: one organisation's failing endpoint does not
/// stall the others. A failing row that is parked no longer holds back its organisation. All state lives in the outbox table: a crash between
/// delivery and marking means the row is delivered again after restart (the `Idempotency-Key`
/// and `(id, version)` let receivers drop the duplicate).
///
/// Run one relay per outbox: two relays would deliver the same rows twice (still correct, but
/// wasteful).
pub struct Relay {
    store: Store,
    sinks: Vec<Arc<dyn Sink>>,
    options: RelayOptions,
    wake: Arc<Notify>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("sinks", &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A row that failed in a batch: its organisation, the row and the error.
struct Failure {
    org: argus_domain::OrgId,
    row_id: i64,
    error: Error,
}

impl Relay {
    /// A relay over `store`'s outbox delivering to `sinks` (every sink receives every entity).
    pub fn new(store: Store, sinks: Vec<Arc<dyn Sink>>, options: RelayOptions) -> Self {
        let options = RelayOptions {
            batch_size: options.batch_size.max(1),
            park_after_attempts: options.park_after_attempts.max(1),
            poll_interval: options.poll_interval,
        };
        Self { store, sinks, options, wake: Arc::new(Notify::new()) }
    }

    /// A handle that wakes the running [`Relay::run`] loop before its poll interval, e.g. right
    /// after an ingestion committed: `relay.waker().notify_one()`.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// Drains the outbox: delivers pending rows until none is left or a row fails without
    /// being parked. Safe to call again at any time; used by `fusion relay --once`.
    ///
    /// A relay without sinks delivers nothing and leaves every row pending.
    pub async fn run_once(&self) -> Result<RelayReport> {
        let mut report = RelayReport::default();
        if self.sinks.is_empty() {
            tracing::warn!("fusion relay has no sink configured; outbox rows stay pending");
            return Ok(report);
        }
        // Organisations whose delivery failed in this pass: their later rows wait for the next.
        let mut held_back: Vec<argus_domain::OrgId> = Vec::new();
        loop {
            let (batch_len, delivered, failures) = self.run_batch(&mut report, &held_back).await?;
            let mut parked_any = false;
            let held_before = held_back.len();
            for Failure { org, row_id, error } in failures {
                report.failed += 1;
                let message = error.to_string();
                let park_after = self.options.park_after_attempts;
                let parked = self
                    .blocking(move |store| store.outbox_mark_failed(row_id, &message, park_after))
                    .await?;
                if parked {
                    report.parked += 1;
                    parked_any = true;
                    tracing::error!(row = row_id, error = %error, "outbox row parked after repeated failures");
                } else {
                    tracing::warn!(row = row_id, org = %org, error = %error, "outbox delivery failed; will retry");
                    held_back.push(org);
                }
            }
            // A full batch goes on while it made progress: rows delivered or parked, or an
            // organisation newly held back (whose rows the next batch leaves out, so that the
            // rows of others behind them are reached). Organisations only join `held_back`, so
            // this ends.
            let progress = delivered > 0 || parked_any || held_back.len() > held_before;
            if batch_len < self.options.batch_size as usize || !progress {
                break;
            }
        }
        Ok(report)
    }

    /// Runs [`Relay::run_once`] every `poll_interval` (or when woken) until `shutdown`
    /// completes. This is the server's background task.
    ///
    /// After a pass that failed (a row not delivered, or a store or sink error) the next pass
    /// waits twice as long as the previous one, up to [`MAX_RETRY_DELAY`], and ignores wake-ups,
    /// so a receiver that is down is not hammered and its rows are parked only after a
    /// sustained outage. When `shutdown` completes during a pass, the pass gets
    /// [`SHUTDOWN_GRACE`] to finish; cancelling it after that is safe (rows not yet marked are
    /// delivered again after restart).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut consecutive_failures = 0u32;
        loop {
            let pass = self.run_once();
            tokio::pin!(pass);
            let result = tokio::select! {
                r = &mut pass => r,
                () = &mut shutdown => {
                    if tokio::time::timeout(SHUTDOWN_GRACE, pass).await.is_err() {
                        tracing::warn!("fusion relay pass cancelled at shutdown; unmarked rows will be redelivered");
                    }
                    break;
                }
            };
            let failed = match result {
                Ok(r) => {
                    if r.delivered + r.failed > 0 {
                        tracing::info!(
                            delivered = r.delivered,
                            failed = r.failed,
                            parked = r.parked,
                            "fusion relay pass"
                        );
                    }
                    r.failed > r.parked
                }
                Err(e) => {
                    tracing::warn!(error = %e, "fusion relay pass failed");
                    true
                }
            };
            consecutive_failures = if failed { consecutive_failures.saturating_add(1) } else { 0 };
            let delay = retry_delay(self.options.poll_interval, consecutive_failures);
            tokio::select! {
                () = &mut shutdown => break,
                () = tokio::time::sleep(delay) => {}
                () = self.wake.notified(), if consecutive_failures == 0 => {}
            }
        }
        tracing::info!("fusion relay stopped");
    }

    /// Delivers one batch of the organisations not `held_back`; returns how many rows were
    /// read, how many delivered, and the rows that failed (one per organisation at most: its
    /// later rows in the batch are left for the next pass).
    async fn run_batch(
        &self,
        report: &mut RelayReport,
        held_back: &[argus_domain::OrgId],
    ) -> Result<(usize, usize, Vec<Failure>)> {
        let limit = self.options.batch_size;
        let except = held_back.to_vec();
        let rows = self.blocking(move |store| store.outbox_pending_except(limit, &except)).await?;
        let batch_len = rows.len();
        let mut delivered = Vec::with_capacity(batch_len);
        let mut failures: Vec<Failure> = Vec::new();
        for row in &rows {
            if failures.iter().any(|f| f.org == row.org) {
                continue;
            }
            match self.deliver_row(row).await {
                Ok(()) => delivered.push(row.id),
                Err(error) => failures.push(Failure { org: row.org.clone(), row_id: row.id, error }),
            }
        }
        // A sink that cannot flush (disk full, ...) fails the pass, not a row: nothing of this
        // batch is marked, and every row is delivered again by the next pass.
        self.flush_all().await?;
        let delivered_count = delivered.len();
        if !delivered.is_empty() {
            report.delivered += delivered.len() as u64;
            self.blocking(move |store| store.outbox_mark_delivered_batch(&delivered)).await?;
        }
        Ok((batch_len, delivered_count, failures))
    }

    async fn deliver_row(&self, row: &OutboxRow) -> Result<()> {
        if row.org != row.payload.org || row.room_id != row.payload.room_id {
            return Err(Error::InconsistentRow(row.id));
        }
        let entity = NetworkNode::from_room(&row.payload, row.version);
        for sink in &self.sinks {
            sink.deliver(&entity).await?;
        }
        Ok(())
    }

    async fn flush_all(&self) -> Result<()> {
        for sink in &self.sinks {
            sink.flush().await?;
        }
        Ok(())
    }

    /// Runs a synchronous store call on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> argus_store::Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(&store)).await.map_err(|_| Error::Join)??)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_the_cap() {
        let poll = Duration::from_secs(1);
        let delays: Vec<u64> = (0..12).map(|f| retry_delay(poll, f).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(retry_delay(poll, u32::MAX), MAX_RETRY_DELAY);
        let slow = Duration::from_secs(600);
        assert_eq!(retry_delay(slow, 3), slow, "a poll interval above the cap is kept");
    }
}
