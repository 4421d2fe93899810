//! For tests and benchmarks (feature `testing`): an in-memory transparency log
//! ([`MemoryLog`]) and a builder of a room's [`DisclosureSource`] whose runs, versions and held
//! files are logged in it as the store logs them ([`SourceBuilder`]).

use std::sync::Mutex;

use argus_crypto::tlog::leaf_hash;
use argus_domain::{
    Attachment, AttachmentStatus, Classification, MessageRecord, OrgId, RoomId, Sha256Digest, StoredMessage,
    StoredRoom,
    oversight::{
        AccessEntry, AttachmentEntry, AuditEntry, ENCODING_VERSION, LogEntry, VersionAttachment, VersionKind,
        VersionLeaf,
    },
};
use argus_store::{
    Digest, DisclosureSource, LogEntryRecord, SourceAttachment, SourceRun, SourceVersion, TreeHead,
};
use time::OffsetDateTime;

use crate::{LogView, tree::Subtrees};

/// One organisation's log held in memory (tests and benchmarks only).
pub struct MemoryLog {
    inner: Mutex<(Vec<Vec<u8>>, Subtrees)>,
}

impl std::fmt::Debug for MemoryLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLog").field("size", &self.size()).finish()
    }
}

impl Default for MemoryLog {
    fn default() -> Self {
        Self::new()
    }
}

#[expect(clippy::expect_used, reason = "a poisoned lock in a test log is a test failure")]
impl MemoryLog {
    /// An empty log.
    pub fn new() -> Self {
        Self { inner: Mutex::new((Vec::new(), Subtrees::empty())) }
    }

    /// Appends an entry's bytes; returns its index.
    pub fn append(&self, bytes: Vec<u8>) -> u64 {
        let mut inner = self.inner.lock().expect("log lock");
        let (entries, tree) = &mut *inner;
        tree.push(leaf_hash(&bytes)).expect("a tree in memory always has its hashes");
        entries.push(bytes);
        tree.size() - 1
    }

    /// Entries in the log.
    pub fn size(&self) -> u64 {
        self.inner.lock().expect("log lock").1.size()
    }

    /// The bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Option<Vec<u8>> {
        let inner = self.inner.lock().expect("log lock");
        usize::try_from(index).ok().and_then(|i| inner.0.get(i).cloned())
    }
}

#[expect(clippy::expect_used, reason = "a poisoned lock in a test log is a test failure")]
impl LogView for MemoryLog {
    fn log_head(&self, _org: &OrgId) -> argus_store::Result<TreeHead> {
        let inner = self.inner.lock().expect("log lock");
        let size = inner.1.size();
        let root = inner.1.root(size).map_err(|_| argus_store::Error::Corrupt("log tree"))?;
        Ok(TreeHead { size, root })
    }

    fn log_inclusion(&self, _org: &OrgId, index: u64, size: u64) -> argus_store::Result<Vec<Digest>> {
        let inner = self.inner.lock().expect("log lock");
        inner.1.inclusion(index, size).map_err(|_| argus_store::Error::Corrupt("log tree"))
    }

    fn log_entries(&self, _org: &OrgId, indexes: &[u64]) -> argus_store::Result<Vec<LogEntryRecord>> {
        let inner = self.inner.lock().expect("log lock");
        Ok(indexes
            .iter()
            .filter_map(|&index| {
                let bytes = usize::try_from(index).ok().and_then(|i| inner.0.get(i))?.clone();
                Some(LogEntryRecord { index, bytes })
            })
            .collect())
    }

    fn record_access(&self, entry: &AccessEntry) -> argus_store::Result<u64> {
        Ok(self.append(LogEntry::Access(entry.clone()).canonical()))
    }
}

/// Milliseconds since the epoch.
fn ms(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Builds a room's [`DisclosureSource`]: messages stored by runs, each run's versions under an
/// AUDIT entry's `eventsRoot`, held files under ATTACHMENT entries, all appended to a
/// [`MemoryLog`] by [`SourceBuilder::build`].
#[derive(Debug)]
pub struct SourceBuilder {
    org: OrgId,
    room: StoredRoom,
    messages: Vec<StoredMessage>,
    /// Per run: its versions (message event id, kind, leaf).
    runs: Vec<Vec<(String, VersionKind, VersionLeaf)>>,
    files: Vec<AttachmentEntry>,
    /// Messages redacted after they were stored (their versions' content purged, no hold).
    purged: Vec<String>,
}

impl SourceBuilder {
    /// A room of `org`, with one run open.
    ///
    /// # Panics
    ///
    /// Never for the fixed homeserver URL it uses.
    #[expect(clippy::expect_used, reason = "a fixed, valid URL")]
    pub fn new(org: &OrgId, room_id: &RoomId) -> Self {
        let now = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        let room = StoredRoom {
            id: 1,
            org: org.clone(),
            room_id: room_id.clone(),
            homeserver_url: "https://matrix.agent.tchap.gouv.fr".parse().expect("a valid URL"),
            name: Some("Cellule de crise".to_owned()),
            topic: None,
            canonical_alias: None,
            member_count: 3,
            encrypted: false,
            classification: Classification::Unclassified,
            first_seen_at: now,
            last_activity_at: Some(now),
            last_ingested_at: now,
            message_count: 0,
            resume_token: None,
            backfill_token: None,
            history_complete: true,
            predecessor: None,
            successor: None,
            metadata: Default::default(),
            history_since: None,
            watched: false,
        };
        Self {
            org: org.clone(),
            room,
            messages: Vec::new(),
            runs: vec![Vec::new()],
            files: Vec::new(),
            purged: Vec::new(),
        }
    }

    /// Starts a new run: the next messages are stored by it.
    pub fn new_run(&mut self) -> &mut Self {
        self.runs.push(Vec::new());
        self
    }

    /// Adds a message as the current run stores it: its original, each edit, its redaction.
    pub fn message(&mut self, record: MessageRecord) -> &mut Self {
        let room = self.room.room_id.as_str().to_owned();
        let eid = record.event_id.as_str().to_owned();
        let attachment = record
            .media
            .as_ref()
            .map(|m| VersionAttachment { sha256: None, uri: m.mxc_uri().map(str::to_owned) });
        let leaf =
            |kind, event_id: &str, sender: &str, at, msgtype: Option<&String>, body: Option<&String>| {
                VersionLeaf {
                    attachment: attachment.clone(),
                    body: body.cloned(),
                    event_id: event_id.to_owned(),
                    kind,
                    msgtype: msgtype.cloned(),
                    reason: None,
                    room_id: room.clone(),
                    sender: sender.to_owned(),
                    sent_at: ms(at),
                    target: (kind != VersionKind::Original).then(|| eid.clone()),
                    v: ENCODING_VERSION,
                }
            };
        let mut leaves = Vec::new();
        match record.versions.split_first() {
            None => leaves.push(leaf(
                VersionKind::Original,
                &eid,
                record.sender.as_str(),
                record.sent_at,
                record.msgtype.as_ref(),
                record.body.as_ref(),
            )),
            Some((first, edits)) => {
                leaves.push(leaf(
                    VersionKind::Original,
                    &eid,
                    first.sender.as_str(),
                    first.sent_at,
                    first.msgtype.as_ref(),
                    first.body.as_ref(),
                ));
                for e in edits {
                    leaves.push(leaf(
                        VersionKind::Edit,
                        e.event_id.as_str(),
                        e.sender.as_str(),
                        e.sent_at,
                        e.msgtype.as_ref(),
                        e.body.as_ref(),
                    ));
                }
            }
        }
        if let Some(r) = &record.redaction {
            let mut l = leaf(VersionKind::Redaction, &eid, r.redacted_by.as_str(), r.redacted_at, None, None);
            l.attachment = None;
            l.reason = r.reason.clone();
            leaves.push(l);
        }
        if let Some(run) = self.runs.last_mut() {
            run.extend(leaves.into_iter().map(|l| (eid.clone(), l.kind, l)));
        }
        self.messages.push(StoredMessage {
            id: self.messages.len() as i64 + 1,
            room_id: self.room.room_id.clone(),
            classification: Classification::Unclassified,
            message: record,
            held: None,
            attachment: None,
        });
        self
    }

    /// Gives the last message a held file of `bytes` with `status`, logged by an ATTACHMENT entry.
    pub fn attach(
        &mut self,
        bytes: &[u8],
        name: &str,
        mimetype: &str,
        status: AttachmentStatus,
    ) -> &mut Self {
        let digest = Sha256Digest::of(bytes);
        let Some(stored) = self.messages.last_mut() else { return self };
        let uri = stored
            .message
            .media
            .as_ref()
            .and_then(|m| m.mxc_uri())
            .unwrap_or("mxc://agent.tchap.gouv.fr/file")
            .to_owned();
        stored.attachment = Some(Attachment {
            id: stored.id,
            mxc_uri: uri.clone(),
            filename: Some(name.to_owned()),
            declared_mimetype: Some(mimetype.to_owned()),
            declared_size: Some(bytes.len() as u64),
            encrypted: false,
            status,
            reason: None,
            sha256: Some(digest),
            size: Some(bytes.len() as u64),
            sniffed_mimetype: Some(mimetype.to_owned()),
            threat: (status == AttachmentStatus::Infected).then(|| "Eicar-Test-Signature".to_owned()),
            scan_engine: Some("ClamAV".to_owned()),
            scanned_at: None,
            fetched_at: None,
        });
        self.files.push(AttachmentEntry {
            at: ms(stored.message.sent_at) + 1000,
            classification: Classification::Unclassified,
            event_id: stored.message.event_id.as_str().to_owned(),
            org: self.org.as_str().to_owned(),
            room_id: self.room.room_id.as_str().to_owned(),
            sha256: digest.to_hex(),
            size: bytes.len() as u64,
            r#type: AttachmentEntry::TYPE.to_owned(),
            uri,
            v: ENCODING_VERSION,
        });
        self
    }

    /// Redacts a message already added, in the current run: a REDACTION version is stored, and
    /// the content of its earlier versions is purged from the rows (no legal hold), so that they
    /// no longer rebuild into the leaves their runs logged.
    ///
    /// # Panics
    ///
    /// When `by` is not a user id.
    #[expect(clippy::expect_used, reason = "a fixture's own input")]
    pub fn redact_later(
        &mut self,
        event_id: &str,
        by: &str,
        at: OffsetDateTime,
        reason: Option<&str>,
    ) -> &mut Self {
        let Some(stored) = self.messages.iter_mut().find(|m| m.message.event_id.as_str() == event_id) else {
            return self;
        };
        let redaction = argus_domain::Redaction {
            redacted_by: by.parse().expect("a user id"),
            redacted_at: at,
            reason: reason.map(str::to_owned),
        };
        stored.message.redact(Some(redaction));
        stored.attachment = None;
        let leaf = VersionLeaf {
            attachment: None,
            body: None,
            event_id: event_id.to_owned(),
            kind: VersionKind::Redaction,
            msgtype: None,
            reason: reason.map(str::to_owned),
            room_id: self.room.room_id.as_str().to_owned(),
            sender: by.to_owned(),
            sent_at: ms(at),
            target: Some(event_id.to_owned()),
            v: ENCODING_VERSION,
        };
        if let Some(run) = self.runs.last_mut() {
            run.push((event_id.to_owned(), VersionKind::Redaction, leaf));
        }
        self.purged.push(event_id.to_owned());
        self
    }

    /// The messages added so far (to alter one after it was logged).
    pub fn messages_mut(&mut self) -> &mut Vec<StoredMessage> {
        &mut self.messages
    }

    /// Logs the runs and files in `log` (some unrelated entries first and between, as a real
    /// log has) and returns the source a disclosure reads.
    pub fn build(self, log: &MemoryLog) -> DisclosureSource {
        let mut runs = Vec::new();
        let mut versions = Vec::new();
        for (n, run) in self.runs.into_iter().enumerate() {
            log.append(format!("{{\"unrelated\":{n}}}").into_bytes());
            let leaves: Vec<Digest> = run.iter().map(|(_, _, l)| leaf_hash(&l.canonical())).collect();
            let entry = LogEntry::Audit(AuditEntry {
                action: "INGEST".to_owned(),
                actor: "ops@interieur.gouv.fr".to_owned(),
                classification: Classification::Unclassified,
                error: None,
                events_count: Some(leaves.len() as u64),
                events_root: Some(hex::encode(argus_crypto::tlog::root_of(&leaves))),
                finished_at: Some(1_700_000_000_000 + n as i64),
                homeserver: "https://matrix.agent.tchap.gouv.fr".to_owned(),
                message_count: run.len() as i64,
                org: self.org.as_str().to_owned(),
                outcome: "SUCCEEDED".to_owned(),
                post: None,
                previous_homeserver: None,
                room_id: self.room.room_id.as_str().to_owned(),
                scheduled: false,
                seq: n as i64 + 1,
                started_at: 1_700_000_000_000,
                r#type: AuditEntry::TYPE.to_owned(),
                v: ENCODING_VERSION,
            });
            let bytes = entry.canonical();
            let index = log.append(bytes.clone());
            let run_id = n as i64 + 1;
            for (position, ((message_event_id, kind, mut leaf), hash)) in
                run.into_iter().zip(&leaves).enumerate()
            {
                if kind != VersionKind::Redaction && self.purged.contains(&message_event_id) {
                    (leaf.body, leaf.msgtype, leaf.attachment) = (None, None, None);
                }
                versions.push(SourceVersion {
                    message_event_id,
                    kind,
                    run_id,
                    position: position as u64,
                    stored_leaf_hash: *hash,
                    leaf,
                });
            }
            runs.push(SourceRun { run_id, entry: LogEntryRecord { index, bytes }, leaves });
        }
        let attachments = self
            .files
            .into_iter()
            .map(|file| {
                let event_id = file.event_id.clone();
                let bytes = LogEntry::Attachment(file).canonical();
                let index = log.append(bytes.clone());
                SourceAttachment { event_id, entry: Some(LogEntryRecord { index, bytes }) }
            })
            .collect();
        let mut room = self.room;
        room.message_count = self.messages.len() as i64;
        DisclosureSource { room, messages: self.messages, versions, runs, attachments }
    }
}
