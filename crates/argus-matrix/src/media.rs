//! Fetching the files of media messages: what the homeserver supports
//! ([`Connector::media_capabilities`]) and the streamed download of one file
//! ([`Connector::download_media`]) from the homeserver's authenticated media route, its legacy
//! route, or Element's content scanner ([`MediaRoute`]).
//!
//! Every request goes through the outbound policy (the `mxc://` server name too, although the
//! request goes to the session's homeserver); redirects are followed by hand, at most
//! [`MAX_REDIRECTS`], only to URLs the policy allows, and the token never goes to another
//! origin. A body is a stream held to a byte cap, an idle timeout and a minimum rate.

mod body;
mod exchange;

use std::fmt;

use argus_domain::{EncryptedFile, MxcUri};
use bytes::Bytes;
use futures::stream::BoxStream;
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use url::Url;

use crate::{
    Connector, Error, MediaRoute, Result, Session,
    api::{download_media, get_media_config, get_supported_versions, media_proxy_download},
    transport::{HttpClient, Target, read_bounded},
};
pub use exchange::MAX_REDIRECTS;
pub(crate) use exchange::MediaRequest;

/// What the homeserver supports for media.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaCapabilities {
    /// It serves authenticated media (`/_matrix/client/v1/media/…`: spec v1.11, or
    /// `org.matrix.msc3916.stable`); else only the legacy `/_matrix/media/v3/…`.
    pub authenticated: bool,
    /// Its upload cap (`m.upload.size`), when it says.
    pub upload_size: Option<u64>,
}

/// What one download is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLimits {
    /// Most bytes of the file; a larger one ends with [`Error::MediaTooLarge`].
    pub max_file_bytes: u64,
}

/// A download under way: the answer's head and its body, streamed.
pub struct MediaDownload {
    /// The `Content-Type` the server answered, when it is printable and short.
    pub content_type: Option<String>,
    /// The `Content-Length` it declared (within the cap; the body never goes past it).
    pub content_length: Option<u64>,
    /// The body, chunk by chunk; it ends after its first error ([`Error::MediaTooLarge`] past
    /// the cap, [`Error::MediaStalled`] when it stalls or dribbles, [`Error::Unreachable`] when
    /// the connection breaks).
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl fmt::Debug for MediaDownload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaDownload")
            .field("content_type", &self.content_type)
            .field("content_length", &self.content_length)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// What the homeserver supports for media: the authenticated route or not
    /// (`GET /_matrix/client/versions`), and its upload cap (`GET /_matrix/client/v1/media/config`,
    /// or `/_matrix/media/v3/config` on a legacy homeserver).
    pub async fn media_capabilities(&self, session: &Session) -> Result<MediaCapabilities> {
        let client = self.http();
        let target = client.target(session, client.config.run_deadline)?;
        let authenticated = get_supported_versions::has_authenticated_media(client, &target).await?;
        let upload_size = get_media_config::upload_size(client, &target, authenticated).await?;
        Ok(MediaCapabilities { authenticated, upload_size })
    }

    /// Starts the download of `uri` (of the ciphertext for an encrypted file, whose
    /// `EncryptedFile` is `encrypted`: decrypting is the caller's), through the configured
    /// [`MediaRoute`]. On the homeserver: the authenticated route when `caps` says it has one,
    /// the legacy route only when it has not or answers `M_UNRECOGNIZED`, never after a
    /// `M_NOT_FOUND`.
    ///
    /// Errors before the body: [`Error::OutboundPolicy`] (the server name, the scanner or a
    /// redirect refused), [`Error::MediaNotFound`], [`Error::MediaTooLarge`] (declared over
    /// the cap), [`Error::MediaRefused`] (the content scanner's verdict), and those of every
    /// call (rate limits and server errors are retried, a refused token renewed once).
    pub async fn download_media(
        &self,
        session: &Session,
        caps: &MediaCapabilities,
        uri: &MxcUri,
        encrypted: Option<&EncryptedFile>,
        limits: &MediaLimits,
    ) -> Result<MediaDownload> {
        let client = self.http();
        let cap = limits.max_file_bytes;
        if cap == 0 {
            return Err(Error::InvalidInput("max_file_bytes must be positive".into()));
        }
        if encrypted.is_some_and(|file| file.url != uri.to_string()) {
            return Err(Error::InvalidInput("the EncryptedFile is not that of this mxc URI".into()));
        }
        // Where the file comes from is held to the policy like a homeserver, before any request.
        let origin = Url::parse(&format!("https://{}/", uri.server_name()))
            .map_err(|_| Error::InvalidInput("the mxc server name is not a host".into()))?;
        client.policy.check_url(&origin)?;
        let target = client.target(session, client.config.run_deadline)?;
        // A content scanner fronts one deployment: a session with another homeserver (another
        // host) fetches from its own homeserver, so that its token and file keys never go to a
        // scanner of someone else's. A scanner the policy refuses is an error whoever asks.
        if let MediaRoute::ContentScanner { base_url } = &client.config.media_route {
            client.policy.check_url(base_url)?;
        }
        let route = match &client.config.media_route {
            MediaRoute::ContentScanner { base_url }
                if base_url.host_str().map(str::to_ascii_lowercase)
                    == session.homeserver().url().host_str().map(str::to_ascii_lowercase) =>
            {
                &client.config.media_route
            }
            _ => &MediaRoute::Homeserver,
        };
        let response = match route {
            MediaRoute::ContentScanner { base_url } => {
                let request = match encrypted {
                    Some(file) => media_proxy_download::encrypted(base_url, file, cap)?,
                    None => media_proxy_download::plain(base_url, uri, cap)?,
                };
                fetch(client, &target, &request).await?
            }
            MediaRoute::Homeserver => {
                let request = download_media::request(&target, uri, caps.authenticated, cap)?;
                match fetch(client, &target, &request).await {
                    Err(e) if caps.authenticated && exchange::is_unrecognized(&e) => {
                        tracing::info!(
                            "the homeserver has no authenticated media route; using the legacy one"
                        );
                        let legacy = download_media::request(&target, uri, false, cap)?;
                        fetch(client, &target, &legacy).await?
                    }
                    other => other?,
                }
            }
        };
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 255 && v.bytes().all(|b| b.is_ascii_graphic() || b == b' '))
            .map(str::to_owned);
        let content_length = response.content_length();
        let config = &client.config;
        let body = body::stream(
            response,
            body::BodyLimits {
                cap,
                idle: config.media_idle_timeout,
                min_rate: config.media_min_rate,
                grace: config.media_rate_grace,
            },
        )?;
        Ok(MediaDownload { content_type, content_length, body })
    }
}

/// Sends a media request, retried and renewed as every call is, up to the answer's head.
async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    request: &MediaRequest,
) -> Result<reqwest::Response> {
    client.retrying(target, |token| exchange::exchange(client, target, request, token)).await
}

/// A small JSON answer of a media call (`/versions`, the media configuration).
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &HttpClient,
    target: &Target<'_>,
    url: Url,
) -> Result<T> {
    let limit = client.config.max_response_bytes;
    let request = MediaRequest::get(url, limit as u64);
    client
        .retrying(target, |token| {
            let request = &request;
            async move {
                let response = exchange::exchange(client, target, request, token).await?;
                let deadline =
                    (tokio::time::Instant::now() + client.config.request_timeout).min(target.deadline);
                let body = tokio::time::timeout_at(deadline, read_bounded(response, limit))
                    .await
                    .map_err(|_| Error::Unreachable("request timed out".into()))??;
                serde_json::from_slice(&body)
                    .map_err(|_| Error::malformed("a media call answered unexpected JSON"))
            }
        })
        .await
}

/// The URL of `segments` on the session's homeserver.
pub(crate) fn homeserver_url(target: &Target<'_>, segments: &[&str]) -> Result<Url> {
    let mut url = target.session.homeserver().url();
    url.set_query(None);
    url.set_fragment(None);
    url.path_segments_mut()
        .map_err(|()| Error::InvalidInput("the homeserver URL cannot have a path".into()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}
