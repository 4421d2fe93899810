//! Integration tests of argus-fusion: entities, schema, STIX, sinks and (over real SQLite
//! stores) the outbox relay.

mod entity;
mod relay;
mod sinks;
mod stix;
mod support;
mod webhook;
