//! The ingestion use-case shared by the `ingestTchapRoom` mutation, the `ingest` and `backfill`
//! commands and the scheduler: validate -> admission -> a streamed read, committed batch by
//! batch with the room's positions -> one audit record.
//!
//! A run reads forward from where the room's last run stopped (or, the first time, backwards
//! from the live end, newest first), then spends what is left of its cap on older history from
//! the stored backward position; a backfill reads only older history. With a start date
//! (`since`), older history stops at the first event sent at or after it (the homeserver's
//! `timestamp_to_event`; one without it fails the run with `TIMESTAMP_LOOKUP_UNSUPPORTED`
//! rather than read back to the room's creation), and the room's history is then complete
//! since that date. Every batch of pages is
//! committed with the positions after it, so a run stopped anywhere (an error, a kill) keeps
//! what it committed and the next run resumes there: no gap, no duplicate.
//!
//! A stored room answers only to the homeserver it was archived from: a call naming another
//! is refused with [`Error::HomeserverMismatch`] and audited FAILED, nothing stored (the store
//! decides, under the room's lock, when the run begins or at its first commit).
//!
//! Every admitted run ends with one audit record, appended at its end: SUCCEEDED, or FAILED
//! with the messages its committed pages stored (never with the token in it). A run whose
//! process died is audited once its lease expires ([`argus_store::Store::close_interrupted_runs`]).
//! Calls refused before anything runs (a token without `tchap:ingest`, malformed input, too
//! many ingestions running or started by the caller, an account that does not resolve to a
//! homeserver or whose token is another account's) are counted and logged instead: the
//! permanent trail is not for refusals anyone can repeat. An account whose discovery the
//! outbound policy refuses is audited FAILED, as a homeserver URL the policy refuses is, its
//! record naming `https://{server name}`.

use std::sync::Arc;

use argus_crypto::{
    Decryptor, RecoveryKey,
    device::{Device, DeviceDecryptor},
};
use argus_domain::{
    AccessToken, Classification, FetchReport, HomeserverUrl, IngestionRecord, NewIngestion, RoomId, Scope,
    StoredRoom, Viewer, policy,
};
use argus_matrix::{FetchOptions, RefreshingTokens, Session, StaticToken, TokenPair, TokenSource};
use argus_store::{IngestionRun, RunTicket};
use time::OffsetDateTime;

use crate::{Admission, Error, Metrics, Result, Services, account, audit};

mod joined;

pub use joined::{JoinedRequest, ingest_joined};

/// Which part of the room's timeline a run reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reach {
    /// What is new since the room's last run (the first time: the newest messages), then older
    /// history with what is left of the cap.
    #[default]
    Current,
    /// Older history only, from where the last backwards read stopped.
    Backfill,
}

/// Who started a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trigger {
    /// A caller, through the API or the CLI.
    #[default]
    Manual,
    /// The scheduler, for a watched room (the actor is the watch's owner).
    Scheduled,
}

/// What to ingest, as the caller gave it (validated by [`ingest_room`]). `Debug` shows the
/// token as `[redacted]`.
#[derive(Debug)]
pub struct IngestRequest {
    /// Base URL of the homeserver.
    pub homeserver_url: String,
    /// A Matrix user id or an e-mail address, resolved to the homeserver instead of
    /// `homeserver_url` (exactly one of the two is given).
    pub account: Option<String>,
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
    /// What part of the timeline to read.
    pub reach: Reach,
    /// Who started it.
    pub trigger: Trigger,
    /// The account's refresh token, beside the access token: the token is renewed before it
    /// expires or when the homeserver refuses it. A renewal consumes it, and the renewed pair
    /// lives in memory for the call only (Argus should be given a login session of its own).
    pub refresh_token: Option<argus_domain::Secret>,
    /// The OAuth 2.0 client id the tokens were issued to, for a homeserver whose accounts are
    /// a next-generation auth server's: its token endpoint renews them for that client only.
    pub oauth_client_id: Option<String>,
    /// Capture only what was sent at or after this time.
    pub since: Option<OffsetDateTime>,
    /// After the room, ingest the rooms that replaced it (`m.room.tombstone`), one upgrade
    /// after another, under the same classification and token.
    pub follow_upgrades: bool,
}

impl IngestRequest {
    /// The same request for another room (the token and recovery key copied), not following
    /// upgrades.
    fn for_room(&self, room_id: &str) -> Self {
        Self {
            homeserver_url: self.homeserver_url.clone(),
            access_token: self.access_token.clone(),
            account: self.account.clone(),
            refresh_token: self.refresh_token.as_ref().map(|k| argus_domain::Secret::new(k.expose_secret())),
            oauth_client_id: self.oauth_client_id.clone(),
            since: self.since,
            room_id: room_id.to_owned(),
            classification: self.classification,
            max_messages: self.max_messages,
            recovery_key: self.recovery_key.as_ref().map(|k| argus_domain::Secret::new(k.expose_secret())),
            reach: self.reach,
            trigger: self.trigger,
            follow_upgrades: false,
        }
    }
}

/// The most upgrades one call follows.
pub const MAX_UPGRADES_FOLLOWED: usize = 8;

/// What became of a room reached by following an upgrade (or listed by `joined_rooms`).
#[derive(Debug, Clone)]
pub struct RoomOutcome {
    /// The room id.
    pub room_id: String,
    /// What its ingestion did, or its error's stable code and public message (its FAILED
    /// audit record says the same).
    pub result: std::result::Result<IngestSummary, (&'static str, String)>,
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
    /// The connector's completeness report (`report.messages`: message events received), with
    /// what the store decided about edits and redactions of earlier-stored messages.
    pub report: FetchReport,
    /// The rooms that replaced this one, ingested one after another when asked
    /// (`follow_upgrades`), each its own run with its own audit record.
    pub upgrades: Vec<RoomOutcome>,
}

struct Validated {
    homeserver: HomeserverUrl,
    room_id: RoomId,
    max_messages: u32,
    /// When the run must stop reading: a call's runs are bounded by
    /// [`crate::Limits::interactive_run_deadline`], the scheduler's by the connector alone.
    deadline: Option<tokio::time::Instant>,
}

fn validate(services: &Services, viewer: &Viewer, request: &IngestRequest) -> Result<Validated> {
    policy::require_scope(viewer, Scope::Ingest)?;
    let homeserver: HomeserverUrl = request.homeserver_url.parse()?;
    let room_id: RoomId = request.room_id.parse()?;
    if !request.access_token.is_well_formed() {
        return Err(Error::InvalidInput("the access token is empty or malformed".into()));
    }
    policy::check_may_classify(viewer, request.classification)?;
    check_since(request.since)?;
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
    let deadline = (request.trigger == Trigger::Manual)
        .then(|| tokio::time::Instant::now() + limits.interactive_run_deadline);
    Ok(Validated { homeserver, room_id, max_messages, deadline })
}

/// How far in the future a start date may lie (clocks differ): a later one would leave
/// forward reads capturing what was sent before it.
const SINCE_SKEW: time::Duration = time::Duration::minutes(5);

/// Refuses a start date in the future, or before 1970 (`timestamp_to_event` takes
/// milliseconds since the Unix epoch: every run from it would fail).
pub(crate) fn check_since(since: Option<OffsetDateTime>) -> Result<()> {
    match since {
        Some(at) if at > OffsetDateTime::now_utc() + SINCE_SKEW => {
            Err(Error::InvalidInput("since must not be in the future".into()))
        }
        Some(at) if at < OffsetDateTime::UNIX_EPOCH => {
            Err(Error::InvalidInput("since must not be before 1970".into()))
        }
        _ => Ok(()),
    }
}

/// Runs one ingestion for `viewer`, calling `on_page` with the run's report after every page
/// the connector reads; then, when asked, the rooms that replaced it.
///
/// On failure the run's audit record says FAILED (best effort: if that cannot be written now,
/// it is retried in the background, and the run's lease makes sure it is written at last) and
/// the error is returned. A failed upgrade does not fail the call: it is in
/// [`IngestSummary::upgrades`] (and audited as its own run).
pub async fn ingest_room(
    services: &Services,
    viewer: &Viewer,
    request: IngestRequest,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<IngestSummary> {
    ingest_room_with(services, viewer, request, Tokens::new(), LiveRead::default(), on_page).await
}

/// Where the requests of one call take their token: the source made at the call's first run,
/// once its homeserver is known, then shared by its upgrades and file fetches.
pub(crate) type Tokens = std::sync::OnceLock<Arc<dyn TokenSource>>;

/// Where the requests of `request`'s run take their token: a source that renews it with the
/// refresh token in memory when one was given (the run, its upgrades and its file fetches
/// share it), else the access token as given.
fn token_source(
    services: &Services,
    request: &IngestRequest,
    homeserver: &HomeserverUrl,
) -> Arc<dyn TokenSource> {
    let given = TokenPair::given(request.access_token.clone(), request.refresh_token.clone());
    call_tokens(services, homeserver, given, request.oauth_client_id.clone()).0
}

/// The token source of a call given `given`: renewing in memory (also returned, so that the
/// caller can read the pair it renewed to) when `given` holds a refresh token, else the access
/// token as given.
pub(crate) fn call_tokens(
    services: &Services,
    homeserver: &HomeserverUrl,
    given: TokenPair,
    oauth_client_id: Option<String>,
) -> (Arc<dyn TokenSource>, Option<Arc<RefreshingTokens>>) {
    if given.refresh_token.is_none() {
        return (Arc::new(StaticToken::new(given.access_token)), None);
    }
    let renewing = Arc::new(RefreshingTokens::new(
        services.connector.clone(),
        homeserver.clone(),
        given,
        oauth_client_id,
        None,
    ));
    (Arc::clone(&renewing) as Arc<dyn TokenSource>, Some(renewing))
}

/// What an account loop's read adds to a room's run: where it stops (an account's departure)
/// and the connector's device of the account, which decrypts first.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LiveRead<'a> {
    /// The forward read ends at this event.
    pub(crate) stop_after: Option<&'a str>,
    /// The account's device.
    pub(crate) device: Option<&'a Arc<Device>>,
    /// Read forwards from this position rather than the room's stored one (an earlier one:
    /// messages stored while their key had not arrived are read again, and decrypted).
    pub(crate) from: Option<&'a str>,
}

/// [`ingest_room`] with the requests' tokens taken from `tokens` when it holds a source (a
/// watch's renewing source, whose new pairs are sealed and stored), and, with `live`'s
/// `stop_after`, the forward read ending at that event (an account's departure from the room: a room
/// without a forward position is then not read at all).
pub(crate) async fn ingest_room_with(
    services: &Services,
    viewer: &Viewer,
    mut request: IngestRequest,
    tokens: Tokens,
    live: LiveRead<'_>,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<IngestSummary> {
    let refused = |error: Error| {
        Metrics::add(&services.metrics.ingestions_refused, 1);
        tracing::warn!(actor = %viewer.actor, org = %viewer.org, code = error.code(), "ingestion refused (not audited)");
        error
    };
    // The scheduler's runs are bounded by its own limits, not by a caller's rate.
    if request.trigger == Trigger::Manual
        && let Err(error) = services.admission.check_caller(&Admission::caller_of(viewer))
    {
        return Err(refused(error));
    }
    // An account instead of a URL: resolved, and the token confirmed to be its (through the
    // call's token source, which renews an expired token), before any room is read (a refusal
    // otherwise); the homeserver found is the request's from now on.
    policy::require_scope(viewer, Scope::Ingest).map_err(|e| refused(e.into()))?;
    let account = request.account.take();
    let resolved = match account::resolve(services, &mut request.homeserver_url, account.as_deref()).await {
        Ok(resolved) => resolved,
        // The outbound policy refused the account's discovery: audited as a homeserver URL the
        // policy refuses is, under the account's server name.
        Err(account::Unresolved { error, audit_as: Some(server) }) => {
            Metrics::add(&services.metrics.ingestions_failed, 1);
            let call =
                audit::Call { homeserver_url: &server, ..call(viewer, &request, OffsetDateTime::now_utc()) };
            audit::record_failure(services, &call, &error).await;
            return Err(error);
        }
        Err(unresolved) => return Err(refused(unresolved.error)),
    };
    if let Some(resolved) = resolved {
        let source =
            Arc::clone(tokens.get_or_init(|| token_source(services, &request, &resolved.homeserver)));
        let session = Session::new(resolved.homeserver.clone(), source);
        account::confirm(services, &session, &resolved).await.map_err(refused)?;
    }
    let mut summary = ingest_one(services, viewer, &request, &tokens, live, on_page).await?;
    if request.follow_upgrades {
        let mut seen = std::collections::HashSet::from([summary.room.room_id.clone()]);
        let mut next = summary.room.successor.clone();
        while let Some(room) = next.take() {
            if summary.upgrades.len() >= MAX_UPGRADES_FOLLOWED || !seen.insert(room.clone()) {
                break;
            }
            let result = ingest_one(
                services,
                viewer,
                &request.for_room(room.as_str()),
                &tokens,
                LiveRead::default(),
                &mut |_| {},
            )
            .await;
            next = result.as_ref().ok().and_then(|s| s.room.successor.clone());
            summary.upgrades.push(RoomOutcome {
                room_id: room.as_str().to_owned(),
                result: result.map_err(|e| (e.code(), e.message_without(&request.access_token))),
            });
        }
    }
    Ok(summary)
}

/// One room's run, as [`ingest_room`] describes it, after the caller's rate was counted.
async fn ingest_one(
    services: &Services,
    viewer: &Viewer,
    request: &IngestRequest,
    tokens: &Tokens,
    live: LiveRead<'_>,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<IngestSummary> {
    let started_at = OffsetDateTime::now_utc();
    // The scheduler's runs are bounded by its own limits, not by the places kept for calls.
    let manual = request.trigger == Trigger::Manual;
    let admitted = validate(services, viewer, request).and_then(|valid| {
        let origin = NewIngestion::origin_of(valid.homeserver.as_str());
        let caller = Admission::caller_of(viewer);
        let admitted = if manual { Some(services.admission.acquire(&caller, &origin)?) } else { None };
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
            audit::record_failure(services, &call(viewer, request, started_at), &error).await;
            return Err(error);
        }
    };
    let run = IngestionRun { viewer: viewer.clone(), classification: request.classification, started_at };
    let ticket = {
        let (run, room, homeserver, lease) =
            (run.clone(), valid.room_id.clone(), valid.homeserver.clone(), services.limits.run_lease);
        let scheduled = request.trigger == Trigger::Scheduled;
        match services
            .with_store(move |store| store.begin_run(&run, &room, &homeserver, lease, scheduled))
            .await
        {
            Ok(ticket) => ticket,
            Err(error) => {
                Metrics::add(&services.metrics.ingestions_failed, 1);
                audit::record_failure(services, &call(viewer, request, started_at), &error).await;
                return Err(error);
            }
        }
    };
    let tokens = tokens.get_or_init(|| token_source(services, request, &valid.homeserver));
    let mut progress = Progress::default();
    let read = read_room(services, &ticket, request, tokens, &valid, live, &mut progress, on_page).await;
    let error = read.as_ref().err().map(|e| e.message_without(&request.access_token));
    let finished = audit::finish(services, &ticket, error).await;
    if progress.stored > 0
        && let Some(wake) = &services.on_ingested
    {
        // New outbox row committed: wake the fusion relay rather than wait for its next poll.
        wake.notify_one();
    }
    Metrics::add(&services.metrics.messages_fetched, progress.report.messages);
    Metrics::add(&services.metrics.messages_stored, u64::try_from(progress.stored).unwrap_or(0));
    if let Some(media) = &services.media {
        // The files of what the run stored (and of earlier runs' files still due), fetched
        // beside it with its token: the run does not wait for them.
        let session = Session::shared(valid.homeserver.clone(), Arc::clone(tokens));
        media.spawn_room(services, session, viewer.org.clone(), valid.room_id.clone());
    }
    match (read, finished) {
        (Ok(()), Ok(record)) => {
            Metrics::add(&services.metrics.ingestions_succeeded, 1);
            let room = record.room.ok_or(Error::Store(argus_store::Error::Withheld))?;
            tracing::info!(
                actor = %viewer.actor, org = %viewer.org, room = %room.room_id,
                fetched = progress.report.messages, stored = record.messages_stored,
                scheduled = request.trigger == Trigger::Scheduled,
                "ingestion succeeded"
            );
            Ok(IngestSummary {
                room,
                messages_stored: record.messages_stored,
                ingestion: record.ingestion,
                report: progress.report,
                upgrades: Vec::new(),
            })
        }
        (Ok(()), Err(error)) | (Err(error), _) => {
            Metrics::add(&services.metrics.ingestions_failed, 1);
            tracing::warn!(
                actor = %viewer.actor, org = %viewer.org, code = error.code(),
                error = %error.message_without(&request.access_token), stored = progress.stored,
                scheduled = request.trigger == Trigger::Scheduled,
                "ingestion failed"
            );
            Err(error)
        }
    }
}

/// The audited call of `request` by `viewer`.
fn call<'a>(viewer: &'a Viewer, request: &'a IngestRequest, started_at: OffsetDateTime) -> audit::Call<'a> {
    audit::Call {
        viewer,
        homeserver_url: &request.homeserver_url,
        room_id: &request.room_id,
        classification: request.classification,
        started_at,
        token: &request.access_token,
        scheduled: request.trigger == Trigger::Scheduled,
    }
}

/// Whether `error` refuses the call before anything ran, without an audit record.
fn is_refusal(error: &Error) -> bool {
    matches!(
        error,
        Error::Forbidden(_)
            | Error::InvalidInput(_)
            | Error::Busy(_)
            | Error::CallerBusy(_)
            | Error::TooManyRequests
    )
}

/// What a run has done so far.
#[derive(Debug, Default)]
struct Progress {
    /// The run's report: the connector's over every read of the run, with the store's
    /// decisions about edits and redactions of earlier-stored messages.
    report: FetchReport,
    /// The connector's reports of the reads already finished.
    earlier_reads: FetchReport,
    /// The store's decisions: edits applied, edits ignored, redactions ignored.
    store_decisions: (u64, u64, u64),
    /// Messages newly stored by the committed batches.
    stored: i64,
}

impl Progress {
    /// Takes the report so far of the read under way (`read`), and what the store did with a
    /// batch of it.
    fn update(&mut self, read: &FetchReport, committed: &argus_store::StoredCounts) {
        self.stored += committed.messages_stored;
        let decisions = &mut self.store_decisions;
        decisions.0 += committed.edits_applied;
        decisions.1 += committed.edits_ignored;
        decisions.2 += committed.redactions_ignored;
        let mut report = self.earlier_reads.clone();
        add_report(&mut report, read);
        report.edits_applied += decisions.0;
        report.edits_ignored += decisions.1;
        report.redactions_ignored += decisions.2;
        self.report = report;
    }

    /// Closes the read whose last report is `read`.
    fn end_read(&mut self, read: &FetchReport) {
        add_report(&mut self.earlier_reads, read);
    }
}

/// The reads of one run, each streamed and committed batch by batch.
#[expect(clippy::too_many_arguments, reason = "one run's whole context")]
async fn read_room(
    services: &Services,
    ticket: &RunTicket,
    request: &IngestRequest,
    tokens: &Arc<dyn TokenSource>,
    valid: &Validated,
    live: LiveRead<'_>,
    progress: &mut Progress,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<()> {
    // Where the room's last run stopped (a room stored from another homeserver was refused
    // when the run began, unless withheld from the caller: then its commit is refused).
    let stored = {
        let (v, room) = (ticket.run().viewer.clone(), valid.room_id.clone());
        services.with_store(move |store| store.room(&v, &room)).await?
    };
    let stored = stored.filter(|r| r.homeserver_url.same_server(&valid.homeserver));
    let (resume, backfill_from, complete) = match &stored {
        Some(r) => (r.resume_token.clone(), r.backfill_token.clone(), history_covers(r, request.since)),
        None => (None, None, false),
    };
    // Only a room with a stored position is read again from an earlier one.
    let resume = resume.map(|stored| live.from.map_or(stored, str::to_owned));
    let mut budget = valid.max_messages;
    if let Some(stop_after) = live.stop_after {
        // Up to an event only: forwards from the room's position, nothing older, nothing past it.
        let Some(resume) = resume else { return Ok(()) };
        let mut options = options(services, budget, Some(resume), None, None);
        options.stop_after = Some(stop_after.to_owned());
        // The position is left where it was: a departed member's read may skip, past its
        // departure, what other readers of the organisation's room still have to read.
        return read_leg(
            services,
            ticket,
            request,
            tokens,
            valid,
            options,
            true,
            live.device,
            progress,
            on_page,
        )
        .await
        .map(drop);
    }
    if request.reach == Reach::Current {
        // Forwards from the last run's position; the first time, backwards from the live end
        // (which reads older history too: nothing else to do then).
        let first_time = resume.is_none();
        let options = options(services, budget, resume, None, request.since);
        let leg = read_leg(
            services,
            ticket,
            request,
            tokens,
            valid,
            options,
            false,
            live.device,
            progress,
            on_page,
        )
        .await?;
        budget = budget.saturating_sub(u32::try_from(leg).unwrap_or(u32::MAX));
        if first_time {
            return Ok(());
        }
    }
    if complete || budget == 0 {
        return Ok(());
    }
    // Older history, from where the last backwards read stopped (a room stored before positions
    // were kept: from the live end, skipping what is stored, without moving its forward position).
    let options = options(services, budget, None, backfill_from, request.since);
    read_leg(services, ticket, request, tokens, valid, options, true, live.device, progress, on_page)
        .await
        .map(drop)
}

fn options(
    services: &Services,
    max_messages: u32,
    since: Option<String>,
    backfill_from: Option<String>,
    start_at: Option<OffsetDateTime>,
) -> FetchOptions {
    FetchOptions {
        max_messages,
        since,
        backfill_from,
        batch_pages: services.limits.batch_pages,
        start_at,
        stop_after: None,
    }
}

/// Whether the stored history of `room` is complete as far back as a run from `since` wants:
/// to the room's creation, or to a date no later than `since`. Otherwise older history is read
/// again from the live end (skipping what is stored), down to `since`.
pub(crate) fn history_covers(room: &StoredRoom, since: Option<OffsetDateTime>) -> bool {
    room.history_complete
        && match (room.history_since, since) {
            (None, _) => true,
            (Some(stored), Some(wanted)) => wanted >= stored,
            (Some(_), None) => false,
        }
}

/// One streamed read, its batches committed as they arrive; returns the messages it received.
#[expect(clippy::too_many_arguments, reason = "one read's whole context")]
async fn read_leg(
    services: &Services,
    ticket: &RunTicket,
    request: &IngestRequest,
    tokens: &Arc<dyn TokenSource>,
    valid: &Validated,
    options: FetchOptions,
    into_history: bool,
    device: Option<&Arc<Device>>,
    progress: &mut Progress,
    on_page: &mut (dyn FnMut(&FetchReport) + Send),
) -> Result<u64> {
    let session = Session::shared(valid.homeserver.clone(), Arc::clone(tokens));
    // The room's keys from the account's key backup, held for this read only (with the
    // connector's device, an account without a key backup is read with the device alone).
    let backup = match &request.recovery_key {
        Some(text) => {
            let key: RecoveryKey = text.expose_secret().parse().map_err(argus_matrix::Error::from)?;
            match services.connector.load_room_keys(&session, &valid.room_id, &key).await {
                Ok(loaded) => Some(loaded.keys),
                Err(argus_matrix::Error::NoKeyBackup) if device.is_some() => None,
                Err(error) => return Err(error.into()),
            }
        }
        None => None,
    };
    let keys: Option<Box<dyn Decryptor>> = match (device, backup) {
        (Some(device), backup) => Some(Box::new(DeviceDecryptor::new(Arc::clone(device), backup))),
        (None, Some(backup)) => Some(Box::new(backup)),
        (None, None) => None,
    };
    let mut stream = services.connector.stream_room(session, valid.room_id.clone(), options, keys);
    let mut read = FetchReport::default();
    loop {
        // A call's run stops at its deadline between batches: what it committed is kept.
        let next = match valid.deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, stream.next_batch()).await.map_err(|_| {
                argus_matrix::Error::DeadlineExceeded(services.limits.interactive_run_deadline)
            })?,
            None => stream.next_batch().await,
        };
        let Some(batch) = next else { break };
        let mut batch = batch?;
        if into_history {
            // Older history never moves the room's forward position.
            batch.resume_token = None;
        }
        read = batch.report.clone();
        let ticket = ticket.clone();
        let committed = services.with_store(move |store| store.commit_pages(&ticket, &batch)).await?;
        if committed.messages_stored > 0 {
            services.new_messages.notify();
        }
        progress.update(&read, &committed);
        on_page(&progress.report);
    }
    progress.end_read(&read);
    Ok(read.messages)
}

/// Adds the counters of `more` to `report`; `truncated` is `more`'s.
fn add_report(report: &mut FetchReport, more: &FetchReport) {
    report.pages += more.pages;
    report.events_fetched += more.events_fetched;
    report.messages += more.messages;
    report.encrypted += more.encrypted;
    report.decrypted += more.decrypted;
    for (reason, n) in &more.undecryptable {
        *report.undecryptable.entry(reason.clone()).or_default() += n;
    }
    report.redacted += more.redacted;
    report.edits_applied += more.edits_applied;
    report.edits_ignored += more.edits_ignored;
    report.redactions_ignored += more.redactions_ignored;
    report.malformed_skipped += more.malformed_skipped;
    report.foreign_dropped += more.foreign_dropped;
    report.truncated = more.truncated;
}
