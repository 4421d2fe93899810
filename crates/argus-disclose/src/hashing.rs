//! Files written and hashed in one pass: every payload file goes through a [`Payload`], which
//! hashes its bytes (SHA-256 and SHA-512) as they are written and appends its lines to the two
//! payload manifests, so that nothing is read twice and memory does not grow with the package.

use std::{
    fs::{self, File},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::mpsc::{SyncSender, sync_channel},
    thread::JoinHandle,
};

use bytes::Bytes;

use sha2::{Digest as _, Sha256, Sha512};

use crate::Result;

/// Bytes of the write buffer of a large file.
const BUFFER: usize = 1 << 20;
/// Bytes of the write buffer of a small file.
const SMALL_BUFFER: usize = 64 << 10;

/// Chunks queued for a file's SHA-512 thread.
const QUEUED: usize = 16;

/// Where a file's SHA-512 is computed: as it is written, or (for a large file written in
/// chunks) on a thread of its own, so that the two digests take two cores.
enum Sha512Of {
    Inline(Sha512),
    Thread(SyncSender<Bytes>, JoinHandle<Sha512>),
}

/// A file being written, hashed as it goes.
pub(crate) struct HashingFile {
    out: BufWriter<File>,
    sha256: Sha256,
    sha512: Sha512Of,
    size: u64,
}

impl HashingFile {
    fn create(path: &Path, threaded: bool) -> io::Result<Self> {
        let sha512 = if threaded {
            let (chunks, queue) = sync_channel::<Bytes>(QUEUED);
            let hashing =
                std::thread::Builder::new().name("argus-disclose-sha512".into()).spawn(move || {
                    let mut hasher = Sha512::new();
                    for chunk in queue {
                        hasher.update(&chunk);
                    }
                    hasher
                })?;
            Sha512Of::Thread(chunks, hashing)
        } else {
            Sha512Of::Inline(Sha512::new())
        };
        let capacity = if threaded { BUFFER } else { SMALL_BUFFER };
        Ok(Self {
            out: BufWriter::with_capacity(capacity, File::create(path)?),
            sha256: Sha256::new(),
            sha512,
            size: 0,
        })
    }

    /// Writes a chunk (without copying it for the SHA-512 thread).
    pub(crate) fn write_chunk(&mut self, chunk: Bytes) -> io::Result<()> {
        self.out.write_all(&chunk)?;
        self.sha256.update(&chunk);
        self.size += chunk.len() as u64;
        match &mut self.sha512 {
            Sha512Of::Inline(hasher) => hasher.update(&chunk),
            Sha512Of::Thread(chunks, _) => {
                chunks.send(chunk).map_err(|_| io::Error::other("the hashing thread stopped"))?
            }
        }
        Ok(())
    }

    fn sha512(self) -> io::Result<[u8; 64]> {
        match self.sha512 {
            Sha512Of::Inline(hasher) => Ok(hasher.finalize().into()),
            Sha512Of::Thread(chunks, hashing) => {
                drop(chunks);
                let hasher = hashing.join().map_err(|_| io::Error::other("the hashing thread failed"))?;
                Ok(hasher.finalize().into())
            }
        }
    }
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        let written = buf.get(..n).unwrap_or_default();
        self.sha256.update(written);
        match &mut self.sha512 {
            Sha512Of::Inline(hasher) => hasher.update(written),
            Sha512Of::Thread(chunks, _) => chunks
                .send(Bytes::copy_from_slice(written))
                .map_err(|_| io::Error::other("the hashing thread stopped"))?,
        }
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What a finished file hashed to.
#[derive(Debug, Clone)]
pub(crate) struct Hashed {
    /// SHA-256, hex.
    pub(crate) sha256: String,
}

/// The payload (`data/…`) of a bag being written, with its manifests.
pub(crate) struct Payload {
    root: PathBuf,
    manifest256: BufWriter<File>,
    manifest512: BufWriter<File>,
    /// Octets and files so far (`Payload-Oxum`).
    pub(crate) octets: u64,
    pub(crate) files: u64,
}

impl Payload {
    /// Starts the payload of the bag at `root` (its manifests are written at its top).
    pub(crate) fn new(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("data"))?;
        Ok(Self {
            root: root.to_owned(),
            manifest256: BufWriter::new(File::create(root.join("manifest-sha256.txt"))?),
            manifest512: BufWriter::new(File::create(root.join("manifest-sha512.txt"))?),
            octets: 0,
            files: 0,
        })
    }

    /// Creates `name` (a bag path under `data/`, `/`-separated) and its parent folders.
    pub(crate) fn create(&self, name: &str) -> Result<HashingFile> {
        self.create_with(name, false)
    }

    /// Creates a large file, written in chunks ([`HashingFile::write_chunk`]): its SHA-512 is
    /// computed on a thread of its own.
    pub(crate) fn create_large(&self, name: &str) -> Result<HashingFile> {
        self.create_with(name, true)
    }

    fn create_with(&self, name: &str, threaded: bool) -> Result<HashingFile> {
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        Ok(HashingFile::create(&path, threaded)?)
    }

    /// Finishes a file created by [`Payload::create`]: flushes it and records it in the
    /// manifests.
    pub(crate) fn finish(&mut self, name: &str, mut file: HashingFile) -> Result<Hashed> {
        file.out.flush()?;
        let size = file.size;
        let sha256 = hex::encode(std::mem::take(&mut file.sha256).finalize());
        let sha512 = hex::encode(file.sha512()?);
        writeln!(self.manifest256, "{sha256}  {name}")?;
        writeln!(self.manifest512, "{sha512}  {name}")?;
        self.octets += size;
        self.files += 1;
        Ok(Hashed { sha256 })
    }

    /// Writes a whole small file.
    pub(crate) fn write(&mut self, name: &str, bytes: &[u8]) -> Result<Hashed> {
        let mut file = self.create(name)?;
        file.write_all(bytes)?;
        self.finish(name, file)
    }

    /// Closes the manifests.
    pub(crate) fn close(mut self) -> Result<(u64, u64)> {
        self.manifest256.flush()?;
        self.manifest512.flush()?;
        Ok((self.octets, self.files))
    }
}

/// SHA-512 (hex) of a file, read in chunks.
pub(crate) fn sha512_file(path: &Path) -> Result<String> {
    let mut hasher = Sha512::new();
    io::copy(&mut File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// SHA-256 and SHA-512 (hex) of a file, read once, in chunks.
pub(crate) fn both_of_file(path: &Path) -> Result<(String, String)> {
    let mut file = File::open(path)?;
    let mut sha256 = Sha256::new();
    let mut sha512 = Sha512::new();
    let mut buf = vec![0_u8; BUFFER];
    loop {
        let n = io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        sha256.update(chunk);
        sha512.update(chunk);
    }
    Ok((hex::encode(sha256.finalize()), hex::encode(sha512.finalize())))
}
