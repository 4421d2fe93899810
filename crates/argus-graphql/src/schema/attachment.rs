//! `TchapAttachment`: the file a message carries, as the archive holds it (already gated with
//! its message by the store's reads), and the path that downloads its bytes.

use argus_domain::{Attachment, AttachmentStatus};
use juniper::{GraphQLEnum, graphql_object};

use super::scalars::{DateTime, count};
use crate::Context;

/// The path prefix of the download route: an attachment's bytes are served at
/// `{MEDIA_ROUTE_PREFIX}{id}` (`/media/42`), to the same bearer token as `/graphql`.
///
/// ```
/// assert_eq!(format!("{}{}", argus_graphql::MEDIA_ROUTE_PREFIX, 42), "/media/42");
/// ```
pub const MEDIA_ROUTE_PREFIX: &str = "/media/";

/// Where a file stands in the archive.
#[derive(GraphQLEnum, Debug, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "AttachmentStatus")]
pub enum GqlAttachmentStatus {
    /// Fetched, checked, scanned clean and held: downloadable by who may see its message.
    Stored,
    /// Not fetched yet, or fetched and waiting for the scanner's verdict: retried.
    Pending,
    /// The scanner found a threat: held in quarantine as evidence, never served as content.
    Infected,
    /// Over the byte cap (declared or met while fetching): not fetched further.
    TooLarge,
    /// The ciphertext did not match the SHA-256 its message declared: not kept.
    Tampered,
    /// The homeserver does not serve it (gone, refused by its scanner, not found).
    Unavailable,
    /// An encrypted file whose message could not be decrypted: its key is unknown.
    Undecryptable,
}

impl From<AttachmentStatus> for GqlAttachmentStatus {
    fn from(status: AttachmentStatus) -> Self {
        match status {
            AttachmentStatus::Stored => Self::Stored,
            AttachmentStatus::Pending => Self::Pending,
            AttachmentStatus::Infected => Self::Infected,
            AttachmentStatus::TooLarge => Self::TooLarge,
            AttachmentStatus::Tampered => Self::Tampered,
            AttachmentStatus::Unavailable => Self::Unavailable,
            AttachmentStatus::Undecryptable => Self::Undecryptable,
        }
    }
}

/// The file one message carries, as the archive holds it.
#[derive(Debug, Clone)]
pub struct TchapAttachment(pub Attachment);

impl TchapAttachment {
    /// The download path of a file in `status` with reference `id`: only a `Stored` one has
    /// one. An `Infected` file has none either, although a caller holding `tchap:quarantine`
    /// downloads it at the same path (always as `application/octet-stream`).
    pub fn download_path(id: i64, status: AttachmentStatus) -> Option<String> {
        (status == AttachmentStatus::Stored).then(|| format!("{MEDIA_ROUTE_PREFIX}{id}"))
    }
}

#[graphql_object(context = Context)]
impl TchapAttachment {
    /// The mxc:// URI of the file on the homeserver (of its ciphertext when it was encrypted).
    fn mxc_uri(&self) -> &str {
        &self.0.mxc_uri
    }

    /// The file name the sender gave, if any.
    fn filename(&self) -> Option<&str> {
        self.0.filename.as_deref()
    }

    /// The MIME type the sender declared (not trusted: the download route sends its own).
    fn declared_mimetype(&self) -> Option<&str> {
        self.0.declared_mimetype.as_deref()
    }

    /// The file was end-to-end encrypted.
    fn encrypted(&self) -> bool {
        self.0.encrypted
    }

    /// Where the file stands in the archive.
    fn status(&self) -> GqlAttachmentStatus {
        self.0.status.into()
    }

    /// Why it is not STORED; never contains a token.
    fn status_reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }

    /// Lowercase hex SHA-256 of the file as sent (decrypted where it was encrypted).
    fn sha256(&self) -> Option<String> {
        self.0.sha256.map(|d| d.to_hex())
    }

    /// The size of the file in bytes, once fetched (2147483647 for a file of 2 GiB or more, as every Int of this schema saturates).
    fn size(&self) -> Option<i32> {
        self.0.size.map(count)
    }

    /// The signature the scanner found, when INFECTED.
    fn threat(&self) -> Option<&str> {
        self.0.threat.as_deref()
    }

    /// The scanner's engine and signature version behind the status (e.g. "ClamAV
    /// 1.4.3/27500/…"), once scanned; "none (scanning turned off)" where an operator turned
    /// scanning off.
    fn scan_engine(&self) -> Option<&str> {
        self.0.scan_engine.as_deref()
    }

    /// When the scanner gave the verdict the status rests on.
    fn scanned_at(&self) -> Option<DateTime> {
        self.0.scanned_at.map(DateTime)
    }

    /// When the file's bytes were fetched.
    fn fetched_at(&self) -> Option<DateTime> {
        self.0.fetched_at.map(DateTime)
    }

    /// Path on this server to download the bytes with the same bearer token; only when STORED.
    fn download_url(&self) -> Option<String> {
        Self::download_path(self.0.id, self.0.status)
    }

    /// Path on this server to download an INFECTED file from quarantine (always as
    /// application/octet-stream), for a caller holding tchap:quarantine; null otherwise.
    fn quarantine_url(&self, context: &Context) -> Option<String> {
        (self.0.status == AttachmentStatus::Infected
            && context.viewer().has_scope(argus_domain::Scope::Quarantine))
        .then(|| format!("{MEDIA_ROUTE_PREFIX}{}", self.0.id))
    }
}
