//! The posting use-case behind the `postTchapMessage` mutation: validate -> write-down guard
//! (no network call before it passes) -> send with an idempotent transaction id -> audit.
//!
//! Every call that passes the per-caller rate is audited in the organisation's hash chain, sent
//! or refused: the actor, the room, the level, the outcome, the event id, and the SHA-256 and
//! length of the body as sent, never the body itself. A refusal is decided before any network
//! call: a note above the configured ceiling, above the caller's clearance, above the room's
//! stored level, or into a room the caller cannot read (absent or withheld alike).
//!
//! An account may be given instead of the homeserver URL: it is resolved to its homeserver and
//! the token confirmed to be its before the guard (these calls carry nothing of the note). A
//! token that is not the account's, or an account that cannot be used (expired, locked), is a
//! refused post, audited as the others are, naming the homeserver found; so is an account whose
//! discovery the outbound policy refuses, its record naming `https://{server name}`. An account
//! that is malformed or does not resolve refuses the call before it is admitted, without a
//! record, as malformed input does.

use argus_domain::{
    AccessToken, Classification, EventId, HomeserverUrl, IngestionRecord, PostEvidence, RoomId, Scope,
    Viewer, policy, post::MAX_NOTE_BYTES,
};
use argus_matrix::{OutgoingNote, Session};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::{Error, Result, Services, account, audit};

/// A note to post, as the caller gave it. `Debug` shows the token as `[redacted]`.
#[derive(Debug)]
pub struct PostRequest {
    /// Base URL of the homeserver.
    pub homeserver_url: String,
    /// A Matrix user id or an e-mail address, resolved to the homeserver instead of
    /// `homeserver_url` (exactly one of the two is given).
    pub account: Option<String>,
    /// The caller's Matrix access token, for this call only.
    pub access_token: AccessToken,
    /// The Matrix room id.
    pub room_id: String,
    /// The note, Markdown or plain text (the marking is put in front of it).
    pub body: String,
    /// The note's classification.
    pub classification: Classification,
    /// The event id of the message it answers.
    pub reply_to: Option<String>,
    /// An idempotency key (1 to 40 characters); by default one is derived from the note, so
    /// that a retry of the same call never posts twice. The transaction id sent is the key
    /// followed by a digest of the note: a key reused for another note is another transaction.
    pub transaction_id: Option<String>,
}

/// What a post did.
#[derive(Debug, Clone)]
pub struct PostSummary {
    /// The event id the homeserver gave the note.
    pub event_id: EventId,
    /// The transaction id it was sent under.
    pub transaction_id: String,
    /// The body as sent: the marking, then the note.
    pub body: String,
    /// The audit record of the post.
    pub record: IngestionRecord,
}

struct Valid {
    homeserver: HomeserverUrl,
    room_id: RoomId,
    reply_to: Option<EventId>,
}

fn validate(services: &Services, viewer: &Viewer, request: &PostRequest) -> Result<Valid> {
    policy::require_scope(viewer, Scope::Post)?;
    let homeserver: HomeserverUrl = request.homeserver_url.parse()?;
    let room_id: RoomId = request.room_id.parse()?;
    if !request.access_token.is_well_formed() {
        return Err(Error::InvalidInput("the access token is empty or malformed".into()));
    }
    if request.body.trim().is_empty() || request.body.len() > MAX_NOTE_BYTES {
        return Err(Error::InvalidInput(format!("the body must hold 1 to {MAX_NOTE_BYTES} bytes")));
    }
    if request.body.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\t')) {
        return Err(Error::InvalidInput("the body holds a control character".into()));
    }
    let reply_to = request.reply_to.as_deref().map(str::parse).transpose()?;
    if let Some(key) = &request.transaction_id {
        if key.len() > MAX_KEY_LEN {
            return Err(Error::InvalidInput(format!("transactionId must be 1 to {MAX_KEY_LEN} characters")));
        }
        argus_matrix::check_transaction_id(key)?;
    }
    services.connector.check_homeserver(&homeserver)?;
    Ok(Valid { homeserver, room_id, reply_to })
}

/// The longest idempotency key a caller may give.
const MAX_KEY_LEN: usize = 40;

/// The transaction id of a note: the caller's key (or `argus`) and a digest of who posts what
/// where at which level, so that the same call repeated (a client retrying after a lost answer)
/// is the same transaction, and a key reused for another note is not (the homeserver would
/// otherwise answer with the first note's event, and the audit record would pair that event
/// with the second note's digest).
fn transaction_id(viewer: &Viewer, request: &PostRequest, body: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        viewer.org.as_str(),
        viewer.actor.as_str(),
        request.homeserver_url.as_str(),
        request.room_id.as_str(),
        request.reply_to.as_deref().unwrap_or(""),
        request.classification.as_str(),
        body,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let digest = hex::encode(h.finalize());
    match &request.transaction_id {
        Some(key) => format!("{key}-{}", &digest[..16]),
        None => format!("argus-{}", &digest[..40]),
    }
}

/// Posts a note for `viewer`; every admitted call, sent or refused, appends an audit record.
pub async fn post_note(
    services: &Services,
    viewer: &Viewer,
    mut request: PostRequest,
) -> Result<PostSummary> {
    let started_at = OffsetDateTime::now_utc();
    let caller = crate::Admission::caller_of(viewer);
    services.admission.check_caller(&caller)?;
    // An account instead of a URL: resolved and its token confirmed; the homeserver found is the
    // one the note goes to and the record names.
    // Only a caller who may post makes the server reach out (a call naming a URL is refused
    // without the scope further on, audited).
    if request.account.is_some() {
        policy::require_scope(viewer, Scope::Post)?;
    }
    let account = request.account.take();
    let unusable = match account::resolve(services, &mut request.homeserver_url, account.as_deref()).await {
        Ok(None) => None,
        // The token must be the account's: a post by an account whose token is another's, has
        // expired or is locked is refused, and audited as every refused post is.
        Ok(Some(resolved)) => {
            let session = Session::with_token(resolved.homeserver.clone(), request.access_token.clone());
            account::confirm(services, &session, &resolved).await.err()
        }
        // The outbound policy refused the account's discovery: audited, under its server name.
        Err(account::Unresolved { error, audit_as: Some(server) }) => {
            request.homeserver_url = server;
            Some(error)
        }
        // Malformed or unresolved: refused before it is admitted, as malformed input is.
        Err(unresolved) => return Err(unresolved.error),
    };
    let body = services.post_policy.marked(request.classification, &request.body);
    let mut evidence = PostEvidence::of(&body);
    let result = match unusable {
        Some(error) => Err(error),
        None => send(services, viewer, &request, &body).await,
    };
    if let Ok((event_id, _)) = &result {
        evidence.event_id = Some(event_id.as_str().to_owned());
    }
    let call = audit::Call {
        viewer,
        homeserver_url: &request.homeserver_url,
        room_id: &request.room_id,
        classification: request.classification,
        started_at,
        token: &request.access_token,
        scheduled: false,
    };
    let entry = call.record(result.as_ref().err(), Some(evidence));
    let recorded = services.with_store(move |store| store.record_post(&entry)).await;
    match (result, recorded) {
        (Ok((event_id, transaction_id)), Ok(record)) => {
            tracing::info!(actor = %viewer.actor, org = %viewer.org, room = %request.room_id, event = %event_id, "note posted");
            Ok(PostSummary { event_id, transaction_id, body, record })
        }
        (Ok((event_id, _)), Err(e)) => {
            // The note is in the room: say so, and that its record is missing.
            tracing::error!(error = %e, event = %event_id, "a posted note could not be audited");
            Err(e)
        }
        (Err(e), recorded) => {
            if let Err(audit) = recorded {
                tracing::error!(error = %audit, "a refused post could not be audited");
            }
            let message = e.message_without(&request.access_token);
            tracing::warn!(actor = %viewer.actor, org = %viewer.org, code = e.code(), error = %message, "post refused or failed");
            Err(e)
        }
    }
}

async fn send(
    services: &Services,
    viewer: &Viewer,
    request: &PostRequest,
    body: &str,
) -> Result<(EventId, String)> {
    let valid = validate(services, viewer, request)?;
    // The room as the caller may read it (absent and withheld look alike), and the message the
    // note answers, which must be one of that room's the caller may read.
    let (v, room, reply) = (viewer.clone(), valid.room_id.clone(), valid.reply_to.clone());
    let (stored, answered) = services
        .with_store(move |store| {
            let stored = store.room(&v, &room)?;
            let answered = match (&stored, &reply) {
                (Some(_), Some(event)) => store.message(&v, &room, event)?,
                _ => None,
            };
            Ok((stored, answered))
        })
        .await?;
    let Some(stored) = stored else {
        return Err(Error::NotFound("the room is not in the archive, or not visible to the caller"));
    };
    // Only to the homeserver the room was archived from: another server answering for the same
    // room id is not trusted with the room's notes (as it is not trusted with its evidence).
    if !stored.homeserver_url.same_server(&valid.homeserver) {
        return Err(Error::InvalidInput("the room was archived from another homeserver".into()));
    }
    services.post_policy.check(viewer, request.classification, stored.classification)?;
    if valid.reply_to.is_some() && answered.is_none() {
        return Err(Error::NotFound("replyTo names no message of this room visible to the caller"));
    }
    let markdown = request.body.as_str();
    let html = argus_matrix::markdown_to_html(markdown).map(|html| {
        let marking = services.post_policy.marking_of(request.classification);
        format!("{}{html}", argus_matrix::escape_html(&marking))
    });
    let note = OutgoingNote {
        body: body.to_owned(),
        html,
        reply_to: valid.reply_to,
        thread_root: answered.and_then(|m| m.message.thread_root),
    };
    let txn = transaction_id(viewer, request, body);
    let event_id = services
        .connector
        .post_note(
            &Session::with_token(valid.homeserver.clone(), request.access_token.clone()),
            &valid.room_id,
            &txn,
            &note,
        )
        .await?;
    Ok((event_id, txn))
}
