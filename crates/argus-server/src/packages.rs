//! `GET /packages/{id}`: a disclosure package (the `.tar` of its bag), to a bearer token of the
//! organisation that made it, cleared for the level it was limited to, holding
//! `tchap:disclose`. Every package the caller may not have (absent, malformed id, another
//! organisation's, above their clearance) answers the same 404. Sent as an attachment with the
//! hardening headers of `/media/{id}`.

use std::{io, path::PathBuf};

use actix_web::{
    HttpRequest, HttpResponse,
    body::SizedStream,
    http::{StatusCode, header},
    web,
};
use argus_domain::{Scope, policy};
use argus_graphql::oversight::PackageRecord;
use bytes::Bytes;
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;

use crate::{
    app::{AppState, authenticate, error_body},
    media::hardened,
};

/// The path prefix of `TchapDisclosurePackage.downloadUrl`.
pub const PACKAGES_ROUTE_PREFIX: &str = argus_graphql::PACKAGES_ROUTE_PREFIX;

/// Registers `GET /packages/{id}`.
pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(&format!("{PACKAGES_ROUTE_PREFIX}{{id}}"), web::get().to(download));
}

fn not_found() -> HttpResponse {
    hardened(StatusCode::NOT_FOUND).json(error_body("no such package", "NOT_FOUND"))
}

async fn download(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let viewer = match authenticate(&req, &state).await {
        Ok(viewer) => viewer,
        Err(response) => return response,
    };
    if let Err(e) = policy::require_scope(&viewer, Scope::Disclose) {
        return hardened(StatusCode::FORBIDDEN).json(error_body(&e.to_string(), "FORBIDDEN"));
    }
    let Some(dir) = state.services().oversight.as_ref().map(|o| o.packages_dir.clone()) else {
        return not_found();
    };
    let id = req.match_info().get("id").unwrap_or_default().to_owned();
    let found = {
        let (dir, id) = (dir.clone(), id.clone());
        tokio::task::spawn_blocking(move || PackageRecord::read(&dir, &id)).await
    };
    let record = match found {
        Ok(Ok(Some(record))) if record.may_download(&viewer) => record,
        Ok(Ok(_)) => return not_found(),
        _ => {
            tracing::error!("a package's record cannot be read");
            return hardened(StatusCode::INTERNAL_SERVER_ERROR)
                .json(error_body("the package cannot be read", "PACKAGE_READ_FAILED"));
        }
    };
    // A download of a package is a read of its room's content: journaled before a byte leaves.
    let read = argus_graphql::oversight::Read {
        action: argus_domain::oversight::AccessAction::Download,
        query: None,
        room_ids: vec![record.room_id.as_str()],
        item_count: 1,
        highest: Some(record.clearance),
    };
    if state.services().record_access(&viewer, &read).await.is_err() {
        return hardened(StatusCode::SERVICE_UNAVAILABLE)
            .json(error_body("the access journal cannot be written", "UNAVAILABLE"));
    }
    match open(PackageRecord::tar_path(&dir, &record.id)).await {
        Ok((size, stream)) => hardened(StatusCode::OK)
            .insert_header((header::CONTENT_TYPE, "application/x-tar"))
            .insert_header((
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}.tar\"", record.id),
            ))
            .insert_header((header::ETAG, format!("\"{}\"", record.sha512)))
            .body(SizedStream::new(size, stream)),
        Err(e) => {
            tracing::error!(kind = ?e.kind(), "a package's tar cannot be read");
            hardened(StatusCode::INTERNAL_SERVER_ERROR)
                .json(error_body("the package cannot be read", "PACKAGE_READ_FAILED"))
        }
    }
}

/// The file's size and its bytes as a stream of chunks (never read whole into memory).
async fn open(path: PathBuf) -> io::Result<(u64, crate::media::BlobStream)> {
    let file = tokio::fs::File::open(path).await?;
    let size = file.metadata().await?.len();
    let chunks = futures::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0_u8; 64 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    });
    Ok((size, chunks.boxed()))
}
