//! The Client-Server API calls the connector makes, one module per endpoint (named after
//! Ruma's), each opening with its method, path and specification section.

pub(crate) mod create_filter;
pub(crate) mod download_media;
pub(crate) mod get_authorization_server_metadata;
pub(crate) mod get_backup_keys_for_room;
pub(crate) mod get_event_by_timestamp;
pub(crate) mod get_global_account_data;
pub(crate) mod get_latest_backup_info;
pub(crate) mod get_media_config;
pub(crate) mod get_message_events;
pub(crate) mod get_room_event;
pub(crate) mod get_state_events;
pub(crate) mod get_supported_versions;
pub(crate) mod joined_rooms;
pub(crate) mod media_proxy_download;
pub(crate) mod oauth_refresh;
pub(crate) mod refresh_token;
pub(crate) mod send_message_event;
pub(crate) mod sync_events;
pub(crate) mod whoami;
