//! Integration tests of the `argus-tchap` binary, run as an operator runs it. The end-to-end
//! suite against the real Synapse is the test binary `e2e` (`tests/e2e` of the workspace).

mod accounts;
mod cli;
mod oversight;
