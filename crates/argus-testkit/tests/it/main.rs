//! Integration tests of the test kit: the throw-away PostgreSQL clusters and the real Synapse.

mod account_states;
mod e2ee_client;
mod postgres;
mod synapse;
