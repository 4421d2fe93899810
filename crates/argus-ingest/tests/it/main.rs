//! Integration tests of the application services against the mock homeserver, on SQLite and
//! on PostgreSQL (skipped loudly when PostgreSQL is absent, failing with
//! `ARGUS_REQUIRE_POSTGRES=1`).

mod account_states;
mod accounts;
mod device;
mod homeservers;
mod limits;
mod live;
mod media;
mod new_messages;
mod pg_restart;
mod refresh;
mod room_state;
mod shared_pairs;
mod streamed;
mod support;
mod upgrades;
mod watches;
