//! Integration tests of the GraphQL layer: contract, scopes, reads, cursors, limits and the
//! ingestion use-case against a SQLite store and a mock homeserver.

mod access;
mod account_states;
mod accounts;
mod attachments;
mod contract;
mod cost;
mod decrypted;
mod harness;
mod hold;
mod ingest;
mod post;
mod reads;
mod refresh;
mod room_state;
mod search;
mod subscription;
mod threats;
mod trust;
mod watch;
