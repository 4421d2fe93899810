//! In-process HTTP tests of the real app on 127.0.0.1:0 with a SQLite store in a temp dir.

mod access;
mod harness;
mod http;
mod jwt;
mod limits;
mod media;
mod packages;
mod subscriptions;
