//! Watched accounts in the API (live capture): `watchTchapAccount`, `unwatchTchapAccount` and
//! `tchapAccountWatches`, over [`argus_ingest::live`]. A watch never shows its tokens or
//! recovery key.

use argus_domain::{AccessToken, AccountWatch};
use juniper::{GraphQLInputObject, GraphQLObject, ID, graphql_object};

use super::{
    paging::PageInfo,
    scalars::{DateTime, GqlClassification, opaque_id},
};
use crate::{Context, CursorKind, Result};

/// Input of `watchTchapAccount`. It has no `Debug`: nothing can print the tokens or the
/// recovery key it holds before they are sealed.
#[derive(GraphQLInputObject)]
#[graphql(
    name = "WatchTchapAccountInput",
    description = "An account whose rooms to keep current as they change (one /sync long-poll per account)."
)]
pub struct WatchTchapAccountInput {
    /// Base URL of the homeserver (or give account instead: exactly one of the two).
    pub homeserver_url: Option<String>,
    /// A Matrix user id or an e-mail address, resolved to its homeserver as for watchTchapRoom; the token must belong to it.
    pub account: Option<String>,
    /// Matrix access token of the account: confirmed with the homeserver (whoami, and every listed room readable), then sealed at once, never returned or logged. Giving it again renews the watch (same account) and resumes a stopped one where its loop stood. Give Argus a login (a device) of its own: the loop's /sync receives that device's to-device messages (room keys among them), which a person's client on the same device would then miss.
    pub access_token: String,
    /// The account's refresh token: kept once for the account and renewed before expiry, as for watchTchapRoom.
    pub refresh_token: Option<String>,
    /// The OAuth 2.0 client id the tokens were issued to (a next-generation auth server's), as for watchTchapRoom.
    pub oauth_client_id: Option<String>,
    /// The owner's recovery key: encrypted rooms are decrypted from the account's key backup. Sealed with the token.
    pub recovery_key: Option<String>,
    /// Classification of every room captured. Must not exceed the caller's clearance.
    pub classification: GqlClassification,
    /// Only these rooms; null means every joined room.
    pub rooms: Option<Vec<String>>,
    /// Long-poll timeout in seconds.
    pub interval: Option<i32>,
    /// A room's history is captured from this time (timestamp_to_event) instead of its creation.
    pub since: Option<DateTime>,
}

/// A watched account: one live loop keeps its rooms current.
#[derive(Debug, Clone)]
pub struct TchapAccountWatch(pub AccountWatch);

#[graphql_object(context = Context)]
impl TchapAccountWatch {
    /// Opaque, stable id (pass it to unwatchTchapAccount).
    fn id(&self, context: &Context) -> ID {
        opaque_id(context, "TchapAccountWatch", self.0.id)
    }

    /// Whether a loop runs it: ACTIVE, or what stopped it (PAUSED, ACCOUNT_EXPIRED, ACCOUNT_LOCKED), as for room watches.
    fn status(&self) -> &str {
        self.0.status.as_str()
    }

    /// Why it is not run: a stable code, then words (as TchapWatch.statusReason). Never a token or a key.
    fn status_reason(&self) -> Option<&str> {
        self.0.status_reason.as_deref()
    }

    /// When its last /sync answered and what it brought was stored.
    fn last_sync_at(&self) -> Option<DateTime> {
        self.0.last_sync_at.map(DateTime)
    }

    /// Rooms it follows (joined, not left or banned), as the caller may count them.
    fn room_count(&self) -> i32 {
        i32::try_from(self.0.room_count).unwrap_or(i32::MAX)
    }

    /// The Matrix user whose rooms it follows.
    fn account(&self) -> &str {
        &self.0.user_id
    }

    /// The homeserver the account lives on.
    fn homeserver_url(&self) -> &str {
        self.0.homeserver_url.as_str()
    }

    /// Who watches: the loop's reads are audited as theirs.
    fn owner(&self) -> &str {
        self.0.owner.as_str()
    }

    /// The classification of every room captured.
    fn classification(&self) -> GqlClassification {
        self.0.classification.into()
    }

    /// The long-poll timeout in seconds.
    fn interval(&self) -> i32 {
        i32::try_from(self.0.timeout_secs).unwrap_or(i32::MAX)
    }

    /// The rooms listed when it was given; null for every joined room.
    fn rooms(&self) -> Option<Vec<&str>> {
        self.0.rooms.as_ref().map(|rooms| rooms.iter().map(|r| r.as_str()).collect())
    }

    /// Whether it holds the owner's recovery key: encrypted rooms are decrypted.
    fn decrypts_history(&self) -> bool {
        self.0.decrypts
    }

    /// A room's history is captured from this time.
    fn since(&self) -> Option<DateTime> {
        self.0.since.map(DateTime)
    }

    /// When it was created.
    fn created_at(&self) -> DateTime {
        DateTime(self.0.created_at)
    }
}

/// An edge to one watched account.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapAccountWatchEdge {
    /// Opaque cursor of this edge.
    pub cursor: String,
    /// The watch.
    pub node: TchapAccountWatch,
}

/// A page of watched accounts, oldest first.
#[derive(GraphQLObject, Debug, Clone)]
#[graphql(context = Context)]
pub struct TchapAccountWatchConnection {
    /// The edges of this page.
    pub edges: Vec<TchapAccountWatchEdge>,
    /// The watches of this page.
    pub nodes: Vec<TchapAccountWatch>,
    /// Where this page ends.
    pub page_info: PageInfo,
    /// How many watched accounts the caller may see.
    pub total_count: i32,
}

/// `watchTchapAccount`.
pub(crate) async fn watch(context: &Context, input: WatchTchapAccountInput) -> Result<TchapAccountWatch> {
    let request = argus_ingest::live::AccountWatchRequest {
        homeserver_url: input.homeserver_url.unwrap_or_default(),
        account: input.account,
        access_token: AccessToken::new(input.access_token),
        refresh_token: input.refresh_token.map(argus_domain::Secret::new),
        oauth_client_id: input.oauth_client_id,
        recovery_key: input.recovery_key.map(argus_domain::Secret::new),
        classification: input.classification.into(),
        rooms: input.rooms,
        timeout_secs: input.interval.map(i64::from),
        since: input.since.map(|t| t.0),
    };
    let watch = argus_ingest::live::watch_account(&context.services().app, context.viewer(), request).await?;
    Ok(TchapAccountWatch(watch))
}

/// `unwatchTchapAccount`: an id that names no account watch the caller may see answers false.
pub(crate) async fn unwatch(context: &Context, id: &ID) -> Result<bool> {
    let Some(id) = storage_id(context, id).await? else { return Ok(false) };
    Ok(argus_ingest::live::unwatch_account(&context.services().app, context.viewer(), id).await?)
}

/// The storage id of the account watch whose opaque id is `id`, among those the caller may see
/// (opaque ids are keyed digests, not reversible; an organisation's account watches are few,
/// bounded by the watch caps).
async fn storage_id(context: &Context, id: &ID) -> Result<Option<i64>> {
    const PAGE: u32 = 500;
    let app = &context.services().app;
    let mut after = None;
    loop {
        let (watches, _) = argus_ingest::live::account_watches(app, context.viewer(), PAGE, after).await?;
        if let Some(found) = watches.iter().find(|w| opaque_id(context, "TchapAccountWatch", w.id) == *id) {
            return Ok(Some(found.id));
        }
        match watches.last() {
            Some(last) if watches.len() == PAGE as usize => after = Some(last.id),
            _ => return Ok(None),
        }
    }
}

/// `tchapAccountWatches`.
pub(crate) async fn list(
    context: &Context,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TchapAccountWatchConnection> {
    let request =
        super::paging::page_request::<i64>(context, CursorKind::AccountWatches, first, after.as_deref())?;
    let (first, after) = (request.first, request.after);
    // One more than asked for tells whether a page follows.
    let (mut watches, total) = argus_ingest::live::account_watches(
        &context.services().app,
        context.viewer(),
        first.saturating_add(1),
        after,
    )
    .await?;
    let has_next_page = watches.len() > first as usize;
    watches.truncate(first as usize);
    let key = &context.services().cursor_key;
    let edges: Vec<TchapAccountWatchEdge> = watches
        .into_iter()
        .map(|watch| TchapAccountWatchEdge {
            cursor: key.encode(CursorKind::AccountWatches, context.viewer(), &watch.id),
            node: TchapAccountWatch(watch),
        })
        .collect();
    let page_info = PageInfo { has_next_page, end_cursor: edges.last().map(|edge| edge.cursor.clone()) };
    let total_count = i32::try_from(total).unwrap_or(i32::MAX);
    Ok(TchapAccountWatchConnection {
        nodes: edges.iter().map(|edge| edge.node.clone()).collect(),
        edges,
        page_info,
        total_count,
    })
}
