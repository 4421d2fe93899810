//! The JSON Lines file sink: one JSON object per line, appended, synced once per batch.

use std::{
    fs::{self, File, OpenOptions},
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use super::{Sink, SinkFuture};
use crate::{Error, NetworkNode};

/// Appends each entity as one line of JSON to a file.
///
/// [`Sink::deliver`] serialises into memory; [`Sink::flush`] appends the buffered lines and
/// `fsync`s the file. The file is opened in append mode at every flush (so an external log
/// rotation is picked up) and its parent directory is created if missing. If a previous
/// crash left a torn last line, a newline is written first so the next entity starts on its
/// own line.
#[derive(Debug, Clone)]
pub struct JsonLinesSink {
    path: Arc<PathBuf>,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl JsonLinesSink {
    /// A sink appending to `path`. Nothing is opened until the first flush.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: Arc::new(path.into()), buffer: Arc::new(Mutex::new(Vec::new())) }
    }

    /// The file this sink appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path)?;
        if ends_without_newline(&mut file)? {
            file.write_all(b"\n")?;
        }
        file.write_all(bytes)?;
        file.sync_data()
    }
}

/// Whether a non-empty file's last byte is not a newline (a torn line from a crash).
fn ends_without_newline(file: &mut File) -> std::io::Result<bool> {
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
            let mut line = serde_json::to_vec(entity)?;
            line.push(b'\n');
            self.buffer.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&line);
            Ok(())
        })
    }

    fn flush(&self) -> SinkFuture<'_> {
        Box::pin(async move {
            let bytes = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(PoisonError::into_inner));
            if bytes.is_empty() {
                return Ok(());
            }
            let path = Arc::clone(&self.path);
            // On failure the buffered lines are dropped: their rows stay pending in the outbox
            // and are delivered again.
            tokio::task::spawn_blocking(move || Self::append(&path, &bytes))
                .await
                .map_err(|_| Error::Join)??;
            Ok(())
        })
    }
}
