//! Notes posted back into a room of the real Synapse through `postTchapMessage`: another member
//! sees the note with its marking and its HTML form; a reply to a message in a thread goes into
//! that thread; the same transaction sent twice posts once; a note above the posting ceiling
//! never arrives; and the room's next ingestion stores the notes like any message, where the
//! search finds them.

use anyhow::{Context, Result, ensure};
use argus_domain::{Classification::Secret, Scope};
use argus_testkit::synapse::Synapse;
use serde_json::{Value, json};

use crate::harness::Server;

const INGEST: &str = r"mutation($input: IngestTchapRoomInput!) {
  ingestTchapRoom(input: $input) { messagesStored }
}";

const POST: &str = r"mutation($input: PostTchapMessageInput!) {
  postTchapMessage(input: $input) { eventId transactionId body audit { action outcome eventId bodyLength } }
}";

const SEARCH: &str = r"query($q: String!) {
  tchapSearch(query: $q) { edges { snippet node { eventId body replyTo threadRoot } room { roomId } } }
}";

/// Runs the scenario on the store at `database_url`.
pub(crate) async fn run(synapse: &Synapse, database_url: &str, dir: &std::path::Path) -> Result<()> {
    let alice = synapse.register("note_alice").await?;
    let bob = synapse.register("note_bob").await?;
    let room = alice.create_room(Some("Cellule de crise"), None, false).await?;
    alice.invite(&room, &bob.user_id).await?;
    bob.join(&room).await?;
    let root = alice.send_text(&room, "fil : évacuation du quai nord").await?;
    let in_thread = bob.send_in_thread(&room, &root, "le quai nord est dégagé").await?;

    let server = Server::start(database_url, dir).await?;
    let jwt = server.jwt(
        "analyst@dgsi",
        "dgsi",
        Secret,
        &[Scope::Read, Scope::Ingest, Scope::Post, Scope::Audit],
    )?;
    let ingest = json!({ "input": {
        "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
        "classification": "RESTRICTED"
    } });
    server.data(&jwt, INGEST, ingest.clone(), "ingestTchapRoom").await?;

    let note = |body: &str, level: &str, extra: Value| {
        let mut input = json!({
            "homeserverUrl": synapse.base_url(), "accessToken": alice.access_token, "roomId": room,
            "body": body, "classification": level,
        });
        if let (Some(input), Some(extra)) = (input.as_object_mut(), extra.as_object()) {
            input.extend(extra.clone());
        }
        json!({ "input": input })
    };
    let posted = server
        .data(
            &jwt,
            POST,
            note("**Point de situation** : renforts à 14h", "RESTRICTED", json!({})),
            "postTchapMessage",
        )
        .await?;
    let event = posted["eventId"].as_str().context("eventId")?.to_owned();
    ensure!(posted["audit"]["action"] == "POST" && posted["audit"]["eventId"] == event.as_str(), "{posted}");

    // The reply to a message in a thread goes into that thread.
    let reply = server
        .data(
            &jwt,
            POST,
            note("bien reçu", "UNCLASSIFIED", json!({ "replyTo": in_thread })),
            "postTchapMessage",
        )
        .await?;
    let reply_event = reply["eventId"].as_str().context("reply eventId")?.to_owned();

    // The same transaction twice posts once.
    let keyed = note("relève à 20h", "RESTRICTED", json!({ "transactionId": "e2e-releve-1" }));
    let first = server.data(&jwt, POST, keyed.clone(), "postTchapMessage").await?;
    let second = server.data(&jwt, POST, keyed, "postTchapMessage").await?;
    ensure!(first["eventId"] == second["eventId"], "a retried transaction posted twice: {first} {second}");

    // Above the posting ceiling: refused, never sent.
    let (code, _) =
        server.error_code(&jwt, POST, note("ne doit pas partir", "CONFIDENTIAL", json!({}))).await?;
    ensure!(code == "WRITE_DOWN", "a CONFIDENTIAL note: {code}");

    // What Bob's client sees.
    let seen = bob.all_messages(&room).await?;
    let by_id = |id: &str| seen.iter().find(|e| e["event_id"] == id).cloned();
    let shown = by_id(&event).with_context(|| format!("the note is not in the room: {seen:?}"))?;
    ensure!(
        shown["sender"] == alice.user_id.as_str()
            && shown["content"]["body"] == "[DIFFUSION RESTREINTE] **Point de situation** : renforts à 14h"
            && shown["content"]["format"] == "org.matrix.custom.html"
            && shown["content"]["formatted_body"]
                == "[DIFFUSION RESTREINTE] <p><strong>Point de situation</strong> : renforts à 14h</p>",
        "the note as Bob sees it: {shown}"
    );
    let threaded = by_id(&reply_event).context("the reply is not in the room")?;
    let relation = &threaded["content"]["m.relates_to"];
    ensure!(
        relation["rel_type"] == "m.thread"
            && relation["event_id"] == root.as_str()
            && relation["m.in_reply_to"]["event_id"] == in_thread.as_str(),
        "the reply as Bob sees it: {threaded}"
    );
    let bodies = |text: &str| {
        seen.iter().filter(|e| e["content"]["body"].as_str().is_some_and(|b| b.contains(text))).count()
    };
    ensure!(bodies("relève à 20h") == 1, "the retried note is in the room {} times", bodies("relève à 20h"));
    ensure!(bodies("ne doit pas partir") == 0, "a refused note reached the room");

    // The next ingestion stores the notes like any message; the search finds them.
    let again = server.data(&jwt, INGEST, ingest, "ingestTchapRoom").await?;
    ensure!(again["messagesStored"] == 3, "the notes were not stored: {again}");
    let found = server.data(&jwt, SEARCH, json!({ "q": "renforts" }), "tchapSearch").await?;
    let hit = &found["edges"][0];
    ensure!(
        hit["node"]["eventId"] == event.as_str()
            && hit["room"]["roomId"] == room.as_str()
            && hit["snippet"].as_str().is_some_and(|s| s.contains("<mark>renforts</mark>")),
        "search for the note: {found}"
    );
    let found = server.data(&jwt, SEARCH, json!({ "q": "\"bien recu\"" }), "tchapSearch").await?;
    ensure!(
        found["edges"][0]["node"]["threadRoot"] == root.as_str()
            && found["edges"][0]["node"]["replyTo"] == in_thread.as_str(),
        "the stored reply: {found}"
    );
    server.stop().await
}
