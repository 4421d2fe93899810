//! The oversight commands: the public keys to hand to an oversight body, the organisation's
//! signed checkpoint and the consistency proof from an earlier one, disclosure packages and
//! their verification.

use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use argus_crypto::tlog::Checkpoint;
use argus_domain::{OrgId, Scope, Viewer};
use argus_graphql::oversight::Keys;
use argus_server::{Config, services};
use argus_store::Store;
use base64::{Engine as _, engine::general_purpose::STANDARD};

use super::print_out;
use crate::cli::{DiscloseArgs, PublicKeyArgs, VerifyPackageArgs};

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

/// `disclose`: writes the package of one room for a viewer of `--org` at `--clearance` (scopes to
/// read content; held content with `--include-held`), with the blob store `serve` uses; prints
/// the package id, what it holds and the size of its checkpoint.
pub async fn disclose(config: &Config, args: DiscloseArgs) -> Result<ExitCode> {
    let keys = config.oversight_keys()?;
    let media = services::open_media(config)?;
    let store = services::open_store(config).await?;
    let mut scopes = vec![Scope::Read, Scope::Disclose];
    if args.include_held {
        scopes.push(Scope::Redacted);
    }
    if args.include_quarantined {
        scopes.push(Scope::Quarantine);
    }
    let request = argus_disclose::Request {
        viewer: Viewer::new(args.actor, args.org, args.clearance, scopes),
        room_id: args.room,
        from: args.from,
        to: args.to,
        include_quarantined: args.include_quarantined,
    };
    let runtime = tokio::runtime::Handle::current();
    let out = args.out;
    // The store's calls block: the disclosure runs on the blocking pool.
    let summary = tokio::task::spawn_blocking(move || {
        runtime.block_on(argus_disclose::disclose(&store, &**media.blobs(), &keys, &request, &out))
    })
    .await?
    .context("cannot write the disclosure package")?;
    print_out(&format!(
        "package {}: {} messages, {} versions, {} attachments; checkpoint size {} (disclosure at log index {})",
        summary.package_id,
        summary.messages,
        summary.versions,
        summary.attachments,
        summary.checkpoint_size,
        summary.log_index,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `verify-package DIR --log-key KEY --package-key KEY`: checks the package against the keys
/// given; exit 0 with a summary, or an error naming the failed check.
pub fn verify_package(args: &VerifyPackageArgs) -> Result<ExitCode> {
    // The error names the failed check ("the package does not verify: …").
    let report = argus_disclose::verify_package(&args.dir, args.log_key.trim(), args.package_key.trim())?;
    print_out(&format!(
        "package {} verifies: organisation {}, room {}, {} messages, {} versions, {} attachments, \
         {} log records against a checkpoint of size {}",
        report.package_id,
        report.org,
        report.room_id,
        report.messages,
        report.versions,
        report.attachments,
        report.records,
        report.checkpoint_size,
    ))?;
    Ok(ExitCode::SUCCESS)
}
