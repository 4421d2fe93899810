//! Tests against a real Synapse homeserver started by `argus-testkit`.
