//! The audit trail: one hash chain per organisation, appended under a per-organisation lock,
//! guarded by triggers, and verified link by link against heads kept outside the database.
//!
//! Without an [`AuditKey`] a link is SHA-256 over the record's canonical encoding: anyone who can
//! write the database (and drop its triggers) can rewrite the chain and hash it again. With one,
//! a link is HMAC-SHA256 under that key, which the operator keeps outside the database (a file
//! or the environment): a chain rewritten without the key no longer verifies.

use std::{collections::BTreeMap, fmt, str::FromStr};

use argus_domain::{IngestionRecord, NewIngestion, OrgId, to_unix_ms};
use diesel::{
    ExpressionMethods as _, OptionalExtension as _, QueryDsl as _, RunQueryDsl, SelectableHelper as _,
};
use sha2::{Digest, Sha256};

use crate::{
    Error, Result,
    db::{DbConn, Sql},
    rows::{IngestionRow, hash32},
    schema::ingestions,
};

/// The `prev_hash` of the first record of every chain.
pub const GENESIS: [u8; 32] = [0u8; 32];

/// Longest stored room id, homeserver and error text of an audit record, in characters.
const MAX_ROOM_ID: usize = 255;
const MAX_HOMESERVER: usize = 2048;
const MAX_ERROR: usize = 1024;

/// Records read per statement while verifying.
const VERIFY_BATCH: i64 = 5_000;

/// The newest record of one organisation's chain; `org:seq:hexhash` in text form, which an
/// operator keeps outside the database and hands back to [`crate::Store::audit_verify`].
///
/// ```
/// use argus_store::ChainHead;
/// let head: ChainHead = format!("dgsi:42:{}", "ab".repeat(32)).parse()?;
/// assert_eq!(head.seq, 42);
/// assert_eq!(head.to_string().parse::<ChainHead>()?, head);
/// assert!("dgsi:42:zz".parse::<ChainHead>().is_err());
/// # Ok::<(), argus_store::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChainHead {
    /// The organisation.
    pub org: OrgId,
    /// Position of the newest record.
    pub seq: i64,
    /// Its hash.
    pub hash: [u8; 32],
}

impl fmt::Display for ChainHead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.org, self.seq, hex::encode(self.hash))
    }
}

impl FromStr for ChainHead {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        const KIND: &str = "chain head";
        let mut parts = s.trim().splitn(3, ':');
        let (Some(org), Some(seq), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(Error::invalid(KIND, "expected org:seq:hexhash"));
        };
        let org: OrgId = org.parse()?;
        let seq: i64 = seq.parse().map_err(|_| Error::invalid(KIND, "seq is not a number"))?;
        if seq < 1 {
            return Err(Error::invalid(KIND, "seq must be at least 1"));
        }
        let hash = hash32(hash).ok_or(Error::invalid(KIND, "hash must be 64 hex digits"))?;
        Ok(Self { org, seq, hash })
    }
}

/// The result of verifying one organisation's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainVerification {
    /// The organisation.
    pub org: OrgId,
    /// Records found.
    pub length: i64,
    /// The newest record found.
    pub head: Option<ChainHead>,
    /// The first position that is missing, altered or out of line.
    pub first_bad_seq: Option<i64>,
    /// What is wrong there, in words.
    pub problem: Option<String>,
}

impl ChainVerification {
    /// Whether the chain is intact (and matches its expected head, if one was given).
    pub fn is_ok(&self) -> bool {
        self.first_bad_seq.is_none() && self.problem.is_none()
    }
}

/// The secret that keys the audit chain (HMAC-SHA256), held outside the database. `Debug`
/// never shows it.
#[derive(Clone, Debug)]
pub struct AuditKey(argus_domain::Secret<Vec<u8>>);

impl AuditKey {
    /// A key from its bytes; at least 32 are required.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self> {
        let bytes = bytes.into();
        if bytes.len() < 32 {
            return Err(Error::invalid("audit key", "must hold at least 32 bytes"));
        }
        Ok(Self(argus_domain::Secret::from_value(bytes)))
    }
}

/// Writes a length-prefixed field into the canonical encoding.
fn field(h: &mut impl sha2::digest::Update, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn opt_field(h: &mut impl sha2::digest::Update, bytes: Option<&[u8]>) {
    match bytes {
        None => h.update(&[0u8]),
        Some(b) => {
            h.update(&[1u8]);
            field(h, b);
        }
    }
}

/// The link of a record: HMAC-SHA256 under `key` when one is given, else SHA-256, over the
/// canonical encoding of the record's every field, its place and `prev_hash`.
pub(crate) fn link_hash(
    key: Option<&AuditKey>,
    org: &str,
    seq: i64,
    e: &Stored<'_>,
    prev_hash: &[u8; 32],
) -> [u8; 32] {
    match key {
        Some(AuditKey(key)) => {
            use hmac::Mac as _;
            let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key.expose_value())
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
            encode(&mut mac, b"argus-audit-v2-keyed", org, seq, e, prev_hash);
            mac.finalize().into_bytes().into()
        }
        None => {
            let mut h = Sha256::new();
            encode(&mut h, b"argus-audit-v1", org, seq, e, prev_hash);
            h.finalize().into()
        }
    }
}

/// The canonical encoding of a link, tagged with its scheme.
fn encode(
    h: &mut impl sha2::digest::Update,
    scheme: &[u8],
    org: &str,
    seq: i64,
    e: &Stored<'_>,
    prev_hash: &[u8; 32],
) {
    field(h, scheme);
    field(h, org.as_bytes());
    field(h, &seq.to_be_bytes());
    field(h, e.actor.as_bytes());
    field(h, e.room_id.as_bytes());
    field(h, e.homeserver_url.as_bytes());
    field(h, &e.message_count.to_be_bytes());
    field(h, &e.classification.to_be_bytes());
    field(h, &e.started_at.to_be_bytes());
    opt_field(h, e.finished_at.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    field(h, e.outcome.as_bytes());
    opt_field(h, e.error.map(str::as_bytes));
    // A post's evidence follows; an ingestion's encoding is unchanged (its links were hashed
    // before posts existed), and the action tag keeps the two apart.
    if let Some(post) = &e.post {
        field(h, b"POST");
        opt_field(h, post.event_id.map(str::as_bytes));
        field(h, post.body_sha256.as_bytes());
        field(h, &post.body_length.to_be_bytes());
    }
    // Likewise the mark of a scheduled run: a manual run's encoding is unchanged.
    if e.scheduled {
        field(h, b"SCHEDULED");
    }
    // Likewise a room moved to another homeserver, with the one it answered to until then.
    if let Some(from) = e.rehomed_from {
        field(h, b"REHOME");
        field(h, from.as_bytes());
    }
    // Likewise the root over the versions a run stored (records before the transparency log
    // carry none and hash as they did).
    if let Some(events) = &e.events {
        field(h, b"EVENTS");
        field(h, events.root.as_bytes());
        field(h, &events.count.to_be_bytes());
    }
    field(h, prev_hash);
}

/// The stored form of a post's evidence, exactly as hashed.
#[derive(Debug)]
pub(crate) struct StoredPost<'a> {
    pub(crate) event_id: Option<&'a str>,
    pub(crate) body_sha256: String,
    pub(crate) body_length: i64,
}

/// The stored form of a run's `eventsRoot`, exactly as hashed.
#[derive(Debug)]
pub(crate) struct StoredEvents<'a> {
    /// The root, lowercase hex.
    pub(crate) root: &'a str,
    /// How many versions are under it.
    pub(crate) count: i64,
}

/// What a run's record adds: its run and the root over the versions it stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunEvents {
    /// The run's storage id (`run_versions.run_id`).
    pub(crate) run_id: i64,
    /// The RFC 9162 root over its versions' leaf hashes, in order.
    pub(crate) root: [u8; 32],
    /// How many versions it stored.
    pub(crate) count: u64,
}

/// The stored form of a record's fields, exactly as hashed.
#[derive(Debug)]
pub(crate) struct Stored<'a> {
    pub(crate) actor: &'a str,
    pub(crate) room_id: &'a str,
    pub(crate) homeserver_url: &'a str,
    pub(crate) message_count: i64,
    pub(crate) classification: i16,
    pub(crate) started_at: i64,
    pub(crate) finished_at: Option<i64>,
    pub(crate) outcome: &'a str,
    pub(crate) error: Option<&'a str>,
    pub(crate) post: Option<StoredPost<'a>>,
    pub(crate) scheduled: bool,
    pub(crate) rehomed_from: Option<&'a str>,
    pub(crate) events: Option<StoredEvents<'a>>,
}

impl<'a> Stored<'a> {
    fn of_row(row: &'a IngestionRow) -> Self {
        Self {
            actor: &row.actor,
            room_id: &row.room_id,
            homeserver_url: &row.homeserver_url,
            message_count: row.message_count,
            classification: row.classification,
            started_at: row.started_at,
            finished_at: row.finished_at,
            outcome: &row.outcome,
            error: row.error.as_deref(),
            post: match (row.action.as_str(), &row.body_sha256, row.body_length) {
                ("INGEST" | "REHOME", None, None) => None,
                // Whatever the columns hold, a POST record hashes as one (a mismatch then fails
                // verification rather than being skipped).
                (_, digest, length) => Some(StoredPost {
                    event_id: row.event_id.as_deref(),
                    body_sha256: digest.clone().unwrap_or_default(),
                    body_length: length.unwrap_or(-1),
                }),
            },
            scheduled: row.scheduled,
            // Whatever the action says, a previous homeserver is hashed as a move's.
            rehomed_from: row.previous_homeserver_url.as_deref(),
            // Whatever the run id says, a stored root is hashed as a run's.
            events: match (&row.events_root, row.events_count) {
                (None, None) => None,
                (root, count) => Some(StoredEvents {
                    root: root.as_deref().unwrap_or_default(),
                    count: count.unwrap_or(-1),
                }),
            },
        }
    }
}

/// Makes an entry safe and bounded to keep: control characters replaced, long values cut,
/// timestamps at millisecond precision (as stored and hashed).
pub(crate) fn sanitised(entry: &NewIngestion) -> Result<NewIngestion> {
    let mut e = entry.clone();
    e.room_id = NewIngestion::sanitise(&e.room_id, MAX_ROOM_ID);
    e.homeserver_url = NewIngestion::sanitise(&e.homeserver_url, MAX_HOMESERVER);
    e.error = e.error.as_deref().map(|s| NewIngestion::sanitise(s, MAX_ERROR));
    e.rehomed_from = e.rehomed_from.as_deref().map(|s| NewIngestion::sanitise(s, MAX_HOMESERVER));
    e.started_at = argus_domain::from_unix_ms(to_unix_ms(e.started_at))?;
    e.finished_at = e.finished_at.map(|t| argus_domain::from_unix_ms(to_unix_ms(t))).transpose()?;
    if e.message_count < 0 {
        return Err(Error::invalid("audit record", "negative message count"));
    }
    match &e.rehomed_from {
        Some(_) if e.post.is_some() => {
            return Err(Error::invalid("audit record", "a record is of a post or of a move, not both"));
        }
        Some(from) if from.is_empty() => {
            return Err(Error::invalid("audit record", "a move names the homeserver it leaves"));
        }
        _ => {}
    }
    if let Some(post) = &mut e.post {
        post.event_id = post.event_id.as_deref().map(|id| NewIngestion::sanitise(id, MAX_ROOM_ID));
        if post.body_length < 0 {
            return Err(Error::invalid("audit record", "negative body length"));
        }
    }
    Ok(e)
}

#[derive(Debug, diesel::QueryableByName, diesel::Queryable, diesel::Selectable)]
#[diesel(table_name = ingestions)]
struct HeadRow {
    org_id: String,
    seq: i64,
    hash: String,
}

/// Appends `entry` (already sanitised) to its organisation's chain, and its `AUDIT` entry to
/// the organisation's transparency log; `run`: a run's record, with the root over the versions
/// it stored. The caller holds the organisation's write lock inside an open transaction.
pub(crate) fn append(
    conn: &mut DbConn,
    key: Option<&AuditKey>,
    entry: &NewIngestion,
    run: Option<&RunEvents>,
) -> Result<IngestionRecord> {
    let org = entry.org.as_str();
    let last: Option<HeadRow> = ingestions::table
        .filter(ingestions::org_id.eq(org))
        .order(ingestions::seq.desc())
        .select(HeadRow::as_select())
        .first(conn)
        .optional()?;
    let (seq, prev_hash) = match last {
        None => (1, GENESIS),
        Some(h) => (h.seq + 1, hash32(&h.hash).ok_or(Error::Corrupt("a stored audit hash is malformed"))?),
    };
    let stored = Stored {
        actor: entry.actor.as_str(),
        room_id: &entry.room_id,
        homeserver_url: &entry.homeserver_url,
        message_count: entry.message_count,
        classification: entry.classification.rank(),
        started_at: to_unix_ms(entry.started_at),
        finished_at: entry.finished_at.map(to_unix_ms),
        outcome: entry.outcome.as_str(),
        error: entry.error.as_deref(),
        post: entry.post.as_ref().map(|p| StoredPost {
            event_id: p.event_id.as_deref(),
            body_sha256: hex::encode(p.body_sha256),
            body_length: p.body_length,
        }),
        scheduled: entry.scheduled,
        rehomed_from: entry.rehomed_from.as_deref(),
        events: None,
    };
    let events_root = run.map(|r| hex::encode(r.root));
    let events_count =
        run.map(|r| i64::try_from(r.count)).transpose().map_err(|_| Error::Corrupt("too many versions"))?;
    let stored = Stored {
        events: events_root.as_deref().zip(events_count).map(|(root, count)| StoredEvents { root, count }),
        ..stored
    };
    let hash = link_hash(key, org, seq, &stored, &prev_hash);
    let action = match (&stored.post, stored.rehomed_from) {
        (Some(_), _) => "POST",
        (None, Some(_)) => "REHOME",
        (None, None) => "INGEST",
    };

    let id: i64 = diesel::insert_into(ingestions::table)
        .values((
            ingestions::org_id.eq(org),
            ingestions::seq.eq(seq),
            ingestions::actor.eq(stored.actor),
            ingestions::room_id.eq(stored.room_id),
            ingestions::homeserver_url.eq(stored.homeserver_url),
            ingestions::message_count.eq(stored.message_count),
            ingestions::classification.eq(stored.classification),
            ingestions::started_at.eq(stored.started_at),
            ingestions::finished_at.eq(stored.finished_at),
            ingestions::outcome.eq(stored.outcome),
            ingestions::error.eq(stored.error),
            ingestions::prev_hash.eq(hex::encode(prev_hash)),
            ingestions::hash.eq(hex::encode(hash)),
            ingestions::action.eq(action),
            ingestions::event_id.eq(stored.post.as_ref().and_then(|p| p.event_id)),
            ingestions::body_sha256.eq(stored.post.as_ref().map(|p| p.body_sha256.as_str())),
            ingestions::body_length.eq(stored.post.as_ref().map(|p| p.body_length)),
            ingestions::scheduled.eq(stored.scheduled),
            ingestions::previous_homeserver_url.eq(stored.rehomed_from),
            ingestions::run_id.eq(run.map(|r| r.run_id)),
            ingestions::events_root.eq(events_root.as_deref()),
            ingestions::events_count.eq(events_count),
        ))
        .returning(ingestions::id)
        .get_result(conn)?;
    crate::log::append_audit(conn, &log_entry(org, seq, action, &stored)?)?;
    Ok(IngestionRecord {
        id,
        seq,
        entry: entry.clone(),
        prev_hash,
        hash,
        events: run.map(|r| (r.root, r.count)),
    })
}

/// The `AUDIT` log entry of a record, from its stored fields (as hashed into the chain).
fn log_entry(
    org: &str,
    seq: i64,
    action: &str,
    e: &Stored<'_>,
) -> Result<argus_domain::oversight::AuditEntry> {
    use argus_domain::oversight::{AuditEntry, ENCODING_VERSION, PostFields};
    Ok(AuditEntry {
        action: action.to_owned(),
        actor: e.actor.to_owned(),
        classification: crate::rows::rank(e.classification)?,
        error: e.error.map(str::to_owned),
        events_count: e.events.as_ref().map(|v| v.count.unsigned_abs()),
        events_root: e.events.as_ref().map(|v| v.root.to_owned()),
        finished_at: e.finished_at,
        homeserver: e.homeserver_url.to_owned(),
        message_count: e.message_count,
        org: org.to_owned(),
        outcome: e.outcome.to_owned(),
        post: e.post.as_ref().map(|p| PostFields {
            body_length: p.body_length,
            body_sha256: p.body_sha256.clone(),
            event_id: p.event_id.map(str::to_owned),
        }),
        previous_homeserver: e.rehomed_from.map(str::to_owned),
        room_id: e.room_id.to_owned(),
        scheduled: e.scheduled,
        seq,
        started_at: e.started_at,
        r#type: AuditEntry::TYPE.to_owned(),
        v: ENCODING_VERSION,
    })
}

/// The newest record of every organisation's chain, by organisation.
pub(crate) fn heads(conn: &mut DbConn) -> Result<Vec<ChainHead>> {
    let backend = conn.backend();
    let mut sql = Sql::new(backend);
    sql.push(
        "SELECT i.org_id, i.seq, i.hash FROM ingestions i WHERE i.seq = \
         (SELECT MAX(j.seq) FROM ingestions j WHERE j.org_id = i.org_id) ORDER BY i.org_id",
    );
    let rows: Vec<HeadRow> = sql.build().load(conn)?;
    rows.into_iter()
        .map(|r| {
            Ok(ChainHead {
                org: r.org_id.parse().map_err(|_| Error::Corrupt("a stored organisation id is malformed"))?,
                seq: r.seq,
                hash: hash32(&r.hash).ok_or(Error::Corrupt("a stored audit hash is malformed"))?,
            })
        })
        .collect()
}

/// Recomputes every link of every chain and compares each chain with its expected head. With
/// `key`, every link must be keyed, except those up to `unkeyed_until` of an organisation (the
/// records appended before the key was set, a boundary the operator keeps outside the database).
pub(crate) fn verify(
    conn: &mut DbConn,
    key: Option<&AuditKey>,
    expected: &[ChainHead],
    unkeyed_until: &BTreeMap<OrgId, i64>,
) -> Result<Vec<ChainVerification>> {
    let orgs: Vec<String> =
        ingestions::table.select(ingestions::org_id).distinct().order(ingestions::org_id).load(conn)?;
    let mut by_org: BTreeMap<String, Vec<&ChainHead>> = BTreeMap::new();
    for h in expected {
        by_org.entry(h.org.as_str().to_owned()).or_default().push(h);
    }
    for o in orgs {
        by_org.entry(o).or_default();
    }
    by_org
        .into_iter()
        .map(|(org, heads)| {
            let org_id: OrgId =
                org.parse().map_err(|_| Error::Corrupt("a stored organisation id is malformed"))?;
            let legacy = key.map_or(i64::MAX, |_| unkeyed_until.get(&org_id).copied().unwrap_or(0));
            verify_chain(conn, key, legacy, &org, &heads)
        })
        .collect()
}

fn verify_chain(
    conn: &mut DbConn,
    key: Option<&AuditKey>,
    unkeyed_until: i64,
    org: &str,
    expected: &[&ChainHead],
) -> Result<ChainVerification> {
    let org_id: OrgId = org.parse().map_err(|_| Error::Corrupt("a stored organisation id is malformed"))?;
    let mut v =
        ChainVerification { org: org_id.clone(), length: 0, head: None, first_bad_seq: None, problem: None };
    let fail = |v: &mut ChainVerification, seq: i64, problem: String| {
        if v.first_bad_seq.is_none() {
            v.first_bad_seq = Some(seq);
            v.problem = Some(problem);
        }
    };
    let mut prev = GENESIS;
    let mut next_seq = 1i64;
    let mut hashes: BTreeMap<i64, [u8; 32]> = BTreeMap::new();
    let wanted: std::collections::BTreeSet<i64> = expected.iter().map(|h| h.seq).collect();
    let mut after = 0i64;
    loop {
        let rows: Vec<IngestionRow> = ingestions::table
            .filter(ingestions::org_id.eq(org))
            .filter(ingestions::seq.gt(after))
            .order(ingestions::seq)
            .limit(VERIFY_BATCH)
            .select(IngestionRow::as_select())
            .load(conn)?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            v.length += 1;
            if row.seq != next_seq {
                fail(&mut v, next_seq, format!("record {next_seq} is missing"));
            }
            let stored_prev = hash32(&row.prev_hash);
            let stored_hash = hash32(&row.hash);
            if stored_prev != Some(prev) {
                fail(&mut v, row.seq, format!("record {} does not link to the record before it", row.seq));
            }
            let link_key = if row.seq <= unkeyed_until { None } else { key };
            let computed =
                link_hash(link_key, org, row.seq, &Stored::of_row(row), &stored_prev.unwrap_or(prev));
            if stored_hash != Some(computed) {
                fail(&mut v, row.seq, format!("record {} was altered", row.seq));
            }
            // A record whose action disagrees with its post columns (a post turned into an
            // ingestion, an ingestion given an event id) is invalid whatever its hash.
            if crate::rows::outcome(&row.outcome).is_none()
                || crate::rows::rank(row.classification).is_err()
                || row.post().is_err()
                || row.rehomed_from().is_err()
            {
                fail(&mut v, row.seq, format!("record {} holds an invalid value", row.seq));
            }
            let h = stored_hash.unwrap_or(computed);
            if wanted.contains(&row.seq) {
                hashes.insert(row.seq, h);
            }
            prev = h;
            next_seq = row.seq + 1;
            v.head = Some(ChainHead { org: org_id.clone(), seq: row.seq, hash: h });
        }
    }
    let found = v.head.as_ref().map_or(0, |h| h.seq);
    for head in expected {
        match hashes.get(&head.seq) {
            None if head.seq > found => fail(
                &mut v,
                found + 1,
                format!("the chain ends at record {found} but record {} was expected", head.seq),
            ),
            None => fail(&mut v, head.seq, format!("expected head record {} is missing", head.seq)),
            Some(h) if *h != head.hash => {
                fail(&mut v, head.seq, format!("record {} differs from the expected head", head.seq));
            }
            Some(_) => {}
        }
    }
    Ok(v)
}
