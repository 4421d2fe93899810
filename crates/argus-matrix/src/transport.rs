//! Sending one Matrix request: outbound policy, timeouts, bounded body reads and retries.

use std::{borrow::Cow, error::Error as StdError, sync::Arc, time::Duration};

use backon::{BackoffBuilder, ExponentialBuilder};
use http::header::AUTHORIZATION;
use ruma::api::{
    EndpointError as _, IncomingResponseExt, MatrixVersion, OutgoingRequestExt, SupportedVersions,
    auth_scheme::{AccessToken as AccessTokenScheme, NoAccessToken, SendAccessToken},
    error::{Error as MatrixError, ErrorKind, FromHttpResponseError, RetryAfter},
    path_builder::VersionHistory,
};
use tokio::time::Instant;

use crate::{
    ConnectorConfig, Error, Result, Session,
    error::sanitise_errcode,
    policy::{AddressRefused, OutboundPolicy, PolicyResolver, Transport},
};
use argus_domain::AccessToken;

/// The Client-Server API versions the connector speaks: it always uses the `/v3/` paths.
fn supported_versions() -> SupportedVersions {
    SupportedVersions { versions: [MatrixVersion::V1_1].into(), features: Default::default() }
}

/// HTTP clients bound to the outbound policy, shared by every clone of a connector.
#[derive(Debug)]
pub(crate) struct HttpClient {
    https: reqwest::Client,
    plain: reqwest::Client,
    /// Clients for files, whose bodies may take longer than a request may: no overall timeout
    /// (the body's idle timeout and minimum rate bound them instead); and for long-polls, each
    /// request given its own timeout ([`RequestBounds`]).
    media_https: reqwest::Client,
    media_plain: reqwest::Client,
    pub(crate) policy: Arc<OutboundPolicy>,
    pub(crate) config: ConnectorConfig,
    versions: SupportedVersions,
}

/// The requests of one call: the session (where, with which token), how to reach the
/// homeserver, until when, and the bounds of each request when they are not the configured ones.
pub(crate) struct Target<'a> {
    pub(crate) session: &'a Session,
    pub(crate) transport: Transport,
    pub(crate) deadline: Instant,
    /// `None`: the configured request timeout and body cap.
    pub(crate) bounds: Option<RequestBounds>,
}

/// The bounds of each request of a call that are not the configured ones: a long-poll
/// (`/sync`), which the homeserver holds open up to its own timeout and may answer with more
/// than a page of messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBounds {
    /// Time allowed for one request, from connecting to the last byte of the body (the
    /// configured idle read timeout does not apply: a long-poll is silent until it answers).
    pub(crate) timeout: Duration,
    /// Largest response body accepted, in bytes.
    pub(crate) max_response_bytes: usize,
}

impl HttpClient {
    pub(crate) fn new(config: ConnectorConfig) -> Result<Self> {
        let policy = Arc::new(OutboundPolicy::new(&config)?);
        let build = |transport, media: bool| {
            let builder = reqwest::Client::builder()
                .dns_resolver(Arc::new(PolicyResolver { policy: Arc::clone(&policy), transport }))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .connect_timeout(config.connect_timeout)
                .https_only(transport == Transport::Https)
                .user_agent(concat!("argus-tchap/", env!("CARGO_PKG_VERSION")));
            let builder = if media {
                builder
            } else {
                builder.timeout(config.request_timeout).read_timeout(config.request_timeout)
            };
            builder.build().map_err(|e| Error::InvalidInput(format!("HTTP client: {e}")))
        };
        Ok(Self {
            https: build(Transport::Https, false)?,
            plain: build(Transport::PlainHttp, false)?,
            media_https: build(Transport::Https, true)?,
            media_plain: build(Transport::PlainHttp, true)?,
            policy,
            config,
            versions: supported_versions(),
        })
    }

    /// The client for requests reached over `transport`: redirects not followed, addresses
    /// checked by the policy resolver, the request timeout.
    pub(crate) fn client(&self, transport: Transport) -> &reqwest::Client {
        match transport {
            Transport::Https => &self.https,
            Transport::PlainHttp => &self.plain,
        }
    }

    /// The client for files reached over `transport`: redirects not followed, addresses
    /// checked by the policy resolver, no overall or idle read timeout (a request of a
    /// long-poll sets its own).
    pub(crate) fn media_client(&self, transport: Transport) -> &reqwest::Client {
        match transport {
            Transport::Https => &self.media_https,
            Transport::PlainHttp => &self.media_plain,
        }
    }

    /// The target of a call of `session` that may last `within`: its token checked and the
    /// homeserver's URL checked against the outbound policy, both before any request.
    pub(crate) fn target<'a>(&self, session: &'a Session, within: Duration) -> Result<Target<'a>> {
        session.access_token()?;
        let transport = self.policy.check_url(&session.homeserver().url())?;
        Ok(Target { session, transport, deadline: Instant::now() + within, bounds: None })
    }

    /// Like [`HttpClient::target`], each request of the call held to `bounds` instead of the
    /// configured request timeout and body cap (a long-poll).
    pub(crate) fn target_with<'a>(
        &self,
        session: &'a Session,
        within: Duration,
        bounds: RequestBounds,
    ) -> Result<Target<'a>> {
        Ok(Target { bounds: Some(bounds), ..self.target(session, within)? })
    }

    /// Sends a request with the session's current token, retrying rate limits, server errors
    /// and network failures within the configured bounds and the run's deadline. A refused
    /// token is renewed by the session's token source when it can (once), then sent again.
    pub(crate) async fn send<R>(&self, target: &Target<'_>, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequestExt<Authentication = AccessTokenScheme, PathBuilder = VersionHistory>,
        R::IncomingResponse: IncomingResponseExt<EndpointError = MatrixError>,
    {
        self.send_as(target, request, &self.versions).await
    }

    /// Like [`HttpClient::send`], choosing the endpoint's path for `versions` (an endpoint that
    /// has no path in the versions the connector speaks by default).
    pub(crate) async fn send_as<R>(
        &self,
        target: &Target<'_>,
        request: R,
        versions: &SupportedVersions,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequestExt<Authentication = AccessTokenScheme, PathBuilder = VersionHistory>,
        R::IncomingResponse: IncomingResponseExt<EndpointError = MatrixError>,
    {
        self.retrying(target, |token| {
            let request = request.clone();
            async move { self.attempt::<R>(target, &token, request, versions).await }
        })
        .await
    }

    /// Runs `attempt` with the session's current token, retrying rate limits, server errors
    /// and network failures within the configured bounds and the run's deadline; a refused
    /// token is renewed by the session's token source when it can (once), then tried again.
    pub(crate) async fn retrying<T, F, Fut>(&self, target: &Target<'_>, mut attempt: F) -> Result<T>
    where
        F: FnMut(AccessToken) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(self.config.max_retry_wait)
            .with_max_times(self.config.max_retries as usize)
            .with_jitter()
            .build();
        let mut retries = 0_u32;
        let mut renewed = false;
        loop {
            // A token about to expire is renewed first (a failure to renew it is retried like a
            // request's when it is transient).
            let fresh = target.session.ensure_fresh().await;
            let outcome = match fresh {
                Ok(()) => {
                    let token = target.session.access_token()?;
                    attempt(token.clone()).await.map_err(|e| (e, Some(token)))
                }
                Err(e) => Err((e, None)),
            };
            let err = match outcome {
                Ok(response) => return Ok(response),
                Err((e @ Error::Unauthorized { .. }, Some(token))) if !renewed => {
                    if !target.session.renew(&token).await? {
                        return Err(e);
                    }
                    renewed = true;
                    continue;
                }
                Err((e, _)) if !e.is_retryable() || matches!(e, Error::DeadlineExceeded(_)) => return Err(e),
                Err((e, _)) => e,
            };
            // The backoff yields `max_retries` delays, then none.
            let Some(backoff_delay) = backoff.next() else {
                return Err(err);
            };
            retries += 1;
            let delay = match &err {
                Error::RateLimited { retry_after: Some(wait) } => (*wait).min(self.config.max_retry_wait),
                _ => backoff_delay,
            };
            if Instant::now() + delay >= target.deadline {
                tracing::warn!(
                    code = err.code(),
                    wait_ms = delay.as_millis(),
                    "retry would pass the run deadline; giving up"
                );
                return Err(err);
            }
            tracing::info!(
                code = err.code(),
                retry = retries,
                wait_ms = delay.as_millis(),
                "retrying after a transient failure"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Like [`HttpClient::send`], also reading from the answer's body what the typed answer
    /// leaves out: `extra` is given the typed answer and the body it was read from.
    pub(crate) async fn send_reading<R, X>(
        &self,
        target: &Target<'_>,
        request: R,
        extra: impl Fn(&R::IncomingResponse, &[u8]) -> X,
    ) -> Result<(R::IncomingResponse, X)>
    where
        R: OutgoingRequestExt<Authentication = AccessTokenScheme, PathBuilder = VersionHistory>,
        R::IncomingResponse: IncomingResponseExt<EndpointError = MatrixError>,
    {
        let extra = &extra;
        self.retrying(target, |token| {
            let request = request.clone();
            async move {
                let http_request =
                    authorised(request, target.session.homeserver().as_str(), &token, &self.versions)?;
                self.exchange_typed_with::<R::IncomingResponse, X>(target, http_request, extra).await
            }
        })
        .await
    }

    async fn attempt<R>(
        &self,
        target: &Target<'_>,
        token: &AccessToken,
        request: R,
        versions: &SupportedVersions,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequestExt<Authentication = AccessTokenScheme, PathBuilder = VersionHistory>,
        R::IncomingResponse: IncomingResponseExt<EndpointError = MatrixError>,
    {
        let http_request = authorised(request, target.session.homeserver().as_str(), token, versions)?;
        self.exchange_typed::<R::IncomingResponse>(target, http_request).await
    }

    /// Sends a request that carries no access token (a refresh token or nothing authenticates
    /// it) once, through the same policy-bound client, with the paths of `versions`.
    pub(crate) async fn send_unauthenticated<R>(
        &self,
        target: &Target<'_>,
        request: R,
        versions: &SupportedVersions,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequestExt<Authentication = NoAccessToken, PathBuilder = VersionHistory>,
        R::IncomingResponse: IncomingResponseExt<EndpointError = MatrixError>,
    {
        let http_request = request
            .try_into_http_request::<Vec<u8>>(
                target.session.homeserver().as_str(),
                SendAccessToken::None,
                Cow::Borrowed(versions),
            )
            .map_err(|e| Error::InvalidInput(format!("cannot build the request: {e}")))?;
        self.exchange_typed::<R::IncomingResponse>(target, http_request).await
    }

    /// Sends `http_request` to the homeserver of `target` and reads its typed answer.
    async fn exchange_typed<T>(&self, target: &Target<'_>, http_request: http::Request<Vec<u8>>) -> Result<T>
    where
        T: IncomingResponseExt<EndpointError = MatrixError>,
    {
        Ok(self.exchange_typed_with::<T, ()>(target, http_request, &|_, _| ()).await?.0)
    }

    /// Like [`HttpClient::exchange_typed`], with what `extra` reads from the typed answer and
    /// its body.
    async fn exchange_typed_with<T, X>(
        &self,
        target: &Target<'_>,
        http_request: http::Request<Vec<u8>>,
        extra: &impl Fn(&T, &[u8]) -> X,
    ) -> Result<(T, X)>
    where
        T: IncomingResponseExt<EndpointError = MatrixError>,
    {
        let mut request = reqwest::Request::try_from(http_request)
            .map_err(|e| Error::InvalidInput(format!("cannot build the request: {}", e.without_url())))?;
        let (client, limit) = match target.bounds {
            // The client without an overall or idle read timeout, this request's own instead.
            Some(bounds) => {
                *request.timeout_mut() = Some(bounds.timeout);
                (self.media_client(target.transport), bounds.max_response_bytes)
            }
            None => (self.client(target.transport), self.config.max_response_bytes),
        };
        let response = self.fetch(client, request, target.deadline, "homeserver", limit).await?;
        let status = response.status();
        let (head, body) = response.into_parts();
        let typed = T::try_from_http_response(http::Response::from_parts(head, body.as_slice())).map_err(
            |e| match e {
                FromHttpResponseError::Server(err) => map_matrix_error(&err),
                FromHttpResponseError::Deserialization(err) => {
                    Error::malformed(format!("HTTP {}: {}", status.as_u16(), describe_json_error(&err)))
                }
                _ => Error::malformed(format!("HTTP {}", status.as_u16())),
            },
        )?;
        let more = extra(&typed, &body);
        Ok((typed, more))
    }
}

impl HttpClient {
    /// Sends one JSON request built by the caller (`method`, `url` under the session's
    /// homeserver, `body`) with the session's token, retrying network failures and renewing a
    /// refused token like [`HttpClient::send`]; any other answer is handed back whatever its
    /// status (the caller reads Matrix errors itself).
    pub(crate) async fn send_authorised_raw(
        &self,
        target: &Target<'_>,
        method: http::Method,
        url: &url::Url,
        body: &[u8],
    ) -> Result<http::Response<Vec<u8>>> {
        self.retrying(target, |token| {
            let method = method.clone();
            async move {
                let mut builder = http::Request::builder().method(method).uri(url.as_str());
                if !body.is_empty() {
                    builder = builder.header(http::header::CONTENT_TYPE, "application/json");
                }
                let mut http_request = builder
                    .body(body.to_vec())
                    .map_err(|_| Error::InvalidInput("cannot build the request".into()))?;
                let mut value = http::HeaderValue::try_from(format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| {
                        Error::InvalidInput("the access token is not a valid header value".into())
                    })?;
                value.set_sensitive(true);
                http_request.headers_mut().insert(AUTHORIZATION, value);
                let mut request = reqwest::Request::try_from(http_request).map_err(|e| {
                    Error::InvalidInput(format!("cannot build the request: {}", e.without_url()))
                })?;
                let (client, limit) = match target.bounds {
                    Some(bounds) => {
                        *request.timeout_mut() = Some(bounds.timeout);
                        (self.media_client(target.transport), bounds.max_response_bytes)
                    }
                    None => (self.client(target.transport), self.config.max_response_bytes),
                };
                let response = self.fetch(client, request, target.deadline, "homeserver", limit).await?;
                if response.status() == http::StatusCode::UNAUTHORIZED {
                    // A refused token is the session's affair (renewed once when it can); any
                    // other 401 (a locked account) is the caller's answer.
                    let answer = http::Response::builder()
                        .status(response.status())
                        .body(response.body().as_slice())
                        .map_err(|_| Error::malformed("invalid response head"))?;
                    let error = MatrixError::from_http_response(answer);
                    if let refused @ Error::Unauthorized { .. } = map_matrix_error(&error) {
                        return Err(refused);
                    }
                }
                Ok(response)
            }
        })
        .await
    }

    /// Sends one request built elsewhere (the OAuth 2.0 token endpoint's form) through the
    /// policy-bound client: its URL checked against the outbound policy, redirects refused, the
    /// body bounded, all before `deadline`. The answer is handed back whatever its status.
    pub(crate) async fn exchange_raw(
        &self,
        http_request: http::Request<Vec<u8>>,
        deadline: Instant,
    ) -> Result<http::Response<Vec<u8>>> {
        let url = url::Url::parse(&http_request.uri().to_string())
            .map_err(|_| Error::InvalidInput("the auth server's URL is not valid".into()))?;
        let client = match self.policy.check_url(&url)? {
            Transport::Https => &self.https,
            Transport::PlainHttp => &self.plain,
        };
        let request = reqwest::Request::try_from(http_request)
            .map_err(|e| Error::InvalidInput(format!("cannot build the request: {}", e.without_url())))?;
        self.fetch(client, request, deadline, "auth server", self.config.max_response_bytes).await
    }

    /// Sends `request` through `client`: a redirect refused (as `who`'s answer), the body read
    /// up to `limit` bytes, all before `deadline`.
    async fn fetch(
        &self,
        client: &reqwest::Client,
        request: reqwest::Request,
        deadline: Instant,
        who: &str,
        limit: usize,
    ) -> Result<http::Response<Vec<u8>>> {
        let exchange = async {
            let mut response = client.execute(request).await.map_err(map_reqwest)?;
            let status = response.status();
            if status.is_redirection() {
                return Err(Error::policy(format!(
                    "the {who} answered with a redirect (HTTP {}), which is not followed",
                    status.as_u16()
                )));
            }
            // Taken, not cloned: the body is read without them.
            let headers = std::mem::take(response.headers_mut());
            let body = read_bounded(response, limit).await?;
            let mut builder = http::Response::builder().status(status);
            if let Some(h) = builder.headers_mut() {
                *h = headers;
            }
            builder.body(body).map_err(|_| Error::malformed("invalid response head"))
        };
        tokio::time::timeout_at(deadline, exchange)
            .await
            .map_err(|_| Error::DeadlineExceeded(self.config.run_deadline))?
    }
}

/// Short description of why a body did not deserialise, without echoing its content.
fn describe_json_error(err: &ruma::api::error::DeserializationError) -> String {
    match err {
        ruma::api::error::DeserializationError::Json(e) => {
            let class = match e.classify() {
                serde_json::error::Category::Eof => "truncated JSON",
                serde_json::error::Category::Syntax => "invalid JSON",
                serde_json::error::Category::Data => "unexpected JSON structure",
                serde_json::error::Category::Io => "I/O error",
            };
            format!("{class} at line {} column {}", e.line(), e.column())
        }
        _ => "invalid body".to_owned(),
    }
}

/// Reads a body chunk by chunk, refusing it as soon as it exceeds `limit` bytes.
pub(crate) async fn read_bounded(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(Error::ResponseTooLarge { limit });
    }
    let capacity = response.content_length().map_or(8 * 1024, |len| len as usize);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = response.chunk().await.map_err(map_reqwest)? {
        if body.len() + chunk.len() > limit {
            return Err(Error::ResponseTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The HTTP request of `request` with the token in its `Authorization` header, marked
/// sensitive so that no `Debug` of the request (a log line, an error) shows it.
fn authorised<R>(
    request: R,
    homeserver: &str,
    token: &AccessToken,
    versions: &SupportedVersions,
) -> Result<http::Request<Vec<u8>>>
where
    R: OutgoingRequestExt<Authentication = AccessTokenScheme, PathBuilder = VersionHistory>,
{
    let mut http_request = request
        .try_into_http_request::<Vec<u8>>(
            homeserver,
            SendAccessToken::IfRequired(token.expose_secret()),
            Cow::Borrowed(versions),
        )
        .map_err(|e| Error::InvalidInput(format!("cannot build the request: {e}")))?;
    if let Some(value) = http_request.headers_mut().get_mut(AUTHORIZATION) {
        value.set_sensitive(true);
    }
    Ok(http_request)
}

/// Maps a Matrix error response to the connector's error.
fn map_matrix_error(err: &MatrixError) -> Error {
    let status = err.status_code.as_u16();
    let kind = err.error_kind();
    match kind {
        // Before the token errors: Synapse answers a locked account 401 with `soft_logout`, which
        // a refresh token cannot cure (the transport's renewal is for `Unauthorized` only).
        Some(ErrorKind::UserLocked) => Error::AccountLocked,
        Some(ErrorKind::UserSuspended) => Error::AccountSuspended,
        Some(other) if other.errcode().as_str() == EXPIRED_ACCOUNT => Error::AccountExpired,
        Some(ErrorKind::UnknownToken(data)) => {
            Error::Unauthorized { errcode: "M_UNKNOWN_TOKEN".into(), soft_logout: data.soft_logout }
        }
        Some(ErrorKind::MissingToken) => {
            Error::Unauthorized { errcode: "M_MISSING_TOKEN".into(), soft_logout: false }
        }
        Some(ErrorKind::Forbidden) => Error::Forbidden,
        Some(ErrorKind::NotFound) => Error::NotFound,
        Some(ErrorKind::LimitExceeded(data)) => {
            Error::RateLimited { retry_after: data.retry_after.map(wait_for) }
        }
        _ if status == 429 => Error::RateLimited { retry_after: None },
        _ if status == 401 => Error::Unauthorized { errcode: "HTTP 401".into(), soft_logout: false },
        other => {
            Error::Homeserver { status, errcode: other.and_then(|k| sanitise_errcode(k.errcode().as_str())) }
        }
    }
}

/// The `errcode` of an expired account: Synapse's account validity and Tchap's module.
const EXPIRED_ACCOUNT: &str = "ORG_MATRIX_EXPIRED_ACCOUNT";

fn wait_for(retry_after: RetryAfter) -> Duration {
    match retry_after {
        RetryAfter::Delay(d) => d,
        RetryAfter::DateTime(at) => at.duration_since(std::time::SystemTime::now()).unwrap_or_default(),
    }
}

/// Maps a transport failure, recognising a refusal by the policy resolver in its source chain.
pub(crate) fn map_reqwest(err: reqwest::Error) -> Error {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<AddressRefused>() {
            return Error::policy(refused.to_string());
        }
        source = e.source();
    }
    let kind = if err.is_timeout() {
        "request timed out"
    } else if err.is_connect() {
        "connection failed"
    } else if err.is_body() || err.is_decode() {
        "response body interrupted"
    } else {
        "request failed"
    };
    // The innermost cause (an OS error, what a name resolved to or failed to) goes to the log
    // only: errors reach the caller and the permanent audit trail.
    let mut detail = String::new();
    let mut source = err.source();
    while let Some(e) = source {
        detail = e.to_string();
        source = e.source();
    }
    tracing::warn!(kind, detail = %detail, "homeserver request failed");
    Error::Unreachable(kind.to_owned())
}

#[cfg(test)]
mod tests {
    use argus_domain::AccessToken;
    use ruma::{
        api::{EndpointError as _, client::message::get_message_events, error::Error as MatrixError},
        owned_room_id,
    };

    use super::{AUTHORIZATION, Error, authorised, map_matrix_error, supported_versions};

    fn answer(status: u16, mut body: serde_json::Value) -> Error {
        body["error"] = "words".into();
        let body = body.to_string();
        let response = http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        map_matrix_error(&MatrixError::from_http_response(response))
    }

    #[test]
    fn account_states_are_told_from_a_refused_token() {
        use serde_json::json;
        let soft = answer(401, json!({"errcode": "M_UNKNOWN_TOKEN", "soft_logout": true}));
        assert!(matches!(soft, Error::Unauthorized { soft_logout: true, .. }), "{soft:?}");
        let locked = answer(401, json!({"errcode": "M_USER_LOCKED", "soft_logout": true}));
        assert!(matches!(locked, Error::AccountLocked), "{locked:?}");
        let expired = answer(403, json!({"errcode": "ORG_MATRIX_EXPIRED_ACCOUNT"}));
        assert!(matches!(expired, Error::AccountExpired), "{expired:?}");
        let suspended = answer(403, json!({"errcode": "M_USER_SUSPENDED"}));
        assert!(matches!(suspended, Error::AccountSuspended), "{suspended:?}");
        let limited = answer(429, json!({"errcode": "M_LIMIT_EXCEEDED", "retry_after_ms": 1500}));
        assert!(matches!(limited, Error::RateLimited { retry_after: Some(_) }), "{limited:?}");
    }

    #[test]
    fn the_token_is_sent_but_never_printed() {
        let token = AccessToken::new("syt_c2VjcmV0_0123456789");
        let request = get_message_events::v3::Request::backward(owned_room_id!("!room:tchap.test"));
        let built = authorised(request, "https://matrix.tchap.test", &token, &supported_versions())
            .unwrap_or_else(|e| panic!("{e}"));
        let header = built.headers().get(AUTHORIZATION).map(|v| (v.as_bytes().to_vec(), v.is_sensitive()));
        assert_eq!(header, Some((b"Bearer syt_c2VjcmV0_0123456789".to_vec(), true)));
        assert!(!format!("{built:?}").contains("c2VjcmV0"));
    }
}
