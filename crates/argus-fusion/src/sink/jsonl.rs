//! The JSON Lines file sink: one JSON object per line, appended, synced once per batch.

use std::{
    collections::BTreeMap,
    fs::{DirBuilder, File, OpenOptions},
    io::{self, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use argus_domain::OrgId;

use super::{Sink, SinkFuture};
use crate::{Error, NetworkNode};

/// The placeholder a path may contain to get one file per organisation.
pub const ORG_PLACEHOLDER: &str = "{org}";

/// Appends each entity as one line of JSON to a file.
///
/// [`Sink::deliver`] serialises into memory; [`Sink::flush`] appends the buffered lines and
/// `fsync`s the file. The file is opened in append mode at every flush (so an external log
/// rotation is picked up); it is created readable by its owner only, and missing parent
/// directories likewise. If a previous crash left a torn last line, a newline is written first
/// so the next entity starts on its own line.
///
/// A path containing `{org}` gives one file per organisation (`/var/lib/argus/{org}.jsonl`), so
/// organisations never share a file.
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    path: Arc<PathBuf>,
    /// Buffered lines per file, in delivery order.
    buffers: Arc<Mutex<BTreeMap<PathBuf, Vec<u8>>>>,
}

impl JsonLinesSink {
    /// A sink appending to `path` (which may contain `{org}`). Nothing is opened until the
    /// first flush.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: Arc::new(path.into()), buffers: Arc::new(Mutex::new(BTreeMap::new())) }
    }

    /// The path (template) this sink appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file entities of `org` go to.
    pub fn path_for(&self, org: &OrgId) -> io::Result<PathBuf> {
        let Some(template) = self.path.to_str().filter(|p| p.contains(ORG_PLACEHOLDER)) else {
            return Ok(self.path.as_ref().clone());
        };
        // Organisation ids are [A-Za-z0-9._-]; only a leading dot could escape or hide a file.
        if org.as_str().starts_with('.') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this organisation id cannot be used in a file name",
            ));
        }
        Ok(PathBuf::from(template.replace(ORG_PLACEHOLDER, org.as_str())))
    }

    fn append(path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let mut dirs = DirBuilder::new();
            dirs.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut dirs, 0o700);
            dirs.create(parent)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        if ends_without_newline(&mut file)? {
            file.write_all(b"\n")?;
        }
        file.write_all(bytes)?;
        file.sync_data()
    }
}

/// Whether a non-empty file's last byte is not a newline (a torn line from a crash).
fn ends_without_newline(file: &mut File) -> io::Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    Ok(last[0] != b'\n')
}

impl Sink for JsonLinesSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn deliver<'a>(&'a self, entity: &'a NetworkNode) -> SinkFuture<'a> {
        Box::pin(async move {
            let path = self.path_for(&entity.organisation)?;
            let mut line = serde_json::to_vec(entity)?;
            line.push(b'\n');
            let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
            buffers.entry(path).or_default().extend_from_slice(&line);
            Ok(())
        })
    }

    fn flush(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            let buffers = std::mem::take(&mut *self.buffers.lock().unwrap_or_else(PoisonError::into_inner));
            if buffers.is_empty() {
                return Ok(());
            }
            // On failure the buffered lines are dropped: their rows stay pending in the outbox
            // and are delivered again.
            tokio::task::spawn_blocking(move || {
                buffers.iter().try_for_each(|(path, bytes)| Self::append(path, bytes))
            })
            .await
            .map_err(|_| Error::Join)??;
            Ok(())
        })
    }
}
