//! The connector: reads one room (state, then timeline pages) into a [`RoomSnapshot`].

use std::{collections::HashSet, sync::Arc};

use argus_crypto::Decryptor;
use argus_domain::{FetchReport, HistoryPosition, HomeserverUrl, RoomId, RoomSnapshot};
use ruma::{OwnedRoomId, api::Direction};
use tracing::Instrument as _;

use crate::{
    ConnectorConfig, Error, FetchOptions, HARD_MAX_MESSAGES, Result, Session,
    api::{get_event_by_timestamp, get_message_events, get_room_event, get_state_events, joined_rooms},
    config::{EVENTS_PER_MESSAGE, MAX_PAGE_SIZE},
    normalise::Normaliser,
    transport::{HttpClient, Target},
};

/// The most redactions of earlier-stored messages one read confirms with the homeserver (one
/// request each); the others stay unconfirmed.
const MAX_REDACTION_CONFIRMATIONS: usize = 200;

/// Reads Matrix rooms from homeservers under one outbound policy.
///
/// Cheap to clone (the HTTP clients and configuration are shared); `Send + Sync`.
#[derive(Debug, Clone)]
pub struct Connector {
    inner: Arc<HttpClient>,
}

impl Connector {
    /// Builds a connector; fails with [`Error::InvalidInput`] on an inconsistent configuration
    /// (page size outside 1..=1000, zero caps or timeouts, an unparsable address exception, an
    /// identity server that is not an http(s) URL).
    pub fn new(config: ConnectorConfig) -> Result<Self> {
        let invalid = |what: &str| Err(Error::InvalidInput(format!("connector configuration: {what}")));
        if config.page_size == 0 || config.page_size > MAX_PAGE_SIZE {
            return invalid("page_size must be 1 to 1000");
        }
        if config.max_pages == 0 || config.max_response_bytes == 0 {
            return invalid("max_pages and max_response_bytes must be positive");
        }
        if config.connect_timeout.is_zero()
            || config.request_timeout.is_zero()
            || config.run_deadline.is_zero()
            || config.stream_deadline.is_zero()
            || config.media_idle_timeout.is_zero()
        {
            return invalid("timeouts must be positive");
        }
        crate::discovery::check_identity_server(&config)?;
        Ok(Self { inner: Arc::new(HttpClient::new(config)?) })
    }

    /// The HTTP clients and outbound policy.
    pub(crate) fn http(&self) -> &HttpClient {
        &self.inner
    }

    /// The configuration this connector was built with.
    pub fn config(&self) -> &ConnectorConfig {
        &self.inner.config
    }

    /// Checks a homeserver URL against the outbound policy alone (scheme, user information,
    /// allow-list, IP literals), before any connection. Host names are checked again, on every
    /// address they resolve to, when a read connects.
    pub fn check_homeserver(&self, homeserver: &HomeserverUrl) -> Result<()> {
        self.inner.policy.check_url(&homeserver.url()).map(|_| ())
    }

    /// Reads a room: its state, then its timeline (backwards from the live end, or forwards from
    /// `options.since`), normalised into a snapshot.
    pub async fn fetch_room(
        &self,
        session: &Session,
        room_id: &RoomId,
        options: &FetchOptions,
    ) -> Result<RoomSnapshot> {
        self.fetch_room_with_progress(session, room_id, options, &mut |_| {}).await
    }

    /// Like [`Connector::fetch_room`], calling `on_page` with the report so far after each page.
    pub async fn fetch_room_with_progress(
        &self,
        session: &Session,
        room_id: &RoomId,
        options: &FetchOptions,
        on_page: &mut (dyn FnMut(&FetchReport) + Send),
    ) -> Result<RoomSnapshot> {
        self.fetch_room_decrypting(session, room_id, options, None, on_page).await
    }

    /// Like [`Connector::fetch_room_with_progress`], decrypting `m.room.encrypted` events with
    /// `keys` (such as the room's sessions from the account's key backup,
    /// [`Connector::load_room_keys`]): a decrypted event is normalised like a plaintext one and
    /// marked `decrypted`; one that stays encrypted keeps its reason.
    pub async fn fetch_room_decrypting(
        &self,
        session: &Session,
        room_id: &RoomId,
        options: &FetchOptions,
        keys: Option<Box<dyn Decryptor>>,
        on_page: &mut (dyn FnMut(&FetchReport) + Send),
    ) -> Result<RoomSnapshot> {
        if options.max_messages == 0 || options.max_messages > HARD_MAX_MESSAGES {
            return Err(Error::InvalidInput(format!("max_messages must be 1 to {HARD_MAX_MESSAGES}")));
        }
        self.read(session, room_id, options, keys, None, on_page).await
    }

    /// Reads a room as [`Connector::fetch_room_decrypting`] does, but hands it over in batches
    /// of `options.batch_pages` pages as they arrive, each a [`RoomSnapshot`] of its own (the
    /// room's state, the batch's messages, edits and redactions, and the pagination positions
    /// after it), so that memory is bounded by a batch whatever the room's size. Up to
    /// [`HARD_MAX_STREAMED_MESSAGES`] messages.
    ///
    /// The read runs on its own task and waits while the receiver holds two batches; dropping
    /// the [`RoomStream`] stops it.
    pub fn stream_room(
        &self,
        session: Session,
        room_id: RoomId,
        options: FetchOptions,
        keys: Option<Box<dyn Decryptor>>,
    ) -> RoomStream {
        let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        let connector = self.clone();
        let task = tokio::spawn(
            async move {
                if options.max_messages == 0 || options.max_messages > HARD_MAX_STREAMED_MESSAGES {
                    let message = format!("max_messages must be 1 to {HARD_MAX_STREAMED_MESSAGES}");
                    let _ = sender.send((Err(Error::InvalidInput(message)), true)).await;
                    return;
                }
                let result =
                    connector.read(&session, &room_id, &options, keys, Some(&sender), &mut |_| {}).await;
                // The receiver may be gone (the caller stopped): nothing is left to tell.
                let _ = sender.send((result, true)).await;
            }
            .in_current_span(),
        );
        RoomStream { receiver, task, ended: false }
    }

    /// The rooms the token's account has joined (`GET /joined_rooms`), at most
    /// [`MAX_JOINED_ROOMS`]; ids the homeserver gives that are not valid are skipped.
    pub async fn joined_rooms(&self, session: &Session) -> Result<Vec<RoomId>> {
        let client = &*self.inner;
        let target = client.target(session, client.config.request_timeout)?;
        let joined = joined_rooms::fetch(client, &target).await?;
        if joined.len() > MAX_JOINED_ROOMS {
            return Err(Error::BudgetExceeded { what: "joined rooms", limit: MAX_JOINED_ROOMS as u64 });
        }
        let mut rooms: Vec<RoomId> = joined.iter().filter_map(|r| r.as_str().parse().ok()).collect();
        rooms.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        rooms.dedup();
        Ok(rooms)
    }

    /// Checks the options and reads the room under the run's deadline.
    async fn read(
        &self,
        session: &Session,
        room_id: &RoomId,
        options: &FetchOptions,
        keys: Option<Box<dyn Decryptor>>,
        batches: Option<&BatchSender>,
        on_page: &mut (dyn FnMut(&FetchReport) + Send),
    ) -> Result<RoomSnapshot> {
        let bad_token = |t: &Option<String>| t.as_ref().is_some_and(|s| s.is_empty() || s.len() > 1024);
        if bad_token(&options.since) || bad_token(&options.backfill_from) {
            return Err(Error::InvalidInput("the resume token must be 1 to 1024 bytes".into()));
        }
        if options.since.is_some() && options.backfill_from.is_some() {
            return Err(Error::InvalidInput("a read goes forwards or into older history, not both".into()));
        }
        if batches.is_some() && options.batch_pages == 0 {
            return Err(Error::InvalidInput("batch_pages must be positive".into()));
        }
        let room = OwnedRoomId::try_from(room_id.as_str())
            .map_err(|_| Error::InvalidInput("the room id is not a valid Matrix room id".into()))?;
        // A streamed read commits as it goes: its deadline only bounds a run that never ends.
        let run_deadline = if batches.is_some() {
            self.inner.config.stream_deadline
        } else {
            self.inner.config.run_deadline
        };
        let target = self.inner.target(session, run_deadline)?;
        let span = tracing::info_span!("fetch_room", room = %room_id, homeserver = %session.homeserver());
        let run = self.run(&target, room_id, &room, options, keys, batches, on_page).instrument(span);
        match tokio::time::timeout_at(target.deadline, run).await {
            Ok(result) => result,
            Err(_) => Err(Error::DeadlineExceeded(run_deadline)),
        }
    }

    #[expect(clippy::too_many_arguments, reason = "one read's whole context")]
    async fn run(
        &self,
        target: &Target<'_>,
        room_id: &RoomId,
        room: &OwnedRoomId,
        options: &FetchOptions,
        keys: Option<Box<dyn Decryptor>>,
        batches: Option<&BatchSender>,
        on_page: &mut (dyn FnMut(&FetchReport) + Send),
    ) -> Result<RoomSnapshot> {
        let client = &*self.inner;
        let config = &client.config;
        let forward = options.since.is_some();
        let backfill = options.backfill_from.is_some();
        let dir = if forward { Direction::Forward } else { Direction::Backward };
        let mut from = options.since.clone().or_else(|| options.backfill_from.clone());
        let mut tokens: HashSet<String> = from.iter().cloned().collect();
        // Forwards: where the next read continues. A read from the live end: the live end as it
        // was (the first page's `start`). A backfill leaves it alone.
        let mut resume_token = options.since.clone();
        // Backwards: where older history continues after the pages read so far.
        let mut history = if forward {
            HistoryPosition::Unchanged
        } else {
            HistoryPosition::Continues(from.clone().unwrap_or_default())
        };
        let mut norm = Normaliser::new(room_id.as_str());
        if let Some(keys) = keys {
            norm = norm.with_keys(keys, !forward);
        }
        let max_messages = options.max_messages as usize;
        // Every kind of event counts, not only messages.
        let event_budget = (u64::from(options.max_messages) * EVENTS_PER_MESSAGE
            + u64::from(config.page_size))
        .min(config.max_events);
        // Bytes held at once: the whole read's, or the current batch's.
        let mut bytes_held = 0_u64;
        let mut confirmations_left = MAX_REDACTION_CONFIRMATIONS;
        let batch_pages = batches.map_or(u32::MAX, |_| options.batch_pages);
        let mut pages_in_batch = 0_u32;
        let page_limit =
            |remaining: usize| u32::try_from(remaining).unwrap_or(u32::MAX).min(config.page_size);

        // The state and the first page are independent: ask for both at once.
        let first_limit = page_limit(max_messages);
        // An error of the state request wins: it says what is wrong with the room.
        let state_request = get_state_events::fetch(client, target, room, &config.external_homeservers);
        let page_request = get_message_events::fetch(client, target, room, from.clone(), dir, first_limit);
        tokio::pin!(state_request, page_request);
        let mut first_page = None;
        let state = loop {
            tokio::select! {
                biased;
                state = &mut state_request => break state?,
                page = &mut page_request, if first_page.is_none() => first_page = Some(page),
            }
        };
        let first_page = match first_page {
            Some(page) => page?,
            None => page_request.await?,
        };
        norm.report_mut().malformed_skipped += state.malformed;
        // A read into older history from a start date stops where that date begins.
        let start = match options.start_at.filter(|_| !forward) {
            Some(at) => {
                let ms = u64::try_from(argus_domain::to_unix_ms(at))
                    .map_err(|_| Error::InvalidInput("the start date is before 1970".into()))?;
                let first = get_event_by_timestamp::first_since(client, target, room, ms).await?;
                Some(StartAt { first, ms })
            }
            None => None,
        };
        let history_since = start.as_ref().and(options.start_at);

        // A page already requested, with the limit it was requested with.
        let mut prefetched = Some((first_page, first_limit));
        let mut truncated = false;
        loop {
            let remaining = max_messages.saturating_sub(norm.message_count());
            let (page, limit) = match prefetched.take() {
                Some(page) => page,
                None if norm.report().pages >= config.max_pages || remaining == 0 => {
                    truncated = true;
                    break;
                }
                None => {
                    let limit = page_limit(remaining);
                    (get_message_events::fetch(client, target, room, from.clone(), dir, limit).await?, limit)
                }
            };
            let pages = {
                let report = norm.report_mut();
                report.pages += 1;
                report.pages
            };
            if !forward && !backfill && pages == 1 {
                resume_token = Some(page.start.clone());
            }
            let events_read = norm.report().events_fetched + page.chunk.len().min(limit as usize) as u64;
            if events_read > event_budget {
                tracing::warn!(
                    events = events_read,
                    budget = event_budget,
                    "the run's event budget is spent"
                );
                return Err(Error::BudgetExceeded { what: "events", limit: event_budget });
            }
            bytes_held += page.chunk.iter().map(|e| e.json().get().len() as u64).sum::<u64>();
            if bytes_held > config.max_bytes {
                tracing::warn!(
                    bytes = bytes_held,
                    budget = config.max_bytes,
                    "the run's byte budget is spent"
                );
                return Err(Error::BudgetExceeded { what: "bytes", limit: config.max_bytes });
            }
            let empty = page.chunk.is_empty();
            // A homeserver may not return more than it was asked for; the excess is not read.
            let overfull = page.chunk.len() > limit as usize;
            let mut taken = page.chunk.len().min(limit as usize);
            // Older than the start date: not read, and the history is complete since then.
            let reached_start = match &start {
                Some(start) => start.cut(&page.chunk[..taken]).map(|cut| taken = cut).is_some(),
                None => false,
            };

            // Forwards up to an event given (the account's departure): the read ends with it.
            let reached_stop = match options.stop_after.as_deref().filter(|_| forward) {
                Some(stop) => page.chunk[..taken]
                    .iter()
                    .position(|raw| {
                        raw.get_field::<String>("event_id").ok().flatten().as_deref() == Some(stop)
                    })
                    .map(|i| taken = i + 1)
                    .is_some(),
                None => false,
            };

            // Decide what follows this page before normalising it, so that the next request
            // overlaps the work.
            let next = if reached_start {
                history = HistoryPosition::Complete;
                None
            } else if reached_stop {
                // Read again from this page's start, should the room be read once more: what was
                // stored is found stored.
                resume_token = from.clone();
                None
            } else if overfull {
                tracing::warn!(
                    limit,
                    events = page.chunk.len(),
                    "the homeserver returned more events than asked for"
                );
                // The events not read lie beyond this page's `from`: read from it again.
                if forward {
                    resume_token = from.clone();
                } else {
                    history = HistoryPosition::Continues(from.clone().unwrap_or_else(|| page.start.clone()));
                }
                truncated = true;
                None
            } else {
                match &page.end {
                    // Backwards: the start of the room. Forwards: the live end; keep the token we
                    // read from (a later read from it finds nothing it has seen).
                    None => {
                        if !forward {
                            history = HistoryPosition::Complete;
                        }
                        None
                    }
                    Some(end) if forward && (empty || from.as_deref() == Some(end.as_str())) => {
                        if !empty {
                            return Err(Error::malformed("the homeserver repeated a pagination token"));
                        }
                        resume_token = Some(end.clone());
                        None
                    }
                    Some(end) => {
                        if !tokens.insert(end.clone()) {
                            return Err(Error::malformed("the homeserver repeated a pagination token"));
                        }
                        if forward {
                            resume_token = Some(end.clone());
                        } else {
                            history = HistoryPosition::Continues(end.clone());
                        }
                        Some(end.clone())
                    }
                }
            };
            let events = page.chunk.len();
            let Some(end) = next else {
                norm.push_page(&page.chunk[..taken]).await;
                on_page(norm.report());
                break;
            };
            from = Some(end);
            pages_in_batch += 1;
            let batch_full = pages_in_batch >= batch_pages;
            // Every event of this page may be a message: asking for at most what would remain
            // then never overshoots the cap.
            let next_limit = page_limit(remaining.saturating_sub(taken));
            if pages < config.max_pages && next_limit > 0 {
                let fetch = get_message_events::fetch(client, target, room, from.clone(), dir, next_limit);
                // Normalising runs on this task (awaiting only a decryptor that asks its device):
                // meanwhile the connection's own task sends the next request and starts reading
                // its answer. (Normalising on a blocking worker instead was measured slower on
                // the project's 2-core machine: see docs/benchmarks.md.)
                let (next_page, ()) = tokio::join!(fetch, norm.push_page(&page.chunk[..taken]));
                on_page(norm.report());
                drop(page);
                if batch_full && let Some(sender) = batches {
                    // The next page is read meanwhile; the batch waits while two are queued.
                    let batch = self
                        .batch(target, room, &mut norm, &state, !forward, &mut confirmations_left)
                        .await?;
                    let positions = (resume_token.clone(), history.clone());
                    send_batch(sender, RoomSnapshot { history_since, ..batch }, positions).await?;
                    pages_in_batch = 0;
                    bytes_held = 0;
                }
                prefetched = Some((next_page?, next_limit));
            } else {
                norm.push_page(&page.chunk[..taken]).await;
                on_page(norm.report());
            }
            tracing::debug!(page = pages, events, "read a page");
        }
        let mut last = self.batch(target, room, &mut norm, &state, !forward, &mut confirmations_left).await?;
        last.report.truncated = truncated;
        last.resume_token = resume_token;
        last.history = history;
        last.history_since = history_since;
        let report = &last.report;
        tracing::info!(
            pages = report.pages,
            events = report.events_fetched,
            messages = report.messages,
            malformed = report.malformed_skipped,
            foreign = report.foreign_dropped,
            truncated = report.truncated,
            "read the room"
        );
        Ok(last)
    }

    /// Folds the events pushed since the last batch into a snapshot of them (positions left for
    /// the caller to set), after confirming redactions of messages outside it with the
    /// homeserver (at most `confirmations_left` in the whole read).
    async fn batch(
        &self,
        target: &Target<'_>,
        room: &OwnedRoomId,
        norm: &mut Normaliser,
        state: &get_state_events::RoomState,
        newest_first: bool,
        confirmations_left: &mut usize,
    ) -> Result<RoomSnapshot> {
        let client = &*self.inner;
        let (mut normalised, report) = norm.take_batch(newest_first);
        // Redactions of messages stored by an earlier read: the homeserver says whether it
        // applied them. Past the cap they stay unconfirmed (the store then applies only those
        // from the message's own sender).
        let wanted = normalised.redactions.len().min(*confirmations_left);
        *confirmations_left -= wanted;
        for redaction in normalised.redactions.iter_mut().take(wanted) {
            // A confirmation that cannot be had (a refused token or account aside) leaves the redaction
            // unconfirmed: it never fails the read.
            let answer = match get_room_event::confirm_redaction(
                client,
                target,
                room,
                redaction.target.as_str(),
            )
            .await
            {
                Ok(answer) => answer,
                Err(
                    e @ (Error::Unauthorized { .. }
                    | Error::AccountExpired
                    | Error::AccountLocked
                    | Error::TokenRefreshFailed(_)
                    | Error::TokenNotKept
                    | Error::DeadlineExceeded(_)),
                ) => {
                    return Err(e);
                }
                Err(e) => {
                    // The homeserver is failing: the rest stay unconfirmed too, rather than
                    // spending the run's deadline on them.
                    tracing::warn!(
                        code = e.code(),
                        "redactions could not be confirmed; they stay unconfirmed"
                    );
                    *confirmations_left = 0;
                    break;
                }
            };
            if let get_room_event::Confirmation::Redacted(by) = answer {
                redaction.confirmed = true;
                // What the homeserver holds wins over what the redaction event said.
                if let Some(by) = by {
                    redaction.redaction = by;
                }
            }
        }
        Ok(RoomSnapshot {
            room_id: target_room_id(room)?,
            homeserver_url: target.session.homeserver().clone(),
            name: state.name.clone(),
            topic: state.topic.clone(),
            canonical_alias: state.canonical_alias.clone(),
            member_count: state.member_count,
            encrypted: state.encrypted,
            messages: normalised.messages,
            edits: normalised.edits,
            redactions: normalised.redactions,
            resume_token: None,
            history: HistoryPosition::Unchanged,
            predecessor: state.predecessor.clone(),
            successor: state.successor.clone(),
            metadata: state.metadata.clone(),
            history_since: None,
            report,
        })
    }
}

/// Where a read from a start date stops going back.
///
/// With the event `timestamp_to_event` gave (the first sent at or after the date, as the
/// homeserver orders its events), the read stops only on reaching that event, kept: the
/// `origin_server_ts` of the events before it is their sender's to set, and an event dated
/// (wrongly or by design) before the date cannot end the capture early. The history is then
/// complete since the date (`history_since`); a read that never meets the event (it started
/// below it: that older history was read already) goes on to the room's creation, complete
/// since then. Only when the homeserver has no event since the date (`M_NOT_FOUND`) do the
/// timestamps decide: the read stops at the first event dated before the date, and everything
/// it kept is recorded complete since the date.
struct StartAt {
    /// The first event sent at or after the date (`timestamp_to_event`), if the room has one.
    first: Option<ruma::OwnedEventId>,
    /// The date, UTC milliseconds.
    ms: u64,
}

impl StartAt {
    /// Of a page read backwards (newest first), how many events to keep when the page reaches
    /// the start: up to the first event since the date, inclusive; or, when the room has none,
    /// up to the first event dated before the date. `None` when the whole page is kept and the
    /// read goes on.
    fn cut(&self, chunk: &[ruma::serde::Raw<ruma::events::AnyTimelineEvent>]) -> Option<usize> {
        match &self.first {
            Some(first) => chunk
                .iter()
                .position(|raw| {
                    raw.get_field::<String>("event_id").ok().flatten().as_deref() == Some(first.as_str())
                })
                .map(|i| i + 1),
            None => chunk.iter().position(|raw| {
                raw.get_field::<u64>("origin_server_ts").ok().flatten().is_some_and(|ts| ts < self.ms)
            }),
        }
    }
}

/// The domain room id of a checked Matrix room id.
fn target_room_id(room: &OwnedRoomId) -> Result<RoomId> {
    room.as_str().parse().map_err(|_| Error::InvalidInput("the room id is not a valid Matrix room id".into()))
}

/// Batches in flight from a streamed read to its receiver.
const STREAM_BUFFER: usize = 2;

/// Where a streamed read hands its batches, each with whether it is the last.
type BatchSender = tokio::sync::mpsc::Sender<(Result<RoomSnapshot>, bool)>;

/// Sets a batch's positions and hands it over; a receiver that is gone stops the read.
async fn send_batch(
    sender: &BatchSender,
    mut batch: RoomSnapshot,
    (resume_token, history): (Option<String>, HistoryPosition),
) -> Result<()> {
    batch.resume_token = resume_token;
    batch.history = history;
    sender.send((Ok(batch), false)).await.map_err(|_| Error::Cancelled)
}

/// The most joined rooms [`Connector::joined_rooms`] lists.
pub const MAX_JOINED_ROOMS: usize = 10_000;

/// The most messages one streamed read ([`Connector::stream_room`]) may return.
pub const HARD_MAX_STREAMED_MESSAGES: u32 = 10_000_000;

/// A room read in batches ([`Connector::stream_room`]): each batch is a [`RoomSnapshot`] of
/// its own pages with the positions after them, in reading order; the last one is the end of
/// the read. Dropping it stops the read.
#[derive(Debug)]
pub struct RoomStream {
    receiver: tokio::sync::mpsc::Receiver<(Result<RoomSnapshot>, bool)>,
    task: tokio::task::JoinHandle<()>,
    ended: bool,
}

impl RoomStream {
    /// The next batch (its `report` is that of the whole read so far); `None` once the last one
    /// or an error was taken. A read that stops without saying so (its task panicked) ends with
    /// [`Error::Cancelled`], never as if it had reached its end.
    pub async fn next_batch(&mut self) -> Option<Result<RoomSnapshot>> {
        if self.ended {
            return None;
        }
        match self.receiver.recv().await {
            Some((item, last)) => {
                self.ended = last || item.is_err();
                Some(item)
            }
            None => {
                self.ended = true;
                Some(Err(Error::Cancelled))
            }
        }
    }
}

impl Drop for RoomStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
