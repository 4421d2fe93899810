//! Argus Tchap connector: network-node entities for the fusion layer, outbox relay and sinks.
