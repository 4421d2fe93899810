//! The content-addressed blob store: one trait, a filesystem and an S3-compatible backend.

mod file;
mod s3;

use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argus_domain::Sha256Digest;
use futures::future::BoxFuture;

pub use file::FileBlobStore;
pub use s3::{S3BlobStore, S3Location};

use crate::{ByteStream, Error, Result, StagedFile};

/// Where kept files live, addressed by the SHA-256 of their bytes: a file referenced from many
/// messages is stored once.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores the staged file under its digest. Idempotent: a blob already held is `Ok` and
    /// not written again. A failure leaves no partial blob.
    fn put<'a>(&'a self, staged: &'a StagedFile) -> BoxFuture<'a, Result<()>>;

    /// Streams the blob, or the byte `range` of it (`start..end`, end excluded, within the
    /// blob, else [`Error::RangeNotSatisfiable`]); [`Error::NotFound`] when it is not held.
    /// Memory does not grow with the blob's size.
    fn get<'a>(
        &'a self,
        digest: &'a Sha256Digest,
        range: Option<Range<u64>>,
    ) -> BoxFuture<'a, Result<ByteStream>>;

    /// The blob's size, or `None` when it is not held.
    fn size<'a>(&'a self, digest: &'a Sha256Digest) -> BoxFuture<'a, Result<Option<u64>>>;

    /// The backend's name: `file` or `s3`.
    fn name(&self) -> &'static str;
}

/// Opens the store the `[media] store` setting names: `file` (under `data_dir/media/blobs`) or
/// `s3://bucket?endpoint=…&region=…` (credentials from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`).
pub fn open_blob_store(spec: &str, data_dir: &Path) -> Result<Arc<dyn BlobStore>> {
    if spec == "file" {
        return Ok(Arc::new(FileBlobStore::open(blob_dir(data_dir))?));
    }
    if spec.starts_with("s3://") {
        return Ok(Arc::new(S3BlobStore::from_env(&S3Location::parse(spec)?)?));
    }
    Err(Error::Config("`store` is neither \"file\" nor an s3:// URL".to_owned()))
}

/// The folder of everything media under a data directory (`{data_dir}/media`).
pub const MEDIA_DIR: &str = "media";

/// Where the filesystem blob store keeps its files under a data directory.
pub fn blob_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(MEDIA_DIR).join("blobs")
}

/// Where fetched files are staged under a data directory (whatever the blob store).
pub fn staging_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(MEDIA_DIR).join("staging")
}

/// Checks `range` against a blob of `size` bytes.
fn check_range(range: Option<Range<u64>>, size: u64) -> Result<Range<u64>> {
    match range {
        None => Ok(0..size),
        Some(range) if range.start <= range.end && range.end <= size => Ok(range),
        Some(_) => Err(Error::RangeNotSatisfiable { size }),
    }
}

/// The blob's key below the store's root: `ab/cd/<hex>`.
fn blob_key(digest: &Sha256Digest) -> String {
    let hex = digest.to_hex();
    format!("{}/{}/{hex}", &hex[..2], &hex[2..4])
}

/// Creates `dir` and its missing parents with mode `0700`, and sets `dir` itself to `0700`.
pub(crate) fn create_private_dir(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Error, Sha256Digest, blob_key, check_range, open_blob_store};

    #[test]
    fn ranges_must_lie_within_the_blob() {
        assert_eq!(check_range(None, 10).unwrap(), 0..10);
        assert_eq!(check_range(Some(3..10), 10).unwrap(), 3..10);
        assert_eq!(check_range(Some(10..10), 10).unwrap(), 10..10);
        assert!(matches!(check_range(Some(5..11), 10), Err(Error::RangeNotSatisfiable { size: 10 })));
        #[expect(clippy::reversed_empty_ranges, reason = "a reversed range is what is refused")]
        let reversed = Some(6..5);
        assert!(check_range(reversed, 10).is_err());
    }

    #[test]
    fn keys_fan_out_by_the_first_bytes() {
        let digest = Sha256Digest([0xab; 32]);
        assert_eq!(blob_key(&digest), format!("ab/ab/{}", "ab".repeat(32)));
    }

    #[test]
    fn unknown_store_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let error = open_blob_store("ftp://x", dir.path()).unwrap_err();
        assert_eq!(error.code(), "CONFIG");
        assert_eq!(open_blob_store("file", dir.path()).unwrap().name(), "file");
        assert!(dir.path().join("media/blobs").is_dir());
    }
}
