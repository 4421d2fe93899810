//! Files on a real Synapse (authenticated media on, as by default since Synapse 1.120):
//! uploaded by a user, then downloaded through the connector byte for byte. Returns early when
//! Synapse is unavailable (`argus-testkit` prints a loud SKIP banner).

use argus_domain::{AccessToken, HomeserverUrl, MxcUri};
use argus_matrix::{Connector, ConnectorConfig, Error, MediaLimits, Session};
use argus_testkit::synapse::synapse;

use crate::media::collect;

#[tokio::test]
async fn an_uploaded_file_is_downloaded_byte_for_byte() {
    let Some(server) = synapse() else { return };
    let user = server.register("media").await.unwrap_or_else(|e| panic!("register: {e:#}"));
    let bytes: Vec<u8> = (0..300_000_u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let uri: MxcUri = user
        .upload(bytes.clone(), "application/pdf")
        .await
        .unwrap_or_else(|e| panic!("upload: {e:#}"))
        .parse()
        .unwrap_or_else(|e| panic!("mxc: {e}"));

    let connector = Connector::new(ConnectorConfig {
        allow_private_addresses: vec!["127.0.0.1".into()],
        ..ConnectorConfig::default()
    })
    .unwrap_or_else(|e| panic!("connector: {e}"));
    let homeserver: HomeserverUrl = server.base_url().parse().unwrap_or_else(|e| panic!("{e}"));
    let session = Session::with_token(homeserver, AccessToken::new(user.access_token.clone()));
    let caps = connector.media_capabilities(&session).await.unwrap_or_else(|e| panic!("capabilities: {e}"));
    assert!(caps.authenticated, "Synapse serves authenticated media");
    assert!(caps.upload_size.is_some_and(|size| size >= bytes.len() as u64), "{caps:?}");

    let limits = MediaLimits { max_file_bytes: 1 << 20 };
    let download = connector
        .download_media(&session, &caps, &uri, None, &limits)
        .await
        .unwrap_or_else(|e| panic!("download: {e}"));
    assert_eq!(download.content_type.as_deref(), Some("application/pdf"));
    assert!(collect(download).await.unwrap_or_else(|e| panic!("body: {e}")) == bytes, "not byte for byte");

    // A file the homeserver does not have, and one over the cap.
    let missing: MxcUri =
        format!("mxc://{}/NoSuchMedia0", uri.server_name()).parse().unwrap_or_else(|e| panic!("{e}"));
    let err = connector.download_media(&session, &caps, &missing, None, &limits).await.unwrap_err();
    assert!(matches!(err, Error::MediaNotFound), "{err}");
    let small = MediaLimits { max_file_bytes: 1000 };
    let err = match connector.download_media(&session, &caps, &uri, None, &small).await {
        Ok(download) => collect(download).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(err, Error::MediaTooLarge { cap: 1000 }), "{err}");
}
