//! `PUT /v2/apps/:guid/bits`: a multipart upload (`resources`, `application`) of the app's zip,
//! streamed to `<data_dir>/packages` while its SHA-256 is computed, refused past
//! `server.max_upload_mb`; then the package is recorded in the log. Stored by content, so a
//! re-upload of the same bits costs no space.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use tally_domain::{access, Command, Guid};
use tokio::io::AsyncWriteExt;

use crate::auth::Caller;
use crate::v2::apps::app_not_found;
use crate::{deny, ApiError, AppState};

fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "AppBitsUploadInvalid",
        160001,
        format!("The app upload is invalid: {why}"),
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "InvalidRequest",
        10004,
        format!("The request is invalid: the package is larger than {limit} bytes"),
    )
}

fn storage_error(error: std::io::Error) -> ApiError {
    tracing::error!(%error, "cannot store uploaded bits");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        10015,
        "The service is currently unavailable",
    )
}

/// Removes a partial upload however the request ends.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Uploads an app's package (multipart: `resources`, `application` zip).
#[utoipa::path(put, path = "/v2/apps/{guid}/bits", tag = "apps", security(("bearer" = [])),
    params(("guid" = String, Path, description = "the app"),
           ("async" = Option<bool>, Query, description = "accepted; the upload is synchronous")),
    request_body(content = String, content_type = "multipart/form-data", description = "`resources` (must be `[]`) and `application` (a zip)"),
    responses((status = 201, description = "stored", body = serde_json::Value),
              (status = "default", description = "Cloud Controller's error", body = crate::openapi::CcError)))]
pub(crate) async fn upload(
    caller: Caller,
    State(state): State<Arc<AppState>>,
    UrlPath(guid): UrlPath<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let target = {
        let view = state.engine.view();
        let app = guid.parse::<Guid>().ok().and_then(|g| view.state.app(g));
        access::space_write(caller.subject(), &view.state, app.map(|a| a.space_guid))
            .map_err(|d| deny(d, || app_not_found(&guid)))?;
        app.ok_or_else(|| app_not_found(&guid))?.guid
    };
    let mut multipart = multipart.map_err(|e| invalid(e.body_text()))?;
    let dir = &state.settings.packages_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(storage_error)?;
    let limit = state.settings.max_upload_bytes;
    let mut stored: Option<(String, u64)> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e, limit))?
    {
        match field.name() {
            Some("application") => {
                let temp = TempFile(dir.join(format!("upload-{}", crate::fresh_guid())));
                let mut file = tokio::fs::File::create(&temp.0)
                    .await
                    .map_err(storage_error)?;
                let mut hasher = Sha256::new();
                let mut size: u64 = 0;
                let mut head: Vec<u8> = Vec::with_capacity(4);
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| multipart_error(&e, limit))?
                {
                    size += chunk.len() as u64;
                    if size > limit as u64 {
                        return Err(too_large(limit));
                    }
                    if head.len() < 4 {
                        head.extend(chunk.iter().take(4 - head.len()));
                    }
                    hasher.update(&chunk);
                    file.write_all(&chunk).await.map_err(storage_error)?;
                }
                if !head.starts_with(b"PK") {
                    return Err(invalid("the application is not a zip file"));
                }
                file.sync_all().await.map_err(storage_error)?;
                drop(file);
                let sha256 = hex::encode(hasher.finalize());
                let path = package_path(dir, &sha256);
                tokio::fs::rename(&temp.0, &path)
                    .await
                    .map_err(storage_error)?;
                sync_dir(dir).await.map_err(storage_error)?;
                stored = Some((sha256, size));
            }
            // `resources` lists files the client expects tally to already have; tally keeps
            // no resource cache, so it must be empty.
            Some("resources") => {
                let text = field.text().await.map_err(|e| multipart_error(&e, limit))?;
                match serde_json::from_str::<Vec<serde_json::Value>>(&text) {
                    Ok(list) if list.is_empty() => {}
                    Ok(_) => {
                        return Err(invalid(
                            "cached resources are not supported; send every file in the zip",
                        ))
                    }
                    Err(_) => return Err(invalid("resources must be a JSON array")),
                }
            }
            _ => {}
        }
    }
    let Some((sha256, size_bytes)) = stored else {
        return Err(invalid("missing :application"));
    };
    state
        .engine
        .submit(caller.envelope(Command::UploadPackage {
            app_guid: target,
            sha256,
            size_bytes,
        }))
        .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({}))).into_response())
}

/// Where bits with this checksum live.
pub fn package_path(dir: &Path, sha256: &str) -> PathBuf {
    dir.join(format!("{sha256}.zip"))
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

fn multipart_error(error: &axum::extract::multipart::MultipartError, limit: usize) -> ApiError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(limit)
    } else {
        invalid(error.body_text())
    }
}
