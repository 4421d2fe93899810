//! Accounts instead of homeserver URLs, through the running server over HTTP: the server's
//! `[matrix] identity_server` reaches the connector, `ingestTchapRoom` by e-mail address and
//! `postTchapMessage` by user id go to the homeserver found by discovery on the real Synapse
//! (whose server name is its own listener), the audit trail records it, and another account's
//! token is refused with ACCOUNT_MISMATCH and nothing stored (a post refused so is audited).

use anyhow::{Context as _, Result, ensure};
use argus_domain::{Classification::Secret, Scope};
use argus_testkit::{identity::IdentityServer, synapse::Synapse};
use serde_json::json;

use crate::harness::Server;

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesStored room { homeserverUrl } ingestion { homeserverUrl } }
}";

const POST: &str = r"mutation($input: PostTchapMessageInput!) {
  postTchapMessage(input: $input) { eventId audit { homeserverUrl outcome } }
}";

const ROOMS: &str = r"{ tchapRooms { totalCount } }";

const TRAIL: &str = r"{ tchapIngestions(first: 10) { totalCount edges { node { outcome homeserverUrl } } } }";

/// Runs the scenario on the store at `database_url`.
pub(crate) async fn run(synapse: &Synapse, database_url: &str, dir: &std::path::Path) -> Result<()> {
    // Registered under the localpart Tchap derives from her address.
    let (alice, address) = synapse.register_for_email("e2e_alice", "interieur.gouv.fr").await?;
    let mallory = synapse.register("e2e_other").await?;
    let room = alice.create_room(Some("Cellule"), None, false).await?;
    alice.send_text(&room, "point de situation").await?;
    let identity = IdentityServer::start([(address.as_str(), synapse.server_name())]).await?;
    let identity_url = identity.url().to_owned();
    let server = Server::start_with(database_url, dir, |config| {
        config.matrix.identity_server = Some(identity_url);
    })
    .await?;
    let jwt = server.jwt(
        "analyst@dgsi",
        "dgsi",
        Secret,
        &[Scope::Read, Scope::Ingest, Scope::Post, Scope::Audit],
    )?;

    // Another account's token: refused, nothing stored.
    let input = json!({ "input": {
        "account": alice.user_id, "accessToken": mallory.access_token, "roomId": room, "classification": "RESTRICTED",
    } });
    let (code, body) = server.error_code(&jwt, INGEST, input).await?;
    ensure!(code == "ACCOUNT_MISMATCH", "{body}");
    // Her address with mallory's token: mallory is on the same server, but is not the account
    // Tchap derives from the address.
    let input = json!({ "input": {
        "account": address, "accessToken": mallory.access_token, "roomId": room, "classification": "RESTRICTED",
    } });
    let (code, body) = server.error_code(&jwt, INGEST, input).await?;
    ensure!(code == "ACCOUNT_MISMATCH", "{body}");
    let rooms = server.data(&jwt, ROOMS, json!({}), "tchapRooms").await?;
    ensure!(rooms["totalCount"] == 0, "a refused call stored a room: {rooms}");

    // By e-mail address: the identity server, then Synapse's own .well-known file.
    let input = json!({ "input": {
        "account": address, "accessToken": alice.access_token, "roomId": room,
        "classification": "RESTRICTED",
    } });
    let done = server.data(&jwt, INGEST, input, "ingestTchapRoom").await?;
    ensure!(done["messagesStored"] == 1, "{done}");
    ensure!(done["room"]["homeserverUrl"] == synapse.base_url(), "{done}");
    ensure!(done["ingestion"]["homeserverUrl"] == synapse.base_url(), "{done}");

    // A note by user id goes to the same homeserver, and its record says so.
    let input = json!({ "input": {
        "account": alice.user_id, "accessToken": alice.access_token, "roomId": room,
        "body": "note de l'analyste", "classification": "RESTRICTED",
    } });
    let posted = server.data(&jwt, POST, input, "postTchapMessage").await?;
    ensure!(posted["audit"]["homeserverUrl"] == synapse.base_url(), "{posted}");
    ensure!(posted["audit"]["outcome"] == "SUCCEEDED", "{posted}");
    let event_id = posted["eventId"].as_str().context("no event id")?;
    let seen = alice.event(&room, event_id).await?;
    ensure!(
        seen["content"]["body"].as_str().is_some_and(|b| b.ends_with("note de l'analyste")),
        "the note is not in the room: {seen}"
    );

    // A note by her account with mallory's token: refused, and audited as every refused post.
    let input = json!({ "input": {
        "account": alice.user_id, "accessToken": mallory.access_token, "roomId": room,
        "body": "note usurpée", "classification": "RESTRICTED",
    } });
    let (code, body) = server.error_code(&jwt, POST, input).await?;
    ensure!(code == "ACCOUNT_MISMATCH", "{body}");
    let trail = server.data(&jwt, TRAIL, json!({}), "tchapIngestions").await?;
    let newest = &trail["edges"][0]["node"];
    ensure!(newest["outcome"] == "FAILED" && newest["homeserverUrl"] == synapse.base_url(), "{trail}");
    ensure!(trail["totalCount"] == 3, "ingestion, post, refused post: {trail}");
    server.stop().await
}
