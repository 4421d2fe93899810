//! One account's loop: `/sync` long-polls with the stored filter from the stored `since`; the
//! rooms each answer names read forwards from their own positions by the room reader (what
//! a room watch's run does), at most [`super::LiveOptions::room_concurrency`] at once; rooms
//! left, banned or invited recorded (an invite is never accepted); then the new `since` and the
//! memberships stored in one transaction, under the loop's lease.
//!
//! The lease is renewed every third of its length by a heartbeat beside the loop: a loop whose
//! lease is lost (its database unreachable for longer, the watch removed or stopped, given
//! again) stops at once, leaving the account to whoever holds it. Memory is bounded: an answer
//! is reduced to the rooms it names ([`argus_matrix::SyncUpdate`], no event kept), and each
//! room is read in batches by the room reader.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use argus_crypto::megolm::Undecryptable;
use argus_domain::{AccountWatch, FollowedRoom, Membership, RoomId, Scope, Viewer};
use argus_matrix::{Session, StaticToken, SyncRequest, SyncUpdate, TokenSource};
use argus_store::{ClaimedAccountWatch, SyncProgress};
use futures::StreamExt as _;
use time::OffsetDateTime;

use super::LiveOptions;
use crate::{
    Error, Services,
    ingest::{IngestRequest, LiveRead, Reach, Trigger, history_covers, ingest_room_with},
    scheduler::{rate_limited_until, stop_reason},
    token_keys::{AccountBinding, AccountWatchBinding, Credentials},
};

/// The longest a rate limit a room's read met holds the loop (the homeserver's number is not
/// trusted to be sane; the room is tried again after the next answer).
const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(300);

/// How long `/sync` (or the filter's upload) may fail only in ways no retry changes (a refused
/// request, a malformed or oversized answer) before the watch stops with the last one's code.
const HOPELESS_FOR: Duration = Duration::from_secs(600);

/// The longest wait between two tries after a failed `/sync` or store write.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The most rooms remembered as holding messages that wait for their key.
const MAX_AWAITING_KEYS: usize = 1_000;

/// The most times a room is read again from one position for keys that arrived.
const MAX_REREADS: u32 = 3;

/// A room waiting for keys: the position to read it again from, and how often it was.
#[derive(Debug, Clone)]
struct Waiting {
    from: String,
    tries: u32,
}

/// The most upgrades followed from one listed room when the loop starts.
const MAX_SUCCESSORS: usize = crate::ingest::MAX_UPGRADES_FOLLOWED;

/// Why a loop ended.
#[derive(Debug)]
enum End {
    /// The replica stops.
    Stopped,
    /// The lease is no longer this replica's (or the watch is gone, stopped, given again).
    Lost,
    /// The watch was given again (new credentials, rooms or settings) and claimed anew by
    /// this replica: a new loop runs it as given, the lease kept for it.
    Replaced,
    /// The watch was stopped with a reason (the owner must give it again).
    Halted(String),
}

/// Runs the loop of `claimed` until the replica stops, the lease is lost, the watch stops, or
/// `replaced` says the watch was given again.
pub(super) async fn run(
    services: Arc<Services>,
    options: LiveOptions,
    claimed: ClaimedAccountWatch,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut replaced: tokio::sync::watch::Receiver<bool>,
    slots: Arc<super::ReadSlots>,
) {
    let id = claimed.watch.id;
    let token = claimed.token.clone();
    let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
    let heartbeat = tokio::spawn(heartbeat(Arc::clone(&services), options.clone(), id, lost_tx));
    let end = tokio::select! {
        end = run_loop(&services, &options, &slots, claimed) => end,
        _ = lost.wait_for(|lost| *lost) => End::Lost,
        _ = stop.wait_for(|stop| *stop) => End::Stopped,
        Ok(_) = replaced.wait_for(|replaced| *replaced) => End::Replaced,
    };
    heartbeat.abort();
    match end {
        End::Stopped => {
            let replica = options.replica.clone();
            if let Err(e) = services.with_store(move |store| store.release_account_watch(id, &replica)).await
            {
                tracing::warn!(
                    watch = id,
                    code = e.code(),
                    "an account watch could not be released; its lease will expire"
                );
            }
        }
        End::Lost => {
            tracing::info!(watch = id, "an account watch's loop stopped: its lease is no longer held")
        }
        End::Replaced => {
            tracing::info!(watch = id, "an account watch's loop stopped: the watch was given again")
        }
        End::Halted(reason) => {
            let replica = options.replica.clone();
            let stored = reason.clone();
            let token = token.clone();
            match services
                .with_store(move |store| store.stop_account_watch(id, &replica, &stored, &token))
                .await
            {
                Ok(true) => tracing::warn!(watch = id, %reason, "account watch stopped"),
                Ok(false) => {
                    tracing::info!(watch = id, "an account watch's loop ended; its lease was no longer held")
                }
                Err(e) => {
                    tracing::warn!(watch = id, code = e.code(), "an account watch could not be stopped")
                }
            }
        }
    }
}

/// Renews the loop's lease every third of its length; says when it is lost.
async fn heartbeat(
    services: Arc<Services>,
    options: LiveOptions,
    id: i64,
    lost: tokio::sync::watch::Sender<bool>,
) {
    let mut every = tokio::time::interval((options.lease / 3).max(Duration::from_millis(100)));
    every.tick().await;
    loop {
        every.tick().await;
        let (replica, lease) = (options.replica.clone(), options.lease);
        let renewed = services
            .with_store(move |store| {
                store.renew_account_watch_lease(id, &replica, OffsetDateTime::now_utc(), lease)
            })
            .await;
        match renewed {
            Ok(true) => {}
            Ok(false) => {
                let _ = lost.send(true);
                return;
            }
            // The database may be back before the lease runs out: the next beat tries again.
            Err(e) => {
                tracing::warn!(watch = id, code = e.code(), "an account watch's lease could not be renewed")
            }
        }
    }
}

/// What a loop works with once its credentials are open.
struct Account {
    watch: AccountWatch,
    owner: Viewer,
    credentials: Credentials,
    tokens: Arc<dyn TokenSource>,
    session: Session,
}

/// Opens the watch's credentials and makes its session.
async fn open(
    services: &Arc<Services>,
    options: &LiveOptions,
    claimed: &ClaimedAccountWatch,
) -> Result<Account, End> {
    let watch = &claimed.watch;
    let Some(keys) = &services.token_keys else { return Err(End::Stopped) };
    if !keys.holds(&claimed.token.key_id) {
        // Another replica may hold the key (a rotation under way): left to its lease.
        tracing::warn!(watch = watch.id, key = %claimed.token.key_id, "an account watch is sealed under a key this replica lacks");
        return Err(End::Lost);
    }
    let account = AccountBinding {
        org: &watch.org,
        owner: &watch.owner,
        homeserver_url: watch.homeserver_url.as_str(),
        user_id: &watch.user_id,
    };
    let credentials = match keys.open_account_watch(&claimed.token, AccountWatchBinding(account)) {
        Ok(credentials) => credentials,
        Err(error) => return Err(End::Halted(format!("TOKEN_UNAVAILABLE: {}", error.public_message()))),
    };
    let id = watch.id;
    let shared = match services.with_store(move |store| store.account_watch_credential(id)).await {
        Ok(shared) => shared,
        Err(e) => {
            tracing::warn!(watch = id, code = e.code(), "an account watch's pair could not be read");
            return Err(End::Lost);
        }
    };
    // The pair must be this watch's account's (the row is found by a reference the database
    // holds).
    if let Some(credential) = &shared
        && (credential.org != watch.org
            || credential.owner != watch.owner
            || credential.user_id != watch.user_id
            || credential.homeserver_url != watch.homeserver_url.as_str())
    {
        return Err(End::Halted(
            "TOKEN_UNAVAILABLE: the account's stored pair is not this watch's account's".into(),
        ));
    }
    let tokens: Arc<dyn TokenSource> = match shared {
        Some(credential) => {
            match crate::scheduler::account_tokens(services, keys, &options.replica, credential) {
                Ok(tokens) => Arc::new(tokens),
                Err(error) if error.is_retryable() => return Err(End::Lost),
                Err(error) => {
                    return Err(End::Halted(format!("TOKEN_UNAVAILABLE: {}", error.public_message())));
                }
            }
        }
        None => Arc::new(StaticToken::new(credentials.access_token.clone())),
    };
    let session = Session::shared(watch.homeserver_url.clone(), Arc::clone(&tokens));
    let owner = Viewer::new(
        watch.owner.clone(),
        watch.org.clone(),
        watch.classification,
        [Scope::Ingest, Scope::Read],
    );
    Ok(Account { watch: watch.clone(), owner, credentials, tokens, session })
}

async fn run_loop(
    services: &Arc<Services>,
    options: &LiveOptions,
    slots: &super::ReadSlots,
    claimed: ClaimedAccountWatch,
) -> End {
    let account = match open(services, options, &claimed).await {
        Ok(account) => account,
        Err(end) => return end,
    };
    let watch = &account.watch;
    // The connector's device of the account, as far as it is had: no `/sync` is asked while it
    // is wanted and not open (its room keys would be taken by no one, and lost).
    let mut device = super::device::Held::default();
    let mut backoff = Duration::from_secs(1);
    // Since when `/sync` (or the filter's upload) has failed only in ways a retry cannot change.
    let mut hopeless: Option<tokio::time::Instant> = None;
    // The stored filter, made once per watch.
    let mut filter_id = claimed.filter_id.clone();
    let mut since = claimed.sync_token.clone();
    let id = watch.id;
    let mut followed: HashMap<RoomId, FollowedRoom> =
        match services.with_store(move |store| store.followed_rooms(id)).await {
            Ok(rooms) => rooms.into_iter().map(|room| (room.room_id.clone(), room)).collect(),
            Err(e) => {
                tracing::warn!(watch = id, code = e.code(), "an account watch's rooms could not be read");
                return End::Lost;
            }
        };
    let mut allowed = listed(services, &account).await;
    if since.is_some() {
        // Joined rooms the watch does not follow yet (it was given again with other rooms, or
        // the account joined while no loop ran and the room has been quiet since): due, so that
        // they are read now rather than at their next event.
        match services.connector.joined_rooms(&account.session).await {
            Ok(joined) => {
                let now = OffsetDateTime::now_utc();
                for room in joined.into_iter().filter(|room| is_allowed(allowed.as_ref(), room)) {
                    if followed.get(&room).is_none_or(|f| f.membership != Membership::Join) {
                        let row = FollowedRoom {
                            room_id: room.clone(),
                            membership: Membership::Join,
                            by: None,
                            changed_at: now,
                            due: true,
                        };
                        followed.insert(room, row);
                    }
                }
            }
            Err(error) => {
                let error = Error::from(error);
                if let Some(reason) = stop_reason(&error) {
                    return End::Halted(reason);
                }
                tracing::warn!(
                    watch = id,
                    code = error.code(),
                    "an account's joined rooms could not be listed"
                );
            }
        }
    }
    // Rooms whose last read failed (or made no progress) in a way a later one may not: when they
    // are read again, and the wait that led there (doubling while reads keep failing). A room
    // waiting is not read before its time, whatever an answer says of it.
    let mut failing: HashMap<RoomId, (tokio::time::Instant, Duration)> = HashMap::new();
    // Rooms whose read was refused for good while this loop runs.
    let mut refused: HashSet<RoomId> = HashSet::new();
    // Rooms the account left whose read up to the departure (the event id) is not done yet.
    let mut departures: HashMap<RoomId, String> = HashMap::new();
    // Rooms holding messages stored encrypted for want of a key, and the position before them:
    // read again from there when the device receives a key of the room.
    let mut awaiting_keys: HashMap<RoomId, Waiting> = HashMap::new();
    // Rooms to read again from such a position in this answer.
    let mut reread: HashMap<RoomId, Waiting> = HashMap::new();
    loop {
        match device.bring_up(services, options, &account.watch, &account.credentials, &account.session).await
        {
            super::device::Readiness::Ready => {}
            super::device::Readiness::NotYet => {
                wait(&mut backoff, None).await;
                continue;
            }
            super::device::Readiness::LeaseLost => return End::Lost,
            super::device::Readiness::Halted(reason) => return End::Halted(reason),
        }
        if filter_id.is_none() {
            match services.connector.create_sync_filter(&account.session, &watch.user_id).await {
                Ok(filter) => {
                    let (replica, stored) = (options.replica.clone(), filter.clone());
                    match services
                        .with_store(move |store| store.set_account_watch_filter(id, &replica, &stored))
                        .await
                    {
                        Ok(true) => filter_id = Some(filter),
                        Ok(false) => return End::Lost,
                        Err(e) => {
                            tracing::warn!(
                                watch = id,
                                code = e.code(),
                                "an account watch's filter could not be stored"
                            );
                            wait(&mut backoff, None).await;
                            continue;
                        }
                    }
                }
                Err(error) => {
                    let error = Error::from(error);
                    if !error.is_retryable()
                        && let Some(end) = hopeless_for(&mut hopeless, &error)
                    {
                        return end;
                    }
                    match failed(&error, &mut backoff).await {
                        Some(end) => return end,
                        None => continue,
                    }
                }
            }
        }
        // Rooms left to capture (just joined, or whose last read failed or stopped at its cap)
        // make the next answer immediate, as does the first one. A room the watch no longer
        // lists (given again with other rooms) is not captured, however due it was.
        // A room whose read failed and may pass later is tried again after a doubling wait (the
        // long-poll is cut to it), not at once: a homeserver failing one room is not hammered.
        let long_poll = Duration::from_secs(u64::from(watch.timeout_secs));
        let due: Vec<&RoomId> = followed
            .values()
            .filter(|room| is_due(room, allowed.as_ref()) && !refused.contains(&room.room_id))
            .map(|room| &room.room_id)
            .collect();
        let now = tokio::time::Instant::now();
        let pending = due.into_iter().chain(departures.keys());
        let next_read = pending.map(|room| failing.get(room).map_or(now, |(at, _)| *at)).min();
        let timeout = match next_read {
            _ if since.is_none() => Duration::ZERO,
            Some(at) => at.saturating_duration_since(now).min(long_poll),
            None => long_poll,
        };
        let request = SyncRequest { since: since.clone(), filter_id: filter_id.clone(), timeout };
        let update = match services.connector.sync(&account.session, &request).await {
            Ok(update) => {
                hopeless = None;
                update
            }
            Err(error) => {
                let error = Error::from(error);
                if !error.is_retryable() {
                    // The stored filter may be what the homeserver refuses: made again, once.
                    if hopeless.is_none() {
                        filter_id = None;
                    }
                    if let Some(end) = hopeless_for(&mut hopeless, &error) {
                        return end;
                    }
                }
                match failed(&error, &mut backoff).await {
                    Some(end) => return end,
                    None => continue,
                }
            }
        };
        // The device takes the answer's room keys before any room is read (a message's key
        // comes in the same answer as the message, or earlier); the answer's position is
        // stored only once the keys are.
        if let Some(opened) = device.device() {
            match opened.receive_sync(&update.device).await {
                Ok(received) => {
                    for (room, _) in &received.room_keys {
                        if let Ok(room) = room.parse::<RoomId>()
                            && let Some(waiting) = awaiting_keys.remove(&room)
                        {
                            reread.insert(room, waiting);
                        }
                    }
                }
                Err(error) if super::device::lease_lost(&error) => return End::Lost,
                Err(error) => {
                    // What the device took in memory may not all be stored (a one-time key
                    // used, a room key not kept): it is opened again from the store, and the
                    // same answer asked again from the stored position brings the events back.
                    tracing::warn!(watch = id, code = error.code(), "the device's keys could not be stored");
                    device.reopen();
                    wait(&mut backoff, None).await;
                    continue;
                }
            }
        }
        let synced_at = OffsetDateTime::now_utc();
        let mut changes = memberships(&update, &followed, allowed.as_mut(), synced_at);
        // A room joined anew is read again, whatever refused it before.
        for change in changes.iter().filter(|c| c.membership == Membership::Join) {
            refused.remove(&change.room_id);
        }
        bound_rows(&mut changes, &followed, watch.id);
        let now = tokio::time::Instant::now();
        let waiting = |room: &RoomId| failing.get(room).is_some_and(|(at, _)| *at > now);
        // What to read: rooms the answer names with new events, rooms new to the watch, and
        // rooms still due.
        let mut wanted: Vec<RoomId> = update
            .joined
            .iter()
            .filter(|room| is_allowed(allowed.as_ref(), &room.room_id))
            .filter(|room| {
                room.new_events > 0
                    || followed.get(&room.room_id).is_none_or(|f| f.membership != Membership::Join || f.due)
            })
            .map(|room| room.room_id.clone())
            .collect();
        for room in followed.values().filter(|room| is_due(room, allowed.as_ref())) {
            if !wanted.contains(&room.room_id) && !changes.iter().any(|c| c.room_id == room.room_id) {
                wanted.push(room.room_id.clone());
            }
        }
        // A room the account left or was banned from, followed until then, is read once more
        // from its position: what was sent before the account left is not lost (the homeserver
        // serves a departed member the timeline up to its departure).
        // Rooms past the watch's bound are not followed, nor read; rooms waiting after a failure
        // are read at their time.
        wanted.retain(|room| {
            !refused.contains(room)
                && !waiting(room)
                && (followed.contains_key(room) || changes.iter().any(|c| c.room_id == *room))
        });
        // Read only up to the departure (the homeserver may serve a departed member more),
        // until that read has reached it (a failed or capped one is tried again with later
        // answers). A banned account is refused every read: nothing to try.
        for room in &update.left {
            let was_joined = followed.get(&room.room_id).is_some_and(|f| f.membership == Membership::Join);
            if let Some(event_id) = &room.event_id
                && was_joined
                && room.membership == Membership::Leave
                && is_allowed(allowed.as_ref(), &room.room_id)
            {
                departures.insert(room.room_id.clone(), event_id.clone());
            }
        }
        departures.retain(|room, _| !refused.contains(room));
        for room in departures.keys() {
            wanted.retain(|r| r != room);
            if !waiting(room) {
                wanted.push(room.clone());
            }
        }
        for room in reread.keys() {
            if !wanted.contains(room)
                && followed.contains_key(room)
                && !departures.contains_key(room)
                && !refused.contains(room)
                && !waiting(room)
            {
                wanted.push(room.clone());
            }
        }
        let outcomes: Vec<(RoomId, crate::Result<Captured>)> = futures::stream::iter(wanted)
            .map(|room| {
                let (account, departures, device, reread) = (&account, &departures, device.device(), &reread);
                async move {
                    let live = LiveRead {
                        stop_after: departures.get(&room).map(String::as_str),
                        device,
                        from: reread.get(&room).map(|w| w.from.as_str()),
                    };
                    let result = capture(services, options, slots, account, &room, live).await;
                    (room, result)
                }
            })
            .buffer_unordered(options.room_concurrency.max(1))
            .collect()
            .await;
        // The longest wait a rate limit asked for in this answer's reads: waited once.
        let mut rate_limited = Duration::ZERO;
        let mut rereading = std::mem::take(&mut reread);
        for (room, outcome) in outcomes {
            let before = rereading.remove(&room);
            let before = before.as_ref();
            match (&outcome, before) {
                // Still messages without their key: waiting from the earliest position, a
                // bounded number of times (one that never comes must not have the room read
                // again from there at every key).
                (Ok(Captured { awaiting_keys_from: Some(from), .. }), _) => {
                    let tries = before.map_or(0, |w| w.tries + 1);
                    let from = before.map_or_else(|| from.clone(), |w| w.from.clone());
                    if tries < MAX_REREADS
                        && (awaiting_keys.contains_key(&room) || awaiting_keys.len() < MAX_AWAITING_KEYS)
                    {
                        awaiting_keys.entry(room.clone()).or_insert(Waiting { from, tries });
                    }
                }
                // A read again that failed, or was not run: it waits for the next key still.
                (Err(_), Some(waiting)) if awaiting_keys.len() < MAX_AWAITING_KEYS => {
                    awaiting_keys.entry(room.clone()).or_insert_with(|| waiting.clone());
                }
                _ => {}
            }
            let failed_before = failing.remove(&room);
            let mut fail = |room: &RoomId| {
                let wait =
                    failed_before.map_or(Duration::from_secs(1), |(_, wait)| (wait * 2).min(MAX_BACKOFF));
                failing.insert(room.clone(), (tokio::time::Instant::now() + wait, wait));
            };
            if departures.contains_key(&room) {
                // Read up to the departure: done once it got there (or can never).
                let done = match &outcome {
                    Ok(captured) => !captured.truncated || captured.stored == 0,
                    Err(error) => refused_for_good(error),
                };
                if done {
                    departures.remove(&room);
                } else {
                    fail(&room);
                }
                continue;
            }
            let due = match outcome {
                // A read that stored nothing and still did not reach the end (a homeserver
                // answering past what was asked, every time) waits like a failed one.
                Ok(Captured { complete: false, stored: 0, .. }) => {
                    fail(&room);
                    true
                }
                Ok(captured) => !captured.complete,
                Err(error) => {
                    if !matches!(error, Error::HomeserverMismatch)
                        && let Some(reason) = stop_reason(&error)
                    {
                        return End::Halted(reason);
                    }
                    if let Error::Connector(argus_matrix::Error::RateLimited { retry_after }) = &error {
                        rate_limited = rate_limited.max(retry_after.unwrap_or(Duration::from_secs(1)));
                    }
                    // A room refused for good (withheld, moved to another homeserver, left
                    // meanwhile) waits for its next event rather than being read every answer.
                    let retry = !refused_for_good(&error);
                    if retry {
                        fail(&room);
                    } else {
                        // Refused for good (stored above the watch's level, archived from
                        // another homeserver, no longer readable): not read again, and not
                        // audited again, until the account joins it anew or the loop restarts.
                        refused.insert(room.clone());
                    }
                    retry
                }
            };
            match changes.iter_mut().find(|c| c.room_id == room) {
                // A room left is read once, never due again.
                Some(change) => change.due = due && change.membership == Membership::Join,
                None => {
                    let before = followed.get(&room);
                    changes.push(FollowedRoom {
                        room_id: room.clone(),
                        membership: Membership::Join,
                        by: before.and_then(|f| f.by.clone()),
                        changed_at: before.map_or(synced_at, |f| f.changed_at),
                        due,
                    });
                }
            }
        }
        // Rooms to read again that were not read in this answer wait for the next key still.
        for (room, waiting) in rereading {
            if awaiting_keys.len() < MAX_AWAITING_KEYS {
                awaiting_keys.entry(room).or_insert(waiting);
            }
        }
        if !rate_limited.is_zero() {
            tokio::time::sleep(rate_limited.min(MAX_RATE_LIMIT_WAIT)).await;
        }
        // The keys received are saved into the account's key backup, as its clients do.
        if let Some(opened) = device.device().filter(|_| device.backs_up())
            && let Err(error) = opened.back_up().await
        {
            if super::device::lease_lost(&error) {
                return End::Lost;
            }
            tracing::warn!(
                watch = id,
                code = error.code(),
                "room keys could not be saved into the key backup"
            );
        }
        // Unchanged rows are not written again.
        changes.retain(|change| followed.get(&change.room_id) != Some(change));
        let progress = SyncProgress { sync_token: update.next_batch.clone(), synced_at, rooms: changes };
        let replica = options.replica.clone();
        let stored = {
            let progress = progress.clone();
            services.with_store(move |store| store.record_sync(id, &replica, &progress)).await
        };
        match stored {
            Ok(true) => {
                backoff = Duration::from_secs(1);
                device.progressed();
                for change in progress.rooms {
                    followed.insert(change.room_id.clone(), change);
                }
                since = Some(progress.sync_token);
            }
            Ok(false) => return End::Lost,
            Err(e) => {
                // The answer is asked again from the same `since`: rooms read meanwhile find
                // nothing new.
                tracing::warn!(
                    watch = id,
                    code = e.code(),
                    "an account watch's position could not be stored"
                );
                wait(&mut backoff, None).await;
            }
        }
    }
}

/// The memberships an answer changes: rooms joined for the first time (due), left, banned,
/// invited. Rooms replacing an allowed room become allowed.
fn memberships(
    update: &SyncUpdate,
    followed: &HashMap<RoomId, FollowedRoom>,
    mut allowed: Option<&mut HashSet<RoomId>>,
    now: OffsetDateTime,
) -> Vec<FollowedRoom> {
    let mut changes = Vec::new();
    for room in &update.joined {
        if let (Some(allowed), Some(next)) = (allowed.as_deref_mut(), &room.successor)
            && allowed.contains(&room.room_id)
        {
            allowed.insert(next.clone());
        }
    }
    let allowed = allowed.as_deref();
    for room in &update.joined {
        if !is_allowed(allowed, &room.room_id) {
            continue;
        }
        if followed.get(&room.room_id).is_none_or(|f| f.membership != Membership::Join) {
            changes.push(FollowedRoom {
                room_id: room.room_id.clone(),
                membership: Membership::Join,
                by: None,
                changed_at: now,
                due: true,
            });
        }
    }
    for room in &update.left {
        if followed.contains_key(&room.room_id) || is_allowed(allowed, &room.room_id) {
            changes.push(FollowedRoom {
                room_id: room.room_id.clone(),
                membership: room.membership,
                by: who(room.by.as_deref()),
                changed_at: room.at.unwrap_or(now),
                due: false,
            });
        }
    }
    for room in &update.invited {
        let known = followed.get(&room.room_id).is_some_and(|f| f.membership == Membership::Invite);
        if !known && is_allowed(allowed, &room.room_id) {
            changes.push(FollowedRoom {
                room_id: room.room_id.clone(),
                membership: Membership::Invite,
                by: who(room.inviter.as_deref()),
                changed_at: room.at.unwrap_or(now),
                due: false,
            });
        }
    }
    changes
}

/// Whether a room's read was refused in a way no later read of this loop can change: the room
/// is stored above the watch's level or from another homeserver. Anything else (the homeserver
/// refusing the room, a malformed answer, a store failure, a missing key backup) is tried again
/// after a doubling wait (a room the account left is told by `/sync`, and no longer read).
fn refused_for_good(error: &Error) -> bool {
    matches!(error.code(), "ABOVE_CLEARANCE" | "HOMESERVER_MISMATCH")
}

/// The most rooms an account watch records (joined, left, banned, invited): past it, rooms new
/// to the watch are neither recorded nor read, so that invites from anyone (or a homeserver
/// naming new rooms in every answer) cannot grow the watch without end.
const MAX_FOLLOWED_ROOMS: usize = argus_matrix::MAX_JOINED_ROOMS;

/// Drops the rows of `changes` for rooms new to the watch past [`MAX_FOLLOWED_ROOMS`].
fn bound_rows(changes: &mut Vec<FollowedRoom>, followed: &HashMap<RoomId, FollowedRoom>, watch: i64) {
    let mut room_left = MAX_FOLLOWED_ROOMS.saturating_sub(followed.len());
    let before = changes.len();
    changes.retain(|change| {
        if followed.contains_key(&change.room_id) {
            return true;
        }
        let keep = room_left > 0;
        room_left = room_left.saturating_sub(1);
        keep
    });
    if changes.len() < before {
        tracing::warn!(watch, dropped = before - changes.len(), "an account watch records no more rooms");
    }
}

/// Who a homeserver says changed a membership, kept when it can be a Matrix user id (at most
/// 255 bytes, as the specification bounds them): a longer or empty name is not kept.
fn who(by: Option<&str>) -> Option<String> {
    by.filter(|by| !by.is_empty() && by.len() <= 255).map(str::to_owned)
}

fn is_allowed(allowed: Option<&HashSet<RoomId>>, room: &RoomId) -> bool {
    allowed.is_none_or(|allowed| allowed.contains(room))
}

/// Whether a followed room is still to capture: joined, due, and still one the watch follows.
fn is_due(room: &FollowedRoom, allowed: Option<&HashSet<RoomId>>) -> bool {
    room.due && room.membership == Membership::Join && is_allowed(allowed, &room.room_id)
}

/// The rooms a watch that lists rooms follows: those listed and the rooms that replaced them
/// (as the archive holds them); `None` for every joined room.
async fn listed(services: &Arc<Services>, account: &Account) -> Option<HashSet<RoomId>> {
    let rooms = account.watch.rooms.clone()?;
    let mut allowed: HashSet<RoomId> = rooms.iter().cloned().collect();
    for room in rooms {
        let mut next = Some(room);
        for _ in 0..MAX_SUCCESSORS {
            let Some(room) = next.take() else { break };
            let owner = account.owner.clone();
            next = match services.with_store(move |store| store.room(&owner, &room)).await {
                Ok(Some(stored)) => stored.successor,
                _ => None,
            };
            if let Some(successor) = &next
                && !allowed.insert(successor.clone())
            {
                break;
            }
        }
    }
    Some(allowed)
}

/// What a room's read did.
struct Captured {
    /// The room's forward position before the read, when it stored messages that stayed
    /// encrypted for want of a key (a key arriving later has them read again from there).
    awaiting_keys_from: Option<String>,
    /// It read to the end (its cap did not stop it, its history is complete as far back as the
    /// watch wants).
    complete: bool,
    /// Messages it stored.
    stored: i64,
    /// Its cap stopped it.
    truncated: bool,
}

/// Reads `room` forwards from its stored position (the first time: its history, as the
/// watch's start date says) as a run of the watch's owner; whether it read to the end (its
/// cap did not stop it and its history is complete as far back as the watch wants). With
/// `stop_after` (the account's departure), only up to that event.
async fn capture(
    services: &Arc<Services>,
    options: &LiveOptions,
    slots: &super::ReadSlots,
    account: &Account,
    room: &RoomId,
    live: LiveRead<'_>,
) -> crate::Result<Captured> {
    let stop_after = live.stop_after;
    // Where the room stood before: messages that stay encrypted for want of a key are read
    // again from there when their key arrives.
    let before = match (live.device, live.from) {
        (Some(_), Some(from)) => Some(from.to_owned()),
        (Some(_), None) => {
            let (viewer, room) = (account.owner.clone(), room.clone());
            services.with_store(move |store| store.room(&viewer, &room)).await?.and_then(|r| r.resume_token)
        }
        (None, _) => None,
    };
    let watch = &account.watch;
    let request = IngestRequest {
        homeserver_url: watch.homeserver_url.as_str().to_owned(),
        access_token: account.credentials.access_token.clone(),
        account: None,
        refresh_token: None,
        oauth_client_id: None,
        since: watch.since,
        room_id: room.as_str().to_owned(),
        classification: watch.classification,
        // A read up to a departure is not tried again from where a capped one stopped (it never
        // moves the room's position): it may read as much as any read.
        max_messages: Some(match stop_after {
            Some(_) => i64::from(services.limits.hard_max_messages),
            None => i64::from(options.max_messages_per_run),
        }),
        recovery_key: account
            .credentials
            .recovery_key
            .as_ref()
            .map(|key| argus_domain::Secret::new(key.expose_secret())),
        reach: Reach::Current,
        trigger: Trigger::Scheduled,
        follow_upgrades: false,
    };
    let mut on_page = |_: &argus_domain::FetchReport| {};
    let tokens = Arc::clone(&account.tokens).into();
    // Every loop of the replica shares its places for reads, in all and per homeserver.
    let Some(_places) = slots.acquire(&watch.homeserver_url).await else {
        return Err(Error::Internal);
    };
    let summary = ingest_room_with(services, &account.owner, request, tokens, live, &mut on_page).await?;
    let complete = !summary.report.truncated && history_covers(&summary.room, watch.since);
    // Without a key (none received, or one withheld: a notice anyone can send, and a key that
    // comes after it is used).
    let keyless = summary.report.undecryptable.iter().any(|(code, n)| {
        *n > 0
            && (code == Undecryptable::NoRoomKey.code()
                || Undecryptable::ALL.iter().any(|u| u.code() == code && u.is_withheld()))
    });
    Ok(Captured {
        awaiting_keys_from: before.filter(|_| keyless),
        complete,
        stored: summary.messages_stored,
        truncated: summary.report.truncated,
    })
}

/// Notes a failure no retry changes; the end of the loop once such failures alone have lasted
/// [`HOPELESS_FOR`].
fn hopeless_for(since: &mut Option<tokio::time::Instant>, error: &Error) -> Option<End> {
    let first = *since.get_or_insert_with(tokio::time::Instant::now);
    (first.elapsed() >= HOPELESS_FOR).then(|| {
        End::Halted(format!(
            "SYNC_FAILED: {}: the homeserver's /sync keeps failing; give the watch again once it answers",
            error.code()
        ))
    })
}

/// What a failed `/sync` (or filter upload) does: the watch stops when nothing can succeed
/// until its owner gives it again; otherwise the loop waits (what a rate limit asked, or a
/// growing backoff) and tries again.
async fn failed(error: &Error, backoff: &mut Duration) -> Option<End> {
    if let Some(reason) = stop_reason(error) {
        return Some(End::Halted(reason));
    }
    tracing::warn!(code = error.code(), error = %error.public_message(), "an account's /sync failed; trying again");
    let asked = match error {
        Error::Connector(argus_matrix::Error::RateLimited { retry_after }) => *retry_after,
        _ => None,
    };
    wait(backoff, asked).await;
    None
}

/// Waits what a rate limit asked (bounded), or the backoff, which then doubles.
async fn wait(backoff: &mut Duration, asked: Option<Duration>) {
    let pause = match asked {
        Some(asked) => match rate_limited_until(asked) {
            Some(until) => {
                let left = until - OffsetDateTime::now_utc();
                Duration::try_from(left).unwrap_or(*backoff)
            }
            None => *backoff,
        },
        None => *backoff,
    };
    tokio::time::sleep(pause).await;
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}
