//! Integration tests of the connector against mock and real homeservers.

mod errors;
mod mock;
mod normalisation;
mod pagination;
mod policy;
mod secrets;
mod synapse;
