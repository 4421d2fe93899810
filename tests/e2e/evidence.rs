//! Evidence integrity against the real Synapse: after a first ingestion, another member edits
//! and redacts a message that is not theirs, its sender edits another, and the room's
//! moderator redacts a third. The next ingestions apply only what the Matrix rules allow: the
//! sender's own edit (every version kept, never twice) and the redaction the homeserver
//! confirms (with who, when and why); the rest is counted as ignored and changes nothing.

use anyhow::{Context, Result, ensure};
use argus_domain::{Classification::Restricted, Scope};
use argus_testkit::synapse::Synapse;
use serde_json::json;

use crate::harness::Server;

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesStored editsApplied editsIgnored redactionsIgnored }
}";

const MESSAGES: &str = r"query($r: String!) { tchapMessages(roomId: $r, first: 50) { edges { node {
  eventId sender body edited redacted redactedBy redactedAt redactionReason
  versions { eventId sender sentAt msgtype body }
} } } }";

/// Runs the scenario on the store at `database_url`.
pub(crate) async fn run(synapse: &Synapse, database_url: &str, dir: &std::path::Path) -> Result<()> {
    let alice = synapse.register("ev_alice").await?;
    let mallory = synapse.register("ev_mallory").await?;
    let room = alice.create_room(Some("Évidence"), None, false).await?;
    alice.invite(&room, &mallory.user_id).await?;
    mallory.join(&room).await?;
    let meeting = alice.send_text(&room, "rendez-vous 10h").await?;
    let note = alice.send_text(&room, "note de synthèse").await?;
    let chatter = mallory.send_text(&room, "hors sujet").await?;

    let server = Server::start(database_url, dir).await?;
    let jwt = server.jwt("analyst@dgsi", "dgsi", Restricted, &[Scope::Read, Scope::Ingest])?;
    let input = json!({ "input": {
        "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
        "classification": "RESTRICTED"
    } });
    let first = server.data(&jwt, INGEST, input.clone(), "ingestTchapRoom").await?;
    ensure!(first["messagesStored"] == 3, "first ingestion: {first}");

    // After the first ingestion: a forged edit and a forged redaction by Mallory, Alice's own
    // edit, and a redaction by Alice as the room's moderator (power 100).
    mallory.edit(&room, &meeting, "rendez-vous annulé").await?;
    let forged_redaction = mallory.redact(&room, &meeting, Some("effacer")).await.is_ok();
    let own_edit = alice.edit(&room, &note, "note de synthèse corrigée").await?;
    alice.redact(&room, &chatter, Some("hors sujet")).await?;
    // Synapse serves Alice's message unredacted: it did not apply Mallory's redaction.
    let served = alice.event(&room, &meeting).await?;
    ensure!(served["unsigned"].get("redacted_because").is_none(), "Synapse applied it: {served}");

    let second = server.data(&jwt, INGEST, input.clone(), "ingestTchapRoom").await?;
    let ignored_redactions = u64::from(forged_redaction);
    ensure!(
        second["editsApplied"] == 1
            && second["editsIgnored"] == 1
            && second["redactionsIgnored"] == ignored_redactions,
        "second ingestion: {second}"
    );
    let third = server.data(&jwt, INGEST, input, "ingestTchapRoom").await?;
    ensure!(third["messagesStored"] == 0, "third ingestion: {third}");

    let edges = server.data(&jwt, MESSAGES, json!({ "r": room }), "tchapMessages").await?;
    let node = |id: &str| crate::harness::message_node(&edges, id);
    let meeting = node(&meeting)?;
    ensure!(
        meeting["body"] == "rendez-vous 10h"
            && meeting["edited"] == false
            && meeting["redacted"] == false
            && meeting["versions"] == json!([]),
        "a forged edit or redaction changed the stored message: {meeting}"
    );
    let note_node = node(&note)?;
    let versions = note_node["versions"].as_array().context("versions")?;
    ensure!(note_node["body"] == "note de synthèse corrigée" && note_node["edited"] == true, "{note_node}");
    ensure!(versions.len() == 2, "versions kept once each: {note_node}");
    ensure!(
        versions[0]["eventId"] == note.as_str()
            && versions[0]["body"] == "note de synthèse"
            && versions[1]["eventId"] == own_edit.as_str()
            && versions[1]["body"] == "note de synthèse corrigée"
            && versions.iter().all(|v| v["sender"] == alice.user_id.as_str()),
        "versions: {note_node}"
    );
    let chatter = node(&chatter)?;
    ensure!(
        chatter["redacted"] == true
            && chatter["body"].is_null()
            && chatter["redactedBy"] == alice.user_id.as_str()
            && chatter["redactionReason"] == "hors sujet"
            && chatter["redactedAt"].is_string(),
        "the confirmed redaction: {chatter}"
    );
    server.stop().await
}
