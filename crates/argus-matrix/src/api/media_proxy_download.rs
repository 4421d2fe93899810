//! Element's Matrix Content Scanner (`matrix-content-scanner-python`, `docs/api.md`):
//! `GET {base}/_matrix/media_proxy/unstable/download/{serverName}/{mediaId}` for a plain file,
//! `POST {base}/_matrix/media_proxy/unstable/download_encrypted` with `{"file": EncryptedFile}`
//! for an encrypted one.
//!
//! The scanner fetches the file from the homeserver (with the `Authorization` header it was
//! given), decrypts an encrypted one only to scan it, and answers the bytes it fetched (the
//! ciphertext of an encrypted file), or a refusal: HTTP 403 `MCS_MEDIA_NOT_CLEAN` /
//! `MCS_MIME_TYPE_FORBIDDEN`, 400 `MCS_MEDIA_FAILED_TO_DECRYPT`, 404 `M_NOT_FOUND`, 502
//! `MCS_MEDIA_REQUEST_FAILED` (its errors carry `reason`, not `errcode`).

use argus_domain::{EncryptedFile, MxcUri};
use http::Method;
use url::Url;

use crate::{Error, Result, media::MediaRequest};

/// The scanner's URL of `segments` under `base`.
fn url(base: &Url, segments: &[&str]) -> Result<Url> {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| Error::InvalidInput("the content scanner URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(["_matrix", "media_proxy", "unstable"])
        .extend(segments);
    Ok(url)
}

/// The scanned download of the plain file `uri`.
pub(crate) fn plain(base: &Url, uri: &MxcUri, cap: u64) -> Result<MediaRequest> {
    Ok(MediaRequest::get(url(base, &["download", uri.server_name(), uri.media_id()])?, cap))
}

/// The scanned download of the encrypted `file`.
pub(crate) fn encrypted(base: &Url, file: &EncryptedFile, cap: u64) -> Result<MediaRequest> {
    let json = serde_json::to_vec(&serde_json::json!({ "file": file }))
        .map_err(|_| Error::InvalidInput("the EncryptedFile cannot be sent".into()))?;
    Ok(MediaRequest { method: Method::POST, url: url(base, &["download_encrypted"])?, json: Some(json), cap })
}
