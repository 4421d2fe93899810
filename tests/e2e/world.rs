//! The rooms built on Synapse and their ground truth, read back from Synapse itself (a Matrix
//! client's view of the timeline, state and members), independently of the connector.

use std::collections::HashMap;

use anyhow::{Context as _, Result, anyhow};
use argus_testkit::synapse::{Synapse, TestUser};
use serde_json::Value;

/// One message as a reader of the connector should see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) event_id: String,
    pub(crate) sender: String,
    pub(crate) msgtype: Option<String>,
    pub(crate) body: Option<String>,
    pub(crate) sent_at_ms: i64,
    pub(crate) edited: bool,
    pub(crate) redacted: bool,
    pub(crate) reply_to: Option<String>,
}

/// One room as Synapse holds it.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    pub(crate) room_id: String,
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) members: usize,
    /// Oldest first.
    pub(crate) messages: Vec<Message>,
}

impl Room {
    /// `origin_server_ts` of the newest message.
    pub(crate) fn last_activity_ms(&self) -> Option<i64> {
        self.messages.iter().map(|m| m.sent_at_ms).max()
    }
}

/// The Matrix side of the scenario.
pub(crate) struct World {
    /// Owner of every room; ingests for the first organisation.
    pub(crate) alice: TestUser,
    /// Member of the crisis room; ingests it for the second organisation.
    pub(crate) bob: TestUser,
    /// Many members, an edit, a redaction, a reply, a topic change (ingested RESTRICTED by org A,
    /// UNCLASSIFIED by org B).
    pub(crate) crisis: Room,
    /// Alice alone, a notice (ingested SECRET by org A).
    pub(crate) intel: Room,
    /// Ingested twice at once by org A.
    pub(crate) shared: Room,
}

/// Builds the rooms on Synapse, then reads their ground truth back from it.
pub(crate) async fn build(synapse: &Synapse) -> Result<World> {
    let alice = synapse.register("e2e_alice").await?;
    let bob = synapse.register("e2e_bob").await?;
    let carol = synapse.register("e2e_carol").await?;

    let crisis = alice.create_room(Some("Cellule de crise"), Some("Coordination"), false).await?;
    alice.invite(&crisis, &bob.user_id).await?;
    alice.invite(&crisis, &carol.user_id).await?;
    bob.join(&crisis).await?;
    carol.join(&crisis).await?;
    let first = alice.send_text(&crisis, "Point de situation à 8 h").await?;
    let typo = alice.send_text(&crisis, "Réunion en salle 12").await?;
    let secret_slip = alice.send_text(&crisis, "Le code d'accès est 4521").await?;
    carol.send_text(&crisis, "Je quitte la cellule").await?;
    bob.send_text(&crisis, "Reçu").await?;
    alice.edit(&crisis, &typo, "Réunion en salle 14").await?;
    alice.redact(&crisis, &secret_slip, Some("divulgation")).await?;
    carol.leave(&crisis).await?;
    alice.set_topic(&crisis, "Coordination interministérielle").await?;
    alice.send_text(&crisis, "Prochain point à 14 h").await?;
    bob.reply(&crisis, &first, "Bien noté pour 8 h").await?;

    let intel = alice.create_room(Some("Renseignement"), None, false).await?;
    alice.send_text(&intel, "Source A confirmée").await?;
    alice
        .send_message(&intel, &serde_json::json!({ "msgtype": "m.notice", "body": "Bulletin automatique" }))
        .await?;
    alice.send_text(&intel, "Source B à recouper").await?;

    let shared = alice.create_room(Some("Partagé"), Some("Ingéré deux fois à la fois"), false).await?;
    for i in 0..12 {
        alice.send_text(&shared, &format!("message partagé {i}")).await?;
    }

    Ok(World {
        crisis: truth(&alice, &crisis).await.context("crisis room truth")?,
        intel: truth(&alice, &intel).await.context("intel room truth")?,
        shared: truth(&alice, &shared).await.context("shared room truth")?,
        alice,
        bob,
    })
}

fn string(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// Reads a room's name, topic, joined members and timeline from Synapse and folds edits and
/// redactions the way the contract describes them.
async fn truth(user: &TestUser, room_id: &str) -> Result<Room> {
    let state = user.state(room_id).await?;
    let state = state.as_array().ok_or_else(|| anyhow!("state is not a list"))?;
    let state_of = |kind: &str, field: &str| {
        state
            .iter()
            .find(|e| e["type"] == kind && e["state_key"] == "")
            .and_then(|e| string(&e["content"][field]))
    };
    let members = user.joined_members(room_id).await?["joined"]
        .as_object()
        .map(serde_json::Map::len)
        .ok_or_else(|| anyhow!("joined_members has no `joined`"))?;

    let mut timeline = user.all_messages(room_id).await?;
    timeline.reverse();
    let mut messages = Vec::new();
    // target -> (ts, msgtype, body) of its latest edit
    let mut edits: HashMap<String, (i64, Option<String>, Option<String>)> = HashMap::new();
    for event in &timeline {
        if event["type"] != "m.room.message" {
            continue;
        }
        let content = &event["content"];
        let ts = event["origin_server_ts"].as_i64().ok_or_else(|| anyhow!("no ts in {event}"))?;
        if content["m.relates_to"]["rel_type"] == "m.replace" {
            let target =
                string(&content["m.relates_to"]["event_id"]).ok_or_else(|| anyhow!("edit target"))?;
            let new = &content["m.new_content"];
            if edits.get(&target).is_none_or(|(prev, _, _)| *prev <= ts) {
                edits.insert(target, (ts, string(&new["msgtype"]), string(&new["body"])));
            }
            continue;
        }
        let redacted = !event["unsigned"]["redacted_because"].is_null();
        messages.push(Message {
            event_id: string(&event["event_id"]).ok_or_else(|| anyhow!("no event_id in {event}"))?,
            sender: string(&event["sender"]).ok_or_else(|| anyhow!("no sender in {event}"))?,
            msgtype: if redacted { None } else { string(&content["msgtype"]) },
            body: if redacted { None } else { string(&content["body"]) },
            sent_at_ms: ts,
            edited: false,
            redacted,
            reply_to: string(&content["m.relates_to"]["m.in_reply_to"]["event_id"]),
        });
    }
    for message in &mut messages {
        if message.redacted {
            continue;
        }
        if let Some((_, msgtype, body)) = edits.remove(&message.event_id) {
            message.edited = true;
            message.msgtype = msgtype;
            message.body = body;
        }
    }
    Ok(Room {
        room_id: room_id.to_owned(),
        name: state_of("m.room.name", "name"),
        topic: state_of("m.room.topic", "topic"),
        members,
        messages,
    })
}
