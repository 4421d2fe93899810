//! The root subscription: `tchapMessagesAdded`, the messages the caller may see as they are
//! captured.
//!
//! Each delivery is a read of content like `tchapMessages`: read through the store's gate for
//! the caller's organisation and clearance (the message's and its room's,
//! [`argus_store::Store::messages_added`]), and journaled in the access journal (`READ_MESSAGES`,
//! one entry per batch read) before any of it is sent; when the journal cannot be written the
//! subscription ends with `UNAVAILABLE`. A reader waits for the signal raised after every local
//! commit that stored messages ([`argus_ingest::NewMessages`]) or [`POLL_INTERVAL`], whichever
//! comes first, so that what other replicas commit arrives too. The subscription ends when the
//! caller's token expires ([`Context::with_expiry`]), with `UNAUTHENTICATED`. A caller has at
//! most [`MAX_SUBSCRIPTIONS_PER_CALLER`] open at once, over every connection.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use argus_domain::{RoomId, Scope, StoredMessage, Viewer, oversight::AccessAction};
use argus_store::AddedCursor;
use futures::Stream;
use juniper::graphql_subscription;

use super::message::TchapMessage;
use crate::{Context, Error, Result, Services, oversight::Read};

/// How long a subscriber waits, without a local signal, before it looks at the store again
/// (what other replicas committed).
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// The most subscriptions one caller (organisation and actor) has open at once, over every
/// connection; past it a new one fails with `TOO_MANY_SUBSCRIPTIONS`.
pub const MAX_SUBSCRIPTIONS_PER_CALLER: usize = 8;

/// The most messages one read of the store returns (one journal entry each); a full batch is
/// followed by the next read at once.
const BATCH: u32 = 100;

/// Consecutive reads a subscription retries when the store is briefly unavailable, one
/// [`POLL_INTERVAL`] apart, before it ends with `UNAVAILABLE`.
const RETRIES: u32 = 3;

/// The messages of a subscription, or the error that ends it.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<TchapMessage>> + Send>>;

/// The root subscription.
#[derive(Debug, Clone, Copy)]
pub struct Subscription;

#[graphql_subscription(context = Context)]
impl Subscription {
    /// New messages the caller may see, as they are captured; one room or all. Requires scope tchap:read. Each message stored after the subscription started is delivered once, in storage order, when the caller may read it with tchapMessages (their organisation; the message and its room at most their clearance); no roomId means every room they may see, and a room they may not see is followed like a room with no messages. Every delivery is journaled like a read of tchapMessages before it is sent (the subscription ends with UNAVAILABLE when it cannot be). A message edited or redacted later is not delivered again. Ends with UNAUTHENTICATED when the token expires. At most 8 subscriptions per caller at once (TOO_MANY_SUBSCRIPTIONS).
    async fn tchap_messages_added(context: &Context, room_id: Option<String>) -> Result<MessageStream> {
        context.require(Scope::Read)?;
        let room: Option<RoomId> = room_id.map(|r| r.parse()).transpose()?;
        let services = Arc::clone(context.services());
        let mut slot = Slot::take(&services, context.viewer())?;
        let (viewer, start_room) = (context.viewer().clone(), room.clone());
        // The signal first: a commit between the start and the first wait is not waited out.
        let waiter = services.app.new_messages.waiter();
        let cursor = services
            .with_store(move |store| store.messages_added_from_now(&viewer, start_room.as_ref()))
            .await?;
        slot.started();
        let feed = Feed {
            context: context.clone(),
            room,
            cursor: Arc::new(Mutex::new(cursor)),
            waiter,
            ready: VecDeque::new(),
            deadline: context.expires_at().map(deadline_of),
            ended: false,
            _slot: slot,
        };
        Ok(Box::pin(futures::stream::unfold(feed, |mut feed| async move {
            let item = feed.next().await?;
            Some((item, feed))
        })))
    }
}

/// The instant of the tokio clock at `at` (now when it is past).
fn deadline_of(at: time::OffsetDateTime) -> tokio::time::Instant {
    let left = at - time::OffsetDateTime::now_utc();
    let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left
}

/// One subscription's state.
struct Feed {
    context: Context,
    room: Option<RoomId>,
    /// Shared with the blocking read, so that a read that never ran leaves it in place.
    cursor: Arc<Mutex<AddedCursor>>,
    waiter: argus_ingest::NewMessagesWaiter,
    /// Read and journaled, not yet delivered.
    ready: VecDeque<StoredMessage>,
    /// When the caller's token expires.
    deadline: Option<tokio::time::Instant>,
    ended: bool,
    _slot: Slot,
}

impl Feed {
    /// The next message, the error that ends the subscription, or its end.
    async fn next(&mut self) -> Option<Result<TchapMessage>> {
        let mut failures = 0;
        loop {
            if self.ended {
                return None;
            }
            // Nothing leaves past the token's expiry, not even what was read before it (its
            // journal entry then names more than was delivered, as when a client goes away).
            if self.deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                return self.end(Error::TokenExpired);
            }
            if let Some(message) = self.ready.pop_front() {
                return Some(Ok(TchapMessage(message)));
            }
            match self.read().await {
                Ok(batch) if batch.is_empty() => {
                    failures = 0;
                    self.wait().await;
                }
                Ok(batch) => {
                    failures = 0;
                    // Journaled (durable) before anything of it is delivered.
                    let read = Read::of_messages(AccessAction::ReadMessages, None, &batch);
                    let entry = read.entry(self.context.viewer());
                    if let Err(e) = self.context.services().journal_entry(entry).await {
                        return self.end(e);
                    }
                    self.ready.extend(batch);
                }
                Err(e) if e.is_retryable() && failures < RETRIES => {
                    failures += 1;
                    tracing::warn!(error = %e, "a subscription's read failed; retrying");
                    self.wait().await;
                }
                Err(e) => return self.end(e),
            }
        }
    }

    /// Ends the subscription with `error`.
    fn end(&mut self, error: Error) -> Option<Result<TchapMessage>> {
        self.ended = true;
        self.ready.clear();
        Some(Err(error))
    }

    /// The next batch the caller may see.
    async fn read(&self) -> Result<Vec<StoredMessage>> {
        let (viewer, room, cursor) =
            (self.context.viewer().clone(), self.room.clone(), Arc::clone(&self.cursor));
        self.context
            .services()
            .with_store(move |store| {
                let mut cursor = cursor.lock().unwrap_or_else(PoisonError::into_inner);
                store.messages_added(&viewer, room.as_ref(), &mut cursor, BATCH)
            })
            .await
    }

    /// Until messages were committed here, [`POLL_INTERVAL`] passed or the token expired.
    async fn wait(&mut self) {
        let deadline = self.deadline;
        let expiry = async move {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.waiter.committed() => {}
            () = tokio::time::sleep(POLL_INTERVAL) => {}
            () = expiry => {}
        }
    }
}

/// The open subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Live {
    /// Per caller, those open or starting (what the cap counts).
    per_caller: Mutex<HashMap<(String, String), usize>>,
    /// Those started: following the store from their start on.
    open: AtomicUsize,
}

impl Live {
    /// How many subscriptions are open (started).
    pub(crate) fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

/// One open subscription of a caller, given back when it is dropped.
struct Slot {
    services: Arc<Services>,
    caller: (String, String),
    started: bool,
}

impl Slot {
    /// A slot for `viewer`, or `TOO_MANY_SUBSCRIPTIONS`.
    fn take(services: &Arc<Services>, viewer: &Viewer) -> Result<Self> {
        let caller = (viewer.org.as_str().to_owned(), viewer.actor.as_str().to_owned());
        let live = &services.live;
        let mut per_caller = live.per_caller.lock().unwrap_or_else(PoisonError::into_inner);
        let open = per_caller.entry(caller.clone()).or_default();
        if *open >= MAX_SUBSCRIPTIONS_PER_CALLER {
            return Err(Error::TooManySubscriptions { limit: MAX_SUBSCRIPTIONS_PER_CALLER });
        }
        *open += 1;
        Ok(Self { services: Arc::clone(services), caller, started: false })
    }

    /// Counts the subscription as open: it follows the store from now on.
    fn started(&mut self) {
        self.started = true;
        self.services.live.open.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let live = &self.services.live;
        let mut per_caller = live.per_caller.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = per_caller.get_mut(&self.caller) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_caller.remove(&self.caller);
            }
        }
        if self.started {
            live.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
