//! Attachments as evidence: the files of stored messages fetched, checked, scanned and held.
//!
//! An ingestion run stores its messages first; their files are fetched afterwards, beside the
//! run and never holding it up ([`Media::spawn_room`]), with the run's own session: streamed to
//! a staging file while hashed (a byte cap per file and per run), an encrypted one checked
//! against the digest its message declared before a byte is decrypted, put in the blob store
//! (content-addressed: the same bytes are held once), then scanned. A file that could not be
//! fetched stays `PENDING` and is retried with backoff; a held file the scanner could not judge
//! (down, a timeout, a limit reached) stays `PENDING` too, never clean. The media worker that
//! `serve` runs ([`Media::run_worker`]) scans those as soon as the scanner answers again, and
//! fetches the due files of watched rooms with their watch's token, under leases shared by the
//! replicas.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use argus_domain::{AttachmentStatus, MxcUri, OrgId, RoomId, Sha256Digest};
use argus_matrix::{Connector, MediaCapabilities, MediaLimits, Session};
use argus_media::{BlobStore, Scanner, Staging, Verdict};
use argus_store::{BlobVerdict, FetchOutcome, MediaJob, NewBlob, ScanRecord, Store};
use futures::{StreamExt as _, TryStreamExt as _};
use time::OffsetDateTime;

use crate::{Error, Result, Services};

/// How long a file the scanner could not judge for a reason of its own waits before the next
/// try (at most `retry_max`).
const SCAN_RETRY: Duration = Duration::from_secs(600);

/// Files the worker claims at a time (it fetches them one after the other).
const WORKER_BATCH: u32 = 4;

/// How files are fetched: caps, concurrency, leases and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaSettings {
    /// The most bytes one file may have (further capped by the homeserver's `m.upload.size`).
    pub max_file_bytes: u64,
    /// The most bytes one run fetches; the rest waits for the next.
    pub max_run_bytes: u64,
    /// Files fetched at once from one homeserver, across every run of this replica.
    pub concurrency_per_homeserver: usize,
    /// How long a claim on a file lasts.
    pub lease: Duration,
    /// Files claimed at a time.
    pub batch: u32,
    /// The first retry's wait; doubled at each failure.
    pub retry_base: Duration,
    /// The longest wait between retries.
    pub retry_max: Duration,
    /// The name this replica claims under.
    pub replica: String,
    /// How often the media worker looks for work.
    pub worker_interval: Duration,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: 100 * 1024 * 1024,
            max_run_bytes: 1024 * 1024 * 1024,
            concurrency_per_homeserver: 4,
            lease: Duration::from_secs(900),
            batch: 32,
            retry_base: Duration::from_secs(30),
            retry_max: Duration::from_secs(3600),
            replica: crate::scheduler::default_replica(),
            worker_interval: Duration::from_secs(30),
        }
    }
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaReport {
    /// Files fetched and held.
    pub fetched: u64,
    /// Files whose fetch ended for good otherwise (too large, tampered, unavailable, …).
    pub ended: u64,
    /// Files left for a retry.
    pub retried: u64,
    /// Blobs scanned (a verdict recorded).
    pub scanned: u64,
    /// Blobs the scanner could not judge (left unscanned, retried).
    pub scan_failures: u64,
}

impl std::ops::AddAssign for MediaReport {
    fn add_assign(&mut self, more: Self) {
        self.fetched += more.fetched;
        self.ended += more.ended;
        self.retried += more.retried;
        self.scanned += more.scanned;
        self.scan_failures += more.scan_failures;
    }
}

/// The media pipeline: blob store, scanner, staging area and settings, shared by every run.
#[derive(Debug)]
pub struct Media {
    blobs: Arc<dyn BlobStore>,
    scanner: Option<Arc<dyn Scanner>>,
    staging: Staging,
    settings: MediaSettings,
    /// One semaphore per homeserver: files fetched at once from it.
    hosts: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// The fetches runs started and nobody awaited yet ([`Media::settle`]).
    running: Mutex<Vec<tokio::task::JoinHandle<MediaReport>>>,
}

/// A fetch that failed before it was a typed outcome: the connector's error, when the body
/// stream was what failed.
type BodyFailure = Arc<Mutex<Option<argus_matrix::Error>>>;

impl Media {
    /// The pipeline over `blobs`, scanning with `scanner` (`None`: files are held but never
    /// judged, so none is ever served), staging files under `staging`.
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        scanner: Option<Arc<dyn Scanner>>,
        staging: Staging,
        settings: MediaSettings,
    ) -> Self {
        Self {
            blobs,
            scanner,
            staging,
            settings,
            hosts: Mutex::new(HashMap::new()),
            running: Mutex::default(),
        }
    }

    /// The blob store files are held in (the download route reads it).
    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.blobs
    }

    /// The settings.
    pub fn settings(&self) -> &MediaSettings {
        &self.settings
    }

    /// Fetches the due files of `room` with `session` in a task of its own (the run that
    /// stored them does not wait for it).
    pub fn spawn_room(self: &Arc<Self>, services: &Services, session: Session, org: OrgId, room: RoomId) {
        let (media, store, connector) =
            (Arc::clone(self), services.store.clone(), services.connector.clone());
        let task = tokio::spawn(async move {
            let report = media.fetch_room(&store, &connector, &session, &org, &room).await;
            tracing::info!(
                org = %org, room = %room, fetched = report.fetched, ended = report.ended,
                retried = report.retried, scanned = report.scanned, "files of a run fetched"
            );
            report
        });
        let mut running = self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        running.retain(|t| !t.is_finished());
        running.push(task);
    }

    /// Waits for the fetches the runs started (a command that exits after its run calls it so
    /// that its files are fetched before it goes); what they did, summed.
    pub async fn settle(&self) -> MediaReport {
        let mut report = MediaReport::default();
        loop {
            let tasks: Vec<_> =
                std::mem::take(&mut *self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            if tasks.is_empty() {
                return report;
            }
            for task in tasks {
                if let Ok(done) = task.await {
                    report += done;
                }
            }
        }
    }

    /// Fetches the due files of `room` of `org` with `session`, batch by batch, until none is
    /// due or the run's byte cap is reached.
    pub async fn fetch_room(
        &self,
        store: &Store,
        connector: &Connector,
        session: &Session,
        org: &OrgId,
        room: &RoomId,
    ) -> MediaReport {
        let mut report = MediaReport::default();
        let budget = AtomicU64::new(self.settings.max_run_bytes);
        let mut caps = None;
        let owner = self.claimant();
        let owner = owner.as_str();
        loop {
            let (st, o, r, replica) = (store.clone(), org.clone(), room.clone(), owner.to_owned());
            let (lease, batch) = (self.settings.lease, self.settings.batch);
            let claimed = blocking(move || {
                st.claim_room_media(&o, &r, &replica, OffsetDateTime::now_utc(), lease, batch)
            })
            .await;
            let jobs = match claimed {
                Ok(jobs) if !jobs.is_empty() => jobs,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(code = error.code(), "files of a room could not be claimed");
                    break;
                }
            };
            if caps.is_none() {
                caps = match connector.media_capabilities(session).await {
                    Ok(c) => Some(c),
                    Err(error) => {
                        // Nothing can be fetched from this homeserver now: every claimed file
                        // waits for its retry.
                        let reason = format!("{}: the homeserver's media support is unknown", error.code());
                        for job in &jobs {
                            report += self.record(store, owner, job, self.retry(job, &reason)).await;
                        }
                        break;
                    }
                };
            }
            let Some(caps) = caps.as_ref() else { break };
            let exhausted = AtomicU64::new(0);
            let reports: Vec<MediaReport> = futures::stream::iter(jobs)
                .map(|job| {
                    let (budget, exhausted) = (&budget, &exhausted);
                    async move {
                        if budget.load(Ordering::Relaxed) == 0 {
                            exhausted.store(1, Ordering::Relaxed);
                            let outcome = FetchOutcome::Retry {
                                reason: "RUN_BYTE_CAP: the run's byte cap was reached; fetched later".into(),
                                after: self.settings.retry_base,
                            };
                            return self.record(store, owner, &job, outcome).await;
                        }
                        let outcome = self.fetch_one(connector, session, caps, &job).await;
                        if let FetchOutcome::Fetched(blob) = &outcome {
                            let _ = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                                Some(left.saturating_sub(blob.size))
                            });
                        }
                        self.record(store, owner, &job, outcome).await
                    }
                })
                .buffer_unordered(self.settings.concurrency_per_homeserver.max(1))
                .collect()
                .await;
            for r in reports {
                report += r;
            }
            if exhausted.load(Ordering::Relaxed) == 1 {
                break;
            }
        }
        report
    }

    /// Records `outcome` of `job`, then scans what it fetched.
    async fn record(&self, store: &Store, owner: &str, job: &MediaJob, outcome: FetchOutcome) -> MediaReport {
        let mut report = MediaReport::default();
        let fetched = match &outcome {
            FetchOutcome::Fetched(blob) => Some(blob.sha256),
            _ => None,
        };
        match &outcome {
            FetchOutcome::Fetched(_) => report.fetched += 1,
            FetchOutcome::Retry { reason, .. } => {
                report.retried += 1;
                tracing::info!(attachment = job.id, reason = %reason, "a file is left for a retry");
            }
            FetchOutcome::Ended { status, reason } => {
                report.ended += 1;
                tracing::info!(attachment = job.id, status = %status, reason = %reason, "a file was not held");
            }
        }
        let (st, id, replica) = (store.clone(), job.id, owner.to_owned());
        match blocking(move || st.record_media(id, &replica, &outcome, OffsetDateTime::now_utc())).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(attachment = job.id, "a file's claim was lost before its outcome was recorded")
            }
            Err(error) => tracing::warn!(
                attachment = job.id,
                code = error.code(),
                "a file's outcome could not be recorded"
            ),
        }
        if let Some(sha256) = fetched {
            // The same bytes already judged (fetched through another reference): the blob's
            // verdict holds for this reference too.
            let (st, sha) = (store.clone(), sha256);
            let not_scanned = self.not_scanned();
            if !blocking(move || st.blob_judged(&sha, not_scanned)).await.unwrap_or(false) {
                match self.scan(store, &sha256).await {
                    Ok(()) => report.scanned += 1,
                    Err(_) => report.scan_failures += 1,
                }
            }
        }
        report
    }

    /// The engine whose verdicts do not count as a scan ([`argus_media::NOT_SCANNED`]), when this
    /// pipeline's scanner really scans: files held while scanning was turned off are scanned.
    fn not_scanned(&self) -> Option<&'static str> {
        self.scanner.as_ref().filter(|s| s.scans()).map(|_| argus_media::NOT_SCANNED)
    }

    /// A name for one claim: the replica's and a random part, so that a task whose lease ran
    /// out and was taken over (on this replica too) can no longer record what it did.
    fn claimant(&self) -> String {
        format!("{}/{:016x}", self.settings.replica, rand::random::<u64>())
    }

    /// The wait before the next attempt of `job`: the base doubled per earlier attempt, capped.
    fn retry(&self, job: &MediaJob, reason: &str) -> FetchOutcome {
        let factor = 1u32.checked_shl(job.attempts.min(16)).unwrap_or(u32::MAX);
        let after = self.settings.retry_base.saturating_mul(factor).min(self.settings.retry_max);
        FetchOutcome::Retry { reason: reason.to_owned(), after }
    }

    /// Fetches, checks and holds one file; what became of it.
    async fn fetch_one(
        &self,
        connector: &Connector,
        session: &Session,
        caps: &MediaCapabilities,
        job: &MediaJob,
    ) -> FetchOutcome {
        let ended = |status, reason: String| FetchOutcome::Ended { status, reason };
        let Ok(uri) = job.mxc_uri.parse::<MxcUri>() else {
            return ended(AttachmentStatus::Unavailable, "INVALID_MXC: not a well-formed mxc:// URI".into());
        };
        if let Some(file) = &job.file
            && let Err(error) = argus_crypto::attachment::AttachmentKey::from_file(file)
        {
            return ended(AttachmentStatus::Undecryptable, format!("{}: {error}", error.code()));
        }
        let cap = caps
            .upload_size
            .filter(|&u| u > 0)
            .map_or(self.settings.max_file_bytes, |u| u.min(self.settings.max_file_bytes));
        if job.declared_size.is_some_and(|size| size > cap) {
            return ended(
                AttachmentStatus::TooLarge,
                format!("TOO_LARGE: declared over the cap of {cap} bytes"),
            );
        }
        // Every request goes to the session's homeserver (or its content scanner), whatever
        // server the mxc:// URI names: that is what the bound is for.
        let permit = self.host_slots(&session.homeserver().server()).acquire_owned().await;
        let limits = MediaLimits { max_file_bytes: cap };
        let download = match connector.download_media(session, caps, &uri, job.file.as_ref(), &limits).await {
            Ok(download) => download,
            Err(error) => return self.connector_outcome(job, &error, cap),
        };
        let failure: BodyFailure = Arc::default();
        let slot = Arc::clone(&failure);
        let body = download.body.map_err(move |e| {
            let code = e.code();
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(e);
            }
            code
        });
        let staged = self.staging.stage(body, cap).await;
        drop(permit);
        let staged = match staged {
            Ok(staged) => staged,
            Err(argus_media::Error::TooLarge { .. }) => {
                return ended(AttachmentStatus::TooLarge, format!("TOO_LARGE: over the cap of {cap} bytes"));
            }
            Err(error) => {
                let typed = failure.lock().ok().and_then(|mut f| f.take());
                return match typed {
                    Some(e) => self.connector_outcome(job, &e, cap),
                    None => self.retry(job, &format!("{}: the file could not be staged", error.code())),
                };
            }
        };
        let staged = match &job.file {
            None => staged,
            Some(file) => match self.staging.decrypt(&staged, file).await {
                Ok(plain) => {
                    // Removing the ciphertext frees its pages (a fraction of a second for a
                    // large file): done beside the rest, not in its way.
                    let ciphertext = staged;
                    tokio::task::spawn_blocking(move || drop(ciphertext));
                    plain
                }
                Err(argus_media::Error::Tampered) => {
                    return ended(
                        AttachmentStatus::Tampered,
                        "TAMPERED: the ciphertext's SHA-256 is not the one its message declared".into(),
                    );
                }
                Err(argus_media::Error::InvalidEncryptedFile(code)) => {
                    return ended(
                        AttachmentStatus::Undecryptable,
                        format!("{code}: the encrypted file cannot be opened"),
                    );
                }
                Err(error) => {
                    return self.retry(job, &format!("{}: the file could not be decrypted", error.code()));
                }
            },
        };
        if let Err(error) = self.blobs.put(&staged).await {
            return self.retry(job, &format!("{}: the blob store did not take the file", error.code()));
        }
        FetchOutcome::Fetched(NewBlob {
            sha256: staged.sha256,
            size: staged.size,
            sniffed_mimetype: staged.sniffed_mimetype.clone(),
        })
    }

    /// What a connector's refusal makes of `job`: for good when the homeserver (or its
    /// scanner, or the policy) says no, a retry when it may answer later.
    fn connector_outcome(&self, job: &MediaJob, error: &argus_matrix::Error, cap: u64) -> FetchOutcome {
        use argus_matrix::Error as E;
        let ended = |status, reason: String| FetchOutcome::Ended { status, reason };
        match error {
            E::MediaTooLarge { .. } => {
                ended(AttachmentStatus::TooLarge, format!("TOO_LARGE: over the cap of {cap} bytes"))
            }
            E::MediaNotFound => {
                ended(AttachmentStatus::Unavailable, "NOT_FOUND: the homeserver does not serve it".into())
            }
            E::MediaRefused { code } => {
                ended(AttachmentStatus::Unavailable, format!("{code}: the media route refused to serve it"))
            }
            E::OutboundPolicy(_) => {
                ended(AttachmentStatus::Unavailable, format!("{}: {error}", error.code()))
            }
            _ => self.retry(job, &format!("{}: {error}", error.code())),
        }
    }

    /// The semaphore of files fetched at once from `host`.
    fn host_slots(&self, host: &str) -> Arc<tokio::sync::Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(hosts.entry(host.to_owned()).or_insert_with(|| {
            Arc::new(tokio::sync::Semaphore::new(self.settings.concurrency_per_homeserver.max(1)))
        }))
    }

    /// Scans blob `sha256` and records the verdict; an error (no scanner, the scanner down, a
    /// limit reached, an unexpected reply) leaves it unscanned: never clean.
    pub async fn scan(&self, store: &Store, sha256: &Sha256Digest) -> Result<()> {
        let Some(scanner) = &self.scanner else {
            return Err(Error::Media(argus_media::Error::ScannerUnavailable(
                "no scanner is configured".into(),
            )));
        };
        let body = self.blobs.get(sha256, None).await.map_err(Error::Media)?;
        let report = scanner.scan(body).await.map_err(|error| {
            tracing::warn!(blob = %sha256, code = error.code(), "a file could not be scanned; it stays pending");
            Error::Media(error)
        })?;
        let verdict = match report.verdict {
            Verdict::Clean => BlobVerdict::Clean,
            Verdict::Infected { threat } => {
                tracing::warn!(blob = %sha256, threat = %threat, "the scanner found a threat; the file is quarantined");
                BlobVerdict::Infected(threat)
            }
        };
        let scan = ScanRecord { verdict, engine: report.engine, at: OffsetDateTime::now_utc() };
        let (st, sha) = (store.clone(), *sha256);
        blocking(move || st.record_scan(&sha, &scan)).await.map_err(Error::from)?;
        Ok(())
    }

    /// One pass of the media worker: scans the held files no scanner judged yet, then fetches
    /// the due files of watched rooms with their watch's token.
    pub async fn work_once(&self, services: &Arc<Services>) -> MediaReport {
        let mut report = MediaReport::default();
        let store = &services.store;
        if self.scanner.is_some() {
            let (st, batch, not_scanned) = (store.clone(), self.settings.batch, self.not_scanned());
            let now = OffsetDateTime::now_utc();
            if let Ok(due) = blocking(move || st.blobs_due_for_scan(now, not_scanned, batch)).await {
                for sha256 in due {
                    match self.scan(store, &sha256).await {
                        Ok(()) => report.scanned += 1,
                        Err(Error::Media(argus_media::Error::ScannerUnavailable(_))) => {
                            // The scanner is away: the others would fail alike.
                            report.scan_failures += 1;
                            break;
                        }
                        Err(_) => {
                            // This file alone (a limit, a reply cut short): tried again later,
                            // after the others.
                            report.scan_failures += 1;
                            let (st, sha) = (store.clone(), sha256);
                            let retry_at = now + self.settings.retry_max.min(SCAN_RETRY);
                            let _ = blocking(move || st.record_scan_failure(&sha, retry_at)).await;
                        }
                    }
                }
            }
        }
        let Some(keys) = &services.token_keys else { return report };
        let claimant = self.claimant();
        // The worker fetches its files one after the other: a few at a time, so that none waits
        // past its lease.
        let (st, replica, lease, batch) =
            (store.clone(), claimant.clone(), self.settings.lease, self.settings.batch.min(WORKER_BATCH));
        let jobs =
            match blocking(move || st.claim_watched_media(&replica, OffsetDateTime::now_utc(), lease, batch))
                .await
            {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(code = error.code(), "files of watched rooms could not be claimed");
                    return report;
                }
            };
        let mut caps: HashMap<String, Option<MediaCapabilities>> = HashMap::new();
        for job in jobs {
            let Some((watch_id, owner, sealed)) = &job.watch else {
                report += self
                    .record(store, &claimant, &job, self.retry(&job, "NO_TOKEN: no watch lends a token"))
                    .await;
                continue;
            };
            let binding = crate::token_keys::Binding::of(&job.org, &job.room_id, &job.homeserver, owner);
            let (st, id) = (store.clone(), *watch_id);
            let shared = blocking(move || st.watch_credential(id)).await;
            let session = match (keys.open(sealed, binding), shared) {
                // A watch given a refresh token reads with its account's shared pair, renewed
                // as the runs renew it (under the account's renewal lease, a holder of its own).
                (Ok(_), Ok(Some(credential))) => {
                    match crate::scheduler::account_tokens(services, keys, &claimant, credential) {
                        Ok(tokens) => Session::new(job.homeserver.clone(), tokens),
                        Err(error) => {
                            let reason =
                                format!("{}: the account's token is not available now", error.code());
                            report += self.record(store, &claimant, &job, self.retry(&job, &reason)).await;
                            continue;
                        }
                    }
                }
                (Ok(_), Err(error)) => {
                    let reason = format!("{}: the account's token could not be read", error.code());
                    report += self.record(store, &claimant, &job, self.retry(&job, &reason)).await;
                    continue;
                }
                (Ok(credentials), Ok(None)) => {
                    Session::with_token(job.homeserver.clone(), credentials.access_token)
                }
                (Err(_), _) => {
                    report += self
                        .record(
                            store,
                            &claimant,
                            &job,
                            self.retry(&job, "TOKEN_UNAVAILABLE: the watch's token does not open"),
                        )
                        .await;
                    continue;
                }
            };
            let known = match caps.get(job.homeserver.as_str()) {
                Some(known) => *known,
                None => {
                    let found = services.connector.media_capabilities(&session).await.ok();
                    caps.insert(job.homeserver.as_str().to_owned(), found);
                    found
                }
            };
            let outcome = match &known {
                Some(c) => self.fetch_one(&services.connector, &session, c, &job).await,
                None => self.retry(&job, "HOMESERVER_UNAVAILABLE: its media support is unknown"),
            };
            report += self.record(store, &claimant, &job, outcome).await;
        }
        report
    }

    /// Runs [`Media::work_once`] every `interval` until `stop` is notified.
    pub async fn run_worker(
        self: Arc<Self>,
        services: Arc<Services>,
        interval: Duration,
        stop: Arc<tokio::sync::Notify>,
    ) {
        loop {
            let report = self.work_once(&services).await;
            if report != MediaReport::default() {
                tracing::info!(
                    fetched = report.fetched,
                    scanned = report.scanned,
                    retried = report.retried,
                    scan_failures = report.scan_failures,
                    "media worker pass"
                );
            }
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Scans every held blob again (after a signature update); how many were judged, and how
    /// many the scanner could not judge (they keep their earlier verdict).
    pub async fn rescan_all(&self, store: &Store) -> Result<MediaReport> {
        let mut report = MediaReport::default();
        let mut after: Option<Sha256Digest> = None;
        loop {
            let (st, from) = (store.clone(), after);
            let page = blocking(move || st.blobs_after(from.as_ref(), 256)).await.map_err(Error::from)?;
            let Some(last) = page.last().copied() else { break };
            for sha256 in &page {
                match self.scan(store, sha256).await {
                    Ok(()) => report.scanned += 1,
                    Err(_) => report.scan_failures += 1,
                }
            }
            after = Some(last);
        }
        Ok(report)
    }
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> argus_store::Result<T> + Send + 'static,
) -> argus_store::Result<T> {
    tokio::task::spawn_blocking(f).await.unwrap_or(Err(argus_store::Error::Unavailable))
}
