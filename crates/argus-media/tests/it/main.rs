//! Integration tests of argus-media: the blob store suite on both backends, staging and
//! decryption, and scanning with a real clamd.

#![expect(clippy::unwrap_used, reason = "the suite's fixtures fail loudly: a panic there is a failed test")]

mod blob_store;
mod scanner;
mod staging;

use argus_media::{ByteStream, StagedFile, Staging};
use bytes::Bytes;
use futures::TryStreamExt as _;

/// Bytes that differ from one call to the next (so content addresses never collide across
/// tests sharing a server).
fn unique_bytes(len: usize) -> Vec<u8> {
    use rand::RngCore as _;
    let mut bytes = vec![0_u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// Stages `bytes`, sent in chunks of `chunk` bytes.
async fn stage(staging: &Staging, bytes: &[u8], chunk: usize) -> StagedFile {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        bytes.chunks(chunk.max(1)).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    staging.stage(futures::stream::iter(chunks), u64::MAX).await.unwrap()
}

/// A stream's bytes and how many chunks they came in.
async fn collect(stream: ByteStream) -> (Vec<u8>, usize) {
    let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
    (chunks.concat(), chunks.len())
}

/// The names in a directory.
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}
