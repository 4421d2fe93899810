//! Every room an account has joined, ingested in one call ([`ingest_joined`]): each room its own
//! run with its own audit record, as [`super::ingest_room`] runs it, and the failures past the
//! call's first ones summarised in one record.

use std::sync::Arc;

use argus_domain::{AccessToken, Classification, FetchReport, HomeserverUrl, Scope, Viewer, policy};
use argus_matrix::Session;
use time::OffsetDateTime;

use super::{
    IngestRequest, LiveRead, Reach, RoomOutcome, Tokens, Trigger, call, ingest_one, is_refusal, token_source,
};
use crate::{Admission, Error, Metrics, Result, Services, account, audit};

/// What to ingest of every room the account has joined.
#[derive(Debug)]
pub struct JoinedRequest {
    /// Base URL of the homeserver.
    pub homeserver_url: String,
    /// A Matrix user id or an e-mail address, resolved to the homeserver instead of
    /// `homeserver_url` (exactly one of the two is given).
    pub account: Option<String>,
    /// The caller's Matrix access token, for this call only.
    pub access_token: AccessToken,
    /// Classification of every room and message stored.
    pub classification: Classification,
    /// Cap on message events per room; `None` for the server default.
    pub max_messages: Option<i64>,
    /// The account's recovery key, for this call only.
    pub recovery_key: Option<argus_domain::Secret>,
    /// The account's refresh token, beside the access token: the token is renewed before it
    /// expires or when the homeserver refuses it, in memory, by one source the call's runs
    /// share (the renewed pair is not kept after the call).
    pub refresh_token: Option<argus_domain::Secret>,
    /// The OAuth 2.0 client id the tokens were issued to (see [`IngestRequest::oauth_client_id`]).
    pub oauth_client_id: Option<String>,
    /// Capture only what was sent at or after this time, in every room.
    pub since: Option<OffsetDateTime>,
}

/// Ingests every room the token's account has joined (`GET /joined_rooms`), one after another,
/// each its own run with its own audit record; `on_room` is called with the room id and its
/// report after every page, and once more with `None` when the room is done.
///
/// The discovery and every room count against the caller's rate: past it, the call waits for
/// the rate rather than going faster. At most [`crate::Limits::joined_rooms_per_call`] rooms
/// are ingested (in room id order); the others are reported `TOO_MANY_ROOMS`. Once
/// [`crate::Limits::joined_failures_recorded`] rooms have failed with a record each, a room is
/// first asked of the homeserver: one the token cannot read stores nothing and is not recorded
/// on its own, but counted in one FAILED record, appended at the end, that names how many there
/// were and why.
pub async fn ingest_joined(
    services: &Services,
    viewer: &Viewer,
    request: JoinedRequest,
    on_room: &mut (dyn FnMut(&str, Option<&FetchReport>) + Send),
) -> Result<Vec<RoomOutcome>> {
    policy::require_scope(viewer, Scope::Ingest)?;
    let caller = Admission::caller_of(viewer);
    services.admission.check_caller(&caller)?;
    let started_at = OffsetDateTime::now_utc();
    policy::check_may_classify(viewer, request.classification)?;
    super::check_since(request.since)?;
    let mut request = request;
    let account = request.account.take();
    let resolved = match account::resolve(services, &mut request.homeserver_url, account.as_deref()).await {
        Ok(resolved) => resolved,
        // The outbound policy refused the account's discovery: audited as a homeserver URL the
        // policy refuses is, under the account's server name.
        Err(account::Unresolved { error, audit_as: Some(server) }) => {
            let call = audit::Call {
                viewer,
                homeserver_url: &server,
                room_id: audit::SEVERAL_ROOMS,
                classification: request.classification,
                started_at,
                token: &request.access_token,
                scheduled: false,
            };
            audit::record_failure(services, &call, &error).await;
            return Err(error);
        }
        Err(unresolved) => return Err(unresolved.error),
    };
    let homeserver: HomeserverUrl = request.homeserver_url.parse()?;
    services.connector.check_homeserver(&homeserver)?;
    let template = IngestRequest {
        homeserver_url: request.homeserver_url,
        access_token: request.access_token,
        account: None,
        refresh_token: request.refresh_token,
        oauth_client_id: request.oauth_client_id,
        since: request.since,
        room_id: String::new(),
        classification: request.classification,
        max_messages: request.max_messages,
        recovery_key: request.recovery_key,
        reach: Reach::Current,
        trigger: Trigger::Manual,
        follow_upgrades: false,
    };
    // One token source for the whole call: the account's confirmation, the listing and every
    // room's run (a refresh token is spent once, its successor used by the next request).
    let tokens = Tokens::new();
    let source = Arc::clone(tokens.get_or_init(|| token_source(services, &template, &homeserver)));
    let session = Session::shared(homeserver, source);
    if let Some(resolved) = &resolved {
        account::confirm(services, &session, resolved).await?;
    }
    let rooms = services.connector.joined_rooms(&session).await?;
    let limits = services.limits;
    let taken = rooms.len().min(usize::try_from(limits.joined_rooms_per_call).unwrap_or(usize::MAX));
    let mut outcomes = Vec::with_capacity(rooms.len());
    let mut failures = Failures::default();
    for room_id in &rooms[..taken] {
        let room = room_id.as_str().to_owned();
        services.admission.wait_for_caller(&caller).await;
        let past_first = failures.recorded >= u64::from(limits.joined_failures_recorded);
        let unreadable =
            if past_first { services.may_read_room(&session, room_id).await.err() } else { None };
        let result = match unreadable {
            Some(error) => {
                Metrics::add(&services.metrics.ingestions_failed, 1);
                tracing::warn!(
                    actor = %viewer.actor, org = %viewer.org, code = error.code(),
                    "ingestion failed (summarised with the call's other failures)"
                );
                *failures.summarised.entry(error.code()).or_default() += 1;
                Err(error)
            }
            None => {
                let mut progress = |report: &FetchReport| on_room(&room, Some(report));
                let result = ingest_one(
                    services,
                    viewer,
                    &template.for_room(&room),
                    &tokens,
                    LiveRead::default(),
                    &mut progress,
                )
                .await;
                if result.as_ref().is_err_and(|e| !is_refusal(e)) {
                    failures.recorded += 1;
                }
                result
            }
        };
        on_room(&room, None);
        outcomes.push(RoomOutcome {
            room_id: room,
            result: result.map_err(|e| (e.code(), e.message_without(&template.access_token))),
        });
    }
    let too_many = Error::TooManyRooms(limits.joined_rooms_per_call);
    outcomes.extend(rooms[taken..].iter().map(|room| RoomOutcome {
        room_id: room.as_str().to_owned(),
        result: Err((too_many.code(), too_many.public_message())),
    }));
    if let Some(message) = failures.summary(limits.joined_failures_recorded) {
        let call = audit::Call { room_id: audit::SEVERAL_ROOMS, ..call(viewer, &template, started_at) };
        audit::record_summary(services, &call, message).await;
    }
    Ok(outcomes)
}

/// The failures of one joined-rooms call.
#[derive(Debug, Default)]
struct Failures {
    /// Those with an audit record of their own.
    recorded: u64,
    /// Those left to the call's summary record, by code.
    summarised: std::collections::BTreeMap<&'static str, u64>,
}

impl Failures {
    /// What the summary record says, when some failures were left to it.
    fn summary(&self, first: u32) -> Option<String> {
        let total: u64 = self.summarised.values().sum();
        let codes: Vec<String> = self.summarised.iter().map(|(code, n)| format!("{code}: {n}")).collect();
        (total > 0).then(|| {
            format!(
                "{total} more rooms of this call failed without storing anything ({}); past its first {first} \
                 failures, a call's failures are summarised in one record",
                codes.join(", ")
            )
        })
    }
}
