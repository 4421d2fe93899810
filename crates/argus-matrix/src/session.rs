//! A session with a homeserver ([`Session`]): where requests go and the access token they
//! carry, taken from a [`TokenSource`] at each request. The token is checked and applied in one
//! place (the transport), so a source that renews its token (refresh tokens, a new login)
//! changes no call. [`RefreshingTokens`] is such a source: it renews an access token with its
//! refresh token before it expires, or when the homeserver refuses it.

mod renewing;

pub use renewing::{PairKeeper, RefreshingTokens, TokenPair};

use std::{fmt, sync::Arc};

use argus_domain::{AccessToken, HomeserverUrl};
use futures::future::BoxFuture;

use crate::{Error, Result};

/// Where a session's access token comes from.
///
/// Today's tokens are fixed ([`StaticToken`]). A source that can renew its token overrides
/// [`TokenSource::renew`]: when the homeserver refuses a token, the connector asks the source
/// once and, if it renewed, sends the request again with [`TokenSource::access_token`].
pub trait TokenSource: Send + Sync {
    /// The access token to send with the next request.
    fn access_token(&self) -> AccessToken;

    /// Renews the token after the homeserver refused `refused` (the token a request was sent
    /// with: a source shared by several reads renews once); `Ok(true)` when a new token is to
    /// be used. The default cannot renew: the refusal stands.
    fn renew<'a>(&'a self, refused: &'a AccessToken) -> BoxFuture<'a, Result<bool>> {
        let _ = refused;
        Box::pin(async { Ok(false) })
    }

    /// Renews the token now if it is about to expire: called before every request is sent. The
    /// default has nothing to renew.
    fn ensure_fresh(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
}

/// A fixed access token, as the caller gave it; never renewed.
#[derive(Debug, Clone)]
pub struct StaticToken(AccessToken);

impl StaticToken {
    /// The source of `token` alone.
    pub fn new(token: AccessToken) -> Self {
        Self(token)
    }
}

impl TokenSource for StaticToken {
    fn access_token(&self) -> AccessToken {
        self.0.clone()
    }
}

/// A source shared by several sessions (one account's reads): renewed once for all of them.
impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    fn access_token(&self) -> AccessToken {
        (**self).access_token()
    }

    fn renew<'a>(&'a self, refused: &'a AccessToken) -> BoxFuture<'a, Result<bool>> {
        (**self).renew(refused)
    }

    fn ensure_fresh(&self) -> BoxFuture<'_, Result<()>> {
        (**self).ensure_fresh()
    }
}

/// A homeserver and the source of the token every request to it carries: what every call of
/// the [`Connector`](crate::Connector) takes. Cheap to clone; its `Debug` never shows a token.
///
/// ```
/// use argus_domain::AccessToken;
/// use argus_matrix::Session;
///
/// let session = Session::with_token("https://matrix.agent.tchap.gouv.fr".parse()?, AccessToken::new("syt_secret"));
/// assert_eq!(session.homeserver().as_str(), "https://matrix.agent.tchap.gouv.fr");
/// assert!(!format!("{session:?}").contains("syt_secret"));
/// # Ok::<(), argus_domain::Error>(())
/// ```
#[derive(Clone)]
pub struct Session {
    homeserver: HomeserverUrl,
    tokens: Arc<dyn TokenSource>,
}

impl Session {
    /// A session with `homeserver` whose requests carry the tokens of `tokens`.
    pub fn new(homeserver: HomeserverUrl, tokens: impl TokenSource + 'static) -> Self {
        Self { homeserver, tokens: Arc::new(tokens) }
    }

    /// A session with `homeserver` whose requests carry the tokens of a source shared with
    /// other sessions (one account's reads and file fetches): renewed once for all of them.
    pub fn shared(homeserver: HomeserverUrl, tokens: Arc<dyn TokenSource>) -> Self {
        Self { homeserver, tokens }
    }

    /// A session with `homeserver` whose requests carry the fixed `token` ([`StaticToken`]).
    pub fn with_token(homeserver: HomeserverUrl, token: AccessToken) -> Self {
        Self::new(homeserver, StaticToken::new(token))
    }

    /// The homeserver requests go to.
    pub fn homeserver(&self) -> &HomeserverUrl {
        &self.homeserver
    }

    /// The token to send now, refused ([`Error::InvalidInput`]) unless it can go in a header:
    /// the one check of a token before it is used.
    pub(crate) fn access_token(&self) -> Result<AccessToken> {
        let token = self.tokens.access_token();
        if !token.is_well_formed() {
            return Err(Error::InvalidInput("the access token is empty or not a valid header value".into()));
        }
        Ok(token)
    }

    /// Asks the token source to renew its token if it is about to expire.
    pub(crate) async fn ensure_fresh(&self) -> Result<()> {
        self.tokens.ensure_fresh().await
    }

    /// Asks the token source to renew after the homeserver refused `refused`.
    pub(crate) async fn renew(&self, refused: &AccessToken) -> Result<bool> {
        self.tokens.renew(refused).await
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session").field("homeserver", &self.homeserver).finish_non_exhaustive()
    }
}
