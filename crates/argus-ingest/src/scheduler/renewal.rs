//! A watch's renewed tokens: each new pair is sealed (same key, same binding) and stored before
//! it is used, in one statement that checks the replica still holds the watch's lease and the
//! stored credentials are still those it renewed (compare-and-swap). A replica that loses the
//! race re-reads the sealed pair and goes on with it.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use argus_domain::{ActorId, HomeserverUrl, OrgId, RoomId, SealedToken};
use argus_matrix::{PairKeeper, RefreshingTokens, TokenPair};
use futures::future::BoxFuture;
use time::OffsetDateTime;

use crate::{
    Services, TokenKeys,
    token_keys::{Binding, Credentials},
};

/// The renewing token source of `kept` for the runs of `replica`: each new pair sealed and
/// stored under the watch's lease before it is used.
pub(crate) fn renewing(
    services: &Arc<Services>,
    keys: &Arc<TokenKeys>,
    replica: &str,
    lease: Duration,
    kept: KeptWatch<'_>,
) -> RefreshingTokens {
    let (homeserver, pair, client_id) =
        (kept.homeserver.clone(), kept.credentials.pair(), kept.credentials.oauth_client_id.clone());
    let keeper = WatchKeeper::new(Arc::clone(services), Arc::clone(keys), replica.to_owned(), lease, kept);
    RefreshingTokens::new(services.connector.clone(), homeserver, pair, client_id, Some(Arc::new(keeper)))
}

/// The renewing token source a run of `claimed` by `replica` (holding its lease for `lease` at a
/// time) reads with; `None` when the watch's credentials hold no refresh token.
/// [`crate::Error::WatchesDisabled`] without token keys; the credentials must open.
pub fn watch_tokens(
    services: &Arc<Services>,
    replica: &str,
    lease: Duration,
    claimed: &argus_store::ClaimedWatch,
) -> crate::Result<Option<RefreshingTokens>> {
    let keys = services.token_keys.as_ref().ok_or(crate::Error::WatchesDisabled)?;
    let watch = &claimed.watch;
    let binding = Binding::of(&watch.org, &watch.room_id, &watch.homeserver_url, &watch.owner);
    let credentials = keys.open(&claimed.token, binding)?;
    if credentials.refresh_token.is_none() {
        return Ok(None);
    }
    let kept = KeptWatch::of(watch, claimed.token.clone(), credentials);
    Ok(Some(renewing(services, keys, replica, lease, kept)))
}

/// How long a renewal outside a run holds the watch's lease it borrowed (given back as soon as
/// the new pair is stored).
const BORROWED_LEASE: Duration = Duration::from_secs(60);

/// The keeper of one watch's token pair for the replica running it.
pub(crate) struct WatchKeeper {
    services: Arc<Services>,
    keys: Arc<TokenKeys>,
    id: i64,
    replica: String,
    lease: Duration,
    org: OrgId,
    room_id: RoomId,
    homeserver: HomeserverUrl,
    owner: ActorId,
    /// The credentials last opened or sealed here (the recovery key and client id travel with
    /// every new pair).
    credentials: Mutex<Credentials>,
    /// What this replica last knew to be stored: the old value of the compare-and-swap.
    sealed: Mutex<SealedToken>,
    /// Whether the lease is one this keeper borrowed to renew (outside a run), to give back.
    borrowed: AtomicBool,
}

impl std::fmt::Debug for WatchKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchKeeper")
            .field("watch", &self.id)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// The parts of a watch its keeper needs.
pub(crate) struct KeptWatch<'a> {
    pub(crate) id: i64,
    pub(crate) org: &'a OrgId,
    pub(crate) room_id: &'a RoomId,
    pub(crate) homeserver: &'a HomeserverUrl,
    pub(crate) owner: &'a ActorId,
    pub(crate) sealed: SealedToken,
    pub(crate) credentials: Credentials,
}

impl<'a> KeptWatch<'a> {
    /// The parts of `watch`, whose stored credentials `sealed` opened to `credentials`.
    pub(crate) fn of(watch: &'a argus_domain::Watch, sealed: SealedToken, credentials: Credentials) -> Self {
        Self {
            id: watch.id,
            org: &watch.org,
            room_id: &watch.room_id,
            homeserver: &watch.homeserver_url,
            owner: &watch.owner,
            sealed,
            credentials,
        }
    }
}

impl WatchKeeper {
    /// The keeper of `kept` for `replica`, holding its lease for `lease` at a time.
    pub(crate) fn new(
        services: Arc<Services>,
        keys: Arc<TokenKeys>,
        replica: String,
        lease: Duration,
        kept: KeptWatch<'_>,
    ) -> Self {
        Self {
            services,
            keys,
            id: kept.id,
            replica,
            lease,
            org: kept.org.clone(),
            room_id: kept.room_id.clone(),
            homeserver: kept.homeserver.clone(),
            owner: kept.owner.clone(),
            credentials: Mutex::new(kept.credentials),
            sealed: Mutex::new(kept.sealed),
            borrowed: AtomicBool::new(false),
        }
    }

    fn binding(&self) -> Binding<'_> {
        Binding::of(&self.org, &self.room_id, &self.homeserver, &self.owner)
    }

    fn not_kept(&self, error: &crate::Error) -> argus_matrix::Error {
        tracing::warn!(watch = self.id, code = error.code(), "a watch's renewed token could not be stored");
        argus_matrix::Error::TokenNotKept
    }
}

impl PairKeeper for WatchKeeper {
    fn load(&self) -> BoxFuture<'_, argus_matrix::Result<Option<TokenPair>>> {
        Box::pin(async move {
            let id = self.id;
            let stored = self.services.with_store(move |store| store.watch_token(id)).await;
            let Some(sealed) = stored.map_err(|e| self.not_kept(&e))? else {
                return Ok(None);
            };
            let opened = self.keys.open(&sealed, self.binding()).map_err(|e| {
                tracing::warn!(watch = self.id, code = e.code(), "a watch's stored token does not open");
                argus_matrix::Error::TokenRefreshFailed("the watch's stored token does not open".into())
            })?;
            let pair = opened.pair();
            *self.credentials.lock().unwrap_or_else(PoisonError::into_inner) = opened;
            *self.sealed.lock().unwrap_or_else(PoisonError::into_inner) = sealed;
            Ok(Some(pair))
        })
    }

    fn may_renew(&self) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        Box::pin(async move {
            // The lease of the run under way; else, outside a run (files fetched after it, the
            // media worker), the lease borrowed while nobody holds it.
            let (id, replica, lease) = (self.id, self.replica.clone(), self.lease);
            let (held, borrowed) = self
                .services
                .with_store(move |store| {
                    let now = OffsetDateTime::now_utc();
                    if store.renew_watch_lease(id, &replica, now, lease)? {
                        return Ok((true, false));
                    }
                    let borrowed = store.borrow_watch_lease(id, &replica, now, BORROWED_LEASE)?;
                    Ok((borrowed, borrowed))
                })
                .await
                .map_err(|e| self.not_kept(&e))?;
            if borrowed {
                self.borrowed.store(true, Ordering::SeqCst);
            }
            Ok(held)
        })
    }

    fn store(&self, old: TokenPair, new: TokenPair) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        Box::pin(async move {
            let credentials = self.credentials.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if credentials.access_token != old.access_token {
                // Not the pair this replica last read or kept: the race is lost.
                return Ok(false);
            }
            let renewed = credentials.with_pair(&new);
            let sealed = self.keys.seal(&renewed, self.binding()).map_err(|e| self.not_kept(&e))?;
            let previous = self.sealed.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let (id, replica, stored) = (self.id, self.replica.clone(), sealed.clone());
            let swapped = self
                .services
                .with_store(move |store| {
                    store.renew_watch_token(id, &replica, OffsetDateTime::now_utc(), &previous, &stored)
                })
                .await
                .map_err(|e| self.not_kept(&e))?;
            if swapped {
                *self.credentials.lock().unwrap_or_else(PoisonError::into_inner) = renewed;
                *self.sealed.lock().unwrap_or_else(PoisonError::into_inner) = sealed;
            }
            if self.borrowed.swap(false, Ordering::SeqCst) {
                let (id, replica) = (self.id, self.replica.clone());
                let given_back =
                    self.services.with_store(move |store| store.return_watch_lease(id, &replica)).await;
                if let Err(e) = given_back {
                    tracing::warn!(
                        watch = id,
                        code = e.code(),
                        "a borrowed lease could not be given back; it will expire"
                    );
                }
            }
            Ok(swapped)
        })
    }
}
