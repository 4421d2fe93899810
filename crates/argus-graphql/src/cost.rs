//! What a document asks for, in items (rooms, messages, audit records), computed from the
//! look-ahead of a root field before anything is read: a connection costs its page size times
//! one plus what each of its nodes asks for, so `tchapRooms(first: 500) { edges { node {
//! messages(first: 500) … } } }` costs 250,500, and aliases add up.

use juniper::{LookAheadSelection, LookAheadValue, ScalarValue};

/// Items a connection field asks for.
pub(crate) fn connection_items<S: ScalarValue>(field: &LookAheadSelection<'_, S>, default_first: u32) -> u64 {
    items_through(field, "node", default_first)
}

/// Items `tchapSearch` asks for: its page size times one plus what the room of each edge
/// asks for through its `messages` connections.
pub(crate) fn search_items<S: ScalarValue>(field: &LookAheadSelection<'_, S>, default_first: u32) -> u64 {
    items_through(field, "room", default_first)
}

/// A connection's page size times one plus what the `child` of each edge asks for through its
/// `messages` connections.
fn items_through<S: ScalarValue>(field: &LookAheadSelection<'_, S>, child: &str, default_first: u32) -> u64 {
    let first = first_of(field, default_first);
    let mut per_edge = 0_u64;
    for edges in field.children().iter().filter(|c| c.field_original_name() == "edges") {
        for below in edges.children().iter().filter(|c| c.field_original_name() == child) {
            per_edge = per_edge.saturating_add(room_items(below, default_first));
        }
    }
    first.saturating_mul(per_edge.saturating_add(1))
}

/// Whether a connection's edges select `name`.
pub(crate) fn edges_select<S: ScalarValue>(field: &LookAheadSelection<'_, S>, name: &str) -> bool {
    field
        .children()
        .iter()
        .filter(|c| c.field_original_name() == "edges")
        .any(|edges| edges.children().iter().any(|c| c.field_original_name() == name))
}

/// Items a room asks for through its `messages` connections (every alias counted); a node of
/// another type has no such field and costs nothing more.
pub(crate) fn room_items<S: ScalarValue>(room: &LookAheadSelection<'_, S>, default_first: u32) -> u64 {
    room.children()
        .iter()
        .filter(|c| c.field_original_name() == "messages")
        .map(|messages| connection_items(messages, default_first))
        .fold(0, u64::saturating_add)
}

/// The `first` argument: given, from a variable, or the default; a negative or non-integer
/// value is left to the resolver to reject.
fn first_of<S: ScalarValue>(field: &LookAheadSelection<'_, S>, default_first: u32) -> u64 {
    match field.argument("first").map(|a| a.value()) {
        Some(LookAheadValue::Scalar(s)) => s.try_to_int().map_or(0, |n| u64::try_from(n).unwrap_or(0)),
        _ => u64::from(default_first),
    }
}
