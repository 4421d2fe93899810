//! Integration tests of the store: one suite run on SQLite and on PostgreSQL, property tests
//! of the clearance filter, audit tampering, schema invariants and benchmarks' bad inputs.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the suite's fixtures fail loudly: a panic there is a failed test"
)]

mod account_watches;
mod added;
mod attachments;
mod audit;
mod bindings;
mod decrypted;
mod devices;
mod evidence;
mod hold;
mod homeservers;
mod journal_crash;
mod log;
mod props;
mod reads;
mod room_metadata;
mod room_state_history;
mod runs;
mod schema;
mod search;
mod search_oracle;
mod sender_trust;
mod support;
mod threats;
mod watch_status_migration;
mod watches;
mod writes;
