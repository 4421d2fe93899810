//! An account's renewed tokens: a refresh-token pair lives once per account session, in one
//! credential row that every watch of the account refers to ([`argus_store::StoredCredential`]).
//! A renewer takes the row's own short lease (a holder string of its own: replica and a random
//! nonce, so two sources of one replica never both renew), reads the stored pair again under it
//! (the previous holder may have stored its new pair and given the lease back since this one
//! last read it: that pair is taken, its spent refresh token never sent), renews, seals the new
//! pair and stores it by compare-and-swap under the lease, then gives the lease back, whatever
//! the outcome. A renewer that finds the lease held waits for the holder's pair and takes it; so
//! all replicas and all watches of the account renew once per expiry.
//!
//! A swap that fails because the pair was re-sealed under a new key meanwhile (`keys rotate`)
//! is tried again over the re-sealed value; a pair sealed under a key this replica lacks is a
//! retryable `TOKEN_NOT_KEPT`, not a pause.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use argus_domain::{ActorId, HomeserverUrl, OrgId, SealedToken};
use argus_matrix::{PairKeeper, RefreshingTokens, TokenPair};
use argus_store::StoredCredential;
use futures::future::BoxFuture;
use time::OffsetDateTime;

use crate::{
    Services, TokenKeys,
    token_keys::{AccountBinding, Credentials},
};

/// How long a renewer holds an account's renewal lease (given back as soon as it is done).
const RENEWAL_LEASE: Duration = Duration::from_secs(90);

/// How many times a swap lost to a re-sealing of the same pair is tried again.
const RESEAL_RETRIES: usize = 3;

/// The renewing token source of `credential` for `replica`: each new pair sealed and stored in
/// the account's credential row under its renewal lease before it is used. [`crate::Error`]
/// when the pair does not open (a key this replica lacks: [`crate::Error::Connector`] with the
/// retryable `TOKEN_NOT_KEPT`).
pub(crate) fn account_tokens(
    services: &Arc<Services>,
    keys: &Arc<TokenKeys>,
    replica: &str,
    credential: StoredCredential,
) -> crate::Result<RefreshingTokens> {
    let keeper = AccountKeeper::new(Arc::clone(services), Arc::clone(keys), replica, credential)?;
    let (pair, client_id) = {
        let opened = keeper.credentials.lock().unwrap_or_else(PoisonError::into_inner);
        (opened.pair(), opened.oauth_client_id.clone())
    };
    let homeserver = keeper.homeserver.clone();
    Ok(RefreshingTokens::new(services.connector.clone(), homeserver, pair, client_id, Some(Arc::new(keeper))))
}

/// The renewing token source a run of `claimed` by `replica` reads with: its account's shared
/// pair; `None` when the watch refers to no credential (it keeps its own token, without a
/// refresh token). [`crate::Error::WatchesDisabled`] without token keys; the pair must open.
pub async fn watch_tokens(
    services: &Arc<Services>,
    replica: &str,
    claimed: &argus_store::ClaimedWatch,
) -> crate::Result<Option<RefreshingTokens>> {
    let keys = services.token_keys.as_ref().ok_or(crate::Error::WatchesDisabled)?;
    let id = claimed.watch.id;
    let Some(credential) = services.with_store(move |store| store.watch_credential(id)).await? else {
        return Ok(None);
    };
    account_tokens(services, keys, replica, credential).map(Some)
}

/// A holder string of its own for one renewer of `replica`.
fn holder(replica: &str) -> String {
    let nonce: u64 = rand::random();
    let replica: String = replica.chars().take(200).collect();
    format!("{replica}#{nonce:016x}")
}

/// The keeper of one account's token pair for one renewer.
pub(crate) struct AccountKeeper {
    services: Arc<Services>,
    keys: Arc<TokenKeys>,
    id: i64,
    holder: String,
    org: OrgId,
    owner: ActorId,
    homeserver: HomeserverUrl,
    user_id: String,
    /// The credentials last opened or sealed here (the client id travels with every new pair).
    credentials: Mutex<Credentials>,
    /// What this renewer last knew to be stored: the old value of the compare-and-swap.
    sealed: Mutex<SealedToken>,
}

impl std::fmt::Debug for AccountKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountKeeper")
            .field("credential", &self.id)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl AccountKeeper {
    fn new(
        services: Arc<Services>,
        keys: Arc<TokenKeys>,
        replica: &str,
        credential: StoredCredential,
    ) -> crate::Result<Self> {
        let homeserver: HomeserverUrl = credential.homeserver_url.parse()?;
        let mut keeper = Self {
            services,
            keys,
            id: credential.id,
            holder: holder(replica),
            org: credential.org,
            owner: credential.owner,
            homeserver,
            user_id: credential.user_id,
            credentials: Mutex::new(Credentials::default()),
            sealed: Mutex::new(credential.token.clone()),
        };
        let opened = keeper.open(&credential.token).map_err(crate::Error::Connector)?;
        keeper.credentials = Mutex::new(opened);
        Ok(keeper)
    }

    fn binding(&self) -> AccountBinding<'_> {
        AccountBinding {
            org: &self.org,
            owner: &self.owner,
            homeserver_url: self.homeserver.as_str(),
            user_id: &self.user_id,
        }
    }

    /// Opens a sealed pair of this account: a key this replica lacks is retryable (another
    /// replica rotated the keys before this one was given the new key); a held key that does
    /// not open it is a refused token.
    fn open(&self, sealed: &SealedToken) -> argus_matrix::Result<Credentials> {
        if !self.keys.holds(&sealed.key_id) {
            tracing::warn!(
                credential = self.id,
                "an account's token is sealed under a key this replica lacks"
            );
            return Err(argus_matrix::Error::TokenNotKept);
        }
        self.keys.open_account(sealed, self.binding()).map_err(|e| {
            tracing::warn!(credential = self.id, code = e.code(), "an account's stored token does not open");
            argus_matrix::Error::TokenRefreshFailed("the account's stored token does not open".into())
        })
    }

    fn not_kept(&self, error: &crate::Error) -> argus_matrix::Error {
        tracing::warn!(
            credential = self.id,
            code = error.code(),
            "an account's renewed token could not be stored"
        );
        argus_matrix::Error::TokenNotKept
    }

    async fn stored(&self) -> argus_matrix::Result<Option<SealedToken>> {
        let id = self.id;
        let stored = self.services.with_store(move |store| store.credential(id)).await;
        Ok(stored.map_err(|e| self.not_kept(&e))?.map(|c| c.token))
    }

    fn remember(&self, credentials: Credentials, sealed: SealedToken) {
        *self.credentials.lock().unwrap_or_else(PoisonError::into_inner) = credentials;
        *self.sealed.lock().unwrap_or_else(PoisonError::into_inner) = sealed;
    }
}

/// Whether two pairs are the same tokens (whatever key sealed them).
fn same_pair(a: &TokenPair, b: &TokenPair) -> bool {
    a.access_token == b.access_token && a.refresh_token == b.refresh_token
}

impl PairKeeper for AccountKeeper {
    fn load(&self) -> BoxFuture<'_, argus_matrix::Result<Option<TokenPair>>> {
        Box::pin(async move {
            let Some(sealed) = self.stored().await? else { return Ok(None) };
            let opened = self.open(&sealed)?;
            let pair = opened.pair();
            self.remember(opened, sealed);
            Ok(Some(pair))
        })
    }

    fn may_renew(&self) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        Box::pin(async move {
            let (id, holder) = (self.id, self.holder.clone());
            self.services
                .with_store(move |store| {
                    store.borrow_credential_lease(id, &holder, OffsetDateTime::now_utc(), RENEWAL_LEASE)
                })
                .await
                .map_err(|e| self.not_kept(&e))
        })
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (id, holder) = (self.id, self.holder.clone());
            let given_back =
                self.services.with_store(move |store| store.return_credential_lease(id, &holder)).await;
            if let Err(e) = given_back {
                tracing::warn!(
                    credential = id,
                    code = e.code(),
                    "a renewal lease could not be given back; it will expire"
                );
            }
        })
    }

    fn store(&self, old: TokenPair, new: TokenPair) -> BoxFuture<'_, argus_matrix::Result<bool>> {
        Box::pin(async move {
            let credentials = self.credentials.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if !same_pair(&credentials.pair(), &old) {
                // Not the pair this renewer last read or kept: the race is lost.
                return Ok(false);
            }
            let renewed = credentials.with_pair(&new);
            let sealed = self.keys.seal_account(&renewed, self.binding()).map_err(|e| self.not_kept(&e))?;
            let mut previous = self.sealed.lock().unwrap_or_else(PoisonError::into_inner).clone();
            for _ in 0..RESEAL_RETRIES {
                let (id, holder, old_sealed, stored) =
                    (self.id, self.holder.clone(), previous.clone(), sealed.clone());
                let swapped = self
                    .services
                    .with_store(move |store| {
                        store.renew_credential_token(
                            id,
                            &holder,
                            OffsetDateTime::now_utc(),
                            &old_sealed,
                            &stored,
                        )
                    })
                    .await
                    .map_err(|e| self.not_kept(&e))?;
                if swapped {
                    self.remember(renewed, sealed);
                    return Ok(true);
                }
                // Lost: another pair is stored (taken by the caller), or the same pair re-sealed
                // under a new key (swapped again over it).
                let Some(now_stored) = self.stored().await? else { return Ok(false) };
                if now_stored == previous {
                    // Unchanged: the lease was lost. The pair is kept in memory, not dropped.
                    return Err(argus_matrix::Error::TokenNotKept);
                }
                match self.open(&now_stored) {
                    Ok(opened) if same_pair(&opened.pair(), &old) => previous = now_stored,
                    Ok(_) => return Ok(false),
                    // Sealed under a key this replica lacks (a rotation under way): whether it is
                    // the old pair cannot be told here, so the renewed pair is kept in memory
                    // (its refresh token already answered) rather than dropped.
                    Err(_) => return Err(argus_matrix::Error::TokenNotKept),
                }
            }
            Err(argus_matrix::Error::TokenNotKept)
        })
    }
}
