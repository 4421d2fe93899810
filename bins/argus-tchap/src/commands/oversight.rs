//! The oversight commands: the public keys to hand to an oversight body, the organisation's
//! signed checkpoint and the consistency proof from an earlier one.

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use argus_crypto::tlog::Checkpoint;
use argus_domain::OrgId;
use argus_graphql::oversight::Keys;
use argus_server::{Config, services};
use argus_store::Store;
use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::print_out;
use crate::cli::PublicKeyArgs;

/// `keys public`: the log's signed-note verifier key (`log: name+hexid+base64`) and the
/// packages' minisign public key (`package: base64`), each on its own line; with `--log` or
/// `--package`, that key alone, unlabelled.
pub fn keys_public(config: &Config, args: &PublicKeyArgs) -> Result<ExitCode> {
    config.prepare_directories()?;
    let keys = config.oversight_keys()?;
    let (log, package) = (keys.log.verifier_key(), keys.package.public_key());
    match (args.log, args.package) {
        (true, _) => print_out(log)?,
        (_, true) => print_out(&package)?,
        _ => print_out(&format!("log: {log}\npackage: {package}"))?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The signed note of `org`'s current checkpoint (origin `<log name>/<org>`), and its size.
pub fn signed_checkpoint(store: &Store, keys: &Keys, org: &OrgId) -> Result<(String, u64)> {
    let head = store.log_head(org).context("cannot read the log's head")?;
    let checkpoint =
        Checkpoint { origin: format!("{}/{}", keys.log_name, org), size: head.size, root: head.root };
    let note = keys.log.sign(&checkpoint).context("cannot sign the checkpoint")?;
    Ok((note, head.size))
}

/// `audit checkpoint --org ORG`: the organisation's current signed checkpoint (the note alone).
pub async fn audit_checkpoint(config: &Config, org: OrgId) -> Result<ExitCode> {
    let keys = config.oversight_keys()?;
    let store = services::open_store(config).await?;
    let (note, _) = tokio::task::spawn_blocking(move || signed_checkpoint(&store, &keys, &org)).await??;
    print_out(note.trim_end_matches('\n'))?;
    Ok(ExitCode::SUCCESS)
}

/// `audit consistency --org ORG --old-size N`: the current signed checkpoint, a blank line,
/// then the hashes of the consistency proof from size N to it, base64, one per line.
pub async fn audit_consistency(config: &Config, org: OrgId, old_size: u64) -> Result<ExitCode> {
    let keys = config.oversight_keys()?;
    let store = services::open_store(config).await?;
    let (note, proof) = tokio::task::spawn_blocking(move || -> Result<_> {
        let (note, size) = signed_checkpoint(&store, &keys, &org)?;
        if old_size > size {
            bail!("--old-size {old_size} is larger than the log ({size} entries)");
        }
        let proof = store.log_consistency(&org, old_size, size).context("cannot prove consistency")?;
        Ok((note, proof))
    })
    .await??;
    let mut out = note;
    out.push('\n');
    for hash in &proof {
        out.push_str(&STANDARD.encode(hash));
        out.push('\n');
    }
    print_out(out.trim_end_matches('\n'))?;
    Ok(ExitCode::SUCCESS)
}
