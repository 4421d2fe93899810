//! Watched rooms in the API: `watchTchapRoom`, `unwatchTchapRoom` and `tchapWatches`, over the
//! watch use-case ([`argus_ingest::watch`]). A watch never shows its token or recovery key.

use argus_domain::{AccessToken, Watch};
use juniper::{GraphQLEnum, GraphQLInputObject, GraphQLObject, ID, graphql_object};

use super::scalars::{DateTime, GqlClassification, opaque_id};
use crate::{Context, CursorKind, Result};

/// Input of `watchTchapRoom`. It has no `Debug`: nothing can print the access token or the
/// recovery key it holds before they are sealed.
#[derive(GraphQLInputObject)]
#[graphql(name = "WatchTchapRoomInput", description = "A room to keep current, and how often.")]
pub struct WatchTchapRoomInput {
    /// Base URL of the homeserver, e.g. `https://matrix.agent.tchap.gouv.fr` (or give account instead).
    pub homeserver_url: Option<String>,
    /// A Matrix user id (`@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr`) or an e-mail address, resolved to its homeserver (server discovery; an e-mail address through the configured identity server) instead of homeserverUrl: exactly one of the two is given (INVALID_INPUT otherwise). The token must belong to this account: for an e-mail address, the one Tchap derives from it (jean.dupont@finances.gouv.fr is @jean.dupont-finances.gouv.fr on the server the identity server names); user ids compared without regard to case.
    pub account: Option<String>,
    /// The account's refresh token (refreshable tokens, or a next-generation auth server's): the access token is renewed before it expires or when the homeserver refuses it. The pair is kept once for the account (the Matrix user the token belongs to): it replaces the pair stored for that account, and every watch of the account given a refresh token renews that one pair, once per expiry. Give Argus a login session of its own: once renewed, the pair given no longer works elsewhere (a watch refused after its check, e.g. TOO_MANY_WATCHES, may already have renewed it), and one session given to two Argus users (or organisations) is renewed by each and soon refused to one. Never returned, stored in clear or logged.
    pub refresh_token: Option<String>,
    /// The OAuth 2.0 client id the tokens were issued to, for a homeserver whose accounts are a next-generation auth server's (Matrix Authentication Service, spec v1.15 OAuth 2.0 API): its token endpoint renews refreshToken for that client only. Not needed for the homeserver's own refreshable tokens, nor for the auth server's compatibility sessions (tokens from /login), both renewed at the homeserver's /refresh; a renewal the auth server refuses fails with TOKEN_REFRESH_FAILED.
    pub oauth_client_id: Option<String>,
    /// Capture only what was sent at or after this time: the room's history starts there (timestamp_to_event) instead of at its creation; historyComplete then means complete since this time.
    pub since: Option<DateTime>,
    /// Matrix access token the scheduler reads the room with: it must read the room now (asked of the homeserver before anything else), then it is sealed at once (encrypted at rest with a key held outside the database), never returned or logged. Giving a new one renews the watch and resumes a paused one.
    pub access_token: String,
    /// Matrix room id, e.g. !abc:agent.tchap.gouv.fr
    pub room_id: String,
    /// Classification of the room and every message the scheduled runs store. Must not exceed the caller's clearance.
    pub classification: GqlClassification,
    /// Seconds between runs, at least the server's floor (60 by default) and at most a week.
    pub interval: i32,
    /// The owner's recovery key (Element security key or legacy key-backup recovery key): scheduled runs decrypt end-to-end encrypted history from the account's key backup. Sealed with the access token (never stored in clear, returned, logged or audited). A key that no longer opens the backup pauses the watch (`WRONG_RECOVERY_KEY`, `KEY_BACKUP_MISMATCH`); renewing the watch without one stops decrypting.
    pub recovery_key: Option<String>,
}

/// Whether the scheduler runs a watch, and if not, what stopped it. Every status but ACTIVE is not run until the owner gives the watch again (watchTchapRoom), which makes it ACTIVE.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "WatchStatus")]
pub enum GqlWatchStatus {
    /// Synced on its interval.
    #[graphql(name = "ACTIVE")]
    Active,
    /// Not run until the watch is renewed with a new token or recovery key (see statusReason): the homeserver refused the token, the recovery key no longer opens the backup, or the room answers to another homeserver.
    #[graphql(name = "PAUSED")]
    Paused,
    /// Not run: the account has expired on its homeserver (account validity, ORG_MATRIX_EXPIRED_ACCOUNT). Once the account is renewed, give the watch again (its token, if it was given without a refresh token and still works, or a new one: a refresh-token pair renewed by Argus is no longer the one the owner holds).
    #[graphql(name = "ACCOUNT_EXPIRED")]
    AccountExpired,
    /// Not run: the homeserver's administrator locked the account (M_USER_LOCKED). Once it is unlocked, give the watch again (its token, if it was given without a refresh token and still works, or a new one).
    #[graphql(name = "ACCOUNT_LOCKED")]
    AccountLocked,
}

/// A watched room: kept current by the scheduler with its owner's sealed token.
#[derive(Debug, Clone)]
pub struct TchapWatch(pub Watch);

#[graphql_object(context = Context)]
impl TchapWatch {
    /// Opaque, stable id.
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapWatch", self.0.id)
    }

    /// The Matrix room id.
    fn room_id(&self) -> &str {
        self.0.room_id.as_str()
    }

    /// The homeserver it is read from.
    fn homeserver_url(&self) -> &str {
        self.0.homeserver_url.as_str()
    }

    /// Who watches: scheduled runs are audited as theirs, marked as scheduled.
    fn owner(&self) -> &str {
        self.0.owner.as_str()
    }

    /// The classification of every scheduled run (at least the room's stored classification).
    fn classification(&self) -> GqlClassification {
        self.0.classification.into()
    }

    /// Seconds between runs.
    fn interval(&self) -> i32 {
        i32::try_from(self.0.interval_secs).unwrap_or(i32::MAX)
    }

    /// Whether the scheduler runs it.
    fn status(&self) -> GqlWatchStatus {
        match self.0.status {
            argus_domain::WatchStatus::Active => GqlWatchStatus::Active,
            argus_domain::WatchStatus::Paused => GqlWatchStatus::Paused,
            argus_domain::WatchStatus::AccountExpired => GqlWatchStatus::AccountExpired,
            argus_domain::WatchStatus::AccountLocked => GqlWatchStatus::AccountLocked,
        }
    }

    /// Why it is not run: a stable code (`HOMESERVER_UNAUTHORIZED`, `TOKEN_UNAVAILABLE`, `TOKEN_REFRESH_FAILED` (the refresh token no longer renews the access token and no renewed token is stored), `WRONG_RECOVERY_KEY`, `KEY_BACKUP_MISMATCH`, `HOMESERVER_MISMATCH` when PAUSED; `ACCOUNT_EXPIRED`, `ACCOUNT_LOCKED` for those statuses), then words. Never a token or a key. A suspended account (ACCOUNT_SUSPENDED) still reads: its watch stays ACTIVE.
    fn status_reason(&self) -> Option<&str> {
        self.0.status_reason.as_deref()
    }

    /// When it is due next.
    fn next_run_at(&self) -> DateTime {
        DateTime(self.0.next_run_at)
    }

    /// When it last ran.
    fn last_run_at(&self) -> Option<DateTime> {
        self.0.last_run_at.map(DateTime)
    }

    /// How its last run ended: SUCCEEDED or FAILED.
    fn last_outcome(&self) -> Option<&str> {
        self.0.last_outcome.as_deref()
    }

    /// Why its last run failed; never contains a token.
    fn last_error(&self) -> Option<&str> {
        self.0.last_error.as_deref()
    }

    /// When it was created.
    fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }

    /// Whether it holds the owner's recovery key (sealed with the token): its runs decrypt end-to-end encrypted history.
    fn decrypts_history(&self) -> bool {
        self.0.decrypts
    }

    /// Every run captures only what was sent at or after this time (the since the watch was given).
    fn since(&self) -> Option<DateTime> {
        self.0.since.map(DateTime)
    }
}

/// A page of watched rooms, oldest first.
#[derive(GraphQLObject)]
#[graphql(context = Context)]
pub struct TchapWatchList {
    /// The watches of this page.
    pub nodes: Vec<TchapWatch>,
    /// Pass it as `after` for the next page; null on the last page.
    pub end_cursor: Option<String>,
}

/// `watchTchapRoom`.
pub(crate) async fn watch(context: &Context, input: WatchTchapRoomInput) -> Result<TchapWatch> {
    let request = argus_ingest::watch::WatchRequest {
        homeserver_url: input.homeserver_url.unwrap_or_default(),
        access_token: AccessToken::new(input.access_token),
        account: input.account,
        refresh_token: input.refresh_token.map(argus_domain::Secret::new),
        oauth_client_id: input.oauth_client_id,
        since: input.since.map(|t| t.0),
        room_id: input.room_id,
        classification: input.classification.into(),
        interval_secs: i64::from(input.interval),
        recovery_key: input.recovery_key.map(argus_domain::Secret::new),
    };
    let watch = argus_ingest::watch::watch_room(&context.services().app, context.viewer(), request).await?;
    Ok(TchapWatch(watch))
}

/// `unwatchTchapRoom`.
pub(crate) async fn unwatch(context: &Context, room_id: &str) -> Result<bool> {
    Ok(argus_ingest::watch::unwatch_room(&context.services().app, context.viewer(), room_id).await?)
}

/// `tchapWatches`.
pub(crate) async fn list(
    context: &Context,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TchapWatchList> {
    let request = super::paging::page_request::<i64>(context, CursorKind::Watches, first, after.as_deref())?;
    let (first, after) = (request.first, request.after);
    let key = &context.services().cursor_key;
    // One more than asked for tells whether a page follows.
    let mut watches = argus_ingest::watch::watches(
        &context.services().app,
        context.viewer(),
        first.saturating_add(1),
        after,
    )
    .await?;
    let more = watches.len() > first as usize;
    watches.truncate(first as usize);
    let end_cursor = match watches.last() {
        Some(last) if more => Some(key.encode(CursorKind::Watches, context.viewer(), &last.id)),
        _ => None,
    };
    Ok(TchapWatchList { nodes: watches.into_iter().map(TchapWatch).collect(), end_cursor })
}
