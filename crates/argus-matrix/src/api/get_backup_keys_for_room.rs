//! `GET /_matrix/client/v3/room_keys/keys/{roomId}` — Client-Server API §"Server-side key
//! backups" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keyskeysroomid)).
//!
//! The backed-up megolm sessions of one room, each encrypted to the backup's public key.

use std::collections::BTreeMap;

use ruma::{
    OwnedRoomId,
    api::client::backup::{KeyBackupData, get_backup_keys_for_room::v3 as endpoint},
    serde::Raw,
};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

/// The backed-up sessions of `room` in backup `version`, by session id, as JSON.
pub(crate) async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    version: &str,
    room: &OwnedRoomId,
) -> Result<BTreeMap<String, Raw<KeyBackupData>>> {
    let request = endpoint::Request::new(version.to_owned(), room.clone());
    Ok(client.send(target, request).await?.sessions)
}
