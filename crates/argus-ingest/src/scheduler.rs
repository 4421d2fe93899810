//! The scheduler: keeps watched rooms current. Each cycle it audits runs whose process died,
//! claims the due watches (a lease per watch, so that replicas on one PostgreSQL share them and
//! a replica that dies leaves its watches to another once the lease expires), and runs each
//! through the ingestion use-case, as its owner, marked as scheduled, at most
//! [`SchedulerOptions::per_homeserver`] at once against one homeserver.
//!
//! After a run the watch is due again after its interval, with jitter (so that watches created
//! together spread out), or sooner for a room whose retention policy (`m.room.retention`
//! `max_lifetime`) would purge events first, as [`argus_domain::Retention::due_within`] says:
//! within the lifetime less a margin after a run that read to the end, as soon as allowed
//! after one that did not (it failed, its message cap cut it short, or older history remains;
//! a failed run takes the policy stored from the room's last read), and never sooner than the
//! watch limits' minimum interval (nor the tick), whatever the room's state says. A rate limit
//! pushes it back by what the homeserver asked; a token the homeserver refuses
//! (`M_UNKNOWN_TOKEN`, soft logout), or a room archived from another homeserver than the
//! watch's (`HOMESERVER_MISMATCH`), pauses it with the reason until it is given again; an
//! account the homeserver expired or locked stops it as `ACCOUNT_EXPIRED` or `ACCOUNT_LOCKED`
//! the same way. A suspended account still reads: its watch goes on. A watch whose token
//! expires is renewed with its refresh token ([`watch_tokens`]); only when no valid pair can
//! be had does it pause (`TOKEN_REFRESH_FAILED`).

mod renewal;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use argus_domain::{Scope, Viewer};
use argus_store::{ClaimedWatch, WatchRun};
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use argus_matrix::{StaticToken, TokenSource};

pub(crate) use renewal::account_tokens;
pub use renewal::watch_tokens;

use crate::{
    Error, Services,
    ingest::{IngestRequest, LiveRead, Reach, Trigger, ingest_room_with},
    token_keys::Binding,
};

/// How the scheduler runs.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerOptions {
    /// This replica's name in the leases it takes (unique per process).
    pub replica: String,
    /// Time between cycles.
    pub tick: Duration,
    /// How long a claimed watch is this replica's; past it, another replica may take it.
    pub lease: Duration,
    /// Runs at once against one homeserver.
    pub per_homeserver: usize,
    /// Runs at once in all.
    pub max_concurrent: usize,
    /// Messages one scheduled run reads at most (the rest waits for the next run).
    pub max_messages_per_run: u32,
    /// Spread of the next due time, as a fraction of the interval (0.1: ±10 %).
    pub jitter: f64,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            replica: default_replica(),
            tick: Duration::from_secs(5),
            lease: Duration::from_secs(600),
            per_homeserver: 8,
            max_concurrent: 32,
            max_messages_per_run: 10_000,
            jitter: 0.1,
        }
    }
}

/// A replica name unique to this process: host, process id and a random suffix.
pub fn default_replica() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "argus".to_owned());
    let suffix: u32 = rand::random();
    format!("{}-{}-{suffix:08x}", argus_domain::NewIngestion::sanitise(&host, 64), std::process::id())
}

/// What one cycle did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CycleReport {
    /// Runs of dead processes audited as interrupted.
    pub interrupted_closed: usize,
    /// Watches claimed and run.
    pub claimed: usize,
    /// Runs that succeeded.
    pub succeeded: usize,
    /// Runs that failed.
    pub failed: usize,
    /// Watches paused (their token was refused).
    pub paused: usize,
    /// Watches whose lease was lost before their run was recorded.
    pub lost: usize,
}

/// The scheduler of one replica.
#[derive(Debug)]
pub struct Scheduler {
    services: Arc<Services>,
    options: SchedulerOptions,
    per_homeserver: Mutex<HashMap<String, Arc<Semaphore>>>,
}

enum Outcome {
    Succeeded,
    Failed,
    Paused,
    Lost,
}

impl Scheduler {
    /// A scheduler over `services` (whose token keys open the watches' tokens).
    pub fn new(services: Arc<Services>, options: SchedulerOptions) -> Self {
        Self { services, options, per_homeserver: Mutex::new(HashMap::new()) }
    }

    /// The options in force.
    pub fn options(&self) -> &SchedulerOptions {
        &self.options
    }

    /// Runs cycles every tick until `stop` is notified (then the cycle under way finishes).
    pub async fn run(self: Arc<Self>, stop: Arc<tokio::sync::Notify>) {
        tracing::info!(replica = %self.options.replica, "scheduler started");
        loop {
            match self.cycle().await {
                Ok(report) if report.claimed > 0 || report.interrupted_closed > 0 => {
                    tracing::info!(?report, "scheduler cycle");
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(code = error.code(), error = %error, "scheduler cycle failed"),
            }
            tokio::select! {
                () = stop.notified() => break,
                () = tokio::time::sleep(self.options.tick) => {}
            }
        }
        tracing::info!(replica = %self.options.replica, "scheduler stopped");
    }

    /// One cycle: audits interrupted runs, claims the due watches and runs them; returns when
    /// every run of the cycle is recorded.
    pub async fn cycle(&self) -> crate::Result<CycleReport> {
        let mut report = CycleReport::default();
        let now = OffsetDateTime::now_utc();
        // A failure to close them is logged: it must not stop the watches being run.
        match self.services.with_store(move |store| store.close_interrupted_runs(now)).await {
            Ok(closed) => report.interrupted_closed = closed.len(),
            Err(e) => tracing::warn!(code = e.code(), error = %e, "interrupted runs could not be closed"),
        }
        let (replica, lease) = (self.options.replica.clone(), self.options.lease);
        let limit = u32::try_from(self.options.max_concurrent.max(1)).unwrap_or(u32::MAX);
        let claimed = self
            .services
            .with_store(move |store| store.claim_due_watches(now, &replica, lease, limit))
            .await?;
        report.claimed = claimed.len();
        let mut runs = tokio::task::JoinSet::new();
        for claimed in claimed {
            let permit = self.homeserver_slot(claimed.watch.homeserver_url.as_str());
            let services = Arc::clone(&self.services);
            let options = self.options.clone();
            runs.spawn(async move {
                let _permit = permit.acquire_owned().await;
                // The wait for a place may have eaten into the lease: renew it before the run, or
                // leave the watch to whoever took it over.
                let (id, replica, lease) = (claimed.watch.id, options.replica.clone(), options.lease);
                let renewed = services
                    .with_store(move |store| {
                        store.renew_watch_lease(id, &replica, OffsetDateTime::now_utc(), lease)
                    })
                    .await;
                match renewed {
                    Ok(true) => {}
                    Ok(false) => return Outcome::Lost,
                    Err(e) => {
                        tracing::warn!(watch = id, code = e.code(), "a watch's lease could not be renewed");
                        return release(&services, &options, &claimed.watch).await;
                    }
                }
                run_watch(&services, &options, claimed).await
            });
        }
        while let Some(outcome) = runs.join_next().await {
            match outcome {
                Ok(Outcome::Succeeded) => report.succeeded += 1,
                Ok(Outcome::Failed) => report.failed += 1,
                Ok(Outcome::Paused) => report.paused += 1,
                Ok(Outcome::Lost) => report.lost += 1,
                Err(_) => report.failed += 1,
            }
        }
        Ok(report)
    }

    fn homeserver_slot(&self, homeserver: &str) -> Arc<Semaphore> {
        let origin = argus_domain::NewIngestion::origin_of(homeserver);
        let mut map = self.per_homeserver.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            map.entry(origin).or_insert_with(|| Arc::new(Semaphore::new(self.options.per_homeserver.max(1)))),
        )
    }
}

/// Runs one claimed watch and records how it went.
async fn run_watch(services: &Arc<Services>, options: &SchedulerOptions, claimed: ClaimedWatch) -> Outcome {
    let ClaimedWatch { watch, token } = claimed;
    let started = OffsetDateTime::now_utc();
    let interval = Duration::from_secs(u64::from(watch.interval_secs));
    let mut next = started + jittered(interval, options.jitter);
    let mut pause = None;
    let binding = Binding::of(&watch.org, &watch.room_id, &watch.homeserver_url, &watch.owner);
    let Some(keys) = &services.token_keys else {
        return release(services, options, &watch).await;
    };
    if !keys.holds(&token.key_id) {
        // Sealed under a key this replica lacks (a rotation under way, or a replica configured
        // apart): another replica may hold it, so the watch is not paused; it says why it did
        // not run here, and is due again after its interval.
        tracing::warn!(watch = watch.id, key = %token.key_id, "a watch's token is sealed under a key this replica lacks");
        let run = WatchRun {
            ran_at: started,
            next_run_at: next,
            error: Some(format!(
                "TOKEN_KEY_MISSING: sealed under key {}, which this replica lacks",
                token.key_id
            )),
            pause: None,
        };
        let (id, replica) = (watch.id, options.replica.clone());
        let _ = services.with_store(move |store| store.record_watch_run(id, &replica, &run)).await;
        return Outcome::Lost;
    }
    let opened = keys.open(&token, binding);
    // What the watch shows of an error is scrubbed of the token and the key, as an audit record
    // is.
    let opened_credentials = opened.as_ref().ok().cloned();
    let message = |e: &Error| match &opened_credentials {
        Some(c) => {
            let text = e.message_without(&c.access_token);
            match &c.recovery_key {
                Some(key) => key.scrub(text),
                None => text,
            }
        }
        None => e.public_message(),
    };
    // A watch given a refresh token reads with its account's shared pair (renewed once for all
    // the account's watches and replicas); its own sealed token then serves for the recovery
    // key only.
    let shared = match &opened {
        Ok(_) => {
            watch_tokens(services, &options.replica, &ClaimedWatch { watch: watch.clone(), token }).await
        }
        Err(_) => Ok(None),
    };
    let result = match (opened, shared) {
        (Err(error), _) => {
            // A key this replica holds does not open it (altered, or moved from another watch):
            // nothing can run until the owner gives the token again.
            pause = Some(format!("TOKEN_UNAVAILABLE: {}", error.public_message()));
            Err(error)
        }
        (Ok(_), Err(error)) => Err(error),
        (Ok(credentials), Ok(shared)) => {
            // A shared pair is renewed as it expires, each new pair sealed and stored under
            // the account's renewal lease before it is used.
            let tokens: Arc<dyn TokenSource> = match shared {
                Some(shared) => Arc::new(shared),
                None => Arc::new(StaticToken::new(credentials.access_token.clone())),
            };
            let (access_token, recovery_key) = (credentials.access_token, credentials.recovery_key);
            // The owner, cleared for the watch's level, as the mutation would have required.
            let owner = Viewer::new(
                watch.owner.clone(),
                watch.org.clone(),
                watch.classification,
                [Scope::Ingest, Scope::Read],
            );
            let request = IngestRequest {
                homeserver_url: watch.homeserver_url.as_str().to_owned(),
                access_token,
                account: None,
                refresh_token: None,
                oauth_client_id: None,
                since: watch.since,
                room_id: watch.room_id.as_str().to_owned(),
                classification: watch.classification,
                max_messages: Some(i64::from(options.max_messages_per_run)),
                recovery_key,
                reach: Reach::Current,
                trigger: Trigger::Scheduled,
                follow_upgrades: false,
            };
            // The lease is renewed while the run lasts; a replica that lost it (its database
            // was unreachable longer than the lease) stops, leaving the watch to its new owner.
            let mut on_page = |_: &argus_domain::FetchReport| {};
            let run =
                ingest_room_with(services, &owner, request, tokens.into(), LiveRead::default(), &mut on_page);
            tokio::pin!(run);
            let mut heartbeat = tokio::time::interval((options.lease / 3).max(Duration::from_millis(100)));
            heartbeat.tick().await;
            loop {
                tokio::select! {
                    result = &mut run => break result.map(|summary| read_to_the_end(&summary, watch.since)),
                    _ = heartbeat.tick() => {
                        let (id, replica, lease) = (watch.id, options.replica.clone(), options.lease);
                        let renewed = services
                            .with_store(move |store| store.renew_watch_lease(id, &replica, OffsetDateTime::now_utc(), lease))
                            .await;
                        if matches!(renewed, Ok(false)) {
                            tracing::warn!(watch = watch.id, "a watch's lease was lost during its run; the run stops");
                            return Outcome::Lost;
                        }
                    }
                }
            }
        }
    };
    // The room's retention policy purges events older than its lifetime: the next run comes
    // before what this one left uncaptured expires (the rule: `Retention::due_within`). A
    // failed run read no state: the policy stored from the room's last read counts.
    let retention = match &result {
        Ok(read) => *read,
        Err(_) => stored_retention(services, &watch).await.map(|retention| (retention, false)),
    };
    let floor = Duration::from_secs(u64::from(services.watch_limits.min_interval_secs)).max(options.tick);
    if let Some(within) = retention.and_then(|(retention, complete)| retention.due_within(complete, floor)) {
        next = next.min(started + within);
    }
    if pause.is_none() {
        pause = result.as_ref().err().and_then(stop_reason);
    }
    if let Err(Error::Connector(argus_matrix::Error::RateLimited { retry_after: Some(wait) })) = &result {
        // Honour what the homeserver asked, on top of the interval (at most a week: the
        // homeserver's number is not trusted to be sane).
        if let Some(asked) = rate_limited_until(*wait) {
            next = next.max(asked);
        }
    }
    let error = result.as_ref().err().map(message);
    let run = WatchRun { ran_at: started, next_run_at: next, error: error.clone(), pause: pause.clone() };
    let (id, replica) = (watch.id, options.replica.clone());
    let recorded = services.with_store(move |store| store.record_watch_run(id, &replica, &run)).await;
    match (recorded, error, pause) {
        (Ok(true), None, _) => Outcome::Succeeded,
        (Ok(true), Some(_), Some(reason)) => {
            tracing::warn!(watch = watch.id, org = %watch.org, %reason, "watch paused");
            Outcome::Paused
        }
        (Ok(true), Some(_), None) => Outcome::Failed,
        (Ok(false), ..) => Outcome::Lost,
        (Err(e), ..) => {
            tracing::warn!(
                watch = watch.id,
                code = e.code(),
                "a watch's run could not be recorded; its lease will expire"
            );
            Outcome::Failed
        }
    }
}

/// The reason (`CODE: words`, never a token) a watch stops for after `error`, when nothing
/// can run until its owner gives it again; `None` when a later run may succeed. Shared by room
/// watches and account watches.
pub(crate) fn stop_reason(error: &Error) -> Option<String> {
    match error {
        Error::Connector(argus_matrix::Error::Unauthorized { errcode, soft_logout }) => {
            let what = if *soft_logout { "soft logout" } else { "token refused" };
            Some(format!("HOMESERVER_UNAUTHORIZED: {errcode} ({what}); give the watch a new token"))
        }
        Error::Connector(e @ (argus_matrix::Error::AccountExpired | argus_matrix::Error::AccountLocked)) => {
            // The account, not the token: every run would be refused the same way until its
            // homeserver renews or unlocks it. Its code is the watch's status (ACCOUNT_EXPIRED,
            // ACCOUNT_LOCKED). A suspended account still reads: its failures stop nothing.
            let undone =
                if matches!(e, argus_matrix::Error::AccountExpired) { "renewed" } else { "unlocked" };
            Some(format!(
                "{}: the homeserver refuses the account until it is {undone}; then give the watch again",
                e.code()
            ))
        }
        // Neither a renewal nor the pair another replica kept gave a valid token.
        Error::Connector(argus_matrix::Error::TokenRefreshFailed(_)) => Some(
            "TOKEN_REFRESH_FAILED: the refresh token was refused and no renewed token is stored; give the \
             watch a new token"
                .to_owned(),
        ),
        // The key no longer opens the owner's backup (reset, or a new backup): nothing can run
        // until the owner gives the watch their key again.
        Error::Connector(argus_matrix::Error::Crypto(
            argus_crypto::Error::WrongRecoveryKey | argus_crypto::Error::KeyBackupMismatch,
        )) => Some(format!(
            "{}: the recovery key does not open the account's key backup; give the watch the current key",
            error.code()
        )),
        // The room answers to another homeserver (moved by an operator, or watched from the
        // wrong one): every run would be refused the same way until the owner watches it from
        // the room's homeserver.
        Error::HomeserverMismatch => Some(format!(
            "{}: the room is archived from another homeserver; watch it from that one",
            Error::HomeserverMismatch.code()
        )),
        _ => None,
    }
}

/// When a rate limit of `wait` (at most a week: the homeserver's number is not trusted to be
/// sane) ends, from now.
pub(crate) fn rate_limited_until(wait: Duration) -> Option<OffsetDateTime> {
    OffsetDateTime::now_utc()
        .checked_add(time::Duration::seconds_f64(wait.min(MAX_RATE_LIMIT_WAIT).as_secs_f64()))
}

/// Audits, every `period` until `stop` is notified, the runs whose process died: what `serve`
/// runs when the scheduler (which does it every cycle) is off, so that an interrupted run is
/// audited whatever the configuration.
pub async fn close_interrupted_runs_every(
    services: Arc<Services>,
    period: Duration,
    stop: Arc<tokio::sync::Notify>,
) {
    loop {
        let now = OffsetDateTime::now_utc();
        match services.with_store(move |store| store.close_interrupted_runs(now)).await {
            Ok(closed) if !closed.is_empty() => {
                tracing::info!(closed = closed.len(), "interrupted runs audited")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(code = e.code(), error = %e, "interrupted runs could not be closed"),
        }
        tokio::select! {
            () = stop.notified() => break,
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// The room's retention policy after a successful run, and whether the run read to the end:
/// not cut short by its cap, its history complete as far back as the watch wants.
fn read_to_the_end(
    summary: &crate::ingest::IngestSummary,
    since: Option<OffsetDateTime>,
) -> Option<(argus_domain::Retention, bool)> {
    let complete = !summary.report.truncated && crate::ingest::history_covers(&summary.room, since);
    summary.room.metadata.retention.map(|retention| (retention, complete))
}

/// The retention policy stored from the watched room's last read, as its owner sees it (`None`
/// when it has none, or the store cannot say).
async fn stored_retention(
    services: &Services,
    watch: &argus_domain::Watch,
) -> Option<argus_domain::Retention> {
    let owner = Viewer::new(watch.owner.clone(), watch.org.clone(), watch.classification, [Scope::Read]);
    let room = watch.room_id.clone();
    match services.with_store(move |store| store.room(&owner, &room)).await {
        Ok(room) => room.and_then(|room| room.metadata.retention),
        Err(e) => {
            tracing::warn!(
                watch = watch.id,
                code = e.code(),
                "a watched room's retention policy could not be read"
            );
            None
        }
    }
}

/// The longest a rate limit pushes a watch back.
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Releases a claimed watch without running it, due again after the next tick.
async fn release(services: &Services, options: &SchedulerOptions, watch: &argus_domain::Watch) -> Outcome {
    let (id, replica) = (watch.id, options.replica.clone());
    let due = OffsetDateTime::now_utc() + options.tick;
    match services.with_store(move |store| store.release_watch(id, &replica, due)).await {
        Ok(_) => Outcome::Lost,
        Err(e) => {
            tracing::warn!(
                watch = watch.id,
                code = e.code(),
                "a watch could not be released; its lease will expire"
            );
            Outcome::Lost
        }
    }
}

/// `interval` spread by up to ±`jitter` of itself.
fn jittered(interval: Duration, jitter: f64) -> Duration {
    let spread = interval.as_secs_f64() * jitter.clamp(0.0, 1.0);
    let offset =
        if spread > 0.0 { rand::Rng::gen_range(&mut rand::thread_rng(), -spread..=spread) } else { 0.0 };
    Duration::from_secs_f64((interval.as_secs_f64() + offset).max(1.0))
}
