//! Attachments as evidence: the file a media message carries, how it is named on the homeserver
//! (`mxc://`), how an end-to-end encrypted one is described (`EncryptedFile`), and what the
//! archive holds of it (status, digest, scan verdict).

use std::{collections::BTreeMap, fmt, str::FromStr};

use time::OffsetDateTime;

use crate::{Error, Result};

/// Where a file stands in the archive; the contract's `AttachmentStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttachmentStatus {
    /// Fetched, checked, scanned clean and held: downloadable by who may see its message.
    Stored,
    /// Not fetched, or fetched and not scanned yet (scanner unavailable): retried.
    Pending,
    /// The scanner found a threat: held in quarantine as evidence, never served as content.
    Infected,
    /// Over the byte cap (declared or met while fetching): not fetched further.
    TooLarge,
    /// The ciphertext's SHA-256 did not match the one its message declared: not kept.
    Tampered,
    /// The homeserver does not serve it (gone, refused by its scanner, not found).
    Unavailable,
    /// An encrypted file whose message could not be decrypted: its key is unknown.
    Undecryptable,
}

impl AttachmentStatus {
    /// Every status, in contract order.
    pub const ALL: [Self; 7] = [
        Self::Stored,
        Self::Pending,
        Self::Infected,
        Self::TooLarge,
        Self::Tampered,
        Self::Unavailable,
        Self::Undecryptable,
    ];

    /// The stored and contract name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Stored => "STORED",
            Self::Pending => "PENDING",
            Self::Infected => "INFECTED",
            Self::TooLarge => "TOO_LARGE",
            Self::Tampered => "TAMPERED",
            Self::Unavailable => "UNAVAILABLE",
            Self::Undecryptable => "UNDECRYPTABLE",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for AttachmentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SHA-256 digest: the content address of a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Lowercase hex, as served and stored.
    pub fn to_hex(&self) -> String {
        use fmt::Write as _;
        let mut out = String::with_capacity(64);
        for b in self.0 {
            let _ = write!(out, "{b:02x}");
        }
        out
    }

    /// The digest of `bytes` (for small inputs; files are hashed while they stream).
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self(sha2::Sha256::digest(bytes).into())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({})", self.to_hex())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = Error;

    /// Parses 64 hex digits (either case).
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::invalid("SHA-256 digest", "expected 64 hexadecimal digits");
        if s.len() != 64 {
            return Err(invalid());
        }
        let mut out = [0_u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = s.get(2 * i..2 * i + 2).ok_or_else(invalid)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
        }
        Ok(Self(out))
    }
}

/// A `mxc://{serverName}/{mediaId}` URI, checked: the server name is a host (DNS name, IPv4 or
/// bracketed IPv6) with an optional port, the media id only `[A-Za-z0-9_-]` (spec "Matrix
/// Content (mxc://) URIs"), so neither can carry a path, a query or a traversal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MxcUri {
    server: String,
    media_id: String,
}

impl MxcUri {
    /// The server name (`host[:port]`).
    pub fn server_name(&self) -> &str {
        &self.server
    }

    /// The media id.
    pub fn media_id(&self) -> &str {
        &self.media_id
    }

    /// The host of the server name, without its port or IPv6 brackets, lowercased.
    pub fn host(&self) -> String {
        let s = self.server.as_str();
        let host = if let Some(rest) = s.strip_prefix('[') {
            rest.split(']').next().unwrap_or(rest)
        } else {
            s.rsplit_once(':').map_or(s, |(h, _)| h)
        };
        host.to_ascii_lowercase()
    }
}

impl fmt::Display for MxcUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mxc://{}/{}", self.server, self.media_id)
    }
}

impl FromStr for MxcUri {
    type Err = Error;

    /// ```
    /// use argus_domain::MxcUri;
    /// let uri: MxcUri = "mxc://agent.tchap.gouv.fr/AbC_12-x".parse()?;
    /// assert_eq!((uri.server_name(), uri.media_id()), ("agent.tchap.gouv.fr", "AbC_12-x"));
    /// assert!("mxc://agent.tchap.gouv.fr/../x".parse::<MxcUri>().is_err());
    /// assert!("mxc://evil.example%2f/x".parse::<MxcUri>().is_err());
    /// # Ok::<(), argus_domain::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::invalid("mxc URI", reason);
        let rest = s.strip_prefix("mxc://").ok_or_else(|| invalid("not an mxc:// URI"))?;
        let (server, media_id) = rest.split_once('/').ok_or_else(|| invalid("no media id"))?;
        if media_id.is_empty()
            || media_id.len() > 255
            || !media_id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(invalid("the media id has characters outside [A-Za-z0-9_-]"));
        }
        if !valid_server_name(server) {
            return Err(invalid("the server name is not a host[:port]"));
        }
        Ok(Self { server: server.to_owned(), media_id: media_id.to_owned() })
    }
}

/// Spec grammar of a server name: `hostname [ ":" port ]`, hostname a DNS name, an IPv4
/// literal or a bracketed IPv6 literal.
fn valid_server_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 255 {
        return false;
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else { return false };
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            p => (None, p.strip_prefix(':')),
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(s), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return false;
    }
    host.is_none_or(|h| {
        !h.is_empty()
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !h.starts_with('.')
            && !h.contains("..")
    })
}

/// The JSON Web Key of an encrypted attachment (spec "Sending encrypted attachments"). Its
/// `k` is the file's key: never printed.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachmentJwk {
    /// Key type; must be `oct`.
    #[serde(default)]
    pub kty: String,
    /// Key operations; must include `encrypt` and `decrypt`.
    #[serde(default)]
    pub key_ops: Vec<String>,
    /// Algorithm; must be `A256CTR`.
    #[serde(default)]
    pub alg: String,
    /// The key, unpadded base64url.
    #[serde(default)]
    pub k: String,
    /// Extractable; must be `true`.
    #[serde(default)]
    pub ext: bool,
}

impl fmt::Debug for AttachmentJwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AttachmentJwk")
            .field("kty", &self.kty)
            .field("alg", &self.alg)
            .field("k", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// An `EncryptedFile` as the (decrypted) message carried it: where the ciphertext is, the key,
/// the counter block and the ciphertext's digest. Checked only when the file is fetched
/// (`argus_crypto::attachment`), so a malformed one is recorded with a reason, not dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EncryptedFile {
    /// The `mxc://` URI of the ciphertext.
    #[serde(default)]
    pub url: String,
    /// The key.
    pub key: AttachmentJwk,
    /// The initial counter block, unpadded base64.
    #[serde(default)]
    pub iv: String,
    /// Digests of the ciphertext by algorithm (`sha256`, unpadded base64).
    #[serde(default)]
    pub hashes: BTreeMap<String, String>,
    /// The format version; only `v2` is accepted.
    #[serde(default)]
    pub v: Option<String>,
}

/// What the archive holds of one message's file, as a read returns it (already gated with its
/// message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The reference's id (the download route's path segment).
    pub id: i64,
    /// The `mxc://` URI of the file (of the ciphertext when encrypted).
    pub mxc_uri: String,
    /// The file name the sender gave, if any.
    pub filename: Option<String>,
    /// The MIME type the sender declared.
    pub declared_mimetype: Option<String>,
    /// The size the sender declared.
    pub declared_size: Option<u64>,
    /// The file was end-to-end encrypted.
    pub encrypted: bool,
    /// Where it stands.
    pub status: AttachmentStatus,
    /// Why it is not `Stored` (a stable code and words; never a token or a path).
    pub reason: Option<String>,
    /// Digest of the file as sent (decrypted), once fetched.
    pub sha256: Option<Sha256Digest>,
    /// Its size in bytes, once fetched.
    pub size: Option<u64>,
    /// The MIME type sniffed from its first bytes, once fetched.
    pub sniffed_mimetype: Option<String>,
    /// The signature the scanner found, when `Infected`.
    pub threat: Option<String>,
    /// The engine and signature version of the verdict the status rests on, once scanned.
    pub scan_engine: Option<String>,
    /// When that verdict was given.
    pub scanned_at: Option<OffsetDateTime>,
    /// When its bytes were fetched.
    pub fetched_at: Option<OffsetDateTime>,
}
