//! Assembles the application services from a configuration: the one place where the server
//! and every operator command get their store, Matrix connector, cursor key, admission limits
//! and fusion relay, so that `serve` and `argus-tchap ingest` run the same use-case on the same
//! services.

use std::sync::Arc;

use argus_graphql::{Admission, AdmissionLimits, CursorKey, Services};
use argus_matrix::{Connector, ConnectorConfig};
use argus_store::Store;

use crate::{Config, Error, Result};

/// The services built from a configuration, and the fusion relay that delivers what they
/// record (when fusion is enabled).
#[derive(Debug)]
pub struct Assembled {
    /// Store, connector, limits, cursor key and the relay's wake-up.
    pub services: Arc<Services>,
    /// The fusion relay, when `fusion.enabled`; whoever runs it delivers the outbox.
    pub relay: Option<argus_fusion::Relay>,
    /// The scheduler of watched rooms, when `watch.scheduler`; whoever runs it keeps them current.
    pub scheduler: Option<Arc<argus_ingest::scheduler::Scheduler>>,
    /// The live loops of watched accounts, when `watch.scheduler` and `watch.live`.
    pub live: Option<Arc<argus_ingest::live::Live>>,
}

/// Creates the data directories and opens the store the configuration names (applying pending
/// migrations), with the audit key and the legal hold (logged: every process that opens the
/// store may store redactions).
pub async fn open_store(config: &Config) -> Result<Store> {
    config.prepare_directories()?;
    let url = config.database_url.clone();
    let options = config.store_options()?;
    let store = tokio::task::spawn_blocking(move || Store::connect(&url, options))
        .await
        .map_err(|_| Error::Server("the database task failed".into()))?
        .map_err(|e| Error::Server(format!("cannot open the database: {e}")))?;
    config.evidence.log_at_start();
    Ok(store)
}

/// The connector configuration from the server configuration.
pub fn connector_config(config: &Config) -> ConnectorConfig {
    ConnectorConfig {
        stream_deadline: std::time::Duration::from_secs(config.matrix.run_deadline_secs.max(1)),
        allowed_homeservers: config.matrix.allowed_homeservers.clone(),
        allow_private_addresses: config.matrix.allow_private_addresses.clone(),
        external_homeservers: config.matrix.external_homeservers.clone(),
        identity_server: config.matrix.identity_server.clone().filter(|s| !s.trim().is_empty()),
        media_route: config
            .media
            .content_scanner
            .as_ref()
            .map_or(argus_matrix::MediaRoute::Homeserver, |u| argus_matrix::MediaRoute::ContentScanner {
                base_url: u.0.clone(),
            }),
        ..ConnectorConfig::default()
    }
}

/// The media pipeline the configuration describes (`[media]`): the blob store (files under the
/// data directory, or an S3-compatible bucket), the staging area under the data directory, and
/// the scanner (`clamd`; with `scan = "off"` every file is recorded clean as not scanned;
/// with neither, files are held and never judged, so none is served).
pub fn open_media(config: &Config) -> Result<Arc<argus_ingest::Media>> {
    use crate::config::{MediaStore, ScanMode};
    let data_dir = config.data_dir();
    let failed = |e: argus_media::Error| Error::Config(format!("media: {e}"));
    let blobs: Arc<dyn argus_media::BlobStore> = match &config.media.store {
        MediaStore::File => {
            Arc::new(argus_media::FileBlobStore::open(argus_media::blob_dir(&data_dir)).map_err(failed)?)
        }
        MediaStore::S3(at) => Arc::new(
            match (&config.media.s3_access_key_id, &config.media.s3_secret_access_key) {
                (Some(id), Some(secret)) => argus_media::S3BlobStore::new(at, id, secret),
                _ => argus_media::S3BlobStore::from_env(at),
            }
            .map_err(failed)?,
        ),
    };
    let staging = argus_media::Staging::new(argus_media::staging_dir(&data_dir)).map_err(failed)?;
    let scanner: Option<Arc<dyn argus_media::Scanner>> = match (&config.media.scan, &config.media.clamd) {
        (ScanMode::Off, _) => Some(Arc::new(argus_media::ScanningOff)),
        (ScanMode::Clamd, Some(clamd)) => Some(Arc::new(
            argus_media::Clamd::new(&format!("tcp://{}", clamd.authority()), CLAMD_TIMEOUT)
                .map_err(failed)?,
        )),
        (ScanMode::Clamd, None) => None,
    };
    let settings = argus_ingest::MediaSettings {
        max_file_bytes: config.media.max_file_bytes,
        max_run_bytes: config.media.max_run_bytes,
        concurrency_per_homeserver: config.media.concurrency_per_homeserver,
        retry_max: config.media.retry_max(),
        // The first retry waits one pass of the worker, then doubles up to `retry_max`.
        retry_base: config.media.worker_interval(),
        worker_interval: config.media.worker_interval(),
        ..argus_ingest::MediaSettings::default()
    };
    Ok(Arc::new(argus_ingest::Media::new(blobs, scanner, staging, settings)))
}

/// How long one file's scan may take.
const CLAMD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The blob store as the download route reads it.
#[derive(Debug)]
pub struct BlobsOf(pub Arc<dyn argus_media::BlobStore>);

impl crate::media::BlobSource for BlobsOf {
    fn open(
        &self,
        sha256: &argus_domain::Sha256Digest,
        range: Option<std::ops::Range<u64>>,
    ) -> futures::future::BoxFuture<'_, std::io::Result<crate::media::BlobStream>> {
        use futures::TryStreamExt as _;
        let sha256 = *sha256;
        Box::pin(async move {
            let stream = self.0.get(&sha256, range).await.map_err(|e| std::io::Error::other(e.code()))?;
            Ok(Box::pin(stream.map_err(|e| std::io::Error::other(e.code()))) as crate::media::BlobStream)
        })
    }
}

/// The fusion relay over `store` with the configured sinks (whether or not `fusion.enabled`:
/// `argus-tchap fusion relay --once` drains the outbox either way).
pub fn relay(config: &Config, store: Store) -> Result<argus_fusion::Relay> {
    let fusion = config.fusion();
    let sinks = argus_fusion::build_sinks(&fusion).map_err(|e| Error::Config(e.to_string()))?;
    Ok(argus_fusion::Relay::new(store, sinks, fusion.relay_options()))
}

/// Opens the store and builds every service from `config`.
pub async fn assemble(config: &Config) -> Result<Assembled> {
    let store = open_store(config).await?;
    let connector = Connector::new(connector_config(config))
        .map_err(|e| Error::Config(format!("matrix configuration: {e}")))?;
    let mut app = argus_ingest::Services::new(store.clone(), connector);
    app.admission = Admission::new(AdmissionLimits {
        max_concurrent: config.matrix.max_concurrent_ingestions,
        max_concurrent_per_homeserver: config.matrix.max_concurrent_per_homeserver,
        max_concurrent_per_caller: config.matrix.max_concurrent_per_caller,
        per_caller_per_minute: config.matrix.ingestions_per_caller_per_minute,
    });
    let relay = if config.fusion.enabled {
        let relay = relay(config, store)?;
        app.on_ingested = Some(relay.waker());
        Some(relay)
    } else {
        None
    };
    app.limits.run_lease = std::time::Duration::from_secs(config.matrix.run_lease_secs.max(1));
    app.limits.interactive_run_deadline =
        std::time::Duration::from_secs(config.matrix.interactive_run_deadline_secs.max(1));
    app.limits.joined_rooms_per_call = config.matrix.joined_rooms_per_call.max(1);
    app.limits.joined_failures_recorded = config.matrix.joined_failures_recorded;
    app.token_keys = Some(Arc::new(config.token_keys()?));
    app.watch_limits.min_interval_secs = config.watch.min_interval_secs.max(1);
    app.watch_limits.max_per_owner = config.watch.max_per_owner;
    app.watch_limits.max_per_org = config.watch.max_per_organisation;
    app.post_policy = config.post.policy();
    app.media = Some(open_media(config)?);
    let app = Arc::new(app);
    let scheduler = config.watch.scheduler.then(|| {
        Arc::new(argus_ingest::scheduler::Scheduler::new(Arc::clone(&app), config.watch.scheduler_options()))
    });
    let live = (config.watch.scheduler && config.watch.live)
        .then(|| Arc::new(argus_ingest::live::Live::new(Arc::clone(&app), config.watch.live_options())));
    let mut services = Services::over(app);
    services.cursor_key = CursorKey::new(config.cursor_key_or_generated()?);
    services.oversight = Some(Arc::new(argus_graphql::oversight::Oversight {
        keys: config.oversight_keys()?,
        packages_dir: config.packages_dir(),
    }));
    Ok(Assembled { services: Arc::new(services), relay, scheduler, live })
}
