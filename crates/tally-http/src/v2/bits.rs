//! `PUT /v2/apps/:guid/bits`: a multipart upload (`resources`, `application`) of the app's zip,
//! streamed to `<data_dir>/packages` while its SHA-256 is computed, refused past
//! `server.max_upload_mb` (a `Content-Length` beyond it is refused before the body is read);
//! then the package is recorded in the log. Stored by content, so a re-upload of the same bits
//! costs no space. A refused or aborted upload leaves nothing behind: its bytes stay in a
//! temporary file until every part of the request was accepted, and a stored zip the log then
//! refuses is removed unless an app's package names it. Start-up removes what a crash left
//! (temporary files, zips no package names).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use tally_domain::{access, Command};
use tokio::io::AsyncWriteExt;

use crate::auth::Caller;
use crate::{ApiError, AppState};

fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::bits_invalid(why)
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("the package is larger than {limit} bytes"))
}

fn storage_error(error: std::io::Error) -> ApiError {
    tracing::error!(%error, "cannot store uploaded bits");
    ApiError::unavailable("The service is currently unavailable")
}

/// What multipart framing may add to the zip's own size.
pub(crate) const MULTIPART_FRAMING: usize = 64 * 1024;

/// Serializes storing a zip, recording it and removing it again when the log refused it, so a
/// concurrent upload of the same bits never loses the file it recorded.
static PACKAGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, ApiError> {
    let target = crate::v2::apps::reach(
        &state.engine.view().state,
        &caller,
        &guid,
        access::space_write,
    )?;
    let received = receive(&state, &headers, multipart, "application").await?;
    keep(&state, &caller, received, |sha256, size_bytes| {
        Command::UploadPackage {
            app_guid: target,
            sha256,
            size_bytes,
        }
    })
    .await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({}))).into_response())
}

/// An uploaded zip, in a temporary file until [`keep`] stores it.
pub(crate) struct Received {
    temp: TempFile,
    sha256: String,
    size_bytes: u64,
}

/// Streams the zip in the multipart field `field` (v2 `application`, v3 `bits`) to a temporary
/// file while hashing it; `resources` must be empty. Nothing is recorded yet.
pub(crate) async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
    field_name: &str,
) -> Result<Received, ApiError> {
    let limit = state.settings.max_upload_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit.saturating_add(MULTIPART_FRAMING) as u64) {
        return Err(too_large(limit));
    }
    let mut multipart = multipart.map_err(|e| invalid(e.body_text()))?;
    let dir = &state.settings.packages_dir;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(storage_error)?;
    let mut stored: Option<Received> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(&e, limit))?
    {
        match field.name() {
            Some(name) if name == field_name => {
                if stored.is_some() {
                    return Err(invalid(format!("more than one :{field_name}")));
                }
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
                    return Err(invalid(format!("the {field_name} is not a zip file")));
                }
                file.sync_all().await.map_err(storage_error)?;
                drop(file);
                stored = Some(Received {
                    temp,
                    sha256: hex::encode(hasher.finalize()),
                    size_bytes: size,
                });
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
    stored.ok_or_else(|| invalid(format!("missing :{field_name}")))
}

/// Every part was accepted: stores the zip by its checksum, then records what `command` makes
/// of it; a zip the log refuses is removed again unless a package names it.
pub(crate) async fn keep(
    state: &AppState,
    caller: &Caller,
    received: Received,
    command: impl FnOnce(String, u64) -> Command,
) -> Result<(), ApiError> {
    let dir = &state.settings.packages_dir;
    let Received {
        temp,
        sha256,
        size_bytes,
    } = received;
    let _packages = PACKAGES.lock().await;
    let path = package_path(dir, &sha256);
    let existed = tokio::fs::try_exists(&path).await.unwrap_or(true);
    tokio::fs::rename(&temp.0, &path)
        .await
        .map_err(storage_error)?;
    sync_dir(dir).await.map_err(storage_error)?;
    let recorded = state
        .engine
        .submit(caller.envelope(command(sha256.clone(), size_bytes)))
        .await;
    if let Err(error) = recorded {
        if !existed && !named_by_a_package(&state.engine.view().state, &sha256) {
            if let Err(error) = tokio::fs::remove_file(&path).await {
                tracing::warn!(%error, path = %path.display(), "cannot remove a refused upload");
            }
        }
        return Err(error.into());
    }
    Ok(())
}

fn named_by_a_package(table: &tally_domain::State, sha256: &str) -> bool {
    table
        .apps()
        .any(|app| app.package.as_ref().is_some_and(|p| p.sha256 == sha256))
}

/// Removes what no package needs from the packages directory: temporary files a crash left
/// mid-upload, and zips no app's package names (a crash between storing and recording, or
/// bits replaced by a later upload or gone with their app). Run at start-up, before any
/// upload. Returns the files removed and their bytes.
pub fn sweep_packages(dir: &Path, table: &tally_domain::State) -> std::io::Result<(usize, u64)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(error) => return Err(error),
    };
    let needed: std::collections::HashSet<&str> = table
        .apps()
        .filter_map(|app| app.package.as_ref())
        .map(|p| p.sha256.as_str())
        .collect();
    let (mut files, mut bytes) = (0, 0);
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let unneeded = name.starts_with("upload-")
            || name
                .strip_suffix(".zip")
                .is_some_and(|sha| !needed.contains(sha));
        if unneeded && entry.file_type()?.is_file() {
            bytes += entry.metadata()?.len();
            std::fs::remove_file(entry.path())?;
            files += 1;
        }
    }
    if files > 0 {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok((files, bytes))
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
