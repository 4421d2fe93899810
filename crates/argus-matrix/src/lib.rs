#![doc = include_str!("../README.md")]

mod api;
pub mod backup;
#[cfg(feature = "bench")]
#[doc(hidden)]
pub mod bench;
mod config;
mod connector;
mod device_transport;
pub mod discovery;
mod error;
mod media;
mod normalise;
mod policy;
mod secret_storage;
mod send;
mod session;
mod sync;
mod transport;

pub use argus_crypto::megolm::Undecryptable;
pub use config::{
    ConnectorConfig, DEFAULT_BATCH_PAGES, DEFAULT_EXTERNAL_HOMESERVERS, DEFAULT_MAX_MESSAGES,
    EVENTS_PER_MESSAGE, FetchOptions, HARD_MAX_MESSAGES, MediaRoute,
};
pub use connector::{Connector, HARD_MAX_STREAMED_MESSAGES, MAX_JOINED_ROOMS, RoomStream};
pub use device_transport::{
    DEVICE_PATH_PREFIX, DEVICE_REQUEST_TIMEOUT, DeviceTransport, MAX_DEVICE_RESPONSE_BYTES,
};
pub use error::{Error, Result};
pub use media::{MAX_REDIRECTS, MediaCapabilities, MediaDownload, MediaLimits};
pub use secret_storage::{MASTER_KEY_SECRET, SELF_SIGNING_KEY_SECRET, USER_SIGNING_KEY_SECRET};
pub use send::{MAX_TXN_ID_LEN, OutgoingNote, check_transaction_id, escape_html, markdown_to_html};
pub use session::{PairKeeper, RefreshingTokens, Session, StaticToken, TokenPair, TokenSource};
pub use sync::{
    InvitedRoom, JoinedRoomUpdate, LeftRoom, MAX_SYNC_RESPONSE_BYTES, MAX_SYNC_TIMEOUT, MAX_TO_DEVICE_EVENTS,
    SyncRequest, SyncUpdate,
};
