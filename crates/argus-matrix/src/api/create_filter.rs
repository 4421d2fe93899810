//! `POST /_matrix/client/v3/user/{userId}/filter` — Client-Server API §"Filtering"
//! ([spec](https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3useruseridfilter)).
//!
//! Uploads the filter of live capture's `/sync` ([`archive_filter`]); the homeserver answers
//! its id, which later syncs name instead of the whole definition.

use ruma::{
    OwnedUserId, UInt,
    api::client::filter::{
        Filter, FilterDefinition, LazyLoadOptions, RoomEventFilter, RoomFilter, create_filter::v3 as endpoint,
    },
};

use crate::{
    Result,
    transport::{HttpClient, Target},
};

/// Timeline events of each room one `/sync` answers at most; past it the room's timeline is
/// `limited` and the room reader fills the gap from the room's own position.
pub(crate) const TIMELINE_LIMIT: u32 = 20;

/// The state events the room reader reads (`get_state_events`): a change of one of them in a
/// room's timeline wakes the loop up. `m.room.create` is in every room's state, so that the
/// first sync lists every joined room even when its timeline holds nothing of the archive's.
pub(crate) const STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.member",
    "m.room.encryption",
    "m.room.tombstone",
    "m.room.retention",
    "im.vector.room.access_rules",
];

/// The message-like events the archive keeps (the normaliser's): reactions, receipts, typing
/// and the rest do not wake the loop up.
pub(crate) const MESSAGE_TYPES: &[&str] =
    &["m.room.message", "m.room.encrypted", "m.room.redaction", "m.sticker"];

/// The fields of each event the answer keeps: what the live loop reads (who changed whose
/// membership to what and when, where a room was upgraded to). Bodies are left out: the rooms
/// are read by the room reader, and a first sync of thousands of rooms stays small.
pub(crate) const EVENT_FIELDS: &[&str] = &[
    "type",
    "state_key",
    "sender",
    "origin_server_ts",
    "event_id",
    "content.membership",
    "content.replacement_room",
];

/// The filter of live capture: each room's timeline limited to the events the archive keeps
/// (messages and the state it reads, [`TIMELINE_LIMIT`] of them), its state to the state it
/// reads, members lazily loaded (only the senders of the timeline's events, and the account
/// itself); presence, account data and ephemeral events (receipts, typing) left out. Left rooms
/// are not asked for (`include_leave`): the `leave` section lists the rooms left since `since`
/// anyway. (To-device messages cannot be filtered: the homeserver hands the token's device its
/// own.)
pub(crate) fn archive_filter() -> FilterDefinition {
    let owned = |types: &[&str]| types.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>();
    let lazy = LazyLoadOptions::Enabled { include_redundant_members: false };

    let mut timeline = RoomEventFilter::empty();
    timeline.types = Some(owned(MESSAGE_TYPES).into_iter().chain(owned(STATE_TYPES)).collect());
    timeline.limit = Some(UInt::from(TIMELINE_LIMIT));
    timeline.lazy_load_options = lazy;

    let mut state = RoomEventFilter::empty();
    state.types = Some(owned(STATE_TYPES));
    state.lazy_load_options = lazy;

    // No type at all (`*`).
    let none = || vec!["*".to_owned()];
    let mut no_room_events = RoomEventFilter::empty();
    no_room_events.not_types = none();
    let mut no_events = Filter::empty();
    no_events.not_types = none();

    let mut room = RoomFilter::empty();
    room.timeline = timeline;
    room.state = state;
    room.ephemeral = no_room_events.clone();
    room.account_data = no_room_events;
    room.include_leave = false;

    let mut filter = FilterDefinition::empty();
    filter.event_fields = Some(owned(EVENT_FIELDS));
    filter.presence = no_events.clone();
    filter.account_data = no_events;
    filter.room = room;
    filter
}

/// Uploads `filter` for `user`; the id the homeserver gave it.
pub(crate) async fn create(
    client: &HttpClient,
    target: &Target<'_>,
    user: OwnedUserId,
    filter: FilterDefinition,
) -> Result<String> {
    Ok(client.send(target, endpoint::Request::new(user, filter)).await?.filter_id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::archive_filter;

    #[test]
    fn the_filter_keeps_the_archives_events_and_leaves_out_the_rest() {
        let filter = serde_json::to_value(archive_filter()).unwrap_or_else(|e| panic!("{e}"));
        let room = &filter["room"];
        assert_eq!(room["timeline"]["limit"], json!(20));
        assert_eq!(room["timeline"]["lazy_load_members"], json!(true));
        assert_eq!(room["state"]["lazy_load_members"], json!(true));
        let types = room["timeline"]["types"].as_array().cloned().unwrap_or_default();
        for kept in
            ["m.room.message", "m.room.encrypted", "m.room.redaction", "m.sticker", "m.room.tombstone"]
        {
            assert!(types.contains(&json!(kept)), "{kept}");
        }
        assert!(!types.contains(&json!("m.reaction")));
        assert!(room["state"]["types"].as_array().is_some_and(|t| t.contains(&json!("m.room.create"))));
        for excluded in
            [&filter["presence"], &filter["account_data"], &room["ephemeral"], &room["account_data"]]
        {
            assert_eq!(excluded["not_types"], json!(["*"]), "{filter}");
        }
        assert!(room.get("include_leave").is_none_or(|v| v == &json!(false)));
    }
}
