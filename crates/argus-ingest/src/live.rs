//! Live capture: every joined room of a Matrix account (or the listed ones) kept current by one
//! `/sync` long-poll loop per account (`watchTchapAccount`), instead of one poll per room.
//!
//! An account watch is made like a room watch (scope, the caller's rate, outbound policy,
//! clearance, the account confirmed with `whoami`, the credentials sealed at once; a refresh
//! token kept once for the account and renewed for all its watches), then [`Live`], on each
//! replica, claims the account watches no replica runs (a lease per watch, renewed by its loop)
//! and runs one loop for each (`account_loop`): an idle account costs one request per
//! long-poll timeout whatever its number of rooms, and a message reaches the archive as soon as
//! the homeserver answers the poll.
//!
//! Where the loop stands is stored in two places, each in the transaction of what it covers:
//! every room's own forward position (`resume_token`) in the transaction of the events it
//! brought (the room reader's commits), and the account's `since` (with the rooms' memberships)
//! once every room the answer named is captured. A room the answer names is read forwards from
//! its own position, so a `limited` timeline (events the answer left out) is always filled, a
//! room also watched on its own or ingested by hand is read once, and a loop killed anywhere
//! resumes from the stored `since`: the rooms it had captured find nothing new, the others are
//! read from their positions; nothing is lost or stored twice (events are unique per
//! organisation).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use argus_domain::{
    AccessToken, AccountWatch, Classification, HomeserverUrl, NewAccountWatch, RoomId, Scope, Viewer, policy,
};
use argus_matrix::TokenPair;
use time::OffsetDateTime;
use tokio::task::JoinHandle;

use crate::{
    Admission, Error, Result, Services, account,
    token_keys::{AccountBinding, AccountWatchBinding, Credentials},
};

mod account_loop;
mod device;

/// The shortest long-poll timeout an account watch may ask for (0: the loop would spin).
pub const MIN_TIMEOUT_SECS: u32 = 1;

/// The longest long-poll timeout (past a few minutes, proxies cut idle connections).
pub const MAX_TIMEOUT_SECS: u32 = 300;

/// The long-poll timeout when none is given.
pub const DEFAULT_TIMEOUT_SECS: u32 = 30;

/// The most rooms an account watch may list.
pub const MAX_LISTED_ROOMS: usize = 1_000;

/// An account watch as the caller gave it. `Debug` shows the tokens and the key as
/// `[redacted]`.
#[derive(Debug)]
pub struct AccountWatchRequest {
    /// Base URL of the homeserver (empty when `account` is given).
    pub homeserver_url: String,
    /// A Matrix user id or an e-mail address, resolved to the homeserver instead of
    /// `homeserver_url` (exactly one of the two is given).
    pub account: Option<String>,
    /// The owner's Matrix access token, sealed at once.
    pub access_token: AccessToken,
    /// The account's refresh token: kept once for the account, as for room watches.
    pub refresh_token: Option<argus_domain::Secret>,
    /// The OAuth 2.0 client id the tokens were issued to.
    pub oauth_client_id: Option<String>,
    /// The owner's recovery key: encrypted rooms are decrypted from the account's key backup.
    pub recovery_key: Option<argus_domain::Secret>,
    /// Classification of every room captured.
    pub classification: Classification,
    /// Only these rooms (and the rooms that replace them); `None`: every joined room.
    pub rooms: Option<Vec<String>>,
    /// The long-poll timeout in seconds (`None`: [`DEFAULT_TIMEOUT_SECS`]).
    pub timeout_secs: Option<i64>,
    /// A room's history is captured from this time (`None`: all of it).
    pub since: Option<OffsetDateTime>,
}

/// Creates or renews (same account: new token, rooms, timeout, classification; a stopped
/// watch becomes active, where its loop stood kept) the watch of an account for `viewer`'s
/// organisation. The homeserver is asked first: the token must be the account's, and read
/// every listed room.
pub async fn watch_account(
    services: &Services,
    viewer: &Viewer,
    mut request: AccountWatchRequest,
) -> Result<AccountWatch> {
    policy::require_scope(viewer, Scope::Ingest)?;
    services.admission.check_caller(&Admission::caller_of(viewer))?;
    let keys = services.token_keys.clone().ok_or(Error::WatchesDisabled)?;
    let account = request.account.take();
    let resolved = account::resolve(services, &mut request.homeserver_url, account.as_deref())
        .await
        .map_err(|unresolved| unresolved.error)?;
    let homeserver: HomeserverUrl = request.homeserver_url.parse()?;
    if !request.access_token.is_well_formed() {
        return Err(Error::InvalidInput("the access token is empty or malformed".into()));
    }
    let timeout_secs = match request.timeout_secs {
        None => DEFAULT_TIMEOUT_SECS,
        Some(secs) => u32::try_from(secs)
            .ok()
            .filter(|s| (MIN_TIMEOUT_SECS..=MAX_TIMEOUT_SECS).contains(s))
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "interval (the long-poll timeout) must be between {MIN_TIMEOUT_SECS} and {MAX_TIMEOUT_SECS} seconds"
                ))
            })?,
    };
    let rooms = listed_rooms(request.rooms.take())?;
    policy::check_may_classify(viewer, request.classification)?;
    crate::ingest::check_since(request.since)?;
    services.connector.check_homeserver(&homeserver)?;
    let recovery_key = crate::watch::checked_recovery_key(request.recovery_key.as_ref())?;
    // The homeserver first: the account confirmed, the Matrix user named, every listed room
    // readable with the token, before anything is stored.
    let given = TokenPair::given(request.access_token, request.refresh_token);
    let (tokens, renewable) =
        crate::ingest::call_tokens(services, &homeserver, given.clone(), request.oauth_client_id.clone());
    let check = argus_matrix::Session::shared(homeserver.clone(), tokens);
    if let Some(resolved) = &resolved {
        account::confirm(services, &check, resolved).await?;
    }
    let user_id = services.connector.whoami(&check).await?;
    if let Some(rooms) = &rooms {
        let joined = services.connector.joined_rooms(&check).await?;
        // The loop reads the rooms the account has joined: a listed room it has not joined
        // would never be captured.
        if rooms.iter().any(|room| !joined.contains(room)) {
            return Err(argus_matrix::Error::Forbidden.into());
        }
    }
    let credential = match &renewable {
        Some(renewing) => Some(crate::watch::account_pair(
            &keys,
            viewer,
            &homeserver,
            user_id.as_str(),
            renewing,
            request.oauth_client_id,
        )?),
        None => None,
    };
    let access_token = credential.as_ref().map_or(given.access_token, |(_, token)| token.clone());
    let decrypts = recovery_key.is_some();
    let credentials = Credentials { access_token, recovery_key, ..Credentials::default() };
    let binding = AccountWatchBinding(AccountBinding {
        org: &viewer.org,
        owner: &viewer.actor,
        homeserver_url: homeserver.as_str(),
        user_id: user_id.as_str(),
    });
    let token = keys.seal_account_watch(&credentials, binding)?;
    let new = NewAccountWatch {
        owner: viewer.actor.clone(),
        org: viewer.org.clone(),
        homeserver_url: homeserver,
        user_id: user_id.as_str().to_owned(),
        classification: request.classification,
        timeout_secs,
        rooms,
        token,
        decrypts,
        since: request.since,
    };
    let credential = credential.map(|(new, _)| new);
    let limits = services.watch_limits;
    let caps = argus_store::WatchCaps { per_owner: limits.max_per_owner, per_org: limits.max_per_org };
    let v = viewer.clone();
    let watch = services
        .with_store(move |store| store.upsert_account_sync_watch(&v, &new, credential.as_ref(), caps))
        .await?;
    tracing::info!(
        actor = %viewer.actor, org = %viewer.org, watch = watch.id, timeout = watch.timeout_secs,
        listed = watch.rooms.as_ref().map(Vec::len), decrypts = watch.decrypts, "account watched"
    );
    services.on_account_watched.notify_one();
    Ok(watch)
}

/// The listed rooms, checked and without repeats; `None` stays every joined room.
fn listed_rooms(rooms: Option<Vec<String>>) -> Result<Option<Vec<RoomId>>> {
    let Some(rooms) = rooms else { return Ok(None) };
    if rooms.is_empty() || rooms.len() > MAX_LISTED_ROOMS {
        return Err(Error::InvalidInput(format!(
            "rooms must list 1 to {MAX_LISTED_ROOMS} rooms (or be omitted for every joined room)"
        )));
    }
    let mut parsed = rooms.iter().map(|r| r.parse::<RoomId>()).collect::<std::result::Result<Vec<_>, _>>()?;
    parsed.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    parsed.dedup();
    Ok(Some(parsed))
}

/// Stops watching an account; whether `viewer` had that watch and may see it. What was
/// captured stays; its loop stops at its next lease renewal.
pub async fn unwatch_account(services: &Services, viewer: &Viewer, id: i64) -> Result<bool> {
    policy::require_scope(viewer, Scope::Ingest)?;
    let v = viewer.clone();
    let removed = services.with_store(move |store| store.remove_account_watch(&v, id)).await?;
    if removed {
        tracing::info!(actor = %viewer.actor, org = %viewer.org, watch = id, "account unwatched");
    }
    Ok(removed)
}

/// The account watches `viewer` may see, oldest first, after storage id `after`, and how many
/// they may see in all.
pub async fn account_watches(
    services: &Services,
    viewer: &Viewer,
    first: u32,
    after: Option<i64>,
) -> Result<(Vec<AccountWatch>, i64)> {
    policy::require_scope(viewer, Scope::Read)?;
    let v = viewer.clone();
    services
        .with_store(move |store| {
            Ok((store.account_watches(&v, first, after)?, store.count_account_watches(&v)?))
        })
        .await
}

/// How the live loops of one replica run.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveOptions {
    /// This replica's name in the leases it takes (unique per process).
    pub replica: String,
    /// Time between looks for account watches no replica runs.
    pub tick: Duration,
    /// How long a loop's lease lasts without renewal: past it (the replica died), another
    /// replica takes the loop over. Renewed every third of it.
    pub lease: Duration,
    /// Loops this replica runs at most.
    pub max_loops: usize,
    /// Rooms of one account read at once after a `/sync` answer.
    pub room_concurrency: usize,
    /// Messages one room's read takes at most per answer (the rest at the next one).
    pub max_messages_per_run: u32,
    /// Room reads at once on this replica, over every loop (each holds a streamed read's
    /// batches in memory).
    pub max_concurrent_reads: usize,
    /// Room reads at once against one homeserver, over every loop of this replica.
    pub per_homeserver: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        Self {
            replica: crate::scheduler::default_replica(),
            tick: Duration::from_secs(5),
            lease: Duration::from_secs(90),
            max_loops: 256,
            room_concurrency: 4,
            max_messages_per_run: 10_000,
            max_concurrent_reads: 32,
            per_homeserver: 8,
        }
    }
}

/// A loop this replica runs.
#[derive(Debug)]
struct RunningLoop {
    task: JoinHandle<()>,
    /// The sealed credentials it was started with: a watch given again is sealed anew.
    token: argus_domain::SealedToken,
    /// Ends the loop without giving its lease back (its watch was given again).
    replaced: tokio::sync::watch::Sender<bool>,
}

/// The live loops of one replica: claims account watches no replica runs and runs a loop for
/// each, until stopped.
#[derive(Debug)]
pub struct Live {
    services: Arc<Services>,
    options: LiveOptions,
    loops: Mutex<HashMap<i64, RunningLoop>>,
    stop: tokio::sync::watch::Sender<bool>,
    slots: Arc<ReadSlots>,
}

/// The places for room reads of every loop of a replica: in all, and per homeserver.
#[derive(Debug)]
pub(crate) struct ReadSlots {
    all: Arc<tokio::sync::Semaphore>,
    per_homeserver: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    per_homeserver_size: usize,
}

impl ReadSlots {
    fn new(options: &LiveOptions) -> Self {
        Self {
            all: Arc::new(tokio::sync::Semaphore::new(options.max_concurrent_reads.max(1))),
            per_homeserver: Mutex::new(HashMap::new()),
            per_homeserver_size: options.per_homeserver.max(1),
        }
    }

    /// Waits for a place against `homeserver`, then for one in all.
    pub(crate) async fn acquire(
        &self,
        homeserver: &HomeserverUrl,
    ) -> Option<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit)> {
        let origin = argus_domain::NewIngestion::origin_of(homeserver.as_str());
        let one = {
            let mut map = self.per_homeserver.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                map.entry(origin)
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_homeserver_size))),
            )
        };
        let one = one.acquire_owned().await.ok()?;
        let all = Arc::clone(&self.all).acquire_owned().await.ok()?;
        Some((one, all))
    }
}

impl Live {
    /// The loops over `services` (whose token keys open the watches' credentials).
    pub fn new(services: Arc<Services>, options: LiveOptions) -> Self {
        let (stop, _) = tokio::sync::watch::channel(false);
        let slots = Arc::new(ReadSlots::new(&options));
        Self { services, options, loops: Mutex::new(HashMap::new()), stop, slots }
    }

    /// The options in force.
    pub fn options(&self) -> &LiveOptions {
        &self.options
    }

    /// The account watches this replica runs a loop for now.
    pub fn running(&self) -> Vec<i64> {
        let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
        loops.retain(|_, running| !running.task.is_finished());
        let mut ids: Vec<i64> = loops.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Claims, every tick (or as soon as an account is watched), the account watches no
    /// replica runs, until `stop` is notified; then stops every loop, each giving its lease
    /// back.
    pub async fn run(self: Arc<Self>, stop: Arc<tokio::sync::Notify>) {
        tracing::info!(replica = %self.options.replica, "live capture started");
        let woken = Arc::clone(&self.services.on_account_watched);
        loop {
            if let Err(error) = self.cycle().await {
                tracing::warn!(code = error.code(), error = %error, "account watches could not be claimed");
            }
            tokio::select! {
                () = stop.notified() => break,
                () = woken.notified() => {}
                () = tokio::time::sleep(self.options.tick) => {}
            }
        }
        self.shutdown().await;
        tracing::info!(replica = %self.options.replica, "live capture stopped");
    }

    /// Claims the account watches no replica runs (as many as this replica has room for) and
    /// starts a loop for each; returns how many it started.
    pub async fn cycle(&self) -> Result<usize> {
        let running = self.running();
        let room = self.options.max_loops.saturating_sub(running.len());
        if room == 0 {
            return Ok(0);
        }
        // A claim also returns (oldest first, lease renewed) the watches this replica already
        // holds: it asks for as many more as run here, so that they never take the room of a
        // new loop (a replica one loop short of its bound would otherwise never start another).
        let (replica, lease) = (self.options.replica.clone(), self.options.lease);
        let limit = u32::try_from(room.saturating_add(running.len())).unwrap_or(u32::MAX);
        let claimed = self
            .services
            .with_store(move |store| {
                store.claim_account_watches(&replica, OffsetDateTime::now_utc(), lease, limit)
            })
            .await?;
        let mut started = 0;
        let mut new_loops = 0;
        let mut surplus = Vec::new();
        {
            let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
            for claimed in claimed {
                let id = claimed.watch.id;
                let mut previous = None;
                if let Some(running) = loops.get(&id)
                    && !running.task.is_finished()
                {
                    if running.token == claimed.token {
                        continue;
                    }
                    // Its loop runs with what the watch was before it was given again (which
                    // gave the lease up, claimed here anew): that loop ends, and the new one
                    // starts once it has, with what was given.
                    let _ = running.replaced.send(true);
                    previous = loops.remove(&id).map(|running| running.task);
                } else if new_loops == room || !self.holds_key(&claimed) {
                    // Past the room, or sealed under a key this replica lacks (a rotation under
                    // way): given back at once, for another replica.
                    surplus.push(id);
                    continue;
                } else {
                    new_loops += 1;
                }
                let token = claimed.token.clone();
                let (replaced, replaced_rx) = tokio::sync::watch::channel(false);
                let run = account_loop::run(
                    Arc::clone(&self.services),
                    self.options.clone(),
                    claimed,
                    self.stop.subscribe(),
                    replaced_rx,
                    Arc::clone(&self.slots),
                );
                let task = tokio::spawn(async move {
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    run.await;
                });
                loops.insert(id, RunningLoop { task, token, replaced });
                started += 1;
            }
        }
        // Claimed past the room (a loop counted as running here had lost its watch): given back
        // at once, for another replica.
        for id in surplus {
            let replica = self.options.replica.clone();
            if let Err(e) =
                self.services.with_store(move |store| store.release_account_watch(id, &replica)).await
            {
                tracing::warn!(
                    watch = id,
                    code = e.code(),
                    "an account watch could not be released; its lease will expire"
                );
            }
        }
        Ok(started)
    }

    /// Whether this replica holds the key that sealed `claimed`'s credentials.
    fn holds_key(&self, claimed: &argus_store::ClaimedAccountWatch) -> bool {
        self.services.token_keys.as_ref().is_some_and(|keys| keys.holds(&claimed.token.key_id))
    }

    /// Stops every loop and waits for them (each gives its lease back).
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        let tasks: Vec<JoinHandle<()>> = {
            let mut loops = self.loops.lock().unwrap_or_else(PoisonError::into_inner);
            loops.drain().map(|(_, running)| running.task).collect()
        };
        for task in tasks {
            let _ = task.await;
        }
    }
}
