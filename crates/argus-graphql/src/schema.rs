//! The root query and mutation of the contract (`shared/contract/schema.graphql`), the root
//! subscription ([`subscription`]), and the schema with its document limits.

pub mod access;
pub mod account_watch;
pub mod attachment;
pub mod audit;
pub mod charged;
pub mod disclose;
pub mod message;
pub mod paging;
pub mod payloads;
mod plain_edges;
pub mod room;
pub mod room_state;
pub mod scalars;
pub mod search;
pub mod subscription;
pub mod sync_list;
pub mod watch;

use argus_domain::{AccessToken, RoomId, Scope};
use juniper::{
    DefaultScalarValue, EmptyMutation, Executor, GraphQLInputObject, GraphQLType, ID, RootNode,
    graphql_object,
};

use self::{
    audit::{TchapIngestion, TchapIngestionConnection},
    charged::Charged,
    disclose::{DiscloseTchapRoomInput, DiscloseTchapRoomPayload},
    message::TchapMessageConnection,
    payloads::{IngestJoinedTchapRoomsPayload, IngestTchapRoomPayload, PostTchapMessagePayload, TchapStats},
    room::{TchapRoom, TchapRoomConnection},
    scalars::{DateTime, GqlClassification, int},
    subscription::Subscription,
};
use crate::{Context, Result, ingest};

/// The GraphQL schema of the connector: every root field charged what it asks for before it
/// runs ([`Charged`]).
pub type Schema = RootNode<Charged<Query>, Charged<Mutation>, Subscription>;

/// Limits a document must respect before any resolver runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaOptions {
    /// Maximum nesting depth, fragments expanded.
    pub max_depth: usize,
    /// Maximum number of fields of an operation (aliases and every fragment spread counted).
    pub max_fields: usize,
    /// Maximum number of tokens of a document.
    pub max_tokens: usize,
    /// Whether introspection (`__schema`, `__type`) is allowed.
    pub introspection: bool,
}

impl Default for SchemaOptions {
    fn default() -> Self {
        Self { max_depth: 15, max_fields: 300, max_tokens: 5_000, introspection: true }
    }
}

/// The schema without mutations, for `GET /graphql` (a mutation there fails validation) and the
/// GraphQL over WebSocket connections (its subscriptions; queries there share one request's
/// limits per connection).
pub type ReadOnlySchema = RootNode<Charged<Query>, EmptyMutation<Context>, Subscription>;

/// `schema` with the document limits of `options`.
fn with_limits<M: GraphQLType>(
    schema: RootNode<Charged<Query>, M, Subscription>,
    options: SchemaOptions,
) -> RootNode<Charged<Query>, M, Subscription> {
    let schema = schema
        .limit_depth(options.max_depth)
        .limit_fields(options.max_fields)
        .limit_tokens(options.max_tokens);
    if options.introspection { schema } else { schema.disable_introspection() }
}

/// Builds the schema with its limits.
pub fn build_schema(options: SchemaOptions) -> Schema {
    with_limits(Schema::new(Charged(Query), Charged(Mutation), Subscription), options)
}

/// Builds the read-only schema with its limits.
pub fn build_read_only_schema(options: SchemaOptions) -> ReadOnlySchema {
    with_limits(ReadOnlySchema::new(Charged(Query), EmptyMutation::new(), Subscription), options)
}

/// The schema in GraphQL SDL (what `argus-tchap schema` prints and `docs/schema.graphql` holds).
pub fn schema_sdl() -> String {
    build_schema(SchemaOptions::default()).as_sdl()
}

/// The root query.
#[derive(Debug, Clone, Copy)]
pub struct Query;

#[graphql_object(context = Context, scalar = DefaultScalarValue)]
impl Query {
    /// Ingested rooms, most recent activity first. Relay cursor pagination.
    async fn tchap_rooms(
        context: &Context,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<TchapRoomConnection> {
        context.require(Scope::Read)?;
        TchapRoomConnection::load(context, first, after).await
    }

    /// One ingested room by its Matrix room id; null when absent or withheld.
    async fn tchap_room(context: &Context, room_id: String) -> Result<Option<TchapRoom>> {
        context.require(Scope::Read)?;
        let room_id: RoomId = room_id.parse()?;
        let viewer = context.viewer().clone();
        let room = context.services().with_store(move |store| store.room(&viewer, &room_id)).await?;
        Ok(room.map(TchapRoom))
    }

    /// Messages of one ingested room, oldest first (timeline order). Empty when the room is absent or withheld.
    async fn tchap_messages(
        context: &Context,
        room_id: String,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<TchapMessageConnection> {
        context.require(Scope::Read)?;
        let room_id: RoomId = room_id.parse()?;
        TchapMessageConnection::load(context, room_id, first, after).await
    }

    /// Full-text search over the messages the caller may see, most relevant first, then newest.
    /// Words match whatever their case and accents; `"a phrase"`, `prefix*`, `AND`, `OR`, `NOT`
    /// (or `-word`) and parentheses; every group needs a term that must match. Optionally within
    /// one room, from one sender, sent in [from, to). A term with more than 10,000 matches is
    /// ranked among its 10,000 most recently stored ones. Ranked results are paged by position
    /// (the first 1,000 are served) and report no total. At most 100 per page.
    #[expect(clippy::too_many_arguments, reason = "the contract's arguments, each optional")]
    async fn tchap_search(
        context: &Context,
        executor: &Executor<'_, '_, Context>,
        query: String,
        room_id: Option<String>,
        sender: Option<String>,
        from: Option<DateTime>,
        to: Option<DateTime>,
        #[graphql(default = 20)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<search::TchapSearchConnection> {
        context.require(Scope::Read)?;
        let with_rooms = search::edges_select(&executor.look_ahead(), "room");
        let args = search::SearchArgs { query, room_id, sender, from, to, first, after };
        search::TchapSearchConnection::load(context, args, with_rooms).await
    }

    /// Aggregates over what the caller may see.
    async fn tchap_stats(context: &Context) -> Result<TchapStats> {
        context.require(Scope::Read)?;
        let viewer = context.viewer().clone();
        let now = time::OffsetDateTime::now_utc();
        let stats = context.services().with_store(move |store| store.stats(&viewer, now)).await?;
        Ok(TchapStats {
            total_rooms: int(stats.total_rooms),
            total_messages: int(stats.total_messages),
            active_rooms_last_24h: int(stats.active_rooms_last_24h),
        })
    }

    /// Watched rooms of the caller's organisation that the caller may see (at most their clearance, of rooms they may see), oldest first. Requires scope tchap:read.
    async fn tchap_watches(
        context: &Context,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<watch::TchapWatchList> {
        context.require(Scope::Read)?;
        watch::list(context, first, after).await
    }

    /// Watched accounts of the caller's organisation that the caller may see (at most their clearance), oldest first; roomCount counts only rooms the caller may see. Requires scope tchap:read.
    async fn tchap_account_watches(
        context: &Context,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<account_watch::TchapAccountWatchConnection> {
        context.require(Scope::Read)?;
        account_watch::list(context, first, after).await
    }

    /// The ingestion history (audit trail) of the caller's organisation, newest first. Requires scope tchap:audit.
    async fn tchap_ingestions(
        context: &Context,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
    ) -> Result<TchapIngestionConnection> {
        context.require(Scope::Audit)?;
        TchapIngestionConnection::load(context, first, after).await
    }

    /// Every read of content (messages, search, downloads, disclosures) of the caller's organisation at or below their clearance, newest first; optionally one actor's, or those that read one room. Requires scope tchap:audit.
    async fn tchap_access_log(
        context: &Context,
        #[graphql(default = 50)] first: Option<i32>,
        after: Option<String>,
        actor: Option<String>,
        room_id: Option<String>,
    ) -> Result<access::TchapAccessConnection> {
        context.require(Scope::Audit)?;
        let filter = argus_store::AccessFilter { actor, room_id };
        access::TchapAccessConnection::load(context, first, after, filter).await
    }
}

/// Input of `ingestTchapRoom`. It has no `Debug`: nothing can print the access token it holds
/// before it becomes a [`argus_domain::Secret`].
#[derive(GraphQLInputObject)]
#[graphql(name = "IngestTchapRoomInput", description = "What to ingest, and at which classification.")]
pub struct IngestTchapRoomInput {
    /// Base URL of the homeserver, e.g. `https://matrix.agent.tchap.gouv.fr` (or give account instead).
    pub homeserver_url: Option<String>,
    /// A Matrix user id (`@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr`) or an e-mail address, resolved to its homeserver (server discovery; an e-mail address through the configured identity server) instead of homeserverUrl: exactly one of the two is given (INVALID_INPUT otherwise). The token must belong to this account: for an e-mail address, the one Tchap derives from it (jean.dupont@finances.gouv.fr is @jean.dupont-finances.gouv.fr on the server the identity server names); user ids compared without regard to case.
    pub account: Option<String>,
    /// Matrix access token; used for this call only, never returned, never stored in clear.
    pub access_token: String,
    /// The account's refresh token (refreshable tokens, or a next-generation auth server's): the access token is renewed before it expires or when the homeserver refuses it. A renewal consumes it and the renewed pair is not kept after the call: give Argus a login session of its own, not one a person or a watch uses. Never returned, stored in clear or logged.
    pub refresh_token: Option<String>,
    /// The OAuth 2.0 client id the tokens were issued to, for a homeserver whose accounts are a next-generation auth server's (Matrix Authentication Service, spec v1.15 OAuth 2.0 API): its token endpoint renews refreshToken for that client only. Not needed for the homeserver's own refreshable tokens, nor for the auth server's compatibility sessions (tokens from /login), both renewed at the homeserver's /refresh; a renewal the auth server refuses fails with TOKEN_REFRESH_FAILED.
    pub oauth_client_id: Option<String>,
    /// Capture only what was sent at or after this time: the room's history starts there (timestamp_to_event) instead of at its creation; historyComplete then means complete since this time.
    pub since: Option<DateTime>,
    /// Matrix room id, e.g. !abc:agent.tchap.gouv.fr (room versions 12+ have no :server part).
    pub room_id: String,
    /// Classification given to the room and every message stored by this call. Must not exceed the caller's clearance.
    pub classification: GqlClassification,
    /// Upper bound on message events pulled by this call; the server has a default and a hard cap.
    pub max_messages: Option<i32>,
    /// The account's recovery key (Element security key or legacy key-backup recovery key): end-to-end encrypted history is decrypted from the account's key backup. Used for this call only; never returned, stored, logged or audited.
    pub recovery_key: Option<String>,
    /// Read only older history, from where the room's last backwards read stopped (a backfill), instead of what is new since its last ingestion followed by older history with what is left of the cap. Rooms of any size are captured whole over several calls, each bounded by maxMessages.
    pub backfill: Option<bool>,
    /// After the room, ingest the rooms that replaced it (m.room.tombstone), one upgrade after another (at most 8), under the same classification and token. Each is its own ingestion with its own audit record; one that fails is reported in `upgrades`, not as an error of the call.
    pub follow_upgrades: Option<bool>,
}

/// Input of `ingestJoinedTchapRooms`. It has no `Debug`: nothing can print the access token it
/// holds before it becomes a [`argus_domain::Secret`].
#[derive(GraphQLInputObject)]
#[graphql(
    name = "IngestJoinedTchapRoomsInput",
    description = "Whose joined rooms to ingest, and at which classification."
)]
pub struct IngestJoinedTchapRoomsInput {
    /// Base URL of the homeserver, e.g. `https://matrix.agent.tchap.gouv.fr` (or give account instead).
    pub homeserver_url: Option<String>,
    /// A Matrix user id (`@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr`) or an e-mail address, resolved to its homeserver (server discovery; an e-mail address through the configured identity server) instead of homeserverUrl: exactly one of the two is given (INVALID_INPUT otherwise). The token must belong to this account: for an e-mail address, the one Tchap derives from it (jean.dupont@finances.gouv.fr is @jean.dupont-finances.gouv.fr on the server the identity server names); user ids compared without regard to case.
    pub account: Option<String>,
    /// Matrix access token; used for this call only, never returned, never stored in clear.
    pub access_token: String,
    /// Classification given to every room and message stored by this call. Must not exceed the caller's clearance.
    pub classification: GqlClassification,
    /// Upper bound on message events pulled per room; the server has a default and a hard cap.
    pub max_messages: Option<i32>,
    /// The account's recovery key: end-to-end encrypted history is decrypted from the account's key backup. Used for this call only.
    pub recovery_key: Option<String>,
    /// The account's refresh token, beside accessToken: the access token is renewed (POST /refresh, or the OAuth 2.0 token endpoint) before it expires or when the homeserver refuses it, in memory, by one source every room of the call shares; used for this call only, never returned, never stored. A refresh token given to a call is spent by it: Argus should have its own login.
    pub refresh_token: Option<String>,
    /// The OAuth 2.0 client id the tokens were issued to, for a homeserver whose accounts are a next-generation auth server's (its token endpoint renews them for that client only). Only with refreshToken.
    pub oauth_client_id: Option<String>,
    /// Capture only what was sent at or after this time, in every room: each room's history starts there (timestamp_to_event) instead of at its creation; historyComplete then means complete since this time. Not in the future.
    pub since: Option<DateTime>,
}

/// Input of `postTchapMessage`. It has no `Debug`: nothing can print the access token it holds
/// before it becomes a [`argus_domain::Secret`].
#[derive(GraphQLInputObject)]
#[graphql(name = "PostTchapMessageInput", description = "A note to post into a Tchap room.")]
pub struct PostTchapMessageInput {
    /// Base URL of the homeserver the room was archived from (another is refused), e.g. `https://matrix.agent.tchap.gouv.fr` (or give account instead).
    pub homeserver_url: Option<String>,
    /// A Matrix user id (`@jean.dupont-finances.gouv.fr:agent.finances.tchap.gouv.fr`) or an e-mail address, resolved to its homeserver (server discovery; an e-mail address through the configured identity server) instead of homeserverUrl: exactly one of the two is given (INVALID_INPUT otherwise). The token must belong to this account: for an e-mail address, the one Tchap derives from it (jean.dupont@finances.gouv.fr is @jean.dupont-finances.gouv.fr on the server the identity server names); user ids compared without regard to case.
    pub account: Option<String>,
    /// Matrix access token of the account that posts; used for this call only, never returned, never stored in clear.
    pub access_token: String,
    /// Matrix room id of a room in the archive that the caller may read.
    pub room_id: String,
    /// The note, plain text or Markdown (sent with an HTML form when it has formatting; raw HTML is shown as text). At most 32 KiB.
    pub body: String,
    /// The note's classification: at most the posting ceiling (RESTRICTED by default), the caller's clearance and the room's stored classification. Its marking is put in front of the body.
    pub classification: GqlClassification,
    /// Event id of a message of the room (visible to the caller) that the note answers; in its thread when it is in one.
    pub reply_to: Option<String>,
    /// Idempotency key (1 to 40 of A-Z a-z 0-9 . _ ~ -): the same key for the same note with the same Matrix token never posts twice; a key reused for another note is another transaction. Default: derived from the note, so a retried call is the same transaction.
    pub transaction_id: Option<String>,
}

/// The root mutation.
#[derive(Debug, Clone, Copy)]
pub struct Mutation;

#[graphql_object(context = Context)]
impl Mutation {
    /// Pull room state and recent messages from a Matrix homeserver in one call. One caller has at most a few ingestions running at once (2 by default; past them CALLER_BUSY), and a run reads for at most the server's deadline for calls (10 minutes by default; past it DEADLINE_EXCEEDED, what it stored is kept and the next call goes on). Requires scope tchap:ingest.
    async fn ingest_tchap_room(
        context: &Context,
        input: IngestTchapRoomInput,
    ) -> Result<IngestTchapRoomPayload> {
        let request = ingest::IngestRequest {
            homeserver_url: input.homeserver_url.unwrap_or_default(),
            access_token: AccessToken::new(input.access_token),
            account: input.account,
            refresh_token: input.refresh_token.map(argus_domain::Secret::new),
            oauth_client_id: input.oauth_client_id,
            since: input.since.map(|t| t.0),
            room_id: input.room_id,
            classification: input.classification.into(),
            max_messages: input.max_messages.map(i64::from),
            recovery_key: input.recovery_key.map(argus_domain::Secret::new),
            reach: if input.backfill == Some(true) {
                ingest::Reach::Backfill
            } else {
                ingest::Reach::Current
            },
            trigger: ingest::Trigger::Manual,
            follow_upgrades: input.follow_upgrades == Some(true),
        };
        let done =
            ingest::ingest_room(&context.services().app, context.viewer(), request, &mut |_| {}).await?;
        Ok(done.into())
    }

    /// Ingest every room the token's account has joined (GET /joined_rooms), one after another, as ingestTchapRoom would each (one audit record per room). One room that fails does not stop the others; it is reported with its error. Every room counts against the caller's rate (the call waits for it rather than going past it); at most the server's number of rooms per call (200 by default) are ingested, the others are reported with TOO_MANY_ROOMS. Past the call's first failures (20 by default), a room the token cannot read stores nothing and is counted in one audit record of the call instead of its own. Requires scope tchap:ingest.
    async fn ingest_joined_tchap_rooms(
        context: &Context,
        input: IngestJoinedTchapRoomsInput,
    ) -> Result<IngestJoinedTchapRoomsPayload> {
        let request = ingest::JoinedRequest {
            homeserver_url: input.homeserver_url.unwrap_or_default(),
            access_token: AccessToken::new(input.access_token),
            account: input.account,
            classification: input.classification.into(),
            max_messages: input.max_messages.map(i64::from),
            recovery_key: input.recovery_key.map(argus_domain::Secret::new),
            refresh_token: input.refresh_token.map(argus_domain::Secret::new),
            oauth_client_id: input.oauth_client_id,
            since: input.since.map(|t| t.0),
        };
        let rooms =
            ingest::ingest_joined(&context.services().app, context.viewer(), request, &mut |_, _| {}).await?;
        Ok(IngestJoinedTchapRoomsPayload { rooms: rooms.into_iter().map(Into::into).collect() })
    }

    /// Keep a room current: the server's scheduler ingests what is new on the room every `interval` seconds (with jitter), as the caller, each run audited and marked as scheduled, with the same outbound policy, caps and clearance rules as ingestTchapRoom. The homeserver is asked first: the token must read the room (else the homeserver's error, e.g. HOMESERVER_UNAUTHORIZED or ROOM_FORBIDDEN), so a room the caller may not see in the archive answers as a missing one. The token is sealed at once and never readable; a token the homeserver refuses later pauses the watch (status PAUSED with its reason) until it is given a new one here. Watching a room already watched renews it. Counted against the caller's rate like an ingestion (TOO_MANY_REQUESTS); a new watch past the cap per owner (500 by default) or per organisation, counted over the watches the caller may see, is TOO_MANY_WATCHES. Requires scope tchap:ingest.
    async fn watch_tchap_room(
        context: &Context,
        input: watch::WatchTchapRoomInput,
    ) -> Result<watch::TchapWatch> {
        watch::watch(context, input).await
    }

    /// Keep every joined room of a Matrix account (or the listed ones) current as it changes: one /sync long-poll loop per account (interval: its timeout in seconds, 30 by default) on one replica at a time, each room with new events read from where the archive stands (so nothing a limited answer left out is lost), rooms joined later captured (history from `since`, or all of it), rooms left or banned marked and no longer read, invites recorded and never accepted. Checked like watchTchapRoom (scope, rate, outbound policy, clearance, the token confirmed as the account's and reading every listed room), the credentials sealed at once; the same account given again renews the watch. A token the homeserver refuses, an expired or locked account stops it (status and statusReason). Requires scope tchap:ingest.
    async fn watch_tchap_account(
        context: &Context,
        input: account_watch::WatchTchapAccountInput,
    ) -> Result<account_watch::TchapAccountWatch> {
        account_watch::watch(context, input).await
    }

    /// Stop keeping an account's rooms current; true when the caller had that watch and may see it (what was captured stays; its loop stops within a lease renewal). Requires scope tchap:ingest.
    async fn unwatch_tchap_account(context: &Context, id: ID) -> Result<bool> {
        account_watch::unwatch(context, &id).await
    }

    /// Stop keeping a room current; true when the caller had a watch of it they may see (what was ingested stays). Requires scope tchap:ingest.
    async fn unwatch_tchap_room(context: &Context, room_id: String) -> Result<bool> {
        watch::unwatch(context, &room_id).await
    }

    /// Post a note into a Tchap room, with its protection marking in front, behind the write-down guard (nothing above the posting ceiling, the caller's clearance or the room's stored classification leaves). Every post, sent or refused, is an audit record, a refusal with its reason: an account the homeserver suspended (ACCOUNT_SUSPENDED: it may still read), expired (ACCOUNT_EXPIRED) or locked (ACCOUNT_LOCKED) posts nothing. Requires scope tchap:post.
    async fn post_tchap_message(
        context: &Context,
        input: PostTchapMessageInput,
    ) -> Result<PostTchapMessagePayload> {
        let request = argus_ingest::post::PostRequest {
            homeserver_url: input.homeserver_url.unwrap_or_default(),
            access_token: AccessToken::new(input.access_token),
            account: input.account,
            room_id: input.room_id,
            body: input.body,
            classification: input.classification.into(),
            reply_to: input.reply_to,
            transaction_id: input.transaction_id,
        };
        let done = argus_ingest::post::post_note(&context.services().app, context.viewer(), request).await?;
        Ok(PostTchapMessagePayload {
            event_id: done.event_id.as_str().to_owned(),
            transaction_id: done.transaction_id,
            body: done.body,
            audit: TchapIngestion(done.record),
        })
    }

    /// A BagIt disclosure package of one room over an optional range. Requires scope tchap:disclose. The range [from, to] is inclusive; the package is limited to what the caller may see (their organisation and clearance; content held after a redaction only with tchap:redacted; files the scanner found infected are left out): every message with each version, redaction and file, the signed checkpoint of the organisation's transparency log and the proofs that tie each version to the run that captured it, the tag manifest signed with minisign. Before anything is written every version is checked against the log: a stored row that no longer matches refuses the disclosure with EVIDENCE_MISMATCH naming the rows. The disclosure is itself an entry of the access journal (DISCLOSE), included in the package's checkpoint. The package is a .tar, downloaded from downloadUrl with a token of the caller's organisation holding tchap:disclose and cleared at least as high as the caller. A room absent or withheld is NOT_FOUND. Counted against the caller's rate like an ingestion (TOO_MANY_REQUESTS).
    async fn disclose_tchap_room(
        context: &Context,
        input: DiscloseTchapRoomInput,
    ) -> Result<DiscloseTchapRoomPayload> {
        disclose::disclose(context, input).await
    }
}
