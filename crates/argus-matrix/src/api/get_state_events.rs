//! `GET /_matrix/client/v3/rooms/{roomId}/state` — Client-Server API §"Getting events for a
//! room" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstate)).
//!
//! Reads the current state of the room and keeps what the snapshot needs: name, topic,
//! canonical alias, joined members and whether the room is encrypted.

use std::{borrow::Cow, collections::HashSet};

use ruma::{OwnedRoomId, api::client::state::get_state_events::v3 as endpoint};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    Result,
    transport::{HttpClient, Target},
};

/// The parts of the room state a snapshot carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RoomState {
    pub(crate) name: Option<String>,
    pub(crate) topic: Option<String>,
    pub(crate) canonical_alias: Option<String>,
    pub(crate) member_count: u32,
    pub(crate) encrypted: bool,
    /// The room this one replaced (`m.room.create` `predecessor`).
    pub(crate) predecessor: Option<argus_domain::RoomId>,
    /// The room that replaced this one (`m.room.tombstone` `replacement_room`).
    pub(crate) successor: Option<argus_domain::RoomId>,
    pub(crate) malformed: u64,
}

#[derive(Deserialize)]
struct StateView<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    state_key: Cow<'a, str>,
    #[serde(borrow)]
    content: &'a RawValue,
}

/// `m.room.create`, as far as room upgrades go.
#[derive(Deserialize)]
struct CreateContent {
    #[serde(default)]
    predecessor: Option<Predecessor>,
}

#[derive(Deserialize)]
struct Predecessor {
    room_id: String,
}

/// `m.room.tombstone`.
#[derive(Deserialize)]
struct TombstoneContent {
    replacement_room: String,
}

#[derive(Deserialize, Default)]
struct StateContent {
    name: Option<String>,
    topic: Option<String>,
    alias: Option<String>,
    membership: Option<String>,
}

/// Fetches and summarises the state of a room.
pub(crate) async fn fetch(client: &HttpClient, target: &Target<'_>, room: &OwnedRoomId) -> Result<RoomState> {
    let response = client.send(target, endpoint::Request::new(room.clone())).await?;
    Ok(summarise(response.room_state.iter().map(|raw| raw.json().get())))
}

/// Summarises state events given as JSON; malformed ones are skipped and counted.
pub(crate) fn summarise<'a>(events: impl IntoIterator<Item = &'a str>) -> RoomState {
    let mut state = RoomState::default();
    let mut joined = HashSet::new();
    for json in events {
        let Ok(event) = serde_json::from_str::<StateView<'_>>(json) else {
            state.malformed += 1;
            continue;
        };
        // Upgrades: a room id the homeserver gives that is not valid is malformed, not a link.
        match (&*event.kind, event.state_key.is_empty()) {
            ("m.room.create", true) => {
                match serde_json::from_str::<CreateContent>(event.content.get()) {
                    Ok(content) => {
                        let link = content.predecessor.map(|p| p.room_id.parse::<argus_domain::RoomId>());
                        match link {
                            Some(Ok(room)) => state.predecessor = Some(room),
                            Some(Err(_)) => state.malformed += 1,
                            None => {}
                        }
                    }
                    Err(_) => state.malformed += 1,
                }
                continue;
            }
            ("m.room.tombstone", true) => {
                match serde_json::from_str::<TombstoneContent>(event.content.get())
                    .ok()
                    .and_then(|c| c.replacement_room.parse::<argus_domain::RoomId>().ok())
                {
                    Some(room) => state.successor = Some(room),
                    None => state.malformed += 1,
                }
                continue;
            }
            _ => {}
        }
        let relevant = matches!(
            &*event.kind,
            "m.room.name" | "m.room.topic" | "m.room.canonical_alias" | "m.room.member" | "m.room.encryption"
        );
        if !relevant {
            continue;
        }
        let Ok(content) = serde_json::from_str::<StateContent>(event.content.get()) else {
            state.malformed += 1;
            continue;
        };
        match &*event.kind {
            "m.room.name" => state.name = content.name.filter(|n| !n.is_empty()),
            "m.room.topic" => state.topic = content.topic.filter(|t| !t.is_empty()),
            "m.room.canonical_alias" => state.canonical_alias = content.alias,
            "m.room.member" => {
                if content.membership.as_deref() == Some("join") {
                    joined.insert(event.state_key.into_owned());
                }
            }
            _ => state.encrypted = true,
        }
    }
    state.member_count = u32::try_from(joined.len()).unwrap_or(u32::MAX);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_summarised() {
        let events = [
            r#"{"type":"m.room.name","state_key":"","content":{"name":"Crise"}}"#,
            r#"{"type":"m.room.topic","state_key":"","content":{"topic":"Suivi"}}"#,
            r##"{"type":"m.room.canonical_alias","state_key":"","content":{"alias":"#crise:a.fr"}}"##,
            r#"{"type":"m.room.member","state_key":"@a:a.fr","content":{"membership":"join"}}"#,
            r#"{"type":"m.room.member","state_key":"@b:a.fr","content":{"membership":"leave"}}"#,
            r#"{"type":"m.room.member","state_key":"@c:a.fr","content":{"membership":"join"}}"#,
            r#"{"type":"m.room.member","state_key":"@c:a.fr","content":{"membership":"join"}}"#,
            r#"{"type":"m.room.encryption","state_key":"","content":{"algorithm":"m.megolm.v1.aes-sha2"}}"#,
            r#"{"type":"m.room.name","state_key":"","content":{"name":42}}"#,
            r#"{"nope":1}"#,
        ];
        let s = summarise(events);
        assert_eq!(s.name.as_deref(), Some("Crise"));
        assert_eq!(s.topic.as_deref(), Some("Suivi"));
        assert_eq!(s.canonical_alias.as_deref(), Some("#crise:a.fr"));
        assert_eq!(s.member_count, 2);
        assert!(s.encrypted);
        assert_eq!(s.malformed, 2);
        assert_eq!((s.predecessor, s.successor), (None, None));
    }

    #[test]
    fn upgrade_links_are_read_from_create_and_tombstone() {
        let events = [
            r#"{"type":"m.room.create","state_key":"","content":{"room_version":"10","predecessor":{"room_id":"!old:a.fr","event_id":"$t"}}}"#,
            r#"{"type":"m.room.tombstone","state_key":"","content":{"body":"moved","replacement_room":"!new:a.fr"}}"#,
        ];
        let s = summarise(events);
        assert_eq!(s.predecessor.as_ref().map(|r| r.as_str()), Some("!old:a.fr"));
        assert_eq!(s.successor.as_ref().map(|r| r.as_str()), Some("!new:a.fr"));
        let broken = [
            r#"{"type":"m.room.tombstone","state_key":"","content":{"replacement_room":"not a room"}}"#,
            r##"{"type":"m.room.create","state_key":"","content":{"predecessor":{"room_id":"#alias:a.fr"}}}"##,
            r#"{"type":"m.room.tombstone","state_key":"x","content":{"replacement_room":"!other:a.fr"}}"#,
        ];
        let s = summarise(broken);
        assert_eq!((s.predecessor, s.successor, s.malformed), (None, None, 2));
    }
}
