//! Integration tests of disclosure packages: written from an in-memory log and a file blob
//! store, then checked with bagit-python, minisign, `verify.py`, `verify_package` and headless
//! Chromium.

mod support;

mod mismatch;
mod package;
mod store;
mod tamper;
mod transcript;
