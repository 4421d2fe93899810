//! The actix-web application: routes, authentication, GraphQL execution with limits, request
//! ids, metrics; and the server lifecycle (start, graceful shutdown, fusion relay task).

use std::{net::TcpListener, sync::Arc, time::Instant};

use actix_web::{
    App, HttpRequest, HttpResponse, HttpServer,
    body::MessageBody,
    dev::{ServerHandle, ServiceRequest, ServiceResponse},
    http::{
        StatusCode,
        header::{self, HeaderName, HeaderValue},
    },
    middleware::{Next, from_fn},
    web,
};
use argus_domain::Viewer;
use argus_graphql::{Context, ReadOnlySchema, Schema, SchemaOptions, Services};
use juniper::{
    DefaultScalarValue, InputValue,
    http::{GraphQLBatchRequest, GraphQLRequest, GraphQLResponse},
};
use serde_json::json;
use tracing::Instrument as _;

use crate::{
    Config, Error, Result,
    auth::Authenticator,
    media::{BlobSource, MediaServing},
    metrics::HttpMetrics,
};

/// The realm named in `WWW-Authenticate`.
pub const REALM: &str = "argus-tchap";

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Everything a request handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    auth: Authenticator,
    services: Arc<Services>,
    schema: Arc<Schema>,
    read_schema: Arc<ReadOnlySchema>,
    metrics: Arc<HttpMetrics>,
    max_batch: usize,
    max_body_bytes: usize,
    graphiql: bool,
    media: MediaServing,
    /// Raised when the server starts stopping: open WebSocket connections close at once
    /// (`1001`) instead of holding the graceful stop for its whole timeout.
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("graphiql", &self.graphiql).finish_non_exhaustive()
    }
}

/// The application state and the background relay, built from a configuration.
pub struct Built {
    /// The request handlers' state.
    pub state: AppState,
    /// The fusion relay, when enabled.
    pub relay: Option<argus_fusion::Relay>,
    /// The scheduler of watched rooms, when enabled.
    pub scheduler: Option<Arc<argus_ingest::scheduler::Scheduler>>,
    /// The live loops of watched accounts, when enabled.
    pub live: Option<Arc<argus_ingest::live::Live>>,
}

/// Assembles the services ([`crate::services::assemble`]), then the authenticator and the
/// schema.
pub async fn build(config: &Config) -> Result<Built> {
    let assembled = crate::services::assemble(config).await?;
    let source = config.key_source()?;
    let auth = Authenticator::new(&config.jwt, &source)?;
    let options = SchemaOptions {
        max_depth: config.graphql.max_depth,
        max_fields: config.graphql.max_fields,
        max_tokens: config.graphql.max_tokens,
        introspection: config.introspection_enabled(),
    };
    let metrics = Arc::new(HttpMetrics::new(Arc::clone(&assembled.services)));
    let state = AppState {
        auth,
        services: assembled.services,
        schema: Arc::new(argus_graphql::build_schema(options)),
        read_schema: Arc::new(argus_graphql::build_read_only_schema(options)),
        metrics,
        max_batch: config.graphql.max_batch,
        max_body_bytes: config.graphql.max_body_bytes,
        graphiql: config.graphiql_enabled(),
        media: MediaServing { serving_allowed: config.media.serving_allowed(), blobs: None },
        stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
    };
    config.media.log_at_start();
    let mut state = state;
    if let Some(media) = &state.services.app.media {
        state.set_blob_source(Arc::new(crate::services::BlobsOf(Arc::clone(media.blobs()))));
    }
    Ok(Built { state, relay: assembled.relay, scheduler: assembled.scheduler, live: assembled.live })
}

impl AppState {
    /// The shared services (store, connector, counters).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Serves files from `blobs` at `/media/{id}` ([`crate::media`]); until then the route
    /// answers 503 `MEDIA_STORE_NOT_CONFIGURED`.
    pub fn set_blob_source(&mut self, blobs: Arc<dyn BlobSource>) {
        self.media.blobs = Some(blobs);
    }

    /// The media settings of the download route.
    pub(crate) fn media(&self) -> &MediaServing {
        &self.media
    }

    /// The validator of bearer tokens.
    pub(crate) fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// The schema of `GET /graphql` and of GraphQL over WebSocket connections.
    pub(crate) fn read_schema(&self) -> &Arc<ReadOnlySchema> {
        &self.read_schema
    }

    /// The largest request body, and the largest WebSocket message.
    pub(crate) fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Watches whether the server is stopping.
    pub(crate) fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Registers the routes with this state.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .app_data(web::PayloadConfig::new(self.max_body_bytes))
            .route("/graphql", web::post().to(graphql_post))
            // GraphQL over WebSocket: the same path, upgraded.
            .route(
                "/graphql",
                web::get()
                    .guard(actix_web::guard::fn_guard(crate::subscriptions::is_upgrade))
                    .to(crate::subscriptions::handle),
            )
            .route("/graphql", web::get().to(graphql_get))
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics))
            .configure(crate::media::configure)
            .configure(crate::packages::configure);
        if self.graphiql {
            cfg.route("/graphiql", web::get().to(crate::graphiql::page))
                .route("/graphiql/assets/{name}", web::get().to(crate::graphiql::asset));
        }
    }
}

/// A running server: its address and a handle to stop it.
pub struct RunningServer {
    addr: std::net::SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<Result<()>>,
    stopping: Arc<tokio::sync::watch::Sender<bool>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops accepting connections, closes the WebSocket connections, lets requests in flight
    /// finish, then stops the relay.
    pub async fn stop(self) -> Result<()> {
        self.stopping.send_replace(true);
        self.handle.stop(true).await;
        self.task.await.map_err(|_| Error::Server("the server task failed".into()))?
    }
}

/// Starts the server on `listener` in the background (for tests and embedding).
pub async fn spawn(listener: TcpListener, config: Config) -> Result<RunningServer> {
    let addr = listener.local_addr().map_err(|e| Error::Server(format!("listener: {e}")))?;
    config.check_bind(addr)?;
    spawn_built(listener, build(&config).await?)
}

/// Like [`spawn`], with the state already built (e.g. given its blob store with
/// [`AppState::set_blob_source`]); the caller has checked the address ([`Config::check_bind`]).
pub fn spawn_built(listener: TcpListener, built: Built) -> Result<RunningServer> {
    let addr = listener.local_addr().map_err(|e| Error::Server(format!("listener: {e}")))?;
    let app = Arc::clone(&built.state.services().app);
    let stopping = Arc::clone(&built.state.stopping);
    let server = http_server(listener, built.state)?;
    let handle = server.handle();
    let task = tokio::spawn(serve_with_background(server, built.relay, built.scheduler, built.live, app));
    Ok(RunningServer { addr, handle, task, stopping })
}

/// Runs the server on `listener` until SIGINT or SIGTERM, then shuts down gracefully: in-flight
/// requests finish (30 s at most), then the fusion relay finishes its pass.
pub async fn run(listener: TcpListener, config: Config) -> Result<()> {
    let addr = listener.local_addr().map_err(|e| Error::Server(format!("listener: {e}")))?;
    config.check_bind(addr)?;
    run_built(listener, build(&config).await?).await
}

/// Like [`run`], with the state already built (so the caller can report readiness first).
pub async fn run_built(listener: TcpListener, built: Built) -> Result<()> {
    let app = Arc::clone(&built.state.services().app);
    // actix-web stops gracefully on SIGINT and SIGTERM; the WebSocket connections are told too.
    let stopping = Arc::clone(&built.state.stopping);
    let signals = tokio::spawn(async move {
        stopping_signal().await;
        stopping.send_replace(true);
    });
    let server = http_server(listener, built.state)?;
    let result = serve_with_background(server, built.relay, built.scheduler, built.live, app).await;
    signals.abort();
    result
}

/// Returns at SIGINT or SIGTERM (the signals actix-web stops on).
async fn stopping_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(mut interrupt), Ok(mut terminate)) => {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn http_server(listener: TcpListener, state: AppState) -> Result<actix_web::dev::Server> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get).clamp(1, 8);
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new().wrap(from_fn(observe)).configure(move |cfg| state.configure(cfg))
    })
    .workers(workers)
    .shutdown_timeout(30)
    .listen(listener)
    .map_err(|e| Error::Server(format!("cannot listen: {e}")))?
    .run();
    Ok(server)
}

/// Serves with the background tasks (the fusion relay, the scheduler; without a scheduler, the
/// audit of interrupted runs on its own), stopped once the HTTP server has stopped.
async fn serve_with_background(
    server: actix_web::dev::Server,
    relay: Option<argus_fusion::Relay>,
    scheduler: Option<Arc<argus_ingest::scheduler::Scheduler>>,
    live: Option<Arc<argus_ingest::live::Live>>,
    app: Arc<argus_ingest::Services>,
) -> Result<()> {
    // The live loops of watched accounts: each gives its lease back when stopped.
    let stop_live = Arc::new(tokio::sync::Notify::new());
    let live_task = live.map(|live| tokio::spawn(live.run(Arc::clone(&stop_live))));
    let media = app.media.clone().map(|media| (media, Arc::clone(&app)));
    let stop_scheduler = Arc::new(tokio::sync::Notify::new());
    let stop = Arc::clone(&stop_scheduler);
    let scheduler_task = Some(match scheduler {
        Some(scheduler) => tokio::spawn(scheduler.run(stop)),
        None => tokio::spawn(argus_ingest::scheduler::close_interrupted_runs_every(
            app,
            std::time::Duration::from_secs(60),
            stop,
        )),
    });
    // The media worker: files held while the scanner was away, retries, watched rooms' files.
    let stop_media = Arc::new(tokio::sync::Notify::new());
    let media_task = media.map(|(media, app)| {
        let interval = media.settings().worker_interval;
        tokio::spawn(media.run_worker(app, interval, Arc::clone(&stop_media)))
    });
    let result = serve_with_relay(server, relay).await;
    stop_scheduler.notify_one();
    stop_media.notify_one();
    stop_live.notify_one();
    if let Some(task) = live_task {
        let _ = task.await;
    }
    if let Some(task) = scheduler_task {
        let _ = task.await;
    }
    if let Some(task) = media_task {
        let _ = task.await;
    }
    result
}

async fn serve_with_relay(server: actix_web::dev::Server, relay: Option<argus_fusion::Relay>) -> Result<()> {
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    // The relay stops when the HTTP server has stopped.
    let relay_task = relay.map(|relay| {
        tokio::spawn(async move {
            relay
                .run(async move {
                    let _ = relay_stopped.await;
                })
                .await;
        })
    });
    let result = server.await.map_err(|e| Error::Server(format!("server error: {e}")));
    let _ = stop_relay.send(());
    if let Some(task) = relay_task {
        let _ = task.await;
    }
    tracing::info!("server stopped");
    result
}

/// A request id: the caller's `X-Request-Id` when it is short and plain, else a fresh one.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map_or_else(|| format!("{:016x}", rand::random::<u64>()), str::to_owned)
}

/// Request id, tracing span, access log line and HTTP metrics for every request.
async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> std::result::Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = request_id(&req);
    let method = crate::metrics::method_label(req.method());
    let metrics = req.app_data::<web::Data<AppState>>().map(|s| Arc::clone(&s.metrics));
    let span = tracing::info_span!("request", request_id = %id, method = %method, path = %req.path());
    let started = Instant::now();
    let result = next.call(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let (status, route) = match &result {
        Ok(res) => {
            (res.status().as_u16(), res.request().match_pattern().unwrap_or_else(|| "unmatched".into()))
        }
        Err(e) => (e.as_response_error().status_code().as_u16(), "unmatched".into()),
    };
    span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1e3, "handled"));
    if let Some(m) = metrics {
        m.record_request(&route, method, status, elapsed);
    }
    let mut res = result?;
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    Ok(res)
}

pub(crate) fn error_body(message: &str, code: &str) -> serde_json::Value {
    json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
}

/// The 401 of RFC 6750: no error code when no credentials were sent at all.
fn unauthorized(error: &Error) -> HttpResponse {
    let challenge = match error {
        Error::MissingToken => format!("Bearer realm=\"{REALM}\""),
        Error::InvalidToken(reason) => {
            format!("Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{reason}\"")
        }
        _ => format!("Bearer realm=\"{REALM}\", error=\"invalid_token\""),
    };
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, challenge))
        .json(error_body(&error.to_string(), "UNAUTHENTICATED"))
}

/// The caller of a request, or the 401 (or 503) answer, as every authenticated route has it.
pub(crate) async fn authenticate(
    req: &HttpRequest,
    state: &AppState,
) -> std::result::Result<Viewer, HttpResponse> {
    let header = match req.headers().get(header::AUTHORIZATION).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return Err(unauthorized(&Error::InvalidToken("malformed authorization header"))),
    };
    match state.auth.authenticate_header(header).await {
        Ok(viewer) => Ok(viewer),
        Err(e) if e.is_unauthenticated() => {
            tracing::info!(reason = %e, "request not authenticated");
            Err(unauthorized(&e))
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot authenticate");
            Err(HttpResponse::ServiceUnavailable().json(error_body(&e.to_string(), "UNAVAILABLE")))
        }
    }
}

/// The response and whether it is free of errors (request and field errors alike).
/// One operation's answer, and whether the operation ran at all.
enum Answer {
    /// It executed (its field errors, if any, carry their own codes).
    Executed(GraphQLResponse<DefaultScalarValue>),
    /// It never executed: the document failed to parse or validate, broke a document limit,
    /// or named no runnable operation. Its errors carry `extensions.code` too.
    Refused(serde_json::Value),
}

/// The `extensions.code` of a document that never executed.
fn request_error_code(error: &juniper::GraphQLError) -> &'static str {
    use juniper::{GraphQLError, parser::ParseError};
    match error {
        GraphQLError::ParseError(e) => match &e.item {
            ParseError::DepthLimitExceeded(_)
            | ParseError::TokenLimitExceeded(_)
            | ParseError::FieldLimitExceeded(_) => "LIMIT_EXCEEDED",
            _ => "GRAPHQL_PARSE_FAILED",
        },
        GraphQLError::ValidationError(_) => "GRAPHQL_VALIDATION_FAILED",
        // A subscription is served over WebSocket only.
        GraphQLError::NotSupported(_) | GraphQLError::IsSubscription => "OPERATION_NOT_SUPPORTED",
        _ => "BAD_REQUEST",
    }
}

fn answer(response: GraphQLResponse<DefaultScalarValue>) -> (Answer, &'static str) {
    match response.into_result() {
        Ok((value, errors)) => {
            let outcome = if errors.is_empty() { "ok" } else { "error" };
            (Answer::Executed(GraphQLResponse::from_result(Ok((value, errors)))), outcome)
        }
        Err(e) => {
            let code = request_error_code(&e);
            let mut body = serde_json::to_value(GraphQLResponse::<DefaultScalarValue>::from_result(Err(e)))
                .unwrap_or_else(|_| error_body("the request could not be executed", code));
            if let Some(errors) = body.get_mut("errors").and_then(serde_json::Value::as_array_mut) {
                for error in errors {
                    error["extensions"] = json!({ "code": code });
                }
            }
            (Answer::Refused(body), "error")
        }
    }
}

/// The media type of the answer: `application/graphql-response+json` when the client accepts
/// it (GraphQL over HTTP), else `application/json`.
fn wants_graphql_response(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/graphql-response+json"))
}

/// The HTTP response of one operation. Under `application/graphql-response+json`, a document
/// that never executed is a 400; under `application/json` every well-formed request is a 200,
/// as the GraphQL over HTTP specification has it for that media type.
fn respond(req: &HttpRequest, answer: Answer) -> HttpResponse {
    let modern = wants_graphql_response(req);
    let mut builder = match (&answer, modern) {
        (Answer::Refused(_), true) => HttpResponse::BadRequest(),
        _ => HttpResponse::Ok(),
    };
    if modern {
        builder.content_type("application/graphql-response+json");
    }
    match answer {
        Answer::Executed(response) => builder.json(response),
        Answer::Refused(body) => builder.json(body),
    }
}

async fn execute_one(state: &AppState, context: &Context, request: &GraphQLRequest) -> Answer {
    let kind = crate::metrics::operation_kind(&request.query, request.operation_name.as_deref());
    let (answer, outcome) = answer(request.execute(&state.schema, context).await);
    state.metrics.record_operation(kind, outcome);
    answer
}

async fn graphql_post(req: HttpRequest, body: web::Bytes, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match authenticate(&req, &state).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let batch: GraphQLBatchRequest = match serde_json::from_slice(&body) {
        Ok(batch) => batch,
        Err(_) => {
            return HttpResponse::BadRequest()
                .json(error_body("the body is not a JSON GraphQL request", "BAD_REQUEST"));
        }
    };
    let context = Context::new(viewer, Arc::clone(&state.services));
    match batch {
        GraphQLBatchRequest::Single(request) => respond(&req, execute_one(&state, &context, &request).await),
        GraphQLBatchRequest::Batch(requests) => {
            if requests.len() > state.max_batch {
                let message = format!("a batch may hold at most {} operations", state.max_batch);
                return HttpResponse::BadRequest().json(error_body(&message, "BATCH_TOO_LARGE"));
            }
            let mut responses = Vec::with_capacity(requests.len());
            for request in &requests {
                responses.push(match execute_one(&state, &context, request).await {
                    Answer::Executed(response) => serde_json::to_value(response).unwrap_or_default(),
                    Answer::Refused(body) => body,
                });
            }
            HttpResponse::Ok().json(responses)
        }
    }
}

#[derive(serde::Deserialize)]
struct GetParams {
    query: String,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
}

/// `GET /graphql?query=…`: queries only (the read-only schema has no mutation type).
async fn graphql_get(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match authenticate(&req, &state).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    let Ok(web::Query(params)) = web::Query::<GetParams>::from_query(req.query_string()) else {
        return HttpResponse::BadRequest()
            .json(error_body("missing or malformed query parameter", "BAD_REQUEST"));
    };
    let variables = match params.variables.as_deref().map(serde_json::from_str::<InputValue>).transpose() {
        Ok(v) => v,
        Err(_) => {
            return HttpResponse::BadRequest()
                .json(error_body("variables must be a JSON object", "BAD_REQUEST"));
        }
    };
    let request = GraphQLRequest::new(params.query, params.operation_name, variables);
    let context = Context::new(viewer, Arc::clone(&state.services));
    let (answer, outcome) = answer(request.execute(&state.read_schema, &context).await);
    state.metrics.record_operation("query", outcome);
    respond(&req, answer)
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n")
}

async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.services.with_store(|store| store.ping()).await {
        Ok(()) => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ready\n"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: the database does not answer");
            HttpResponse::build(StatusCode::SERVICE_UNAVAILABLE)
                .content_type("text/plain; charset=utf-8")
                .body("the database is unavailable\n")
        }
    }
}

async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    // The scrape reads the outbox: off the async workers.
    let metrics = Arc::clone(&state.metrics);
    match web::block(move || metrics.render()).await {
        Ok(text) => HttpResponse::Ok().content_type(crate::metrics::CONTENT_TYPE).body(text),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}
