//! Argus Tchap connector: test support (throw-away PostgreSQL, Synapse harness, fixtures).
