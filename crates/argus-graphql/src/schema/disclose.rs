//! `discloseTchapRoom`: a disclosure package of one room over an optional range, limited to
//! what the caller may see ([`argus_disclose::disclose`]), written as one `.tar` in the server's
//! packages folder next to its [`PackageRecord`], and served at `/packages/{id}`.
//!
//! The bag is written in a private folder of the packages folder, tarred under its package id,
//! then removed: only the `.tar` and its record stay. The disclosure's own journal entry
//! (`DISCLOSE`) is written by [`argus_disclose`], included in the package's checkpoint.

use std::{path::Path, sync::Arc};

use argus_disclose::Request;
use argus_domain::{RoomId, Scope, Viewer};
use juniper::{GraphQLInputObject, GraphQLObject, ID};

use super::scalars::{DateTime, count};
use crate::{Admission, Context, Error, Result, oversight::PackageRecord};

/// The path under which packages are downloaded (`/packages/{id}`).
pub const PACKAGES_ROUTE_PREFIX: &str = "/packages/";

/// Input of `discloseTchapRoom`.
#[derive(GraphQLInputObject, Debug, Clone)]
#[graphql(name = "DiscloseTchapRoomInput", description = "The room to disclose, and the range.")]
pub struct DiscloseTchapRoomInput {
    /// Matrix room id of a room in the archive that the caller may read.
    pub room_id: String,
    /// Only what was sent at or after this time.
    pub from: Option<DateTime>,
    /// Only what was sent at or before this time.
    pub to: Option<DateTime>,
}

/// A disclosure package: the `.tar` of a BagIt bag.
#[derive(GraphQLObject, Debug, Clone, PartialEq, Eq)]
#[graphql(context = Context)]
pub struct TchapDisclosurePackage {
    /// The package id (the bag's `External-Identifier`).
    pub id: ID,
    /// SHA-512 of the `.tar`, hex.
    pub sha512: String,
    /// Size of the `.tar` in bytes.
    pub size: i32,
    /// Where the `.tar` is downloaded (`/packages/{id}`, with a bearer token of the caller's organisation holding tchap:disclose).
    pub download_url: String,
}

/// What `discloseTchapRoom` wrote.
#[derive(GraphQLObject, Debug, Clone, PartialEq, Eq)]
#[graphql(context = Context)]
pub struct DiscloseTchapRoomPayload {
    /// The package.
    pub package: Option<TchapDisclosurePackage>,
}

/// Writes the package of `input` for the caller (see the module documentation).
pub(crate) async fn disclose(
    context: &Context,
    input: DiscloseTchapRoomInput,
) -> Result<DiscloseTchapRoomPayload> {
    context.require(Scope::Disclose)?;
    let viewer = context.viewer().clone();
    let room_id: RoomId = input.room_id.parse()?;
    if let (Some(from), Some(to)) = (&input.from, &input.to)
        && from.0 > to.0
    {
        return Err(Error::invalid_input("`from` is after `to`".into()));
    }
    let services = context.services();
    services.app.admission.check_caller(&Admission::caller_of(&viewer)).map_err(Error::from)?;
    let (Some(oversight), Some(media)) = (services.oversight.clone(), services.app.media.clone()) else {
        return Err(Error::DisclosuresDisabled);
    };
    let request = Request {
        viewer: viewer.clone(),
        room_id,
        from: input.from.map(|d| d.0),
        to: input.to.map(|d| d.0),
        include_quarantined: false,
    };
    let store = services.app.store.clone();
    let runtime = tokio::runtime::Handle::current();
    // The store's calls block: the whole disclosure runs on the blocking pool.
    let record = tokio::task::spawn_blocking(move || {
        runtime.block_on(async {
            let blobs = Arc::clone(media.blobs());
            write(&store, &*blobs, &oversight.keys, &request, &oversight.packages_dir, &viewer).await
        })
    })
    .await
    .map_err(|_| Error::Service(argus_ingest::Error::Internal))??;
    Ok(DiscloseTchapRoomPayload {
        package: Some(TchapDisclosurePackage {
            download_url: format!("{PACKAGES_ROUTE_PREFIX}{}", record.id),
            id: ID::new(record.id),
            sha512: record.sha512,
            size: count(record.size),
        }),
    })
}

/// Writes the bag in a private folder of `dir`, tars it as `<id>.tar`, writes its record, and
/// removes the bag.
async fn write(
    store: &argus_store::Store,
    blobs: &dyn argus_media::BlobStore,
    keys: &argus_disclose::Keys,
    request: &Request,
    dir: &Path,
    viewer: &Viewer,
) -> Result<PackageRecord> {
    // Only the kind of a file error is kept: its text can name the packages' folder.
    let io = |e: std::io::Error| Error::Disclosure(std::io::Error::from(e.kind()).into());
    std::fs::create_dir_all(dir).map_err(io)?;
    let work = tempfile::Builder::new().prefix(".disclosure-").tempdir_in(dir).map_err(io)?;
    let bag = work.path().join("bag");
    let summary = argus_disclose::disclose(store, blobs, keys, request, &bag).await?;
    if !PackageRecord::is_valid_id(&summary.package_id) {
        return Err(Error::Disclosure(argus_disclose::Error::Log(
            "the package id cannot name a file".into(),
        )));
    }
    let named = work.path().join(&summary.package_id);
    std::fs::rename(&bag, &named).map_err(io)?;
    let tar = PackageRecord::tar_path(dir, &summary.package_id);
    let (sha512, size) = argus_disclose::write_tar(&named, &tar).map_err(|e| {
        // Best effort: a partial `.tar` without a record is never served.
        let _ = std::fs::remove_file(&tar);
        match e {
            argus_disclose::Error::Io(e) => io(e),
            e => Error::Disclosure(e),
        }
    })?;
    let record = PackageRecord {
        id: summary.package_id,
        org: viewer.org.as_str().to_owned(),
        clearance: viewer.clearance,
        actor: viewer.actor.as_str().to_owned(),
        sha512,
        size,
        room_id: request.room_id.as_str().to_owned(),
        held: viewer.has_scope(Scope::Redacted),
    };
    record.write(dir).map_err(io)?;
    work.close().map_err(io)?;
    Ok(record)
}
