//! `GET /_matrix/client/v3/room_keys/version` — Client-Server API §"Server-side key backups"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keysversion)).
//!
//! The account's current key backup: its version, its algorithm and the public key its
//! sessions are encrypted to.

use ruma::api::client::backup::get_latest_backup_info::v3 as endpoint;
use serde::Deserialize;

use crate::{
    Error, Result,
    transport::{HttpClient, Target},
};

/// The current key backup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackupVersion {
    /// The version, which the room keys are read under.
    pub(crate) version: String,
    /// Its algorithm (`m.megolm_backup.v1.curve25519-aes-sha2` is the one read).
    pub(crate) algorithm: String,
    /// `auth_data.public_key`: the Curve25519 key (base64) sessions are encrypted to.
    pub(crate) public_key: String,
}

#[derive(Deserialize)]
struct AlgorithmView {
    algorithm: String,
    auth_data: AuthData,
}

#[derive(Deserialize)]
struct AuthData {
    public_key: String,
}

/// The account's current key backup; [`Error::NoKeyBackup`] when it has none.
pub(crate) async fn fetch(client: &HttpClient, target: &Target<'_>) -> Result<BackupVersion> {
    let info = match client.send(target, endpoint::Request::new()).await {
        Ok(info) => info,
        Err(Error::NotFound) => return Err(Error::NoKeyBackup),
        Err(e) => return Err(e),
    };
    let view: AlgorithmView = serde_json::from_str(info.algorithm.json().get())
        .map_err(|_| Error::malformed("the key backup's algorithm is not readable"))?;
    Ok(BackupVersion {
        version: info.version,
        algorithm: view.algorithm,
        public_key: view.auth_data.public_key,
    })
}
