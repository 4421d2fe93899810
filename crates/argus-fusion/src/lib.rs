//! Argus Tchap connector: network-node entities for the fusion layer, outbox relay and sinks.
//!
//! Every successful ingestion leaves one row in the store's outbox (written in the ingestion's
//! transaction). The [`Relay`] turns each row into a versioned [`NetworkNode`] entity and
//! delivers it, at least once and in outbox order, to the configured [`Sink`]s: a JSON Lines
//! file ([`JsonLinesSink`], the default) and an HTTP webhook ([`WebhookSink`]). A row that
//! keeps failing is parked after [`RelayOptions::park_after_attempts`] passes and shown by
//! [`status`].
//!
//! The entity's JSON Schema is [`network_node_schema`] (`docs/network-node.schema.json`);
//! [`to_stix_bundle`] renders an entity as STIX 2.1 for platforms that speak STIX.

mod config;
mod entity;
mod error;
mod relay;
mod sink;
mod stix;

pub use argus_store::{OutboxRow, OutboxStatus};
pub use config::{FusionConfig, WebhookConfig, build_sinks};
pub use entity::{
    ENTITY_SOURCE, ENTITY_TYPE, NETWORK_NODE_NAMESPACE, NetworkNode, SCHEMA_VERSION, network_node_schema,
};
pub use error::{Error, Result};
pub use relay::{MAX_RETRY_DELAY, Relay, RelayOptions, RelayReport, SHUTDOWN_GRACE, status};
pub use sink::{JsonLinesSink, Sink, SinkFuture, WebhookOptions, WebhookSink};
pub use stix::{INFRASTRUCTURE_TYPE, tlp_name, to_stix_bundle};
