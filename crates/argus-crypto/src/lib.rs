#![doc = include_str!("../README.md")]

pub mod attachment;
pub mod backup;
pub mod device;
mod encoding;
mod error;
pub mod megolm;
pub mod package_signing;
mod recovery_key;
pub mod secret_storage;
#[cfg(test)]
mod test_support;
pub mod tlog;

pub use error::{Error, Result, printable_name};
pub use megolm::Decryptor;
pub use recovery_key::RecoveryKey;
