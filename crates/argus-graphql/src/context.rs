//! What every resolver can reach: the caller, the store, the connector, the cursor key and the
//! limits, plus counters the server exports as metrics.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use argus_domain::{Scope, Viewer, policy};
use argus_matrix::Connector;
use argus_store::Store;

use crate::{Admission, CursorKey, Error, Result};

/// Page sizes and ingestion caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `first` when the caller gives none.
    pub default_page_size: u32,
    /// The largest `first` accepted.
    pub max_page_size: u32,
    /// `maxMessages` when the caller gives none.
    pub default_max_messages: u32,
    /// The largest `maxMessages` accepted.
    pub hard_max_messages: u32,
    /// The most items (rooms, messages, audit records) one request may ask for: each
    /// connection costs its page size times one plus what each of its nodes asks for, summed
    /// over every connection and alias of the document.
    pub max_items_per_request: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_page_size: 50,
            max_page_size: 500,
            max_items_per_request: 10_000,
            default_max_messages: argus_matrix::DEFAULT_MAX_MESSAGES,
            hard_max_messages: argus_matrix::HARD_MAX_MESSAGES,
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
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The shared services behind every request. Build once, share in an `Arc`.
#[derive(Debug)]
pub struct Services {
    /// The database.
    pub store: Store,
    /// The Matrix connector.
    pub connector: Connector,
    /// The key that signs pagination cursors.
    pub cursor_key: CursorKey,
    /// Page sizes and caps.
    pub limits: Limits,
    /// Ingestion counters.
    pub metrics: Metrics,
    /// Bounds on ingestions running at once and started per caller.
    pub admission: Admission,
    /// The write-down guard and marking of notes posted into rooms.
    pub post_policy: argus_domain::PostPolicy,
    /// Notified after every successful ingestion (wakes the fusion relay).
    pub on_ingested: Option<Arc<tokio::sync::Notify>>,
    /// One permit per pooled connection: callers past the pool's size wait here, in turn and
    /// without holding a thread, instead of as blocked threads on the pool.
    store_slots: Arc<tokio::sync::Semaphore>,
}

impl Services {
    /// Bundles the services with default limits and a random cursor key.
    pub fn new(store: Store, connector: Connector) -> Self {
        let slots = usize::try_from(store.pool_size()).unwrap_or(1).max(1);
        Self {
            store_slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            store,
            connector,
            cursor_key: CursorKey::random(),
            limits: Limits::default(),
            metrics: Metrics::default(),
            admission: Admission::default(),
            post_policy: argus_domain::PostPolicy::default(),
            on_ingested: None,
        }
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

/// The per-request GraphQL context: who is asking, and the services.
#[derive(Debug, Clone)]
pub struct Context {
    viewer: Viewer,
    services: Arc<Services>,
    /// Items the request may still ask for ([`Limits::max_items_per_request`]).
    items_left: Arc<AtomicU64>,
}

impl juniper::Context for Context {}

impl Context {
    /// The context of one request by `viewer` (established from their bearer token).
    pub fn new(viewer: Viewer, services: Arc<Services>) -> Self {
        let items_left = Arc::new(AtomicU64::new(services.limits.max_items_per_request));
        Self { viewer, services, items_left }
    }

    /// The caller.
    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    /// The services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Takes `items` from what the request may still ask for, or fails with
    /// [`Error::TooCostly`] (before anything is read) when that would exceed the limit.
    pub(crate) fn charge(&self, items: u64) -> Result<()> {
        let limit = self.services.limits.max_items_per_request;
        self.items_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(items))
            .map(drop)
            .map_err(|left| Error::TooCostly { asked: items.saturating_add(limit - left), limit })
    }

    /// `first` when the caller gives none.
    pub(crate) fn default_page_size(&self) -> u32 {
        self.services.limits.default_page_size
    }

    /// Refuses with `FORBIDDEN` when the caller lacks `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        policy::require_scope(&self.viewer, scope).map_err(Error::from)
    }
}
