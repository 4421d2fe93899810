//! `GET /media/{id}` (and `HEAD`, [`route_pattern`]): an attachment's bytes, to a bearer token that may see its
//! message, streamed from the blob store ([`BlobSource`]).
//!
//! - Authentication is the one of `/graphql`; the scope `tchap:read` is required.
//! - A malformed id, an absent reference, one of another organisation, above the caller's
//!   clearance, of a redacted message, or not held and scanned yet all answer the same 404,
//!   with the same body, after the same store lookup ([`argus_store::Store::attachment_download`]).
//!   An `INFECTED` file answers that 404 too, except to a caller holding `tchap:quarantine`,
//!   who gets it as `application/octet-stream`.
//! - Every answer carries `X-Content-Type-Options: nosniff`, `Content-Security-Policy: sandbox`
//!   and `Cache-Control: private, no-store`; a file is sent as `Content-Disposition: attachment`
//!   with its sanitised name, under its sniffed MIME type only when that type is on
//!   [`SAFE_TYPES`] (else `application/octet-stream`), with `ETag` = its SHA-256.
//! - Ranges (RFC 9110 §14): one range `a-b`, `a-` or `-n` answers 206 with `Content-Range`; an
//!   unsatisfiable one 416 with `Content-Range: bytes */{size}`; several ranges, an unknown
//!   unit or a malformed header the whole file (200), as RFC 9110 allows. `If-Range` is not
//!   evaluated (the ETag of a file never changes: its address is its content). `HEAD` ignores
//!   `Range` (range handling is defined for `GET` only) and opens no blob.
//! - Every `GET` that sends bytes is journaled (`DOWNLOAD`, the message's room and
//!   classification) before they are sent; when the journal cannot be written the route
//!   answers 503 `UNAVAILABLE` and sends nothing.
//! - Without a scanner (and `media.scan` not `"off"`) the route answers 503
//!   `MEDIA_SCANNER_NOT_CONFIGURED`; without a blob store 503 `MEDIA_STORE_NOT_CONFIGURED`.

use std::{io, ops::Range, sync::Arc};

use actix_web::{
    HttpRequest, HttpResponse, HttpResponseBuilder,
    body::SizedStream,
    http::{
        Method, StatusCode,
        header::{self, ByteRangeSpec},
    },
    web,
};
use argus_domain::{AttachmentStatus, Scope, Sha256Digest, Viewer, oversight::AccessAction, policy};
use argus_graphql::oversight::Read;
use argus_store::Download;
use bytes::Bytes;
use futures::{future::BoxFuture, stream::BoxStream};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::app::{AppState, authenticate, error_body};

/// The stream of a blob's bytes (or of a range of them).
pub type BlobStream = BoxStream<'static, Result<Bytes, io::Error>>;

/// Where the route reads files' bytes: the blob store, by content address.
pub trait BlobSource: Send + Sync {
    /// Opens the blob `sha256`, whole or only the bytes `range` (end exclusive, within its
    /// size), as a stream of chunks. Memory must not grow with the blob: stream, never collect.
    fn open(&self, sha256: &Sha256Digest, range: Option<Range<u64>>)
    -> BoxFuture<'_, io::Result<BlobStream>>;
}

/// The MIME types sent as they were sniffed: images, PDF, plain text, common audio and video,
/// none of which a browser runs as a document. Any other (HTML, SVG, XHTML, XML, JavaScript…)
/// is sent as `application/octet-stream`.
pub const SAFE_TYPES: [&str; 13] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "audio/mpeg",
    "audio/ogg",
    "audio/mp4",
    "audio/webm",
    "video/mp4",
    "video/webm",
    "video/ogg",
];

const OCTET_STREAM: &str = "application/octet-stream";

/// RFC 8187 `attr-char`: what `filename*` may carry without percent-encoding.
const ATTR_CHAR: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// The longest file name sent, in characters.
const MAX_NAME_CHARS: usize = 200;

/// The route's path pattern: `{id}` under [`argus_graphql::MEDIA_ROUTE_PREFIX`], the prefix of
/// `TchapAttachment.downloadUrl`.
pub fn route_pattern() -> String {
    format!("{}{{id}}", argus_graphql::MEDIA_ROUTE_PREFIX)
}

/// Registers `GET` and `HEAD` of [`route_pattern`].
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    let pattern = route_pattern();
    cfg.route(&pattern, web::get().to(download)).route(&pattern, web::head().to(download));
}

/// The security headers of every answer of the route.
pub(crate) fn hardened(status: StatusCode) -> HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::CONTENT_SECURITY_POLICY, "sandbox"))
        .insert_header((header::CACHE_CONTROL, "private, no-store"));
    builder
}

/// The one answer for every file the caller may not have, whatever the reason.
fn not_found() -> HttpResponse {
    hardened(StatusCode::NOT_FOUND).json(error_body("no such file", "NOT_FOUND"))
}

fn unavailable(message: &str, code: &str) -> HttpResponse {
    hardened(StatusCode::SERVICE_UNAVAILABLE).json(error_body(message, code))
}

/// A reference id: decimal digits only (no sign, no spaces), within `i64`.
fn parse_id(segment: &str) -> Option<i64> {
    if segment.is_empty() || segment.len() > 18 || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

async fn download(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match authenticate(&req, &state).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    if let Err(e) = policy::require_scope(&viewer, Scope::Read) {
        return hardened(StatusCode::FORBIDDEN).json(error_body(&e.to_string(), "FORBIDDEN"));
    }
    let media = state.media();
    if !media.serving_allowed {
        return unavailable(
            "files are not served: no virus scanner is configured (media.clamd)",
            "MEDIA_SCANNER_NOT_CONFIGURED",
        );
    }
    let Some(blobs) = media.blobs.clone() else {
        return unavailable(
            "files are not served: no blob store is configured",
            "MEDIA_STORE_NOT_CONFIGURED",
        );
    };
    let id = req.match_info().get("id").and_then(parse_id);
    let found = match id {
        Some(id) => {
            let who = viewer.clone();
            state.services().with_store(move |store| store.attachment_download(&who, id)).await
        }
        // Nothing has this id; it answers as any id the store does not return.
        None => Ok(None),
    };
    let download = match found {
        Ok(Some(download)) if servable(&download, &viewer) => download,
        Ok(_) => return not_found(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot look a file up");
            return unavailable("the database is unavailable", "UNAVAILABLE");
        }
    };
    // Bytes are about to leave: journaled first (a `HEAD` or an unsatisfiable range sends none).
    let range = req.headers().get(header::RANGE).and_then(|v| v.to_str().ok());
    if span(req.method(), range, download.size) != Span::Unsatisfiable && req.method() == Method::GET {
        let read = Read {
            action: AccessAction::Download,
            query: None,
            room_ids: vec![download.room_id.as_str()],
            item_count: 1,
            highest: Some(download.classification),
        };
        if state.services().record_access(&viewer, &read).await.is_err() {
            return unavailable("the access journal cannot be written", "UNAVAILABLE");
        }
    }
    respond(&req, download, blobs.as_ref()).await
}

/// Whether the caller gets the bytes of a file the store let through: a stored one, or an
/// infected one for a holder of `tchap:quarantine`.
fn servable(download: &Download, viewer: &Viewer) -> bool {
    match download.attachment.status {
        AttachmentStatus::Stored => true,
        AttachmentStatus::Infected => viewer.has_scope(Scope::Quarantine),
        _ => false,
    }
}

/// What of the file a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Span {
    /// All of it (no range, several, an unknown unit, a malformed header, or `HEAD`).
    Whole,
    /// The bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// One range that no byte of the file satisfies.
    Unsatisfiable,
}

/// The span the `Range` header of a `GET` asks for, in a file of `size` bytes.
fn span(method: &Method, range: Option<&str>, size: u64) -> Span {
    let Some(value) = range.filter(|_| method == Method::GET) else { return Span::Whole };
    let one = value
        .split_once('=')
        .is_some_and(|(_, set)| set.split(',').filter(|r| !r.trim().is_empty()).count() == 1);
    match value.parse::<header::Range>() {
        Ok(header::Range::Bytes(specs)) if one && specs.len() == 1 => {
            match specs.first().and_then(|spec: &ByteRangeSpec| spec.to_satisfiable_range(size)) {
                Some((start, end)) => Span::Part { start, end },
                None => Span::Unsatisfiable,
            }
        }
        _ => Span::Whole,
    }
}

/// The MIME type a file is sent under: its sniffed type when on [`SAFE_TYPES`] and the file
/// is not infected, else `application/octet-stream`.
fn served_type(sniffed: &str, status: AttachmentStatus) -> &'static str {
    if status != AttachmentStatus::Stored {
        return OCTET_STREAM;
    }
    let essence = sniffed.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    SAFE_TYPES.into_iter().find(|t| *t == essence).unwrap_or(OCTET_STREAM)
}

/// Bidirectional formatting characters, which can make `exe.pdf` read as `fdp.exe`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The name a file is saved under: the sender's name without any folder, control or
/// bidirectional character, leading dots or surrounding spaces, at most 200 characters; else
/// `attachment-{first 16 hex digits of its SHA-256}`.
fn file_name(sent: Option<&str>, sha256: &Sha256Digest) -> String {
    let cleaned = sent.map(|name| {
        let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
        let kept: String =
            last.chars().filter(|c| !c.is_control() && !is_bidi_control(*c)).take(MAX_NAME_CHARS).collect();
        kept.trim().trim_start_matches('.').trim().to_owned()
    });
    match cleaned {
        Some(name) if !name.is_empty() => name,
        _ => format!("attachment-{}", sha256.to_hex().get(..16).unwrap_or_default()),
    }
}

/// `attachment; filename*=UTF-8''…` (RFC 6266, RFC 8187).
fn disposition(name: &str) -> String {
    format!("attachment; filename*=UTF-8''{}", utf8_percent_encode(name, ATTR_CHAR))
}

/// The answer for a file the caller may have.
async fn respond(req: &HttpRequest, download: Download, blobs: &dyn BlobSource) -> HttpResponse {
    let size = download.size;
    let status = download.attachment.status;
    let span = span(req.method(), req.headers().get(header::RANGE).and_then(|v| v.to_str().ok()), size);
    if span == Span::Unsatisfiable {
        return hardened(StatusCode::RANGE_NOT_SATISFIABLE)
            .insert_header((header::CONTENT_RANGE, format!("bytes */{size}")))
            .insert_header((header::ACCEPT_RANGES, "bytes"))
            .json(error_body("the range is not satisfiable", "RANGE_NOT_SATISFIABLE"));
    }
    let (code, range) = match span {
        Span::Part { start, end } => (StatusCode::PARTIAL_CONTENT, Some(start..end.saturating_add(1))),
        _ => (StatusCode::OK, None),
    };
    let mut builder = hardened(code);
    builder
        .insert_header((header::CONTENT_TYPE, served_type(&download.sniffed_mimetype, status)))
        .insert_header((
            header::CONTENT_DISPOSITION,
            disposition(&file_name(download.attachment.filename.as_deref(), &download.sha256)),
        ))
        .insert_header((header::ETAG, format!("\"{}\"", download.sha256.to_hex())))
        .insert_header((header::ACCEPT_RANGES, "bytes"));
    let length = range.as_ref().map_or(size, |r| r.end - r.start);
    if let Some(r) = &range {
        builder.insert_header((header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1)));
    }
    if req.method() == Method::HEAD {
        return builder.body(SizedStream::new(length, futures::stream::empty::<io::Result<Bytes>>()));
    }
    match blobs.open(&download.sha256, range).await {
        Ok(stream) => builder.body(SizedStream::new(length, stream)),
        Err(e) => {
            tracing::error!(id = download.attachment.id, kind = ?e.kind(), "a held file cannot be read from the blob store");
            hardened(StatusCode::INTERNAL_SERVER_ERROR)
                .json(error_body("the file cannot be read", "MEDIA_READ_FAILED"))
        }
    }
}

/// What the route needs of the server's media settings.
#[derive(Clone, Default)]
pub(crate) struct MediaServing {
    /// Whether files may be served ([`crate::config::MediaConfig::serving_allowed`]).
    pub(crate) serving_allowed: bool,
    /// The blob store, once wired.
    pub(crate) blobs: Option<Arc<dyn BlobSource>>,
}

impl std::fmt::Debug for MediaServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaServing")
            .field("serving_allowed", &self.serving_allowed)
            .field("blobs", &self.blobs.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_plain_decimal_numbers() {
        assert_eq!(parse_id("42"), Some(42));
        assert_eq!(parse_id("007"), Some(7));
        for bad in ["", "-1", "+1", "1e3", " 1", "0x10", "abc", "99999999999999999999", "1/2"] {
            assert_eq!(parse_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn one_range_is_served_several_are_not() {
        let get = Method::GET;
        assert_eq!(span(&get, None, 100), Span::Whole);
        assert_eq!(span(&get, Some("bytes=0-9"), 100), Span::Part { start: 0, end: 9 });
        assert_eq!(span(&get, Some("bytes=90-"), 100), Span::Part { start: 90, end: 99 });
        assert_eq!(span(&get, Some("bytes=-10"), 100), Span::Part { start: 90, end: 99 });
        assert_eq!(span(&get, Some("bytes=-500"), 100), Span::Part { start: 0, end: 99 });
        assert_eq!(span(&get, Some("bytes=50-5000"), 100), Span::Part { start: 50, end: 99 });
        assert_eq!(span(&get, Some("bytes=100-"), 100), Span::Unsatisfiable);
        assert_eq!(span(&get, Some("bytes=-0"), 100), Span::Unsatisfiable);
        assert_eq!(span(&get, Some("bytes=0-"), 0), Span::Unsatisfiable);
        assert_eq!(span(&get, Some("bytes=0-1,5-6"), 100), Span::Whole);
        assert_eq!(span(&get, Some("bytes=0-1,x"), 100), Span::Whole);
        assert_eq!(span(&get, Some("items=0-1"), 100), Span::Whole);
        assert_eq!(span(&get, Some("garbage"), 100), Span::Whole);
        assert_eq!(span(&Method::HEAD, Some("bytes=0-9"), 100), Span::Whole);
    }

    #[test]
    fn only_safe_types_are_sent_as_sniffed() {
        let stored = AttachmentStatus::Stored;
        assert_eq!(served_type("image/png", stored), "image/png");
        assert_eq!(served_type("Application/PDF; x=y", stored), "application/pdf");
        for unsafe_type in
            ["text/html", "image/svg+xml", "application/xhtml+xml", "text/javascript", "text/xml", ""]
        {
            assert_eq!(served_type(unsafe_type, stored), OCTET_STREAM, "{unsafe_type}");
        }
        assert_eq!(served_type("image/png", AttachmentStatus::Infected), OCTET_STREAM);
    }

    #[test]
    fn names_lose_folders_controls_and_bidi_characters() {
        let digest = Sha256Digest::of(b"x");
        let fallback = format!("attachment-{}", &digest.to_hex()[..16]);
        assert_eq!(file_name(Some("rapport.pdf"), &digest), "rapport.pdf");
        assert_eq!(file_name(Some("../../etc/passwd"), &digest), "passwd");
        assert_eq!(file_name(Some("C:\\Users\\x\\note.txt"), &digest), "note.txt");
        assert_eq!(file_name(Some("a\r\nb\u{0}.txt"), &digest), "ab.txt");
        assert_eq!(file_name(Some("fdp\u{202E}exe.pdf"), &digest), "fdpexe.pdf");
        assert_eq!(file_name(Some(".hidden"), &digest), "hidden");
        for empty in [None, Some(""), Some(".."), Some("dir/"), Some(" \t ")] {
            assert_eq!(file_name(empty, &digest), fallback, "{empty:?}");
        }
        assert_eq!(file_name(Some(&"é".repeat(500)), &digest).chars().count(), MAX_NAME_CHARS);
        assert_eq!(
            disposition("rapport final \"v2\";.pdf"),
            "attachment; filename*=UTF-8''rapport%20final%20%22v2%22%3B.pdf"
        );
        assert_eq!(disposition("été.txt"), "attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt");
    }
}
