//! Staging: a fetched body streamed into a temporary file while it is hashed and counted
//! against a cap, and an encrypted file's ciphertext checked and decrypted into another one.

use std::fmt;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};

use argus_crypto::attachment::AttachmentKey;
use argus_domain::{EncryptedFile, Sha256Digest};
use bytes::Bytes;
use futures::{Stream, StreamExt as _, TryStreamExt as _};
use sha2::Digest as _;
use tempfile::TempPath;
use tokio::io::AsyncWriteExt as _;

use crate::{ByteStream, Error, Result, sniff_mimetype};

/// How many leading bytes are kept to sniff the MIME type.
const SNIFF_BYTES: usize = 8 * 1024;

/// The buffer of file reads and writes.
const IO_CHUNK: usize = 256 * 1024;

/// Bytes of a staged file written between two hand-overs to the disk ([`Staging::stage`],
/// [`Staging::decrypt`]).
const FLUSH_BEHIND: u64 = 32 * 1024 * 1024;

/// Received chunks on their way to the hashing thread of [`Staging::stage`] (a few hundred KiB
/// at most: what the network hands over at a time).
const RECEIVED_QUEUE: usize = 16;

/// A file staged on local disk: its digest, size and sniffed MIME type. The file is removed
/// when this is dropped.
pub struct StagedFile {
    /// SHA-256 of the staged bytes.
    pub sha256: Sha256Digest,
    /// Size of the staged bytes.
    pub size: u64,
    /// The MIME type its first bytes show ([`sniff_mimetype`]).
    pub sniffed_mimetype: String,
    path: TempPath,
}

impl fmt::Debug for StagedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StagedFile")
            .field("sha256", &self.sha256)
            .field("size", &self.size)
            .field("sniffed_mimetype", &self.sniffed_mimetype)
            .finish_non_exhaustive()
    }
}

impl StagedFile {
    /// Where the staged bytes are (a temporary file in the staging directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The staged bytes as a stream (to scan them, say), read in chunks from disk.
    pub async fn stream(&self) -> Result<ByteStream> {
        let file = tokio::fs::File::open(&self.path).await?;
        Ok(tokio_util::io::ReaderStream::with_capacity(file, IO_CHUNK).map_err(Error::from).boxed())
    }
}

/// The staging directory: where fetched files wait, each in a temporary file of its own, until
/// they are stored or refused.
#[derive(Clone)]
pub struct Staging {
    dir: PathBuf,
}

impl fmt::Debug for Staging {
    /// Without its folder: paths stay out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Staging").finish_non_exhaustive()
    }
}

impl Staging {
    /// Uses `dir` (created when missing, mode `0700`) for staged files.
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        crate::store::create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// Streams `body` into a new staged file while hashing it. More than `cap` bytes is
    /// [`Error::TooLarge`] (the body is not read further and the temporary file is removed); a
    /// failing body is [`Error::Body`]. Memory holds a few chunks at a time, never the file.
    ///
    /// The chunks are hashed on a thread of their own while this task receives and writes the
    /// next ones, and what is written is handed to the disk as the body comes (every 32 MiB),
    /// in the background, so that storing the file (an fsync) does not wait for all of it at
    /// the end.
    pub async fn stage<E: fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin + Send,
        cap: u64,
    ) -> Result<StagedFile> {
        self.stage_with(body, cap).await
    }

    async fn stage_with<E: fmt::Display>(
        &self,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin + Send,
        cap: u64,
    ) -> Result<StagedFile> {
        let (file, path) = self.temp_file()?;
        let flush = file.try_clone()?;
        let mut out = tokio::io::BufWriter::with_capacity(IO_CHUNK, tokio::fs::File::from_std(file));
        let (chunks, mut to_hash) = tokio::sync::mpsc::channel::<Bytes>(RECEIVED_QUEUE);
        let hashing = std::thread::Builder::new().name("argus-media-hash".into()).spawn(move || {
            let mut hasher = sha2::Sha256::new();
            let mut head = Vec::with_capacity(SNIFF_BYTES);
            while let Some(chunk) = to_hash.blocking_recv() {
                keep_head(&mut head, &chunk);
                hasher.update(&chunk);
            }
            (hasher, head)
        })?;
        let mut size: u64 = 0;
        let mut flushed: u64 = 0;
        let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| Error::Body(error.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > cap {
                return Err(Error::TooLarge { cap });
            }
            // The same bytes (reference-counted, not copied) to the hashing thread.
            chunks.send(chunk.clone()).await.map_err(|_| Error::Io(std::io::ErrorKind::BrokenPipe))?;
            out.write_all(&chunk).await?;
            if size - flushed >= FLUSH_BEHIND && flushing.as_ref().is_none_or(|f| f.is_finished()) {
                flushed = size;
                let file = flush.try_clone()?;
                // Only a head start: the blob store's own fsync is what makes the file durable
                // and reports a failure.
                flushing = Some(tokio::task::spawn_blocking(move || {
                    let _ = file.sync_data();
                }));
            }
        }
        drop(chunks);
        out.flush().await?;
        if let Some(flushing) = flushing {
            let _ = flushing.await;
        }
        let (hasher, head) = tokio::task::spawn_blocking(move || hashing.join())
            .await
            .map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?
            .map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?;
        Ok(staged(hasher, size, &head, path))
    }

    /// Decrypts a staged ciphertext into a new staged file. The `EncryptedFile` is checked
    /// first ([`Error::InvalidEncryptedFile`] with its code), then the ciphertext's SHA-256 is
    /// compared with the declared one in constant time ([`Error::Tampered`]) before a byte is
    /// decrypted; the plaintext is hashed as it is written.
    pub async fn decrypt(&self, ciphertext: &StagedFile, file: &EncryptedFile) -> Result<StagedFile> {
        let key = AttachmentKey::from_file(file)?;
        key.verify_ciphertext(&ciphertext.sha256.0)?;
        let source = ciphertext.path.to_path_buf();
        let (out, path) = self.temp_file()?;
        tokio::task::spawn_blocking(move || decrypt_file(&key, &source, out, path))
            .await
            .map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?
    }

    fn temp_file(&self) -> Result<(std::fs::File, TempPath)> {
        let file = tempfile::Builder::new().prefix("staged-").tempfile_in(&self.dir)?;
        Ok(file.into_parts())
    }
}

/// The size of each buffer of the ring [`decrypt_file`] passes between its threads.
const RING_BUFFER: usize = 1024 * 1024;

/// How many buffers the ring holds: enough that neither side waits on the other's every chunk
/// (the two go at nearly the same pace); memory stays 8 MiB.
const RING: usize = 8;

/// A buffer of the ring and how many of its bytes are the file's.
type Filled = (Vec<u8>, usize);

/// Decrypts `source` into `out` over a ring of reusable buffers: this thread reads, decrypts
/// and writes each buffer, then hands it to a hashing thread, which hands it back once hashed;
/// the two cores each take one side (the digest, the slowest step, is no longer in line with
/// the rest). Nothing is allocated or zeroed per chunk.
fn decrypt_file(
    key: &AttachmentKey,
    source: &Path,
    out: std::fs::File,
    path: TempPath,
) -> Result<StagedFile> {
    let mut input = std::fs::File::open(source)?;
    let mut out_file = out;
    let flush = out_file.try_clone()?;
    let mut cipher = key.cipher();
    let (free, free_buffers) = std::sync::mpsc::sync_channel::<Vec<u8>>(RING);
    for _ in 0..RING {
        free.send(vec![0; RING_BUFFER]).map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?;
    }
    let (written, to_hash) = std::sync::mpsc::sync_channel::<Filled>(RING);
    std::thread::scope(|scope| {
        let hashing =
            std::thread::Builder::new().name("argus-media-hash".into()).spawn_scoped(scope, move || {
                let mut hasher = sha2::Sha256::new();
                let mut head = Vec::with_capacity(SNIFF_BYTES);
                for (buf, n) in to_hash {
                    keep_head(&mut head, &buf[..n]);
                    hasher.update(&buf[..n]);
                    // The writer may have finished: a buffer nobody takes back is dropped.
                    let _ = free.send(buf);
                }
                (hasher, head)
            })?;
        // What is written is handed to the disk every FLUSH_BEHIND bytes, in the background (a
        // head start for the blob store's fsync, which is what reports a failure).
        let (flush_now, flush_requests) = std::sync::mpsc::sync_channel::<()>(1);
        let flusher =
            std::thread::Builder::new().name("argus-media-flush".into()).spawn_scoped(scope, move || {
                for () in flush_requests {
                    let _ = flush.sync_data();
                }
            })?;
        let (mut size, mut flushed) = (0_u64, 0_u64);
        let done = (|| -> Result<()> {
            for mut buf in free_buffers.iter() {
                let n = read_full(&mut input, &mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                cipher.apply(&mut buf[..n]);
                out_file.write_all(&buf[..n])?;
                size += n as u64;
                if size - flushed >= FLUSH_BEHIND && flush_now.try_send(()).is_ok() {
                    flushed = size;
                }
                if written.send((buf, n)).is_err() {
                    return Err(Error::Io(std::io::ErrorKind::BrokenPipe));
                }
            }
            Ok(())
        })();
        drop(written);
        drop(flush_now);
        let (hasher, head) = hashing.join().map_err(|_| Error::Io(std::io::ErrorKind::Interrupted))?;
        let _ = flusher.join();
        done?;
        Ok(staged(hasher, size, &head, path))
    })
}

/// Reads into `buf` until it is full or the file ends; the bytes read.
fn read_full(input: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

fn keep_head(head: &mut Vec<u8>, chunk: &[u8]) {
    let room = SNIFF_BYTES - head.len();
    head.extend_from_slice(&chunk[..room.min(chunk.len())]);
}

fn staged(hasher: sha2::Sha256, size: u64, head: &[u8], path: TempPath) -> StagedFile {
    StagedFile {
        sha256: Sha256Digest(hasher.finalize().into()),
        size,
        sniffed_mimetype: sniff_mimetype(head),
        path,
    }
}
