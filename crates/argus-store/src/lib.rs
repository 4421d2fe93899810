//! Storage of the Argus Tchap connector: rooms, messages, the hash-chained audit trail and the
//! fusion outbox, on SQLite (bundled) or PostgreSQL.
//!
//! This is the only crate that speaks SQL. Every read takes the [`Viewer`] it runs for and
//! goes through one filter that keeps the viewer's organisation and nothing above their
//! clearance, in SQL; lists are paged by keyset. An ingestion is a run: [`Store::begin_run`]
//! journals it, [`Store::commit_pages`] writes its pages as they arrive (each commit in one
//! transaction), [`Store::finish_run`] appends its one audit record and the fusion outbox row;
//! [`Store::record_failure`] appends only a FAILED audit record. The methods are blocking: async
//! callers run them in `spawn_blocking`.
//!
//! The `testing` feature adds `Store::record_ingestion`, a whole run of one commit in one call,
//! for tests and benchmarks of the crates above.
//!
//! ```
//! use argus_domain::{Classification, PageRequest, Scope, Viewer};
//! use argus_store::Store;
//!
//! let store = Store::open("sqlite::memory:")?;
//! let viewer = Viewer::new("alice".parse()?, "dgsi".parse()?, Classification::Secret, [Scope::Read]);
//! let page = store.rooms(&viewer, &PageRequest::first(20))?;
//! assert_eq!(page.total_count, 0);
//! assert!(store.audit_verify(&[])?.iter().all(|c| c.is_ok()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod account_watch;
mod added;
mod ahead;
mod attachments;
mod audit;
mod credentials;
mod cursor;
mod db;
mod devices;
mod error;
mod log;
mod outbox;
mod read;
mod room_states;
mod rows;
pub mod schema;
mod search;
#[cfg(feature = "testing")]
mod testing;
mod watch;
mod write;

use argus_domain::{
    IngestionRecord, NewIngestion, Page, PageRequest, RoomId, RoomSnapshot, Stats, StoredMessage, StoredRoom,
    Viewer,
};
use time::OffsetDateTime;

pub use self::attachments::{BlobVerdict, Download, FetchOutcome, MediaJob, NewBlob, ScanRecord};
#[cfg(feature = "testing")]
pub use self::testing::IngestionResult;
pub use self::{
    account_watch::{
        ClaimedAccountWatch, MAX_FILTER_ID_LEN, MAX_SYNC_TIMEOUT_SECS, MAX_SYNC_TOKEN_LEN, MAX_WATCHED_ROOMS,
        SealedAccountWatchToken, SyncProgress,
    },
    added::{AddedCursor, MAX_KNOWN, START_WINDOW},
    audit::{AuditKey, ChainHead, ChainVerification, GENESIS},
    credentials::{NewCredential, StoredCredential},
    cursor::{IngestionCursor, MessageCursor, RoomCursor},
    db::{Backend, DatabaseUrl, StoreOptions},
    devices::{
        DeviceIdentity, DeviceRef, MAX_DEVICE_ITEM_CIPHERTEXT_LEN, MAX_DEVICE_ITEM_KEY_LEN, MAX_DEVICE_ITEM_KIND_LEN,
        MAX_DEVICE_ITEMS_PER_WRITE, SealedDeviceItem,
    },
    error::{Error, Result},
    log::{
        AccessCursor, AccessFilter, AccessRecord, Digest, DisclosureSource, LogEntryRecord, SourceAttachment,
        SourceRun, SourceVersion, TreeHead,
    },
    outbox::{OutboxGauges, OutboxRow, OutboxStatus},
    read::{MAX_PAGE_SIZE, MAX_VERSIONS_READ},
    room_states::{RoomStateCursor, RoomStateRecord},
    search::{RANK_WINDOW, SearchPage},
    watch::{ClaimedWatch, SealedWatchToken, WatchCaps, WatchRun},
    write::{INTERRUPTED, IngestionRun, RunRecord, RunTicket, StoredCounts},
};
use self::{
    db::{DbPool, Pooled},
    read::Gate,
};

/// A handle on the database: a pool of connections. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Store {
    pool: DbPool,
    backend: Backend,
    audit_key: Option<std::sync::Arc<AuditKey>>,
    /// PostgreSQL: the connections of the ingestions' search helpers ([`ahead`]).
    helpers: Option<DbPool>,
    /// The search index's pending list: rows inserted since its last merge ([`ahead`]).
    merges: std::sync::Arc<ahead::MergeState>,
    /// What a redaction does to content captured before it ([`StoreOptions::keep_redacted`]).
    hold: write::Hold,
    /// The access journal's group-commit writer ([`log`]).
    journal: std::sync::Arc<log::Journal>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish_non_exhaustive()
    }
}

// A store is shared by every request handler and background task: checked when the crate builds.
const _: () = {
    const fn shareable<T: Send + Sync + Clone + 'static>() {}
    shareable::<Store>();
};

impl Store {
    /// Opens the database at `database_url` with default options and applies pending
    /// migrations.
    ///
    /// `sqlite://relative/path.db`, `sqlite:///absolute/path.db`, `sqlite::memory:` (one
    /// connection, gone when the store is dropped), `postgres://…` or `postgresql://…`.
    pub fn open(database_url: &str) -> Result<Store> {
        Self::open_with(database_url, StoreOptions::default())
    }

    /// Opens the database with explicit pool options.
    pub fn open_with(database_url: &str, options: StoreOptions) -> Result<Store> {
        Self::connect(&database_url.parse()?, options)
    }

    /// Opens the database a parsed URL names, with explicit pool options, and applies pending
    /// migrations.
    pub fn connect(database_url: &DatabaseUrl, options: StoreOptions) -> Result<Store> {
        let (pool, backend) = db::open_pool(database_url, &options)?;
        let helpers = (options.search_ahead && backend == Backend::Postgres)
            .then(|| db::helper_pool(database_url, &options))
            .transpose()?;
        let journal = db::journal_pool(database_url, &options, &pool)?;
        Ok(Store {
            backend,
            audit_key: options.audit_key.map(std::sync::Arc::new),
            helpers,
            merges: std::sync::Arc::default(),
            hold: write::Hold::of(options.keep_redacted),
            journal: std::sync::Arc::new(log::Journal::new(journal, !database_url.is_memory())),
            pool,
        })
    }

    /// The engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How many connections the pool holds at most: more callers at once wait.
    pub fn pool_size(&self) -> u32 {
        self.pool.max_size()
    }

    /// How long a caller waits for a pooled connection before [`Error::Unavailable`].
    pub fn connection_timeout(&self) -> std::time::Duration {
        self.pool.connection_timeout()
    }

    fn conn(&self) -> Result<Pooled> {
        Ok(self.pool.get()?)
    }

    /// Where an ingestion on PostgreSQL takes the second connection that computes its search
    /// vectors ahead ([`ahead`]); `None` on SQLite or with `search_ahead` off.
    fn search_helpers(&self) -> Option<ahead::Source<'_>> {
        self.helpers.as_ref().map(|pool| ahead::Source { pool, merges: &self.merges })
    }

    /// Runs `f` on a pooled connection inside one read transaction: the statements of a page
    /// (its rows, `has_next_page`, its count) see one snapshot of the database.
    fn snapshot<T>(&self, f: impl FnOnce(&mut db::DbConn) -> Result<T>) -> Result<T> {
        db::in_transaction(&mut *self.conn()?, db::TxMode::Read, f)
    }

    /// Checks that a connection can be had and answers.
    pub fn ping(&self) -> Result<()> {
        use diesel::connection::SimpleConnection;
        Ok(self.conn()?.batch_execute("SELECT 1")?)
    }

    /// Rooms the viewer may see, most recent activity first (rooms without a visible message
    /// last), then by storage id, newest first.
    pub fn rooms(&self, viewer: &Viewer, page: &PageRequest<RoomCursor>) -> Result<Page<StoredRoom>> {
        self.snapshot(|conn| read::rooms(conn, &Gate::of(viewer), page))
    }

    /// One room, or `None` when it is absent or withheld from the viewer (the two look alike).
    pub fn room(&self, viewer: &Viewer, room_id: &RoomId) -> Result<Option<StoredRoom>> {
        read::room(&mut *self.conn()?, &Gate::of(viewer), room_id)
    }

    /// The history of the state of a room the viewer may see (name, topic, encryption, room
    /// version, retention, access rule, external members: one entry per ingestion that observed
    /// it changed), newest first; an empty page when the room is absent or withheld (the two
    /// look alike).
    pub fn room_state_history(
        &self,
        viewer: &Viewer,
        room_id: &RoomId,
        page: &PageRequest<RoomStateCursor>,
    ) -> Result<Page<RoomStateRecord>> {
        self.snapshot(|conn| room_states::history(conn, &Gate::of(viewer), room_id, page))
    }

    /// One message of a room the viewer may see, by its Matrix event id; `None` when it is
    /// absent or withheld (the two look alike). Its versions and redaction are not loaded.
    pub fn message(
        &self,
        viewer: &Viewer,
        room_id: &RoomId,
        event_id: &argus_domain::EventId,
    ) -> Result<Option<StoredMessage>> {
        read::message(&mut *self.conn()?, &Gate::of(viewer), room_id, event_id)
    }

    /// Messages of a room the viewer may see, oldest first; an empty page when the room is
    /// absent or withheld. For a viewer holding `tchap:redacted`, each message redacted after
    /// its capture also carries what is held of it under legal hold
    /// ([`StoredMessage::held`]); for anyone else nothing held is read. Whatever discloses
    /// messages (the disclosure package) reads them through here with its caller's viewer.
    pub fn messages(
        &self,
        viewer: &Viewer,
        room_id: &RoomId,
        page: &PageRequest<MessageCursor>,
    ) -> Result<Page<StoredMessage>> {
        let gate = Gate::of(viewer);
        let mut conn = self.conn()?;
        if let Some(page) = read::messages_in_one_statement(&mut conn, &gate, room_id, page)? {
            return Ok(page);
        }
        db::in_transaction(&mut conn, db::TxMode::Read, |conn| read::messages(conn, &gate, room_id, page))
    }

    /// Starts following the messages `viewer` may see (of `room` only, when given) that are
    /// stored from now on: the cursor [`Store::messages_added`] moves. A room absent or withheld
    /// is followed like an empty one (the two look alike).
    pub fn messages_added_from_now(&self, viewer: &Viewer, room: Option<&RoomId>) -> Result<AddedCursor> {
        added::start(&mut *self.conn()?, &Gate::of(viewer), room)
    }

    /// The messages stored since `cursor` that `viewer` may see (of `room` only, when given),
    /// at most `limit` (at most [`MAX_PAGE_SIZE`]) in storage order, each once, through the
    /// gate of [`Store::messages`] (with their versions, redactions, held content for a viewer
    /// with `tchap:redacted`, and attachments); `cursor` moves past them (it is unchanged when
    /// the read fails). On PostgreSQL a message whose transaction commits after a later one's
    /// is still returned: see [`AddedCursor`] for how. Call it again at
    /// once when it returned `limit` messages.
    pub fn messages_added(
        &self,
        viewer: &Viewer,
        room: Option<&RoomId>,
        cursor: &mut AddedCursor,
        limit: u32,
    ) -> Result<Vec<StoredMessage>> {
        added::next(&mut *self.conn()?, &Gate::of(viewer), room, cursor, limit)
    }

    /// Messages the viewer may see that match `request`, most relevant first, then newest (see
    /// [`argus_domain::search`] for the query language). A query the language refuses, or a page
    /// outside its bounds, is [`Error::Invalid`] before anything is read.
    pub fn search(&self, viewer: &Viewer, request: &argus_domain::SearchRequest) -> Result<SearchPage> {
        request.validate()?;
        self.snapshot(|conn| search::search(conn, &Gate::of(viewer), request))
    }

    /// Totals over what the viewer may see, with rooms active in the 24 hours before `now`.
    pub fn stats(&self, viewer: &Viewer, now: OffsetDateTime) -> Result<Stats> {
        read::stats(&mut *self.conn()?, &Gate::of(viewer), now)
    }

    /// The audit records of the viewer's organisation at or below their clearance, newest
    /// first.
    pub fn ingestions(
        &self,
        viewer: &Viewer,
        page: &PageRequest<IngestionCursor>,
    ) -> Result<Page<IngestionRecord>> {
        self.snapshot(|conn| read::ingestions(conn, &Gate::of(viewer), page))
    }

    /// Starts a streamed ingestion of `room_id` from `homeserver`: a journal row holding the
    /// run for `lease` (renewed by every commit). Its pages are then committed with
    /// [`Store::commit_pages`] as they arrive, and it ends with [`Store::finish_run`]; a run
    /// whose process died is audited by [`Store::close_interrupted_runs`] once its lease expired.
    /// `scheduled` marks a run of the scheduler (its audit record says so).
    /// [`Error::HomeserverMismatch`], with nothing written, when the caller may see the room
    /// and it is archived from another homeserver (a stored room answers only to that one; the
    /// same server written another way is the same, see
    /// [`argus_domain::HomeserverUrl::same_server`]).
    pub fn begin_run(
        &self,
        run: &IngestionRun,
        room_id: &RoomId,
        homeserver: &argus_domain::HomeserverUrl,
        lease: std::time::Duration,
        scheduled: bool,
    ) -> Result<RunTicket> {
        write::begin_run(&mut *self.conn()?, run, room_id, homeserver, lease, scheduled)
    }

    /// Commits some pages of a streamed run (`pages`: the room's state, the pages' messages,
    /// edits and redactions, and the pagination positions after them) in one transaction; the
    /// next run resumes from those positions. Holds the room's lock, not the organisation's.
    /// The room's classification is never lowered; [`Error::Withheld`] means it is already
    /// stored above the caller's clearance, and nothing of the pages is written;
    /// [`Error::HomeserverMismatch`] that it is archived from another homeserver than the run
    /// reads (likewise nothing is written).
    pub fn commit_pages(&self, ticket: &RunTicket, pages: &RoomSnapshot) -> Result<StoredCounts> {
        let mut conn = self.conn()?;
        write::commit_pages(&mut conn, self.search_helpers().as_ref(), ticket, pages, self.hold)
    }

    /// Ends a streamed run with its one audit record: SUCCEEDED (`error` is `None`) or FAILED
    /// with `error` (never a token) and the messages its committed pages stored.
    pub fn finish_run(&self, ticket: &RunTicket, error: Option<String>) -> Result<RunRecord> {
        write::finish_run(&mut *self.conn()?, self.audit_key.as_deref(), ticket, error)
    }

    /// Audits every streamed run whose lease expired before `now` (its process stopped) as
    /// FAILED with [`INTERRUPTED`] and what its committed pages stored; returns the records.
    pub fn close_interrupted_runs(&self, now: OffsetDateTime) -> Result<Vec<IngestionRecord>> {
        write::close_interrupted_runs(&mut *self.conn()?, self.audit_key.as_deref(), now)
    }

    /// Creates or renews the watch of a room for `viewer`'s organisation (token, interval and
    /// owner replaced; a paused watch active again and due now). [`Error::Withheld`] when the
    /// room, or an existing watch of it, is above the viewer's clearance; a new watch past
    /// `caps` (counted over the watches the viewer may see) is [`Error::TooManyWatches`].
    pub fn upsert_watch(
        &self,
        viewer: &Viewer,
        new: &argus_domain::NewWatch,
        caps: WatchCaps,
    ) -> Result<argus_domain::Watch> {
        watch::upsert(&mut *self.conn()?, viewer, new, None, caps, OffsetDateTime::now_utc())
    }

    /// [`Store::upsert_watch`] for a watch given an account's refresh-token pair: `credential`
    /// replaces the pair stored for that account (or is added), and the watch refers to it, in
    /// one transaction (`None`: the watch keeps its own token, and refers to no credential any
    /// more). A credential no watch refers to any more is removed.
    pub fn upsert_account_watch(
        &self,
        viewer: &Viewer,
        new: &argus_domain::NewWatch,
        credential: Option<&NewCredential>,
        caps: WatchCaps,
    ) -> Result<argus_domain::Watch> {
        watch::upsert(&mut *self.conn()?, viewer, new, credential, caps, OffsetDateTime::now_utc())
    }

    /// The watches `viewer` may see (their organisation's, at most their clearance, of rooms
    /// they may see), oldest first, after storage id `after`, at most `first`.
    pub fn watches(
        &self,
        viewer: &Viewer,
        first: u32,
        after: Option<i64>,
    ) -> Result<Vec<argus_domain::Watch>> {
        watch::list(&mut *self.conn()?, &Gate::of(viewer), first.min(MAX_PAGE_SIZE), after)
    }

    /// The watch of `room_id` that `viewer` may see.
    pub fn watch(&self, viewer: &Viewer, room_id: &RoomId) -> Result<Option<argus_domain::Watch>> {
        watch::get(&mut *self.conn()?, &Gate::of(viewer), room_id)
    }

    /// Removes the watch of `room_id` that `viewer` may see; whether there was one.
    pub fn remove_watch(&self, viewer: &Viewer, room_id: &RoomId) -> Result<bool> {
        watch::remove(&mut *self.conn()?, &Gate::of(viewer), room_id)
    }

    /// Claims up to `limit` due watches for the replica `owner` until `now + lease`: each is
    /// run by one replica at a time; a replica that dies leaves its lease to expire.
    pub fn claim_due_watches(
        &self,
        now: OffsetDateTime,
        owner: &str,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedWatch>> {
        watch::claim_due(&mut *self.conn()?, now, owner, lease, limit)
    }

    /// Records the run of a watch claimed by `owner` and releases it; `false` when the lease
    /// was lost meanwhile.
    pub fn record_watch_run(&self, id: i64, owner: &str, run: &WatchRun) -> Result<bool> {
        watch::record_run(&mut *self.conn()?, id, owner, run)
    }

    /// Extends `owner`'s lease of a watch to `now + lease` (before a run that waited for a
    /// place); `false` when the watch is no longer theirs (taken over, renewed or removed).
    pub fn renew_watch_lease(
        &self,
        id: i64,
        owner: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
    ) -> Result<bool> {
        watch::renew_lease(&mut *self.conn()?, id, owner, now, lease)
    }

    /// Releases a watch claimed by `owner` without running it, due again at `next_run_at`.
    pub fn release_watch(&self, id: i64, owner: &str, next_run_at: OffsetDateTime) -> Result<bool> {
        watch::release(&mut *self.conn()?, id, owner, next_run_at)
    }

    /// The attachment `id` for the download route, when the viewer may see its message and its
    /// bytes are held and scanned (`Stored`, or `Infected` for quarantine); `None` for every
    /// other case alike (absent, foreign, withheld, redacted, not held yet).
    pub fn attachment_download(&self, viewer: &Viewer, id: i64) -> Result<Option<Download>> {
        attachments::read::download(&mut *self.conn()?, &Gate::of(viewer), id)
    }

    /// Claims up to `limit` due `PENDING` attachments of one room of `org` (its ingestion run
    /// fetches them with its own token) for `owner` until `now + lease`.
    pub fn claim_room_media(
        &self,
        org: &argus_domain::OrgId,
        room_id: &RoomId,
        owner: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<MediaJob>> {
        let scope = attachments::queue::ClaimScope::Room { org: org.as_str(), room_id: room_id.as_str() };
        attachments::queue::claim(&mut *self.conn()?, scope, owner, now, lease, limit)
    }

    /// Claims up to `limit` due `PENDING` attachments of rooms an active watch keeps current,
    /// each with the watch's sealed token, for the media worker `owner` until `now + lease`.
    pub fn claim_watched_media(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: std::time::Duration,
        limit: u32,
    ) -> Result<Vec<MediaJob>> {
        attachments::queue::claim(
            &mut *self.conn()?,
            attachments::queue::ClaimScope::Watched,
            owner,
            now,
            lease,
            limit,
        )
    }

    /// Records what became of attachment `id` claimed by `owner` (a fetched one's blob is
    /// recorded with it) and releases it; `false` when the claim was lost meanwhile.
    pub fn record_media(
        &self,
        id: i64,
        owner: &str,
        outcome: &FetchOutcome,
        now: OffsetDateTime,
    ) -> Result<bool> {
        attachments::queue::record(&mut *self.conn()?, id, owner, outcome, now)
    }

    /// Whether a scanner has judged the blob `sha256` already (the same bytes fetched through
    /// another reference): its verdict then holds for the new reference too.
    /// A verdict given by the engine `not_scanned` (scanning turned off then) does not count.
    pub fn blob_judged(
        &self,
        sha256: &argus_domain::Sha256Digest,
        not_scanned: Option<&str>,
    ) -> Result<bool> {
        attachments::queue::judged(&mut *self.conn()?, sha256, not_scanned)
    }

    /// Up to `limit` held blobs due for a scan at `now`: those no scanner judged yet (except
    /// those waiting after a failure of their own), and those judged by the engine
    /// `not_scanned` (held while scanning was turned off), longest waiting first.
    pub fn blobs_due_for_scan(
        &self,
        now: OffsetDateTime,
        not_scanned: Option<&str>,
        limit: u32,
    ) -> Result<Vec<argus_domain::Sha256Digest>> {
        attachments::queue::due_for_scan(&mut *self.conn()?, now, not_scanned, limit)
    }

    /// Records that the scanner could not judge a blob for a reason of its own (a limit, a reply
    /// cut short): it is due again at `retry_at`, and does not hold the others back meanwhile.
    pub fn record_scan_failure(
        &self,
        sha256: &argus_domain::Sha256Digest,
        retry_at: OffsetDateTime,
    ) -> Result<bool> {
        attachments::queue::scan_failed(&mut *self.conn()?, sha256, retry_at)
    }

    /// Up to `limit` held blobs that no scanner has judged yet, oldest first.
    pub fn unscanned_blobs(&self, limit: u32) -> Result<Vec<argus_domain::Sha256Digest>> {
        attachments::queue::unscanned(&mut *self.conn()?, limit)
    }

    /// Up to `limit` held blobs after `after` in digest order, whatever their verdict (for a
    /// rescan when the signatures were updated).
    pub fn blobs_after(
        &self,
        after: Option<&argus_domain::Sha256Digest>,
        limit: u32,
    ) -> Result<Vec<argus_domain::Sha256Digest>> {
        attachments::queue::all_blobs(&mut *self.conn()?, after, limit)
    }

    /// Records a scanner's verdict on a blob, for every reference to it; `false` when the blob
    /// is not known.
    pub fn record_scan(&self, sha256: &argus_domain::Sha256Digest, scan: &ScanRecord) -> Result<bool> {
        attachments::queue::record_scan(&mut *self.conn()?, sha256, scan)
    }

    /// Edits and redactions kept until their original is stored, in every organisation (for
    /// tests and operators: they should not pile up).
    pub fn pending_evidence_count(&self) -> Result<i64> {
        use diesel::{QueryDsl as _, RunQueryDsl as _};
        self.snapshot(|conn| {
            let edits: i64 = schema::pending_edits::table.count().get_result(conn)?;
            let redactions: i64 = schema::pending_redactions::table.count().get_result(conn)?;
            Ok(edits + redactions)
        })
    }

    /// Every watch's sealed token, for re-sealing under a new key.
    pub fn sealed_watch_tokens(&self) -> Result<Vec<SealedWatchToken>> {
        watch::sealed_tokens(&mut *self.conn()?)
    }

    /// Replaces a watch's sealed token if it still is `old`; whether it was replaced.
    pub fn reseal_watch_token(
        &self,
        id: i64,
        old: &argus_domain::SealedToken,
        new: &argus_domain::SealedToken,
    ) -> Result<bool> {
        watch::reseal(&mut *self.conn()?, id, old, new)
    }

    /// Appends a FAILED audit record (message count 0), and nothing else. Control characters
    /// in the free-text fields are replaced and long values cut.
    pub fn record_failure(&self, entry: &NewIngestion) -> Result<IngestionRecord> {
        write::record_failure(&mut *self.conn()?, self.audit_key.as_deref(), entry)
    }

    /// Appends the audit record of a note posted into a room, sent or refused (the entry
    /// carries its [`argus_domain::PostEvidence`]): never the body, only its digest and length.
    pub fn record_post(&self, entry: &NewIngestion) -> Result<IngestionRecord> {
        write::record_post(&mut *self.conn()?, self.audit_key.as_deref(), entry)
    }

    /// Moves a room of `org` to another homeserver (an operator's decision, for a real
    /// migration): from now on it answers to `homeserver` only, and runs from the one it was
    /// archived from are refused ([`Error::HomeserverMismatch`]). Its positions are reset (the
    /// next run reads from the live end; older history is read again, skipping what is stored).
    /// Appends, in the same transaction, a REHOME record by `actor` naming the homeserver the
    /// room leaves ([`NewIngestion::rehomed_from`]) and the new one. `None` when `org` holds no
    /// such room (nothing is written); [`Error::Invalid`] when it already answers to that server.
    pub fn rehome_room(
        &self,
        actor: &argus_domain::ActorId,
        org: &argus_domain::OrgId,
        room_id: &RoomId,
        homeserver: &argus_domain::HomeserverUrl,
    ) -> Result<Option<IngestionRecord>> {
        write::record_rehome(&mut *self.conn()?, self.audit_key.as_deref(), actor, org, room_id, homeserver)
    }

    /// The newest record of every organisation's chain.
    pub fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        audit::heads(&mut *self.conn()?)
    }

    /// Verifies every organisation's chain link by link, and each against its expected head
    /// (to catch dropped newest records). One result per organisation found or expected.
    pub fn audit_verify(&self, expected: &[ChainHead]) -> Result<Vec<ChainVerification>> {
        self.audit_verify_from(expected, &[])
    }

    /// Like [`Store::audit_verify`], for a store with an audit key whose chains began before
    /// the key was set: the records of an organisation up to the position given for it (an
    /// `org:seq` boundary the operator keeps outside the database) are checked unkeyed, every
    /// later one keyed.
    pub fn audit_verify_from(
        &self,
        expected: &[ChainHead],
        unkeyed_until: &[(argus_domain::OrgId, i64)],
    ) -> Result<Vec<ChainVerification>> {
        let unkeyed = unkeyed_until.iter().cloned().collect();
        audit::verify(&mut *self.conn()?, self.audit_key.as_deref(), expected, &unkeyed)
    }

    /// Up to `limit` rows neither delivered nor parked, oldest first.
    pub fn outbox_pending(&self, limit: u32) -> Result<Vec<OutboxRow>> {
        outbox::pending(&mut *self.conn()?, limit, &[])
    }

    /// Like [`Store::outbox_pending`], leaving out the rows of the organisations in `except`
    /// (the relay skips an organisation whose delivery failed, so that it stalls no other).
    pub fn outbox_pending_except(
        &self,
        limit: u32,
        except: &[argus_domain::OrgId],
    ) -> Result<Vec<OutboxRow>> {
        outbox::pending(&mut *self.conn()?, limit, except)
    }

    /// Marks several rows delivered in one transaction (rows already delivered are left as
    /// they are); returns how many were marked.
    pub fn outbox_mark_delivered_batch(&self, ids: &[i64]) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        outbox::mark_delivered_batch(&mut *self.conn()?, ids)
    }

    /// Counts a failed delivery and keeps its error; returns whether the row is now parked
    /// (it has failed `park_after_attempts` times).
    pub fn outbox_mark_failed(&self, id: i64, error: &str, park_after_attempts: u32) -> Result<bool> {
        outbox::mark_failed(&mut *self.conn()?, id, error, park_after_attempts)
    }

    /// Rows waiting, rows parked, and the oldest waiting row's time, for monitoring.
    pub fn outbox_gauges(&self) -> Result<OutboxGauges> {
        outbox::gauges(&mut *self.conn()?)
    }

    /// Counts by state, and the parked rows.
    pub fn outbox_status(&self) -> Result<OutboxStatus> {
        outbox::status(&mut *self.conn()?)
    }
}
