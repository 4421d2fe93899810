#![doc = include_str!("../README.md")]

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
pub use sink::{
    JsonLinesSink, ORG_PLACEHOLDER, SIGNATURE_HEADER, Sink, SinkFuture, TIMESTAMP_HEADER, WebhookOptions,
    WebhookSecret, WebhookSink,
};
pub use stix::{INFRASTRUCTURE_TYPE, tlp_name, to_stix_bundle};
