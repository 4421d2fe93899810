//! The application services: store, connector, admission, limits, the posting policy and
//! counters, built once and shared by every caller (the GraphQL API, the operator CLI, the
//! scheduler).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use argus_matrix::Connector;
use argus_store::Store;

use crate::{Admission, Error, Result};

/// Ingestion caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages one run reads when the caller does not say.
    pub default_max_messages: u32,
    /// The most messages one run may read (a room larger than that is read over several runs).
    pub hard_max_messages: u32,
    /// Pages committed together: memory is bounded by one batch whatever the room's size.
    pub batch_pages: u32,
    /// How long a run holds its journal row without committing; past it, another process
    /// audits the run as interrupted.
    pub run_lease: std::time::Duration,
    /// How long one run of a call (the API, the CLI) may read in all; past it the run stops,
    /// keeps what it committed and is audited FAILED (`DEADLINE_EXCEEDED`). Scheduled runs are
    /// bounded by the connector's own deadline instead.
    pub interactive_run_deadline: std::time::Duration,
    /// The most rooms one call of `ingestJoinedTchapRooms` ingests; the others are reported
    /// as not ingested (`TOO_MANY_ROOMS`).
    pub joined_rooms_per_call: u32,
    /// Failures of one joined-rooms call that get an audit record each; the failures past them
    /// that stored nothing are summarised in one record naming their count.
    pub joined_failures_recorded: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_max_messages: argus_matrix::DEFAULT_MAX_MESSAGES,
            hard_max_messages: argus_matrix::HARD_MAX_STREAMED_MESSAGES,
            batch_pages: argus_matrix::DEFAULT_BATCH_PAGES,
            run_lease: std::time::Duration::from_secs(600),
            interactive_run_deadline: std::time::Duration::from_secs(600),
            joined_rooms_per_call: 200,
            joined_failures_recorded: 20,
        }
    }
}

/// Bounds on watched rooms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// The shortest interval a watch may have, in seconds.
    pub min_interval_secs: u32,
    /// The longest interval a watch may have, in seconds.
    pub max_interval_secs: u32,
    /// The most watches one owner may have (counted over those they may see).
    pub max_per_owner: u32,
    /// The most watches of one organisation, as far as the caller may see them: a caller never
    /// learns from a refusal how many watches exist above their clearance.
    pub max_per_org: u32,
}

impl Default for WatchLimits {
    fn default() -> Self {
        let caps = argus_store::WatchCaps::default();
        Self {
            min_interval_secs: 60,
            max_interval_secs: 7 * 24 * 3600,
            max_per_owner: caps.per_owner,
            max_per_org: caps.per_org,
        }
    }
}

/// Counters of the ingestion use-case, exported by the server as Prometheus metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Ingestions that stored a room.
    pub ingestions_succeeded: AtomicU64,
    /// Ingestions that failed (each wrote a FAILED audit record).
    pub ingestions_failed: AtomicU64,
    /// Ingestion calls refused before anything ran and not audited: a token without
    /// `tchap:ingest`, malformed input, too many running, or too many from one caller.
    pub ingestions_refused: AtomicU64,
    /// Message events received from homeservers.
    pub messages_fetched: AtomicU64,
    /// Messages newly stored.
    pub messages_stored: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The shared services behind every caller. Build once, share in an `Arc`.
#[derive(Debug)]
pub struct Services {
    /// The database.
    pub store: Store,
    /// The Matrix connector.
    pub connector: Connector,
    /// Ingestion caps.
    pub limits: Limits,
    /// Ingestion counters.
    pub metrics: Metrics,
    /// Bounds on ingestions running at once and started per caller.
    pub admission: Admission,
    /// Notified after every ingestion that stored something (wakes the fusion relay).
    pub on_ingested: Option<Arc<tokio::sync::Notify>>,
    /// Notified when an account is watched: wakes the live loops' claimer rather than wait for
    /// its next tick.
    pub on_account_watched: Arc<tokio::sync::Notify>,
    /// Raised after every commit that stored messages (wakes the readers of new messages).
    pub new_messages: crate::NewMessages,
    /// The keys that seal watched rooms' tokens; `None`: watches are disabled.
    pub token_keys: Option<Arc<crate::TokenKeys>>,
    /// Bounds on watched rooms.
    pub watch_limits: WatchLimits,
    /// The write-down guard and marking of notes posted into rooms.
    pub post_policy: argus_domain::PostPolicy,
    /// The files of stored messages: fetched after each run, held and scanned; `None`: only
    /// their references are kept.
    pub media: Option<Arc<crate::Media>>,
    /// One permit per pooled connection: callers past the pool's size wait here, in turn and
    /// without holding a thread, instead of as blocked threads on the pool.
    store_slots: Arc<tokio::sync::Semaphore>,
}

impl Services {
    /// Bundles the services with default limits.
    pub fn new(store: Store, connector: Connector) -> Self {
        let slots = usize::try_from(store.pool_size()).unwrap_or(1).max(1);
        Self {
            store_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            store,
            connector,
            limits: Limits::default(),
            metrics: Metrics::default(),
            admission: Admission::default(),
            on_ingested: None,
            on_account_watched: Arc::new(tokio::sync::Notify::new()),
            new_messages: crate::NewMessages::default(),
            token_keys: None,
            watch_limits: WatchLimits::default(),
            post_policy: argus_domain::PostPolicy::default(),
            media: None,
        }
    }

    /// Whether the session's token may read `room`, asked of the homeserver alone (its state
    /// and newest message): what a caller is told before the archive is asked anything about
    /// the room, so that a room withheld from them and a missing one answer alike.
    pub(crate) async fn may_read_room(
        &self,
        session: &argus_matrix::Session,
        room: &argus_domain::RoomId,
    ) -> Result<()> {
        let options = argus_matrix::FetchOptions { max_messages: 1, ..argus_matrix::FetchOptions::default() };
        self.connector.fetch_room(session, room, &options).await?;
        Ok(())
    }

    /// Runs a blocking store call on the blocking thread pool, once a pooled connection is free
    /// for it (at most the pool's connection timeout, then `Unavailable` as the pool would say).
    pub async fn with_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> argus_store::Result<T> + Send + 'static,
    {
        let permit = tokio::time::timeout(
            self.store.connection_timeout(),
            Arc::clone(&self.store_slots).acquire_owned(),
        )
        .await
        .map_err(|_| Error::Store(argus_store::Error::Unavailable))?
        .map_err(|_| Error::Internal)?;
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let result = f(&store);
            drop(permit);
            result
        })
        .await
        .map_err(|_| Error::Internal)?
        .map_err(Error::from)
    }
}
