//! What every resolver can reach: the caller, the store, the connector, the cursor key and the
//! limits, plus counters the server exports as metrics.

use std::sync::{Arc, Mutex, PoisonError};

use argus_domain::{Scope, Viewer, policy};
use argus_matrix::Connector;
use argus_store::Store;

use crate::{
    CursorKey, Error, Result,
    cost::Cost,
    oversight::{Journal, Oversight, Read},
};

/// Page sizes and the cost limits of one request (one HTTP request: the operations of a batch
/// share them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `first` when the caller gives none.
    pub default_page_size: u32,
    /// The largest `first` accepted.
    pub max_page_size: u32,
    /// The most items (rooms, messages, versions, audit records, watches, search results) one
    /// request may ask for, in queries and mutation payloads alike: each connection costs its
    /// page size times one plus what each of its nodes asks for, each list its longest length
    /// times what each element asks for, summed over every field and alias of the document.
    pub max_items_per_request: u64,
    /// The most searches one request may run: each ranks up to [`argus_store::RANK_WINDOW`]
    /// matches whatever its page.
    pub max_searches_per_request: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            default_page_size: 50,
            max_page_size: 500,
            max_items_per_request: 10_000,
            max_searches_per_request: 5,
        }
    }
}

/// The services behind every request: the application services ([`argus_ingest::Services`]:
/// store, connector, admission, ingestion caps, the posting policy and counters) and what only
/// the API has (the cursor key, page sizes). Build once, share in an `Arc`.
#[derive(Debug)]
pub struct Services {
    /// The application services (store, connector, admission), shared with the CLI and the
    /// scheduler.
    pub app: Arc<argus_ingest::Services>,
    /// The key that signs pagination cursors.
    pub cursor_key: CursorKey,
    /// Page sizes and the cost limit.
    pub limits: Limits,
    /// The signing keys and the folder of disclosure packages; without them
    /// `discloseTchapRoom` is unavailable.
    pub oversight: Option<Arc<Oversight>>,
    /// Set in one benchmark only: reads of content are not journaled.
    pub(crate) journal_off: std::sync::atomic::AtomicBool,
    /// The open subscriptions, per caller.
    pub(crate) live: crate::schema::subscription::Live,
}

impl Services {
    /// Bundles default application services over `store` and `connector` with default limits
    /// and a random cursor key.
    pub fn new(store: Store, connector: Connector) -> Self {
        Self::over(Arc::new(argus_ingest::Services::new(store, connector)))
    }

    /// The API's services over the application services `app`, with default limits and a
    /// random cursor key.
    pub fn over(app: Arc<argus_ingest::Services>) -> Self {
        Self {
            app,
            cursor_key: CursorKey::random(),
            limits: Limits::default(),
            oversight: None,
            journal_off: std::sync::atomic::AtomicBool::new(false),
            live: crate::schema::subscription::Live::default(),
        }
    }

    /// How many subscriptions (`tchapMessagesAdded`) are open, over every caller: started, and
    /// following what is stored from their start on.
    pub fn open_subscriptions(&self) -> usize {
        self.live.open()
    }

    /// Whether reads of content are journaled (always, but in one benchmark).
    pub(crate) fn journal(&self) -> Journal {
        if self.journal_off.load(std::sync::atomic::Ordering::Relaxed) { Journal::Off } else { Journal::On }
    }

    /// Journals a read of content by `viewer` ([`crate::oversight`]): durable when this
    /// returns; `UNAVAILABLE` when it cannot be written, and then the read must fail.
    pub async fn record_access(&self, viewer: &Viewer, read: &Read<'_>) -> Result<()> {
        self.journal_entry(read.entry(viewer)).await
    }

    /// Journals `entry` (durable when this returns); `UNAVAILABLE` when it cannot be written.
    /// It waits for the journal's writer, which has a connection of its own, without holding a
    /// thread or any of the store's slots: a read gives its slot back before its entry is
    /// committed with those of concurrent reads.
    pub(crate) async fn journal_entry(&self, entry: argus_domain::oversight::AccessEntry) -> Result<()> {
        let journal = self.journal();
        if journal == Journal::Off {
            return Ok(());
        }
        let (done, committed) = tokio::sync::oneshot::channel();
        let queued = self.app.store.record_access_then(&entry, move |result| {
            let _ = done.send(result);
        });
        let result = match queued {
            Ok(()) => committed.await.unwrap_or(Err(argus_store::Error::Unavailable)),
            Err(e) => Err(e),
        };
        result.map(|_| ()).map_err(|e| {
            tracing::error!(error = %e, "the access journal cannot be written: the read is refused");
            Error::Service(argus_ingest::Error::from(argus_store::Error::Unavailable))
        })
    }

    /// Runs a blocking store call on the blocking thread pool, once a pooled connection is free
    /// for it ([`argus_ingest::Services::with_store`]).
    pub async fn with_store<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> argus_store::Result<T> + Send + 'static,
    {
        self.app.with_store(f).await.map_err(Error::from)
    }
}

/// The per-request GraphQL context: who is asking, and the services.
#[derive(Debug, Clone)]
pub struct Context {
    viewer: Viewer,
    services: Arc<Services>,
    /// What the request may still ask for ([`Limits::max_items_per_request`],
    /// [`Limits::max_searches_per_request`]).
    left: Arc<Mutex<Cost>>,
    /// When the caller's token expires, when the context outlives a request (a connection
    /// carrying subscriptions).
    expires_at: Option<time::OffsetDateTime>,
}

impl juniper::Context for Context {}

impl Context {
    /// The context of one request by `viewer` (established from their bearer token).
    pub fn new(viewer: Viewer, services: Arc<Services>) -> Self {
        let limits = services.limits;
        let left = Cost { items: limits.max_items_per_request, searches: limits.max_searches_per_request };
        Self { viewer, services, left: Arc::new(Mutex::new(left)), expires_at: None }
    }

    /// The same context for a caller whose token expires at `at`: what outlives a request (a
    /// subscription) ends then.
    #[must_use]
    pub fn with_expiry(mut self, at: time::OffsetDateTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// When the caller's token expires, when known ([`Self::with_expiry`]).
    pub fn expires_at(&self) -> Option<time::OffsetDateTime> {
        self.expires_at
    }

    /// The caller.
    pub fn viewer(&self) -> &Viewer {
        &self.viewer
    }

    /// The services.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Takes `cost` from what the request may still ask for, or fails with
    /// [`Error::TooCostly`] or [`Error::TooManySearches`] (taking nothing) when that would
    /// exceed a limit.
    pub(crate) fn charge(&self, cost: Cost) -> Result<()> {
        let limits = &self.services.limits;
        let mut left = self.left.lock().unwrap_or_else(PoisonError::into_inner);
        let asked = |wanted: u64, limit: u64, left: u64| wanted.saturating_add(limit.saturating_sub(left));
        let Some(items) = left.items.checked_sub(cost.items) else {
            let limit = limits.max_items_per_request;
            return Err(Error::TooCostly { asked: asked(cost.items, limit, left.items), limit });
        };
        let Some(searches) = left.searches.checked_sub(cost.searches) else {
            let limit = limits.max_searches_per_request;
            return Err(Error::TooManySearches { asked: asked(cost.searches, limit, left.searches), limit });
        };
        *left = Cost { items, searches };
        Ok(())
    }

    /// Refuses with `FORBIDDEN` when the caller lacks `scope`.
    pub fn require(&self, scope: Scope) -> Result<()> {
        policy::require_scope(&self.viewer, scope).map_err(Error::from)
    }
}
