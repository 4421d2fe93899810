//! The filesystem blob store: `<root>/ab/cd/<sha256 hex>`, each blob put under a temporary
//! name in `<root>/.tmp` (same filesystem: hard-linked from its staged file when that is on the
//! same filesystem too, else copied), fsynced, renamed into place and its folder fsynced.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use argus_domain::Sha256Digest;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt as _, StreamExt as _};

use super::{BlobStore, blob_key, check_range, create_private_dir};
use crate::{ByteStream, Error, Result, StagedFile};

/// The largest chunk of a streamed blob: one trip to the blocking pool reads it, so a file up
/// to this size is opened and read in one trip; memory holds a chunk per reader, whatever the
/// blob's size.
const READ_CHUNK: usize = 1024 * 1024;

/// Blobs as files under a root directory (the embedded default). Files are `0600`, folders
/// `0700`.
#[derive(Clone)]
pub struct FileBlobStore {
    root: PathBuf,
    tmp: PathBuf,
}

impl std::fmt::Debug for FileBlobStore {
    /// Without its folders: paths stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBlobStore").finish_non_exhaustive()
    }
}

impl FileBlobStore {
    /// Opens (creating when missing) the store rooted at `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let root = dir.into();
        create_private_dir(&root)?;
        let tmp = root.join(".tmp");
        create_private_dir(&tmp)?;
        Ok(Self { root, tmp })
    }

    fn path_of(&self, digest: &Sha256Digest) -> PathBuf {
        self.root.join(blob_key(digest))
    }
}

impl BlobStore for FileBlobStore {
    fn put<'a>(&'a self, staged: &'a StagedFile) -> BoxFuture<'a, Result<()>> {
        let target = self.path_of(&staged.sha256);
        let (tmp, root, source, size) =
            (self.tmp.clone(), self.root.clone(), staged.path().to_path_buf(), staged.size);
        async move {
            tokio::task::spawn_blocking(move || write_blob(&root, &tmp, &source, &target, size))
                .await
                .map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?
        }
        .boxed()
    }

    fn get<'a>(
        &'a self,
        digest: &'a Sha256Digest,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<ByteStream>> {
        let path = self.path_of(digest);
        async move {
            // Opening, sizing, seeking and the first chunk take one trip to the blocking pool.
            let (first, rest) = blocking(move || {
                let mut file = std::fs::File::open(&path).map_err(not_found_or_io)?;
                let size = file.metadata()?.len();
                let range = check_range(range, size)?;
                if range.start > 0 {
                    file.seek(SeekFrom::Start(range.start))?;
                }
                let mut rest = Rest { file, left: range.end - range.start };
                Ok((rest.next_chunk()?, rest))
            })
            .await?;
            let rest = futures::stream::try_unfold(rest, |mut rest| async move {
                if rest.left == 0 {
                    return Ok(None);
                }
                blocking(move || Ok(Some((rest.next_chunk()?, rest)))).await
            });
            let first = (!first.is_empty()).then_some(Ok(first));
            Ok(futures::stream::iter(first).chain(rest).boxed())
        }
        .boxed()
    }

    fn size<'a>(&'a self, digest: &'a Sha256Digest) -> BoxFuture<'a, Result<Option<u64>>> {
        let path = self.path_of(digest);
        async move {
            match tokio::fs::metadata(&path).await {
                Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
                Ok(_) => Ok(None),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(error) => Err(error.into()),
            }
        }
        .boxed()
    }

    fn name(&self) -> &'static str {
        "file"
    }
}

/// What is left to read of a blob.
struct Rest {
    file: std::fs::File,
    left: u64,
}

impl Rest {
    /// Reads the next chunk (at most [`READ_CHUNK`] bytes); a file shorter than its size said
    /// is an error, never a short answer.
    fn next_chunk(&mut self) -> Result<Bytes> {
        let want = self.left.min(READ_CHUNK as u64);
        let mut chunk = Vec::with_capacity(usize::try_from(want).unwrap_or(READ_CHUNK));
        (&mut self.file).take(want).read_to_end(&mut chunk)?;
        if (chunk.len() as u64) < want {
            return Err(Error::Io(std::io::ErrorKind::UnexpectedEof));
        }
        self.left -= want;
        Ok(Bytes::from(chunk))
    }
}

/// Runs `work` on the blocking pool.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?
}

fn not_found_or_io(error: std::io::Error) -> Error {
    if error.kind() == std::io::ErrorKind::NotFound { Error::NotFound } else { error.into() }
}

/// Puts `source` under a temporary name in `tmp`, fsyncs it, renames it to `target` and fsyncs
/// the folders it created or changed. A blob already at `target` with the right size is kept.
///
/// The staged file is never written again once staged, so when it is on the same filesystem
/// (the staging folder beside the store) it is hard-linked rather than copied: a file is
/// written to disk once, not twice. Elsewhere it is copied.
fn write_blob(root: &Path, tmp: &Path, source: &Path, target: &Path, size: u64) -> Result<()> {
    if std::fs::metadata(target).is_ok_and(|meta| meta.is_file() && meta.len() == size) {
        return Ok(());
    }
    let parent = target.parent().ok_or(Error::Io(std::io::ErrorKind::InvalidInput))?;
    create_private_dir(parent)?;
    let linked = tempfile::Builder::new().prefix("blob-").make_in(tmp, |path| {
        std::fs::hard_link(source, path)?;
        std::fs::File::open(path)
    });
    let temp = match linked {
        Ok(temp) if temp.as_file().metadata()?.len() == size => temp,
        Ok(_) => return Err(Error::Io(std::io::ErrorKind::UnexpectedEof)),
        Err(_) => {
            let mut temp = tempfile::Builder::new().prefix("blob-").tempfile_in(tmp)?;
            let mut input = std::fs::File::open(source)?;
            let copied = std::io::copy(&mut input, temp.as_file_mut())?;
            if copied != size {
                return Err(Error::Io(std::io::ErrorKind::UnexpectedEof));
            }
            temp
        }
    };
    temp.as_file().sync_all()?;
    temp.persist(target).map_err(|error| Error::from(error.error))?;
    // The rename and any new folders are durable once their folders are synced.
    for dir in [parent, parent.parent().unwrap_or(root), root] {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
