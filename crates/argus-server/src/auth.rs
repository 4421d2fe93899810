//! Bearer-token (JWT) validation into a [`Viewer`], and development token minting.
//!
//! Algorithms are pinned by configuration and never taken from the token header; `exp`, `iss`
//! and `aud` are required. The viewer's organisation, clearance and scopes come from the token
//! only (claim names configurable).

mod client_credentials;
mod jwks;

use std::{sync::Arc, time::Duration};

use argus_domain::{ActorId, Classification, OrgId, Scope, Viewer};
use jsonwebtoken::{
    Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind,
};
use serde_json::{Map, Value};

use crate::{
    Error, Result,
    config::{JwtConfig, KeySource},
};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Validates bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    validation: Validation,
    keys: Keys,
    claims: ClaimNames,
    checks: Checks,
}

enum Keys {
    Static(DecodingKey),
    Jwks(Box<jwks::JwksCache>),
}

#[derive(Debug, Clone)]
struct ClaimNames {
    sub: String,
    org: String,
    clearance: String,
    scope: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("algorithms", &self.inner.validation.algorithms).finish()
    }
}

/// Parses configured algorithm names.
/// Checks beyond signature, time, issuer and audience.
#[derive(Debug)]
struct Checks {
    /// Longest accepted `exp - iat`, in seconds.
    max_lifetime: Option<u64>,
    /// The header `typ` required, normalised.
    typ: Option<String>,
}

/// `typ` in lower case without the `application/` prefix (RFC 9068 section 2.1).
fn normalise_typ(typ: &str) -> String {
    let typ = typ.trim().to_ascii_lowercase();
    typ.strip_prefix("application/").map(str::to_owned).unwrap_or(typ)
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>> {
    names
        .iter()
        .map(|n| {
            n.trim().parse::<Algorithm>().map_err(|_| Error::Config(format!("unknown JWT algorithm {n:?}")))
        })
        .collect()
}

/// Checks that every configured algorithm belongs to the key's family.
fn pin_algorithms(
    configured: Vec<Algorithm>,
    family: AlgorithmFamily,
    derived: Algorithm,
) -> Result<Vec<Algorithm>> {
    if configured.is_empty() {
        return Ok(vec![derived]);
    }
    if configured.iter().any(|a| a.family() != family) {
        return Err(Error::Config("jwt.algorithms does not match the configured key".into()));
    }
    Ok(configured)
}

impl Authenticator {
    /// Builds an authenticator from the JWT configuration and its resolved key.
    pub fn new(config: &JwtConfig, source: &KeySource) -> Result<Self> {
        let configured = parse_algorithms(&config.algorithms)?;
        let (keys, algorithms) = match source {
            KeySource::Hs256 { secret, .. } => {
                let algs = pin_algorithms(configured, AlgorithmFamily::Hmac, Algorithm::HS256)?;
                (Keys::Static(DecodingKey::from_secret(secret.expose_secret().as_bytes())), algs)
            }
            KeySource::PublicKeyPem(pem) => {
                if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
                    (Keys::Static(key), pin_algorithms(configured, AlgorithmFamily::Rsa, Algorithm::RS256)?)
                } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
                    (Keys::Static(key), pin_algorithms(configured, AlgorithmFamily::Ec, Algorithm::ES256)?)
                } else {
                    return Err(Error::Config(
                        "jwt.public_key_file does not hold an RSA or EC public key in PEM form".into(),
                    ));
                }
            }
            KeySource::Jwks(url) => {
                if configured.iter().any(|a| a.family() == AlgorithmFamily::Hmac) {
                    return Err(Error::Config("a JWKS cannot verify HMAC algorithms".into()));
                }
                let cache = jwks::JwksCache::new(
                    url.clone(),
                    configured.clone(),
                    Duration::from_secs(config.jwks_refresh_seconds),
                    Duration::from_secs(config.jwks_max_age_seconds.max(1)),
                )?;
                // The per-key algorithm is pinned when the key is chosen; this list is the
                // upper bound.
                let algs = if configured.is_empty() {
                    vec![Algorithm::RS256, Algorithm::PS256, Algorithm::ES256]
                } else {
                    configured
                };
                (Keys::Jwks(Box::new(cache)), algs)
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = algorithms;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&[config.audience.as_str()]);
        validation.leeway = config.leeway_seconds;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        let claims = ClaimNames {
            sub: config.sub_claim.clone(),
            org: config.org_claim.clone(),
            clearance: config.clearance_claim.clone(),
            scope: config.scope_claim.clone(),
        };
        if config.max_token_lifetime_seconds.is_some() {
            validation.set_required_spec_claims(&["exp", "iss", "aud", "iat"]);
        }
        let checks = Checks {
            max_lifetime: config.max_token_lifetime_seconds,
            typ: config.required_typ.as_deref().map(normalise_typ),
        };
        Ok(Self { inner: Arc::new(Inner { validation, keys, claims, checks }) })
    }

    /// Validates the value of an `Authorization` header.
    pub async fn authenticate_header(&self, header: Option<&str>) -> Result<Viewer> {
        let Some(header) = header else { return Err(Error::MissingToken) };
        let mut parts = header.trim().splitn(2, ' ');
        let scheme = parts.next().unwrap_or_default();
        let token = parts.next().map(str::trim).unwrap_or_default();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(Error::InvalidToken("not a bearer token"));
        }
        self.authenticate(token).await
    }

    /// Validates a bearer token and maps its claims to a viewer.
    pub async fn authenticate(&self, token: &str) -> Result<Viewer> {
        self.viewer_from_claims(&self.claims(token).await?)
    }

    /// Validates a bearer token as [`Self::authenticate`] does, and tells when it expires (its
    /// `exp`, without the configured leeway): what outlives a request (a GraphQL over WebSocket
    /// connection) ends then.
    pub async fn authenticate_until(&self, token: &str) -> Result<(Viewer, time::OffsetDateTime)> {
        let claims = self.claims(token).await?;
        let viewer = self.viewer_from_claims(&claims)?;
        let exp = match claims.get("exp") {
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f.floor() as i64)),
            _ => None,
        };
        let exp = exp
            .and_then(|exp| time::OffsetDateTime::from_unix_timestamp(exp).ok())
            .ok_or(Error::InvalidToken("malformed claim"))?;
        Ok((viewer, exp))
    }

    /// The claims of a valid token: signature, algorithm, time, issuer, audience, type and
    /// lifetime checked.
    async fn claims(&self, token: &str) -> Result<Map<String, Value>> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Error::InvalidToken("token too long"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| map_jwt_error(&e))?;
        if let Some(wanted) = &self.inner.checks.typ
            && header.typ.as_deref().map(normalise_typ).as_ref() != Some(wanted)
        {
            return Err(Error::InvalidToken("token type not accepted"));
        }
        let claims = match &self.inner.keys {
            Keys::Static(key) => decode(token, key, &self.inner.validation)?,
            Keys::Jwks(cache) => {
                let (key, alg) = cache.key_for(header.kid.as_deref()).await?;
                if !self.inner.validation.algorithms.contains(&alg) || header.alg != alg {
                    return Err(Error::InvalidToken("algorithm not accepted"));
                }
                let mut validation = self.inner.validation.clone();
                validation.algorithms = vec![alg];
                decode(token, &key, &validation)?
            }
        };
        if let Some(max) = self.inner.checks.max_lifetime {
            let at = |name: &str| claims.get(name).and_then(Value::as_i64);
            match (at("iat"), at("exp")) {
                (Some(iat), Some(exp))
                    if exp.saturating_sub(iat) <= i64::try_from(max).unwrap_or(i64::MAX) => {}
                _ => return Err(Error::InvalidToken("token lifetime too long")),
            }
        }
        Ok(claims)
    }

    fn viewer_from_claims(&self, claims: &Map<String, Value>) -> Result<Viewer> {
        let names = &self.inner.claims;
        let actor: ActorId = string_claim(claims, &names.sub, "missing or malformed subject claim")?
            .parse()
            .map_err(|_| Error::InvalidToken("malformed subject claim"))?;
        let org: OrgId = string_claim(claims, &names.org, "missing or malformed organisation claim")?
            .parse()
            .map_err(|_| Error::InvalidToken("malformed organisation claim"))?;
        let clearance: Classification =
            string_claim(claims, &names.clearance, "missing or malformed clearance claim")?
                .parse()
                .map_err(|_| Error::InvalidToken("unknown clearance"))?;
        let scopes = match claims.get(&names.scope) {
            None | Some(Value::Null) => Default::default(),
            Some(Value::String(s)) => Scope::parse_claim(s),
            Some(Value::Array(items)) => {
                let mut scopes = std::collections::BTreeSet::new();
                for item in items {
                    let Value::String(s) = item else {
                        return Err(Error::InvalidToken("malformed scope claim"));
                    };
                    scopes.extend(Scope::parse_claim(s));
                }
                scopes
            }
            Some(_) => return Err(Error::InvalidToken("malformed scope claim")),
        };
        Ok(Viewer::new(actor, org, clearance, scopes))
    }
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Map<String, Value>> {
    jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| map_jwt_error(&e))
}

fn string_claim<'a>(claims: &'a Map<String, Value>, name: &str, missing: &'static str) -> Result<&'a str> {
    match claims.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(Error::InvalidToken(missing)),
    }
}

/// A short, token-free reason for logs.
fn map_jwt_error(e: &jsonwebtoken::errors::Error) -> Error {
    Error::InvalidToken(match e.kind() {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            "algorithm not accepted"
        }
        ErrorKind::MissingRequiredClaim(_) => "missing a required claim",
        ErrorKind::InvalidClaimFormat(_) => "malformed claim",
        _ => "malformed token",
    })
}

pub use client_credentials::client_credentials_token;

/// What a development token says.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// The actor (`sub`).
    pub sub: ActorId,
    /// The organisation.
    pub org: OrgId,
    /// The clearance.
    pub clearance: Classification,
    /// The scopes.
    pub scopes: Vec<Scope>,
    /// How long the token is valid.
    pub ttl: Duration,
}

/// Mints a development token signed with the HS256 secret of `source`, with the configured
/// issuer, audience and claim names. Refuses when a real signing key is configured.
pub fn mint_dev_token(config: &JwtConfig, source: &KeySource, request: &TokenRequest) -> Result<String> {
    let KeySource::Hs256 { secret, .. } = source else {
        return Err(Error::NotDevelopment);
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX / 2).min(366 * 24 * 3600);
    let mut claims = Map::new();
    claims.insert("iss".into(), config.issuer.clone().into());
    claims.insert("aud".into(), config.audience.clone().into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + ttl).into());
    claims.insert(config.sub_claim.clone(), request.sub.as_str().into());
    claims.insert(config.org_claim.clone(), request.org.as_str().into());
    claims.insert(config.clearance_claim.clone(), request.clearance.as_str().into());
    let scope = request.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ");
    claims.insert(config.scope_claim.clone(), scope.into());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
    .map_err(|_| Error::Config("cannot sign the development token".into()))
}

#[cfg(test)]
mod tests;
