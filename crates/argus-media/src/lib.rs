#![doc = include_str!("../README.md")]

mod error;
mod scan;
mod staging;
mod store;

pub use error::{Error, Result};
pub use scan::{Clamd, NOT_SCANNED, ScanReport, Scanner, ScanningOff, Verdict};
pub use staging::{StagedFile, Staging};
pub use store::{
    BlobStore, FileBlobStore, MEDIA_DIR, S3BlobStore, S3Location, blob_dir, open_blob_store, staging_dir,
};

/// A stream of a file's bytes, as a blob store serves them and a scanner reads them.
pub type ByteStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, Error>>;

/// The MIME type a file's first bytes show (magic numbers, by the `infer` crate), or
/// `application/octet-stream` when they show none. What it returns is a guess from bytes the
/// sender chose: a safe list decides what may be served as such.
///
/// ```
/// assert_eq!(argus_media::sniff_mimetype(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
/// assert_eq!(argus_media::sniff_mimetype(b"just words"), "application/octet-stream");
/// ```
pub fn sniff_mimetype(head: &[u8]) -> String {
    infer::get(head).map_or("application/octet-stream", |kind| kind.mime_type()).to_owned()
}
