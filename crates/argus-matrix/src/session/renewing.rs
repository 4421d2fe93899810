//! A token source that renews its access token with a refresh token ([`RefreshingTokens`]):
//! before the token expires, and when the homeserver refuses it. One renewal at a time for
//! every read sharing the source; each new pair goes to the caller's [`PairKeeper`] (which
//! stores it) before it is used, and a refresh token is used once: a pair the keeper could not
//! store is kept in memory and only its storing is tried again, never the server.

use std::{
    fmt,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use argus_domain::{AccessToken, HomeserverUrl, Secret};
use futures::future::BoxFuture;
use time::OffsetDateTime;
use url::Url;

use super::{Session, TokenSource};
use crate::{
    Connector, Error, Result,
    api::{get_authorization_server_metadata, oauth_refresh, refresh_token},
    transport::Target,
};

/// How long a renewal may take, requests included.
const RENEWAL_DEADLINE: Duration = Duration::from_secs(60);

/// The least margin before expiry at which a token is renewed (unless that is more than half
/// its lifetime).
const MIN_MARGIN: Duration = Duration::from_secs(2);

/// The shortest lifetime renewed before it ends: a token that lives less (a server answering
/// `expires_in` 0 or 1 s) is renewed only when the homeserver refuses it, not before every
/// request (so a renewal, and its write, happens at most about once a second).
const MIN_LIFETIME: Duration = Duration::from_secs(2);

/// How long a holder that may not renew waits for the one that may, and how often it looks.
const WAIT_FOR_HOLDER: Duration = Duration::from_secs(20);
const LOOK_EVERY: Duration = Duration::from_millis(200);

/// An access token with the refresh token that renews it and when it expires. `Debug` shows
/// neither token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenPair {
    /// The access token requests carry.
    pub access_token: AccessToken,
    /// The refresh token that renews it; `None`: it cannot be renewed.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, when known.
    pub expires_at: Option<OffsetDateTime>,
    /// How long the access token lived when it was issued, when known: it is renewed when a
    /// fifth of it (at least two seconds, at most half of it) remains; a lifetime under two
    /// seconds only when the homeserver refuses the token.
    pub lifetime: Option<Duration>,
}

impl fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &self.access_token)
            .field("refresh_token", &self.refresh_token)
            .field("expires_at", &self.expires_at)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl TokenPair {
    /// A pair as the caller gave it: expiry unknown (renewed when refused).
    pub fn given(access_token: AccessToken, refresh_token: Option<Secret>) -> Self {
        Self { access_token, refresh_token, expires_at: None, lifetime: None }
    }

    /// The pair a server issued in place of one renewed with `used`: the same refresh token
    /// when it issued none, the expiry from its lifetime.
    pub(crate) fn renewed(
        access_token: String,
        refresh_token: Option<String>,
        used: &Secret,
        lifetime: Option<Duration>,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            access_token: AccessToken::new(access_token),
            refresh_token: Some(refresh_token.map_or_else(|| used.clone(), Secret::new)),
            expires_at: lifetime.and_then(|l| now.checked_add(time::Duration::try_from(l).ok()?)),
            lifetime,
        }
    }

    /// Whether the access token is to be renewed at `now` (it has a refresh token, and its
    /// expiry is near or past; never for a lifetime under two seconds).
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        let (Some(_), Some(expires_at)) = (&self.refresh_token, self.expires_at) else {
            return false;
        };
        if self.lifetime.is_some_and(|lifetime| lifetime < MIN_LIFETIME) {
            return false;
        }
        let margin = match self.lifetime {
            Some(lifetime) => (lifetime / 5).max(MIN_MARGIN).min(lifetime / 2),
            None => MIN_MARGIN,
        };
        let margin = time::Duration::try_from(margin).unwrap_or(time::Duration::ZERO);
        now >= expires_at - margin
    }
}

/// Where a renewed pair is kept (a watch's sealed credentials), given by the caller of
/// [`RefreshingTokens`]. Every call may fail; a failure fails the renewal.
pub trait PairKeeper: Send + Sync {
    /// The pair kept now: another holder may have renewed it. `None` when none is kept any
    /// more (the watch is gone).
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenPair>>>;

    /// Whether this holder is the one that renews (it took the pair's renewal lease); one that
    /// is not waits for the pair the other keeps. After `Ok(true)`, [`PairKeeper::load`] is
    /// called again before the server is asked (the previous holder may have kept its pair and
    /// given the lease back since the last load), and [`PairKeeper::release`] is called whatever
    /// the renewal's outcome.
    fn may_renew(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async { Ok(true) })
    }

    /// Gives back what [`PairKeeper::may_renew`] took (the renewal is over, kept or not).
    fn release(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Keeps `new` in place of `old`, before `new` is used; `Ok(false)` when another pair than
    /// `old` is kept now (the race is lost: `new` is dropped unused, and the kept pair is
    /// taken). An error when `new` could not be stored: it is kept in memory and only its
    /// storing is tried again (its refresh token already answered).
    fn store(&self, old: TokenPair, new: TokenPair) -> BoxFuture<'_, Result<bool>>;
}

/// How the homeserver's tokens are renewed, found at the first renewal.
#[derive(Clone)]
enum Route {
    /// `POST /_matrix/client/v3/refresh`.
    Homeserver,
    /// The OAuth 2.0 token endpoint of the auth server.
    OAuth(Url),
}

/// A token source that renews its access token with its refresh token, through the
/// connector's policy-bound client: before the token expires (a fifth of its lifetime left),
/// and when the homeserver refuses it (`M_UNKNOWN_TOKEN`). Homeserver-issued tokens are renewed
/// at `POST /_matrix/client/v3/refresh`; those of a next-generation auth server (the homeserver
/// answers `GET /_matrix/client/v1/auth_metadata`) at its token endpoint, with the OAuth client
/// id they were issued to (without one, as the auth server's compatibility sessions, at
/// `/refresh`).
///
/// Reads sharing the source (`Arc`) renew once. Each new pair is handed to the
/// [`PairKeeper`] before it is used; when the keeper lost the race, or the server refuses a
/// refresh token another holder used, the pair the keeper holds is taken instead. `Debug`
/// shows no token.
pub struct RefreshingTokens {
    connector: Connector,
    homeserver: HomeserverUrl,
    oauth_client_id: Option<String>,
    keeper: Option<Arc<dyn PairKeeper>>,
    pair: Mutex<TokenPair>,
    /// A pair the server issued that the keeper could not store yet, with the pair it renewed:
    /// storing it is tried again, the server is not asked again.
    unkept: Mutex<Option<(TokenPair, TokenPair)>>,
    route: Mutex<Option<Route>>,
    renewal: tokio::sync::Mutex<()>,
}

impl fmt::Debug for RefreshingTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshingTokens")
            .field("homeserver", &self.homeserver)
            .field("oauth_client_id", &self.oauth_client_id)
            .field("kept", &self.keeper.is_some())
            .finish_non_exhaustive()
    }
}

impl RefreshingTokens {
    /// The source of `pair` for `homeserver`, renewed through `connector`; an OAuth 2.0
    /// renewal uses `oauth_client_id`. Without a keeper, new pairs live in memory only.
    pub fn new(
        connector: Connector,
        homeserver: HomeserverUrl,
        pair: TokenPair,
        oauth_client_id: Option<String>,
        keeper: Option<Arc<dyn PairKeeper>>,
    ) -> Self {
        Self {
            connector,
            homeserver,
            oauth_client_id,
            keeper,
            pair: Mutex::new(pair),
            unkept: Mutex::new(None),
            route: Mutex::new(None),
            renewal: tokio::sync::Mutex::new(()),
        }
    }

    /// The pair in use now.
    pub fn pair(&self) -> TokenPair {
        self.pair.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn adopt(&self, pair: TokenPair) {
        *self.pair.lock().unwrap_or_else(PoisonError::into_inner) = pair;
    }

    /// Renews the pair in use (the renewal lock held): the keeper's newer pair if another
    /// holder renewed it, else a new pair from the server (or the one it issued and the keeper
    /// could not store yet), kept before it is used. The keeper's pair is read again once the
    /// lease is taken, and only a pair read under the lease is renewed at the server.
    async fn renew_locked(&self) -> Result<()> {
        let mut current = self.pair();
        let Some(keeper) = self.keeper.clone() else {
            let renewed = self.renew_at_server(&current).await?;
            self.adopt(renewed);
            return Ok(());
        };
        if self.unkept().is_none() {
            match self.newer_kept(&*keeper, current).await? {
                Some(due) => current = due,
                None => return Ok(()),
            }
        }
        if !keeper.may_renew().await? {
            return self.wait_for_holder(current.access_token).await;
        }
        let renewed = self.renew_leased(&*keeper, current).await;
        // A pair the server issued but the keeper could not store yet keeps the lease (this
        // holder takes it again to store it): another holder would send the spent refresh token.
        if self.unkept().is_none() {
            keeper.release().await;
        }
        renewed
    }

    /// Takes the keeper's pair when another holder renewed `current` meanwhile: `None` when it
    /// is not due (nothing left to renew), else the pair to renew (`current`, or the keeper's
    /// newer one that is due already).
    async fn newer_kept(&self, keeper: &dyn PairKeeper, current: TokenPair) -> Result<Option<TokenPair>> {
        let kept = keeper.load().await?;
        let Some(kept) = kept.filter(|kept| kept.access_token != current.access_token) else {
            return Ok(Some(current));
        };
        self.adopt(kept.clone());
        Ok(kept.is_due(OffsetDateTime::now_utc()).then_some(kept))
    }

    /// The renewal once the lease is taken. The pair read before the lease may be stale: the
    /// previous holder may have stored its new pair and given the lease back between that read
    /// and this lease, and its refresh token is spent. So the kept pair is read again under the
    /// lease (no other holder can store one now), and renewed only if it is still the one due.
    async fn renew_leased(&self, keeper: &dyn PairKeeper, current: TokenPair) -> Result<()> {
        if self.unkept().is_some() {
            return self.renew_held(keeper, current).await;
        }
        match self.newer_kept(keeper, current).await? {
            Some(due) => self.renew_held(keeper, due).await,
            None => Ok(()),
        }
    }

    /// The pair in memory that the keeper could not store yet.
    fn unkept(&self) -> Option<(TokenPair, TokenPair)> {
        self.unkept.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A new pair from the server for `current`'s refresh token.
    async fn renew_at_server(&self, current: &TokenPair) -> Result<TokenPair> {
        let Some(refresh_token) = current.refresh_token.clone() else {
            return Err(Error::refresh_failed("there is no refresh token to renew the access token with"));
        };
        self.request(refresh_token, current.access_token.clone()).await
    }

    /// The renewal by the holder that may renew: a new pair (from the server, or the one it
    /// issued before that is not stored yet), stored, then used.
    async fn renew_held(&self, keeper: &dyn PairKeeper, current: TokenPair) -> Result<()> {
        let unkept = self.unkept.lock().unwrap_or_else(PoisonError::into_inner).take();
        let (old, renewed) = match unkept {
            Some(unkept) => unkept,
            None => match self.renew_at_server(&current).await {
                Ok(renewed) => (current, renewed),
                Err(error @ Error::TokenRefreshFailed(_)) => {
                    // Another holder may have used it, and kept what it got.
                    return self.take_kept(current.access_token).await?.ok_or(error);
                }
                Err(error) => return Err(error),
            },
        };
        match keeper.store(old.clone(), renewed.clone()).await {
            Ok(true) => {
                tracing::info!(homeserver = %self.homeserver, "access token renewed and kept");
                self.adopt(renewed);
                Ok(())
            }
            Ok(false) => {
                tracing::info!(homeserver = %self.homeserver, "a renewed token lost the race; the kept one is used");
                self.take_kept(old.access_token).await?.ok_or(Error::TokenNotKept)
            }
            Err(error) => {
                // Its refresh token answered already: only the storing is tried again.
                tracing::warn!(homeserver = %self.homeserver, code = error.code(), "a renewed token is not stored yet");
                *self.unkept.lock().unwrap_or_else(PoisonError::into_inner) = Some((old, renewed));
                Err(error)
            }
        }
    }

    /// Adopts the keeper's pair if it differs from `current`.
    async fn take_kept(&self, current: AccessToken) -> Result<Option<()>> {
        let Some(keeper) = &self.keeper else { return Ok(None) };
        let kept = keeper.load().await?;
        let newer = kept.filter(|kept| kept.access_token != current);
        Ok(newer.map(|kept| self.adopt(kept)))
    }

    /// Waits for the holder that renews to keep a new pair, and takes it.
    async fn wait_for_holder(&self, current: AccessToken) -> Result<()> {
        let until = tokio::time::Instant::now() + WAIT_FOR_HOLDER;
        while tokio::time::Instant::now() < until {
            tokio::time::sleep(LOOK_EVERY).await;
            if self.take_kept(current.clone()).await?.is_some() {
                return Ok(());
            }
        }
        // Not a refused token: the next read tries again (the holder's lease runs out).
        tracing::warn!(homeserver = %self.homeserver, "the holder that renews this token did not renew it in time");
        Err(Error::TokenNotKept)
    }

    /// One renewal at the server: the route found once, then the refresh.
    async fn request(&self, refresh_token: Secret, current: AccessToken) -> Result<TokenPair> {
        let client = self.connector.http();
        // The session only says where the requests go: they carry no access token.
        let session = Session::with_token(self.homeserver.clone(), current);
        let transport = client.policy.check_url(&self.homeserver.url())?;
        let deadline = tokio::time::Instant::now() + RENEWAL_DEADLINE;
        let target = Target { session: &session, transport, deadline, bounds: None };
        let known = self.route.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let route = match known {
            Some(route) => route,
            None => {
                let route = match get_authorization_server_metadata::token_endpoint(client, &target).await? {
                    Some(endpoint) => Route::OAuth(endpoint),
                    None => Route::Homeserver,
                };
                *self.route.lock().unwrap_or_else(PoisonError::into_inner) = Some(route.clone());
                route
            }
        };
        match route {
            Route::Homeserver => refresh_token::renew(client, &target, &refresh_token).await,
            Route::OAuth(endpoint) => match &self.oauth_client_id {
                Some(client_id) => {
                    oauth_refresh::renew(client, &endpoint, client_id, &refresh_token, deadline).await
                }
                // Without a client id, a session of the auth server's compatibility layer (a
                // token from `/login`): renewed at the homeserver's `/refresh`, which serves them.
                None => refresh_token::renew(client, &target, &refresh_token).await,
            },
        }
    }
}

impl Connector {
    /// The Matrix user id `session`'s token belongs to (`GET /account/whoami`; the session's
    /// token source renews as on every call): the account a refresh-token pair is kept under.
    pub async fn whoami(&self, session: &Session) -> Result<ruma::OwnedUserId> {
        let client = self.http();
        let target = client.target(session, client.config.request_timeout)?;
        crate::api::whoami::fetch(client, &target).await
    }
}

impl TokenSource for RefreshingTokens {
    fn access_token(&self) -> AccessToken {
        self.pair.lock().unwrap_or_else(PoisonError::into_inner).access_token.clone()
    }

    fn renew<'a>(&'a self, refused: &'a AccessToken) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let _one_at_a_time = self.renewal.lock().await;
            let current = self.pair();
            if current.access_token != *refused {
                // Renewed by another read meanwhile.
                return Ok(true);
            }
            if current.refresh_token.is_none() && self.keeper.is_none() {
                return Ok(false);
            }
            self.renew_locked().await.map(|()| true)
        })
    }

    fn ensure_fresh(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if !self.pair().is_due(OffsetDateTime::now_utc()) {
                return Ok(());
            }
            let _one_at_a_time = self.renewal.lock().await;
            if !self.pair().is_due(OffsetDateTime::now_utc()) {
                return Ok(());
            }
            self.renew_locked().await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use argus_domain::{AccessToken, Secret};
    use time::OffsetDateTime;

    use super::TokenPair;

    fn pair(left: Duration, lifetime: Option<Duration>, refresh: bool) -> TokenPair {
        let now = OffsetDateTime::now_utc();
        TokenPair {
            access_token: AccessToken::new("syt_access"),
            refresh_token: refresh.then(|| Secret::new("syr_refresh")),
            expires_at: Some(now + time::Duration::try_from(left).unwrap_or(time::Duration::ZERO)),
            lifetime,
        }
    }

    #[test]
    fn a_token_is_renewed_when_a_fifth_of_its_life_or_two_seconds_remain() {
        let now = OffsetDateTime::now_utc();
        let five_minutes = Some(Duration::from_secs(300));
        // A fifth of five minutes is a minute.
        assert!(!pair(Duration::from_secs(90), five_minutes, true).is_due(now));
        assert!(pair(Duration::from_secs(50), five_minutes, true).is_due(now));
        // Forty seconds: eight seconds.
        let forty_seconds = Some(Duration::from_secs(40));
        assert!(!pair(Duration::from_secs(9), forty_seconds, true).is_due(now));
        assert!(pair(Duration::from_secs(7), forty_seconds, true).is_due(now));
        // Four seconds: two seconds (half of it at most).
        let four_seconds = Some(Duration::from_secs(4));
        assert!(!pair(Duration::from_secs(3), four_seconds, true).is_due(now));
        assert!(pair(Duration::from_millis(1500), four_seconds, true).is_due(now));
        // Under two seconds: only when refused, never before every request.
        for short in [Duration::ZERO, Duration::from_secs(1)] {
            assert!(!pair(Duration::ZERO, Some(short), true).is_due(now));
        }
        // Expiry unknown, or nothing to renew with: never due.
        assert!(!TokenPair::given(AccessToken::new("syt_a"), Some(Secret::new("syr_b"))).is_due(now));
        assert!(!pair(Duration::ZERO, four_seconds, false).is_due(now));
        // Without a lifetime, two seconds.
        assert!(pair(Duration::from_secs(1), None, true).is_due(now));
        assert!(!pair(Duration::from_secs(10), None, true).is_due(now));
        let shown = format!("{:?}", pair(Duration::ZERO, None, true));
        assert!(!shown.contains("syt_access") && !shown.contains("syr_refresh"), "{shown}");
    }
}
