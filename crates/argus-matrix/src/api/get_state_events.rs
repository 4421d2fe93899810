//! `GET /_matrix/client/v3/rooms/{roomId}/state` — Client-Server API §"Getting events for a
//! room" ([spec](https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstate)).
//!
//! Reads the current state of the room and keeps what the snapshot needs: name, topic,
//! canonical alias, joined members (and how many are on external homeservers), whether the room
//! is encrypted, its version, retention policy (`m.room.retention`) and Tchap access rule
//! (`im.vector.room.access_rules`).

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
    /// Room version, retention, access rule and external members.
    pub(crate) metadata: argus_domain::RoomMetadata,
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

/// `m.room.create`, as far as room upgrades and the room version go.
#[derive(Deserialize)]
struct CreateContent {
    #[serde(default)]
    predecessor: Option<Predecessor>,
    #[serde(default)]
    room_version: Option<serde_json::Value>,
}

/// `m.room.retention`: lifetimes in milliseconds, checked by [`argus_domain::Retention::from_state`].
#[derive(Deserialize)]
struct RetentionContent {
    #[serde(default)]
    max_lifetime: Option<serde_json::Value>,
    #[serde(default)]
    min_lifetime: Option<serde_json::Value>,
}

/// Tchap's `im.vector.room.access_rules`.
#[derive(Deserialize)]
struct AccessRulesContent {
    #[serde(default)]
    rule: Option<serde_json::Value>,
}

/// The longest room version kept (the specification's own are a few characters).
const MAX_ROOM_VERSION_LEN: usize = 32;

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

/// Fetches and summarises the state of a room; joined members on one of `external` servers are
/// counted apart.
pub(crate) async fn fetch(
    client: &HttpClient,
    target: &Target<'_>,
    room: &OwnedRoomId,
    external: &[String],
) -> Result<RoomState> {
    let response = client.send(target, endpoint::Request::new(room.clone())).await?;
    Ok(summarise(response.room_state.iter().map(|raw| raw.json().get()), external))
}

/// Whether `user_id`'s server name (what follows its first `:`) is one of `servers`, compared
/// without regard to ASCII case.
pub(crate) fn is_on_servers(user_id: &str, servers: &[String]) -> bool {
    user_id.split_once(':').is_some_and(|(_, server)| servers.iter().any(|s| s.eq_ignore_ascii_case(server)))
}

/// Summarises state events given as JSON; malformed ones are skipped and counted.
pub(crate) fn summarise<'a>(events: impl IntoIterator<Item = &'a str>, external: &[String]) -> RoomState {
    let mut state = RoomState::default();
    let mut joined = HashSet::new();
    let mut room_version = None;
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
                        // The specification's default is version 1; a value that is not a
                        // short string is malformed and left out.
                        room_version = match content.room_version {
                            None => Some("1".to_owned()),
                            Some(serde_json::Value::String(v))
                                if !v.is_empty()
                                    && v.len() <= MAX_ROOM_VERSION_LEN
                                    && v.chars().all(|c| c.is_ascii_graphic()) =>
                            {
                                Some(v)
                            }
                            Some(_) => {
                                state.malformed += 1;
                                None
                            }
                        };
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
            ("m.room.retention", true) => {
                // Removed (`{}`) or malformed: no policy.
                state.metadata.retention =
                    serde_json::from_str::<RetentionContent>(event.content.get()).ok().and_then(|c| {
                        argus_domain::Retention::from_state(c.max_lifetime.as_ref(), c.min_lifetime.as_ref())
                    });
                continue;
            }
            ("im.vector.room.access_rules", true) => {
                state.metadata.access_rule = serde_json::from_str::<AccessRulesContent>(event.content.get())
                    .ok()
                    .and_then(|c| c.rule)
                    .and_then(|rule| rule.as_str().and_then(argus_domain::access_rule));
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
    let external_members = joined.iter().filter(|user| is_on_servers(user, external)).count();
    state.metadata.external_member_count = u32::try_from(external_members).unwrap_or(u32::MAX);
    state.metadata.room_version = room_version;
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
        let s = summarise(events, &[]);
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
        let s = summarise(events, &[]);
        assert_eq!(s.predecessor.as_ref().map(|r| r.as_str()), Some("!old:a.fr"));
        assert_eq!(s.successor.as_ref().map(|r| r.as_str()), Some("!new:a.fr"));
        let broken = [
            r#"{"type":"m.room.tombstone","state_key":"","content":{"replacement_room":"not a room"}}"#,
            r##"{"type":"m.room.create","state_key":"","content":{"predecessor":{"room_id":"#alias:a.fr"}}}"##,
            r#"{"type":"m.room.tombstone","state_key":"x","content":{"replacement_room":"!other:a.fr"}}"#,
        ];
        let s = summarise(broken, &[]);
        assert_eq!((s.predecessor, s.successor, s.malformed), (None, None, 2));
    }

    #[test]
    fn server_names_are_matched_after_the_first_colon() {
        let external = ["agent.externe.tchap.gouv.fr".to_owned(), "h.test:8448".to_owned()];
        assert!(is_on_servers("@jean.dupont-gmail.com:agent.externe.tchap.gouv.fr", &external));
        assert!(is_on_servers("@a:AGENT.EXTERNE.TCHAP.GOUV.FR", &external));
        assert!(is_on_servers("@a:h.test:8448", &external), "a port is part of the server name");
        assert!(!is_on_servers("@a:h.test", &external));
        assert!(!is_on_servers("@a:agent.interieur.tchap.gouv.fr", &external));
        assert!(!is_on_servers("@a:x.agent.externe.tchap.gouv.fr", &external));
        assert!(!is_on_servers("agent.externe.tchap.gouv.fr", &external), "not a user id");
        assert!(!is_on_servers("@a:agent.externe.tchap.gouv.fr", &[]));
    }

    #[test]
    fn tchap_metadata_is_read_from_state() {
        let events = [
            r#"{"type":"m.room.create","state_key":"","content":{"room_version":"10"}}"#,
            r#"{"type":"m.room.retention","state_key":"","content":{"max_lifetime":86400000,"min_lifetime":"soon"}}"#,
            r#"{"type":"im.vector.room.access_rules","state_key":"","content":{"rule":"unrestricted"}}"#,
            r#"{"type":"m.room.member","state_key":"@a:agent.finances.tchap.gouv.fr","content":{"membership":"join"}}"#,
            r#"{"type":"m.room.member","state_key":"@b:agent.externe.tchap.gouv.fr","content":{"membership":"join"}}"#,
            r#"{"type":"m.room.member","state_key":"@c:agent.externe.tchap.gouv.fr","content":{"membership":"leave"}}"#,
        ];
        let s = summarise(events, &["agent.externe.tchap.gouv.fr".to_owned()]);
        let m = &s.metadata;
        assert_eq!(m.room_version.as_deref(), Some("10"));
        assert_eq!(
            m.retention,
            Some(argus_domain::Retention { max_lifetime_ms: Some(86_400_000), min_lifetime_ms: None })
        );
        assert_eq!(m.access_rule.as_deref(), Some("unrestricted"));
        assert_eq!((s.member_count, m.external_member_count), (2, 1));

        let odd = [
            r#"{"type":"m.room.create","state_key":"","content":{}}"#,
            r#"{"type":"m.room.retention","state_key":"","content":{"max_lifetime":-5}}"#,
            r#"{"type":"im.vector.room.access_rules","state_key":"","content":{"rule":"a\u0007b"}}"#,
        ];
        let s = summarise(odd, &[]);
        assert_eq!(s.metadata.room_version.as_deref(), Some("1"), "the specification's default");
        assert_eq!((s.metadata.retention, s.metadata.access_rule), (None, None));
        let long = format!(
            r#"{{"type":"im.vector.room.access_rules","state_key":"","content":{{"rule":"{}"}}}}"#,
            "x".repeat(65)
        );
        assert_eq!(summarise([long.as_str()], &[]).metadata.access_rule, None);
        let removed = [r#"{"type":"m.room.retention","state_key":"","content":{}}"#];
        assert_eq!(summarise(removed, &[]).metadata.retention, None);
    }
}
