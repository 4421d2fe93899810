//! Integration tests of the connector against mock and real homeservers.

mod account_states;
mod cross_signing_keys;
mod device_transport;
mod discovery;
mod errors;
mod key_backup;
mod media;
mod media_hostile;
mod mock;
mod normalisation;
mod pagination;
mod policy;
mod refresh;
mod resets;
mod secrets;
mod session;
mod synapse;
mod synapse_media;
mod synapse_rooms;
mod synapse_sync;
mod sync_faults;
