//! One media request on the wire: sent with the token in its `Authorization` header, its
//! redirects followed by hand under the outbound policy, its error answer read into the
//! connector's error.

use std::time::Duration;

use argus_domain::AccessToken;
use http::{
    HeaderMap, HeaderValue, Method, StatusCode,
    header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER},
};
use serde::Deserialize;
use tokio::time::Instant;
use url::Url;

use crate::{
    Error, Result,
    error::sanitise_errcode,
    transport::{HttpClient, Target, map_reqwest, read_bounded},
};

/// The most redirects one media request follows.
pub const MAX_REDIRECTS: usize = 3;

/// Largest error body read (a JSON error is a few hundred bytes).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The content scanner's refusals: its verdicts on the file, recorded rather than retried.
const SCANNER_REFUSALS: [&str; 4] =
    ["MCS_MEDIA_NOT_CLEAN", "MCS_MIME_TYPE_FORBIDDEN", "MCS_MEDIA_FAILED_TO_DECRYPT", "MCS_BAD_DECRYPTION"];

/// A media request as each attempt sends it.
#[derive(Clone)]
pub(crate) struct MediaRequest {
    pub(crate) method: Method,
    /// The first URL; the token goes only to its origin.
    pub(crate) url: Url,
    /// A JSON body (`download_encrypted`); it holds a file key, so it never leaves the first
    /// URL's origin either.
    pub(crate) json: Option<Vec<u8>>,
    /// The cap the file is held to, for a homeserver's own `M_TOO_LARGE`.
    pub(crate) cap: u64,
}

impl std::fmt::Debug for MediaRequest {
    /// Without the body: it holds a file key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaRequest")
            .field("method", &self.method)
            .field("url", &self.url.path())
            .field("body", &self.json.as_ref().map(|_| "[redacted]"))
            .field("cap", &self.cap)
            .finish()
    }
}

impl MediaRequest {
    pub(crate) fn get(url: Url, cap: u64) -> Self {
        Self { method: Method::GET, url, json: None, cap }
    }
}

/// Sends `request` once (redirects included) with `token` and returns the successful response,
/// its body not read yet; an error answer is read and mapped.
pub(crate) async fn exchange(
    client: &HttpClient,
    target: &Target<'_>,
    request: &MediaRequest,
    token: AccessToken,
) -> Result<reqwest::Response> {
    let mut bearer = HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
        .map_err(|_| Error::InvalidInput("the access token is not a valid header value".into()))?;
    bearer.set_sensitive(true);
    let origin = request.url.origin();
    let mut url = request.url.clone();
    let method = &request.method;
    let mut token_goes = true;
    for hop in 0..=MAX_REDIRECTS {
        let transport = client.policy.check_url(&url)?;
        let mut builder = client.media_client(transport).request(method.clone(), url.clone());
        if token_goes {
            builder = builder.header(AUTHORIZATION, bearer.clone());
        }
        if let Some(json) = request.json.as_ref().filter(|_| *method == Method::POST) {
            builder = builder.header(CONTENT_TYPE, "application/json").body(json.clone());
        }
        let head_deadline = (Instant::now() + client.config.request_timeout).min(target.deadline);
        let response = match tokio::time::timeout_at(head_deadline, builder.send()).await {
            Ok(response) => response.map_err(map_reqwest)?,
            Err(_) if head_deadline >= target.deadline => {
                return Err(Error::DeadlineExceeded(client.config.run_deadline));
            }
            Err(_) => return Err(Error::Unreachable("request timed out".into())),
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if !status.is_redirection() {
            return Err(error_of(response, request.cap).await);
        }
        let follows = match status {
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT => true,
            StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND | StatusCode::SEE_OTHER => {
                *method == Method::GET
            }
            _ => false,
        };
        if !follows {
            return Err(Error::policy(format!("a redirect (HTTP {}) is not followed", status.as_u16())));
        }
        if hop == MAX_REDIRECTS {
            return Err(Error::policy(format!("more than {MAX_REDIRECTS} redirects")));
        }
        let next = response
            .headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .ok_or_else(|| Error::malformed(format!("HTTP {} without a valid Location", status.as_u16())))?;
        // Checked before the next hop is sent; its addresses are checked again when resolved.
        client.policy.check_url(&next)?;
        if next.origin() != origin {
            if request.json.is_some() {
                return Err(Error::policy("a request carrying a file key is not redirected to another host"));
            }
            token_goes = false;
        }
        tracing::debug!(
            status = status.as_u16(),
            hop = hop + 1,
            token = token_goes,
            "following a media redirect"
        );
        url = next;
    }
    Err(Error::policy(format!("more than {MAX_REDIRECTS} redirects")))
}

/// The JSON of an error answer: a Matrix error (`errcode`) or the content scanner's
/// (`reason`).
#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    errcode: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    soft_logout: Option<bool>,
    #[serde(default)]
    retry_after_ms: Option<u64>,
}

/// Reads an error answer (bounded) and maps it.
async fn error_of(response: reqwest::Response, cap: u64) -> Error {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_bounded(response, MAX_ERROR_BODY).await.unwrap_or_default();
    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_default();
    classify(status, &headers, &parsed, cap)
}

fn classify(status: u16, headers: &HeaderMap, body: &ErrorBody, cap: u64) -> Error {
    let code = body.errcode.as_deref().or(body.reason.as_deref()).unwrap_or_default();
    if let Some(refusal) = SCANNER_REFUSALS.iter().find(|r| **r == code) {
        return Error::MediaRefused { code: refusal };
    }
    match (status, code) {
        (404 | 405, "M_UNRECOGNIZED") => Error::Homeserver { status, errcode: Some("M_UNRECOGNIZED".into()) },
        (_, "M_NOT_FOUND") | (404, _) => Error::MediaNotFound,
        (_, "M_TOO_LARGE") | (413, _) => Error::MediaTooLarge { cap },
        // Before a 401: Synapse answers a locked account so, and no new token cures it.
        (_, "M_USER_LOCKED") => Error::AccountLocked,
        (_, "M_USER_SUSPENDED") => Error::AccountSuspended,
        (_, "ORG_MATRIX_EXPIRED_ACCOUNT") => Error::AccountExpired,
        (_, "M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") | (401, _) => Error::Unauthorized {
            errcode: sanitise_errcode(code).unwrap_or_else(|| "HTTP 401".into()),
            soft_logout: body.soft_logout.unwrap_or(false),
        },
        (_, "M_FORBIDDEN") => Error::Forbidden,
        (_, "M_LIMIT_EXCEEDED") | (429, _) => {
            let header = headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_secs);
            Error::RateLimited { retry_after: body.retry_after_ms.map(Duration::from_millis).or(header) }
        }
        _ => Error::Homeserver { status, errcode: sanitise_errcode(code) },
    }
}

/// Whether a homeserver said it has no such route (the only answer of the authenticated route
/// that sends a download to the legacy one).
pub(crate) fn is_unrecognized(err: &Error) -> bool {
    matches!(err, Error::Homeserver { status: 404 | 405, errcode: Some(code) } if code == "M_UNRECOGNIZED")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> ErrorBody {
        serde_json::from_value(json).unwrap_or_default()
    }

    #[test]
    fn error_answers_are_classified() {
        let none = HeaderMap::new();
        let c = |status, json| classify(status, &none, &body(json), 10);
        assert!(is_unrecognized(&c(404, serde_json::json!({"errcode": "M_UNRECOGNIZED"}))));
        assert!(is_unrecognized(&c(405, serde_json::json!({"errcode": "M_UNRECOGNIZED"}))));
        assert!(!is_unrecognized(&c(400, serde_json::json!({"errcode": "M_UNRECOGNIZED"}))));
        assert!(matches!(c(404, serde_json::json!({"errcode": "M_NOT_FOUND"})), Error::MediaNotFound));
        assert!(matches!(c(404, serde_json::json!({})), Error::MediaNotFound));
        assert!(matches!(
            c(403, serde_json::json!({"reason": "MCS_MEDIA_NOT_CLEAN", "info": "***VIRUS DETECTED***"})),
            Error::MediaRefused { code: "MCS_MEDIA_NOT_CLEAN" }
        ));
        assert!(matches!(
            c(502, serde_json::json!({"errcode": "M_TOO_LARGE"})),
            Error::MediaTooLarge { cap: 10 }
        ));
        assert!(matches!(
            c(401, serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "soft_logout": true})),
            Error::Unauthorized { soft_logout: true, .. }
        ));
        assert!(matches!(
            c(401, serde_json::json!({"errcode": "M_USER_LOCKED", "soft_logout": true})),
            Error::AccountLocked
        ));
        assert!(matches!(
            c(403, serde_json::json!({"errcode": "ORG_MATRIX_EXPIRED_ACCOUNT"})),
            Error::AccountExpired
        ));
        let limited = c(429, serde_json::json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 1500}));
        assert!(
            matches!(limited, Error::RateLimited { retry_after: Some(d) } if d == Duration::from_millis(1500))
        );
        let failed = c(502, serde_json::json!({"reason": "MCS_MEDIA_REQUEST_FAILED"}));
        assert!(failed.is_retryable(), "{failed}");
        // Text chosen by the server never reaches the message.
        let odd = c(500, serde_json::json!({"errcode": "syt_secret token"}));
        assert_eq!(odd.to_string(), "homeserver error: HTTP 500");
    }
}
