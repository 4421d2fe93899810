//! The identity provider's JSON Web Key Set, cached by `kid`.
//!
//! An unknown `kid` triggers at most one refetch per refresh interval, so a flood of tokens with
//! random `kid`s cannot turn the server into a load generator against the identity provider.
//! The set also expires on a timer (the response's `Cache-Control: max-age`, within the
//! configured bounds): a key the identity provider withdrew stops verifying once the set is
//! fetched again, even though no unknown `kid` ever asked for it.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet},
};
use tokio::sync::{Mutex, RwLock};

use crate::{Error, Result};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

type KeyMap = HashMap<String, (Arc<DecodingKey>, Algorithm)>;

pub(super) struct JwksCache {
    url: String,
    allowed: Vec<Algorithm>,
    min_refresh: Duration,
    max_age: Duration,
    client: reqwest::Client,
    keys: RwLock<KeyMap>,
    /// When the cached set expires.
    expires: RwLock<Option<Instant>>,
    /// When the set was last fetched successfully.
    fetched_at: RwLock<Option<Instant>>,
    /// When the set was last fetched; held while fetching so only one fetch runs.
    last_fetch: Mutex<Option<Instant>>,
}

impl JwksCache {
    pub(super) fn new(
        url: String,
        allowed: Vec<Algorithm>,
        min_refresh: Duration,
        max_age: Duration,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|_| Error::Config("cannot build the JWKS HTTP client".into()))?;
        Ok(Self {
            url,
            allowed,
            min_refresh,
            max_age,
            client,
            keys: RwLock::new(HashMap::new()),
            expires: RwLock::new(None),
            fetched_at: RwLock::new(None),
            last_fetch: Mutex::new(None),
        })
    }

    /// The key for `kid` (or the only key when the token names none), fetching the set when the
    /// key is unknown and the last fetch is old enough.
    pub(super) async fn key_for(&self, kid: Option<&str>) -> Result<(Arc<DecodingKey>, Algorithm)> {
        let fresh = |expires: Option<Instant>| expires.is_some_and(|at| Instant::now() < at);
        if fresh(*self.expires.read().await)
            && let Some(found) = lookup(&*self.keys.read().await, kid)
        {
            return Ok(found);
        }
        let mut last = self.last_fetch.lock().await;
        let expired = !fresh(*self.expires.read().await);
        // Someone else may have refreshed while we waited.
        if !expired && let Some(found) = lookup(&*self.keys.read().await, kid) {
            return Ok(found);
        }
        if !expired && last.is_some_and(|t| t.elapsed() < self.min_refresh) {
            return Err(Error::InvalidToken("unknown key id"));
        }
        *last = Some(Instant::now());
        let (map, max_age) = match self.fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                tracing::warn!(error = %e, "cannot fetch the JWKS");
                // The identity provider is unreachable: keep the keys held so far (they were
                // valid at the last fetch), and try again after the refresh interval rather
                // than on every request.
                // Stale keys serve for at most one more max-age: a withdrawn key cannot be kept
                // alive by keeping the identity provider out of reach.
                let recent = self.fetched_at.read().await.is_some_and(|at| at.elapsed() < self.max_age * 2);
                if expired && recent {
                    *self.expires.write().await =
                        Some(Instant::now() + self.min_refresh.max(Duration::from_secs(1)));
                    if let Some(found) = lookup(&*self.keys.read().await, kid) {
                        return Ok(found);
                    }
                }
                return Err(e);
            }
        };
        let found = lookup(&map, kid);
        *self.keys.write().await = map;
        *self.expires.write().await = Some(Instant::now() + max_age);
        *self.fetched_at.write().await = Some(Instant::now());
        found.ok_or(Error::InvalidToken("unknown key id"))
    }

    /// How long a fetched set stays valid: `Cache-Control: max-age` when given, within the
    /// refresh interval and the configured maximum.
    fn lifetime(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        let max_age = headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|d| d.trim().strip_prefix("max-age="))
            .find_map(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        max_age.unwrap_or(self.max_age).clamp(self.min_refresh.min(self.max_age), self.max_age)
    }

    async fn fetch(&self) -> Result<(KeyMap, Duration)> {
        let mut response = self.client.get(&self.url).send().await.map_err(|_| Error::KeysUnavailable)?;
        if !response.status().is_success() {
            return Err(Error::KeysUnavailable);
        }
        let lifetime = self.lifetime(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|_| Error::KeysUnavailable)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(Error::KeysUnavailable);
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|_| Error::KeysUnavailable)?;
        let mut map = KeyMap::new();
        for (index, jwk) in set.keys.iter().enumerate() {
            if jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature)
            {
                continue;
            }
            let Some(alg) = self.algorithm_of(jwk) else { continue };
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            let kid = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{index}"));
            map.insert(kid, (Arc::new(key), alg));
        }
        tracing::info!(keys = map.len(), valid_for_s = lifetime.as_secs(), "fetched the JWKS");
        Ok((map, lifetime))
    }

    /// The algorithm a key is used with: its `alg`, or the one its type implies; never HMAC.
    fn algorithm_of(&self, jwk: &Jwk) -> Option<Algorithm> {
        let alg = match jwk.common.key_algorithm {
            Some(ka) => serde_json::to_value(ka).ok()?.as_str()?.parse::<Algorithm>().ok()?,
            None => match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => Algorithm::ES384,
                _ => return None,
            },
        };
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return None;
        }
        if !self.allowed.is_empty() && !self.allowed.contains(&alg) {
            return None;
        }
        Some(alg)
    }
}

fn lookup(map: &KeyMap, kid: Option<&str>) -> Option<(Arc<DecodingKey>, Algorithm)> {
    match kid {
        Some(kid) => map.get(kid).cloned(),
        None if map.len() == 1 => map.values().next().cloned(),
        None => None,
    }
}
