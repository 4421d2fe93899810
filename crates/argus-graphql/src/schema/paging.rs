//! Relay connections over the store's keyset pages, with authenticated cursors.

use argus_domain::{PageRequest, RoomId};
use argus_store::{IngestionCursor, MessageCursor, RoomCursor};
use serde::de::DeserializeOwned;

use super::types::{
    TchapIngestion, TchapIngestionConnection, TchapMessage, TchapMessageConnection, TchapRoom,
    TchapRoomConnection,
};
use crate::{Context, CursorKind, Error, Result};

/// A connection type built from cursor/node pairs.
pub(crate) trait Connection {
    /// The node type.
    type Node;
    /// Builds the connection.
    fn build(edges: Vec<(String, Self::Node)>, has_next_page: bool, total_count: i64) -> Self;
}

/// Checks `first` and decodes `after` for the caller.
fn page_request<P: DeserializeOwned>(
    context: &Context,
    kind: CursorKind<'_>,
    first: Option<i32>,
    after: Option<&str>,
) -> Result<PageRequest<P>> {
    let limits = context.services().limits;
    let first = match first {
        None => limits.default_page_size,
        Some(n) => u32::try_from(n).ok().filter(|n| *n <= limits.max_page_size).ok_or_else(|| {
            Error::InvalidInput(format!("first must be between 0 and {}", limits.max_page_size))
        })?,
    };
    let after = after
        .map(|cursor| context.services().cursor_key.decode::<P>(kind, context.viewer(), cursor))
        .transpose()?;
    Ok(PageRequest { first, after })
}

pub(crate) async fn rooms_connection(
    context: &Context,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TchapRoomConnection> {
    let request: PageRequest<RoomCursor> = page_request(context, CursorKind::Rooms, first, after.as_deref())?;
    let viewer = context.viewer().clone();
    let page = context.services().with_store(move |store| store.rooms(&viewer, &request)).await?;
    let key = &context.services().cursor_key;
    let edges = page
        .items
        .into_iter()
        .map(|room| {
            (key.encode(CursorKind::Rooms, context.viewer(), &RoomCursor::of(&room)), TchapRoom(room))
        })
        .collect();
    Ok(TchapRoomConnection::build(edges, page.has_next_page, page.total_count))
}

pub(crate) async fn messages_connection(
    context: &Context,
    room_id: RoomId,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TchapMessageConnection> {
    let kind = CursorKind::Messages(room_id.as_str());
    let request: PageRequest<MessageCursor> = page_request(context, kind, first, after.as_deref())?;
    let viewer = context.viewer().clone();
    let room = room_id.clone();
    let page = context.services().with_store(move |store| store.messages(&viewer, &room, &request)).await?;
    let key = &context.services().cursor_key;
    let kind = CursorKind::Messages(room_id.as_str());
    let edges = page
        .items
        .into_iter()
        .map(|m| (key.encode(kind, context.viewer(), &MessageCursor::of(&m)), TchapMessage(m)))
        .collect();
    Ok(TchapMessageConnection::build(edges, page.has_next_page, page.total_count))
}

pub(crate) async fn ingestions_connection(
    context: &Context,
    first: Option<i32>,
    after: Option<String>,
) -> Result<TchapIngestionConnection> {
    let request: PageRequest<IngestionCursor> =
        page_request(context, CursorKind::Ingestions, first, after.as_deref())?;
    let viewer = context.viewer().clone();
    let page = context.services().with_store(move |store| store.ingestions(&viewer, &request)).await?;
    let key = &context.services().cursor_key;
    let edges = page
        .items
        .into_iter()
        .map(|r| {
            (
                key.encode(CursorKind::Ingestions, context.viewer(), &IngestionCursor::of(&r)),
                TchapIngestion(r),
            )
        })
        .collect();
    Ok(TchapIngestionConnection::build(edges, page.has_next_page, page.total_count))
}
