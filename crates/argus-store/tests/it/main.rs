//! Integration tests of the store: one suite run on SQLite and on PostgreSQL, property tests
//! of the clearance filter, audit tampering, schema invariants and benchmarks' bad inputs.

// `cfg(test)` marks these modules as test code for clippy: fixtures may unwrap and fail loudly.
#[cfg(test)]
mod audit;
#[cfg(test)]
mod decrypted;
#[cfg(test)]
mod evidence;
#[cfg(test)]
mod props;
#[cfg(test)]
mod reads;
#[cfg(test)]
mod runs;
#[cfg(test)]
mod schema;
#[cfg(test)]
mod search;
#[cfg(test)]
mod support;
#[cfg(test)]
mod threats;
#[cfg(test)]
mod writes;
