//! GraphQL over WebSocket (`graphql-transport-ws`, the protocol of the `graphql-ws` library):
//! `GET /graphql` with `Upgrade: websocket` and the subprotocol `graphql-transport-ws` serves
//! the subscriptions (and the queries) of the read-only schema, with `juniper_graphql_ws` over
//! `actix-ws`.
//!
//! - The bearer token travels in `connection_init`'s payload (`{"Authorization": "Bearer
//!   <jwt>"}`, the key in any case, or `{"token": "<jwt>"}`; a browser cannot set headers on a
//!   WebSocket) and is checked as a request's is ([`Authenticator`]): the same issuer, audience,
//!   signature and claims, the same viewer. A missing or refused token closes the connection
//!   with `4403 Forbidden` (`1013` when the keys cannot be had just then); no `connection_init`
//!   within [`INIT_TIMEOUT`] closes it with `4408`.
//! - The connection lives no longer than the token: at its `exp` every subscription ends
//!   (`UNAUTHENTICATED`) and the connection closes with `4403`.
//! - A message (a frame, or frames continued) larger than `graphql.max_body_bytes` closes the
//!   connection with `1009`; a message that is not of the protocol with `4400`.
//! - Keep-alive: a protocol `pong` every [`KEEP_ALIVE`] (which clients ignore) and a WebSocket
//!   ping; a client heard from neither for three intervals is gone and its connection closed.
//! - When the server stops, every connection closes at once with `1001` (the client reconnects
//!   to another replica), instead of holding the graceful stop for its timeout.

use std::{pin::pin, sync::Arc, time::Duration};

use actix_web::{HttpRequest, HttpResponse, guard::GuardContext, http::header, web};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session};
use argus_graphql::Context;
use futures::{SinkExt as _, StreamExt as _};
use juniper::{DefaultScalarValue, Variables};
use juniper_graphql_ws::{
    ConnectionConfig,
    graphql_transport_ws::{ClientMessage, Connection, Input, Output, ServerMessage},
};

use crate::{Error, app::AppState, auth::Authenticator};

/// The subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// How often the server shows it is alive (a protocol `pong` and a WebSocket ping).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How long a connection may stay without a `connection_init` before it is closed (`4408`).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Operations one connection runs at once (the subscriptions of one caller are capped across
/// connections by [`argus_graphql::schema::subscription::MAX_SUBSCRIPTIONS_PER_CALLER`]).
const MAX_OPERATIONS: usize = 16;

/// Whether the request asks for a WebSocket (`Upgrade: websocket`, in any case).
pub(crate) fn is_upgrade(ctx: &GuardContext<'_>) -> bool {
    ctx.head()
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("websocket")))
}

/// Whether the client offers [`PROTOCOL`].
fn offers_protocol(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == PROTOCOL))
}

/// `GET /graphql` upgraded: the handshake, then the connection served in the background.
pub(crate) async fn handle(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    if !offers_protocol(&req) {
        return Ok(HttpResponse::BadRequest().json(crate::app::error_body(
            "the WebSocket subprotocol must be graphql-transport-ws",
            "BAD_REQUEST",
        )));
    }
    let (response, session, incoming) = actix_ws::handle_with_protocols(&req, body, &[PROTOCOL])?;
    let max = state.max_body_bytes();
    let incoming = incoming.max_frame_size(max).aggregate_continuations().max_continuation_size(max);
    actix_web::rt::spawn(serve(state.get_ref().clone(), session, incoming));
    Ok(response)
}

/// What `connection_init` ended in, for the connection's own timers and close codes.
#[derive(Debug)]
enum Admitted {
    /// The token is valid until then.
    Until(time::OffsetDateTime),
    /// The token could not be checked just then (the keys could not be had).
    Unavailable,
}

/// Why a connection was refused at `connection_init`: the close reason (`4403`), never the
/// token.
#[derive(Debug, thiserror::Error)]
#[error("Forbidden: {0}")]
struct Refused(String);

/// The token of a `connection_init` payload.
fn token_of(payload: &Variables<DefaultScalarValue>) -> Option<(bool, &str)> {
    let value = |wanted: &str| {
        payload
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(wanted))
            .and_then(|(_, v)| v.as_scalar())
            .and_then(juniper::ScalarValue::try_as_str)
    };
    value("authorization").map(|v| (true, v)).or_else(|| value("token").map(|v| (false, v)))
}

/// Checks the token of `payload` as a request's, and gives the connection its context.
async fn admit(
    auth: Authenticator,
    services: Arc<argus_graphql::Services>,
    payload: Variables<DefaultScalarValue>,
    admitted: tokio::sync::oneshot::Sender<Admitted>,
) -> Result<ConnectionConfig<Context, DefaultScalarValue>, Refused> {
    let checked = match token_of(&payload) {
        None => Err(Error::MissingToken),
        Some((true, header)) => match split_bearer(header) {
            Some(token) => auth.authenticate_until(token).await,
            None => Err(Error::InvalidToken("not a bearer token")),
        },
        Some((false, token)) => auth.authenticate_until(token.trim()).await,
    };
    match checked {
        Ok((viewer, until)) => {
            let _ = admitted.send(Admitted::Until(until));
            tracing::info!(actor = %viewer.actor, org = %viewer.org, "GraphQL over WebSocket connection admitted");
            let context = Context::new(viewer, services).with_expiry(until);
            Ok(ConnectionConfig::new(context)
                .with_max_in_flight_operations(MAX_OPERATIONS)
                .with_keep_alive_interval(KEEP_ALIVE)
                // Clients are not asked to ping: WebSocket pings tell whether they are there.
                .with_keep_alive_timeout(Duration::ZERO))
        }
        Err(e) if e.is_unauthenticated() => {
            tracing::info!(reason = %e, "GraphQL over WebSocket connection refused");
            Err(Refused(e.to_string()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot authenticate a GraphQL over WebSocket connection");
            let _ = admitted.send(Admitted::Unavailable);
            Err(Refused("the token cannot be checked now".into()))
        }
    }
}

/// The token of an `Authorization` value `Bearer <token>` (the scheme in any case).
fn split_bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A close frame.
fn close(code: u16, reason: &str) -> Option<CloseReason> {
    // A close frame's reason has at most 123 bytes.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Some(CloseReason { code: CloseCode::from(code), description: Some(reason[..end].to_owned()) })
}

/// Serves one connection until it closes.
async fn serve(state: AppState, mut session: Session, mut incoming: AggregatedMessageStream) {
    let (admitted_tx, mut admitted_rx) = tokio::sync::oneshot::channel();
    let (auth, services) = (state.authenticator().clone(), Arc::clone(state.services()));
    let init = move |payload| admit(auth, services, payload, admitted_tx);
    let (mut to_schema, mut from_schema) = Connection::new(Arc::clone(state.read_schema()), init).split();
    let far = tokio::time::Instant::now() + Duration::from_secs(366 * 24 * 3600);
    let mut expiry = pin!(tokio::time::sleep_until(far));
    let mut init_timeout = pin!(tokio::time::sleep(INIT_TIMEOUT));
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.tick().await;
    let (mut acknowledged, mut heard) = (false, tokio::time::Instant::now());
    let mut stopping = state.stopping();
    let reason = loop {
        tokio::select! {
            // A stopping server closes at once; then what the schema has to say goes out (a
            // subscription ending at the token's expiry says so before the connection closes:
            // past it, subscriptions send nothing more, so this never holds the close back).
            biased;
            _ = stopping.wait_for(|stopping| *stopping) => break close(1001, "Going away: the server is stopping"),
            output = from_schema.next() => match output {
                Some(Output::Message(message)) => {
                    if matches!(message, ServerMessage::ConnectionAck) {
                        acknowledged = true;
                        if let Ok(Admitted::Until(until)) = admitted_rx.try_recv() {
                            expiry.as_mut().reset(deadline_of(until));
                        }
                    }
                    let Ok(text) = serde_json::to_string(&message) else {
                        break close(1011, "Internal error");
                    };
                    if session.text(text).await.is_err() {
                        return;
                    }
                }
                Some(Output::Close { code, message }) => {
                    if code == 4403 && matches!(admitted_rx.try_recv(), Ok(Admitted::Unavailable)) {
                        break close(1013, "Try again later");
                    }
                    break close(code, &message);
                }
                None => break close(1000, "Normal Closure"),
            },
            () = &mut expiry => break close(4403, "Forbidden: the token has expired"),
            () = &mut init_timeout, if !acknowledged => break close(4408, "Connection initialisation timeout"),
            message = incoming.next() => {
                heard = tokio::time::Instant::now();
                let text = match message {
                    None => return,
                    Some(Ok(AggregatedMessage::Text(text))) => text.to_string(),
                    Some(Ok(AggregatedMessage::Binary(bytes))) => match String::from_utf8(bytes.to_vec()) {
                        Ok(text) => text,
                        Err(_) => break close(4400, "Invalid message received"),
                    },
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        if session.pong(&bytes).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => continue,
                    Some(Ok(AggregatedMessage::Close(_))) => {
                        let _ = to_schema.send(Input::Close).await;
                        break close(1000, "Normal Closure");
                    }
                    Some(Err(ProtocolError::Overflow)) => break close(1009, "Message too big"),
                    Some(Err(_)) => break close(1002, "Protocol error"),
                };
                match serde_json::from_str::<ClientMessage<DefaultScalarValue>>(&text) {
                    Ok(message) => {
                        if to_schema.send(Input::Message(message)).await.is_err() {
                            break close(1011, "Internal error");
                        }
                    }
                    Err(_) => break close(4400, "Invalid message received"),
                }
            },
            _ = keep_alive.tick() => {
                if heard.elapsed() > KEEP_ALIVE * 3 {
                    break close(1001, "Going away: no answer to pings");
                }
                if session.ping(b"").await.is_err() {
                    return;
                }
            },
        }
    };
    // The subscriptions end with the connection; the client is told why.
    drop((to_schema, from_schema));
    let _ = session.close(reason).await;
}

/// The instant of the tokio clock at `at` (now when it is past).
fn deadline_of(at: time::OffsetDateTime) -> tokio::time::Instant {
    let left = Duration::try_from(at - time::OffsetDateTime::now_utc()).unwrap_or(Duration::ZERO);
    tokio::time::Instant::now() + left
}

#[cfg(test)]
mod tests {
    use juniper::{DefaultScalarValue, InputValue, Variables};

    use super::{close, split_bearer, token_of};

    fn payload(pairs: &[(&str, &str)]) -> Variables<DefaultScalarValue> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), InputValue::scalar((*v).to_owned()))).collect()
    }

    #[test]
    fn the_token_is_found_under_authorization_in_any_case_or_token() {
        assert_eq!(token_of(&payload(&[("Authorization", "Bearer a.b.c")])), Some((true, "Bearer a.b.c")));
        assert_eq!(token_of(&payload(&[("authorization", "bearer x")])), Some((true, "bearer x")));
        assert_eq!(token_of(&payload(&[("token", "a.b.c")])), Some((false, "a.b.c")));
        assert_eq!(token_of(&payload(&[("other", "a.b.c")])), None);
        assert_eq!(split_bearer("Bearer  a.b.c "), Some("a.b.c"));
        assert_eq!(split_bearer("BEARER a"), Some("a"));
        assert_eq!(split_bearer("Basic a"), None);
        assert_eq!(split_bearer("Bearer"), None);
    }

    #[test]
    fn a_close_reason_fits_a_close_frame() {
        let long = "é".repeat(100);
        let reason = close(4403, &long).and_then(|r| r.description).unwrap_or_default();
        assert!(reason.len() <= 123 && long.starts_with(&reason));
    }
}
