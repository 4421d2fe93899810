//! Integration tests of the test kit: the throw-away PostgreSQL clusters and the real Synapse.

mod account_states;
mod postgres;
mod synapse;
