//! Downloading files: the authenticated route with the token in its header, the legacy route
//! only when the homeserver has no other, Element's content scanner and its refusals, and the
//! errors and retries of every call.

use argus_domain::{EncryptedFile, MxcUri};
use argus_matrix::{
    Connector, ConnectorConfig, Error, MediaCapabilities, MediaDownload, MediaLimits, MediaRoute, Session,
};
use futures::StreamExt as _;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{body_json, header, method, path, query_param},
};

use crate::mock::{MockHomeserver as Hs, TOKEN};

pub(crate) const V1: &str = "/_matrix/client/v1/media/download/tchap.test/AbC_12-x";
pub(crate) const LEGACY: &str = "/_matrix/media/v3/download/tchap.test/AbC_12-x";
const SCANNER: &str = "/scan/_matrix/media_proxy/unstable/download/tchap.test/AbC_12-x";
const SCANNER_ENCRYPTED: &str = "/scan/_matrix/media_proxy/unstable/download_encrypted";

/// The file every test downloads.
pub(crate) fn uri() -> MxcUri {
    "mxc://tchap.test/AbC_12-x".parse().unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) const AUTHENTICATED: MediaCapabilities =
    MediaCapabilities { authenticated: true, upload_size: None };
pub(crate) const LIMITS: MediaLimits = MediaLimits { max_file_bytes: 1 << 20 };

/// The bytes of a download, or its first error.
pub(crate) async fn collect(download: MediaDownload) -> argus_matrix::Result<Vec<u8>> {
    let mut body = download.body;
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        bytes.extend_from_slice(&chunk?);
    }
    Ok(bytes)
}

/// Downloads [`uri`] from `hs` with `connector` and the test token.
pub(crate) async fn download_with(
    connector: &Connector,
    hs: &str,
    caps: &MediaCapabilities,
    encrypted: Option<&EncryptedFile>,
) -> argus_matrix::Result<Vec<u8>> {
    let session = Session::with_token(hs.parse().unwrap_or_else(|e| panic!("{e}")), Hs::token());
    collect(connector.download_media(&session, caps, &uri(), encrypted, &LIMITS).await?).await
}

/// `GET path` with the test token answers `response`.
pub(crate) async fn serve(server: &MockServer, path_: &str, response: ResponseTemplate) {
    Mock::given(method("GET"))
        .and(path(path_))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(response)
        .mount(server)
        .await;
}

/// `GET path` must never be asked for (checked when `server` drops).
async fn never(server: &MockServer, path_: &str) {
    Mock::given(path(path_)).respond_with(ResponseTemplate::new(500)).expect(0).mount(server).await;
}

fn matrix_error(status: u16, errcode: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({ "errcode": errcode, "error": "x" }))
}

fn file(bytes: &[u8]) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(bytes.to_vec(), "application/pdf")
}

/// `/versions` answers `versions` and `unstable_features`.
async fn versions(hs: &Hs, versions: &[&str], unstable: Value) {
    Mock::given(method("GET"))
        .and(path("/_matrix/client/versions"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "versions": versions, "unstable_features": unstable })),
        )
        .mount(hs.server())
        .await;
}

#[tokio::test]
async fn capabilities_follow_versions_and_the_media_configuration() {
    for (vs, unstable, authenticated) in [
        (vec!["v1.10", "v1.11"], json!({}), true),
        (vec!["r0.6.1", "v1.10"], json!({ "org.matrix.msc3916.stable": true }), true),
        (
            vec!["r0.6.1", "v1.10"],
            json!({ "org.matrix.msc3916.stable": false, "org.matrix.msc3916": true }),
            false,
        ),
    ] {
        let hs = Hs::start().await;
        versions(&hs, &vs, unstable).await;
        serve(
            hs.server(),
            "/_matrix/client/v1/media/config",
            ResponseTemplate::new(200).set_body_json(json!({ "m.upload.size": 50_000_000 })),
        )
        .await;
        serve(
            hs.server(),
            "/_matrix/media/v3/config",
            ResponseTemplate::new(200).set_body_json(json!({ "m.upload.size": 100 })),
        )
        .await;
        let caps = Hs::connector().media_capabilities(&hs.session()).await.unwrap_or_else(|e| panic!("{e}"));
        let size = if authenticated { 50_000_000 } else { 100 };
        assert_eq!(caps, MediaCapabilities { authenticated, upload_size: Some(size) }, "{vs:?}");
    }
    // A homeserver without a media configuration says nothing of its cap.
    let hs = Hs::start().await;
    versions(&hs, &["v1.11"], json!({})).await;
    let caps = Hs::connector().media_capabilities(&hs.session()).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(caps, MediaCapabilities { authenticated: true, upload_size: None });
}

#[tokio::test]
async fn the_authenticated_route_carries_the_token_in_its_header_only() {
    let hs = Hs::start().await;
    serve(hs.server(), V1, file(b"%PDF-1.7 rapport")).await;
    never(hs.server(), LEGACY).await;
    let session = hs.session();
    let download = Hs::connector()
        .download_media(&session, &AUTHENTICATED, &uri(), None, &LIMITS)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(download.content_type.as_deref(), Some("application/pdf"));
    assert_eq!(download.content_length, Some(16));
    assert_eq!(collect(download).await.unwrap_or_else(|e| panic!("{e}")), b"%PDF-1.7 rapport");
    let requests = hs.server().received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].url.query(), None, "nothing in the query, the token least of all");
}

#[tokio::test]
async fn the_legacy_route_serves_a_homeserver_without_authenticated_media() {
    let hs = Hs::start().await;
    versions(&hs, &["r0.6.1", "v1.10"], json!({})).await;
    Mock::given(method("GET"))
        .and(path(LEGACY))
        .and(query_param("allow_redirect", "true"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(file(b"ancien"))
        .mount(hs.server())
        .await;
    never(hs.server(), V1).await;
    let connector = Hs::connector();
    let caps = connector.media_capabilities(&hs.session()).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!caps.authenticated);
    assert_eq!(
        download_with(&connector, &hs.uri(), &caps, None).await.unwrap_or_else(|e| panic!("{e}")),
        b"ancien"
    );
}

#[tokio::test]
async fn only_an_unrecognized_route_falls_back_to_the_legacy_one() {
    for status in [404, 405] {
        let hs = Hs::start().await;
        serve(hs.server(), V1, matrix_error(status, "M_UNRECOGNIZED")).await;
        serve(hs.server(), LEGACY, file(b"repli")).await;
        let got = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await;
        assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"repli");
    }
    // With authenticated media on, the legacy route answers 404 for new files: a v1 M_NOT_FOUND
    // is the answer, never a reason to ask the legacy route.
    let hs = Hs::start().await;
    serve(hs.server(), V1, matrix_error(404, "M_NOT_FOUND")).await;
    never(hs.server(), LEGACY).await;
    let err = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
    assert!(matches!(err, Error::MediaNotFound), "{err}");
    assert_eq!(err.code(), "MEDIA_NOT_FOUND");
}

/// The specification's example `EncryptedFile`, of [`uri`].
pub(crate) fn encrypted_file() -> EncryptedFile {
    serde_json::from_value(json!({
        "url": "mxc://tchap.test/AbC_12-x", "v": "v2", "iv": "X85+XgHN+HEAAAAAAAAAAA",
        "key": { "kty": "oct", "key_ops": ["encrypt", "decrypt"], "alg": "A256CTR",
                 "k": "qcHVMSgYg-71CauWBezXI5qkaRb0LuIy-Wx5kIaHMIA", "ext": true },
        "hashes": { "sha256": "5qG4fFnbbVdlAB1Q72JDKwCagV6Dbkx9uds4rSak37c" }
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A connector whose files go through a content scanner at `{scanner}/scan`.
fn scanned(scanner: &MockServer) -> Connector {
    let base_url = format!("{}/scan", scanner.uri()).parse().unwrap_or_else(|e| panic!("{e}"));
    Connector::new(ConnectorConfig { media_route: MediaRoute::ContentScanner { base_url }, ..Hs::config() })
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_content_scanner_serves_plain_and_encrypted_files() {
    let hs = Hs::start().await;
    let scanner = MockServer::start().await;
    serve(&scanner, SCANNER, file(b"propre")).await;
    Mock::given(method("POST"))
        .and(path(SCANNER_ENCRYPTED))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({ "file": serde_json::to_value(encrypted_file()).unwrap_or_default() })))
        // The scanner answers the bytes it fetched: the ciphertext.
        .respond_with(
            ResponseTemplate::new(200).set_body_raw(b"chiffre".to_vec(), "application/octet-stream"),
        )
        .mount(&scanner)
        .await;
    let connector = scanned(&scanner);
    assert_eq!(
        download_with(&connector, &hs.uri(), &AUTHENTICATED, None).await.unwrap_or_else(|e| panic!("{e}")),
        b"propre"
    );
    let file = encrypted_file();
    let got = download_with(&connector, &hs.uri(), &AUTHENTICATED, Some(&file)).await;
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"chiffre");
    assert_eq!(hs.request_count().await, 0, "the homeserver is reached through the scanner");
    // The EncryptedFile must be that of the URI asked for.
    let mut other = encrypted_file();
    other.url = "mxc://tchap.test/other".into();
    let err = download_with(&connector, &hs.uri(), &AUTHENTICATED, Some(&other)).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
}

#[tokio::test]
async fn the_content_scanners_refusals_are_verdicts_not_failures() {
    for (status, reason) in
        [(403, "MCS_MEDIA_NOT_CLEAN"), (403, "MCS_MIME_TYPE_FORBIDDEN"), (400, "MCS_MEDIA_FAILED_TO_DECRYPT")]
    {
        let hs = Hs::start().await;
        let scanner = MockServer::start().await;
        Mock::given(path(SCANNER))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_json(json!({ "reason": reason, "info": "***VIRUS DETECTED***" })),
            )
            .expect(1)
            .mount(&scanner)
            .await;
        let err = download_with(&scanned(&scanner), &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
        assert!(matches!(err, Error::MediaRefused { code } if code == reason), "{err}");
        assert_eq!(err.code(), "MEDIA_REFUSED");
        assert!(!err.is_retryable());
        assert!(!err.to_string().contains("VIRUS"), "the scanner's words are not echoed: {err}");
    }
    // Its own not-found and its failure to reach the homeserver keep their meaning.
    let hs = Hs::start().await;
    let scanner = MockServer::start().await;
    Mock::given(path(SCANNER))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({ "reason": "M_NOT_FOUND" })))
        .mount(&scanner)
        .await;
    let err = download_with(&scanned(&scanner), &hs.uri(), &AUTHENTICATED, None).await.unwrap_err();
    assert!(matches!(err, Error::MediaNotFound), "{err}");
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_before_the_body() {
    let hs = Hs::start().await;
    Mock::given(path(V1))
        .respond_with(matrix_error(429, "M_LIMIT_EXCEEDED"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(hs.server())
        .await;
    Mock::given(path(V1))
        .respond_with(ResponseTemplate::new(502))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(hs.server())
        .await;
    Mock::given(path(V1)).respond_with(file(b"enfin")).with_priority(3).mount(hs.server()).await;
    let got = download_with(&Hs::connector(), &hs.uri(), &AUTHENTICATED, None).await;
    assert_eq!(got.unwrap_or_else(|e| panic!("{e}")), b"enfin");
    assert_eq!(hs.request_count().await, 3);
}

#[tokio::test]
async fn a_refused_token_is_renewed_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    struct Renewing(AtomicBool);
    impl argus_matrix::TokenSource for Renewing {
        fn access_token(&self) -> argus_domain::AccessToken {
            argus_domain::AccessToken::new(if self.0.load(Ordering::SeqCst) {
                TOKEN
            } else {
                "syt_expired_0000"
            })
        }
        fn renew<'a>(
            &'a self,
            _: &'a argus_domain::AccessToken,
        ) -> futures::future::BoxFuture<'a, argus_matrix::Result<bool>> {
            Box::pin(async { Ok(!self.0.swap(true, Ordering::SeqCst)) })
        }
    }
    let hs = Hs::start().await;
    serve(hs.server(), V1, file(b"renouvele")).await;
    Mock::given(path(V1))
        .respond_with(matrix_error(401, "M_UNKNOWN_TOKEN"))
        .with_priority(10)
        .mount(hs.server())
        .await;
    let session = Session::new(hs.url(), Renewing(AtomicBool::new(false)));
    let download = Hs::connector().download_media(&session, &AUTHENTICATED, &uri(), None, &LIMITS).await;
    assert_eq!(
        collect(download.unwrap_or_else(|e| panic!("{e}"))).await.unwrap_or_else(|e| panic!("{e}")),
        b"renouvele"
    );
    // A fixed token's refusal stands, and no message shows it.
    let session = Session::with_token(hs.url(), argus_domain::AccessToken::new("syt_expired_0000"));
    let err =
        Hs::connector().download_media(&session, &AUTHENTICATED, &uri(), None, &LIMITS).await.unwrap_err();
    assert_eq!(err.code(), "HOMESERVER_UNAUTHORIZED");
    assert!(!format!("{err} {err:?}").contains("syt_"), "{err:?}");
}

#[tokio::test]
async fn a_declared_length_over_the_cap_is_refused_before_reading() {
    let hs = Hs::start().await;
    serve(hs.server(), V1, file(&[7_u8; 2048])).await;
    let session = hs.session();
    let limits = MediaLimits { max_file_bytes: 1024 };
    let err =
        Hs::connector().download_media(&session, &AUTHENTICATED, &uri(), None, &limits).await.unwrap_err();
    assert!(matches!(err, Error::MediaTooLarge { cap: 1024 }), "{err}");
    assert_eq!(err.code(), "MEDIA_TOO_LARGE");
    // At the cap exactly, it is whole.
    let limits = MediaLimits { max_file_bytes: 2048 };
    let download = Hs::connector().download_media(&session, &AUTHENTICATED, &uri(), None, &limits).await;
    assert_eq!(
        collect(download.unwrap_or_else(|e| panic!("{e}"))).await.unwrap_or_else(|e| panic!("{e}")).len(),
        2048
    );
}

#[tokio::test]
async fn an_unreadable_versions_answer_is_malformed() {
    let hs = Hs::start().await;
    Mock::given(path("/_matrix/client/versions"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>"))
        .mount(hs.server())
        .await;
    let err = Hs::connector().media_capabilities(&hs.session()).await.unwrap_err();
    assert_eq!(err.code(), "MALFORMED_RESPONSE");
}
