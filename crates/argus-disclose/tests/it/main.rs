//! Integration tests of disclosure packages: written from an in-memory log and a file blob
//! store, then checked with bagit-python, minisign, `verify.py`, `verify_package` and headless
//! Chromium.

#![expect(clippy::unwrap_used, reason = "the suite's fixtures fail loudly: a panic there is a failed test")]

mod support;

mod mismatch;
mod package;
mod store;
mod tamper;
mod transcript;
mod trust;
