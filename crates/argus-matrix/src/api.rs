//! The Client-Server API calls the connector makes, one module per endpoint.

pub(crate) mod get_message_events;
pub(crate) mod get_room_event;
pub(crate) mod get_state_events;
