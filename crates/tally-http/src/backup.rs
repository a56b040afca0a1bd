//! `GET /admin/export`: a consistent backup of the running log, streamed (tally's extension;
//! `tally export` uses it when the server holds the data directory).
//!
//! The body is a backup file (`tally_store::backup`); it ends with a checksummed trailer, so a
//! body cut short by an error is never mistaken for a whole backup. Writes go on meanwhile.

use std::io::Write;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use tally_domain::access;
use tally_engine::backup::BackupWriter;
use tally_engine::StoreError;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::{deny, ApiError, AppState};

pub(crate) fn router() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::new().routes(routes!(export))
}

/// The body arrives in pieces of this size.
const CHUNK: usize = 256 * 1024;

/// Sends what is written to the response body, a chunk at a time (blocking: it runs on a
/// blocking thread, so a slow client slows the export, never the runtime).
struct BodyWriter {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    pending: Vec<u8>,
}

impl BodyWriter {
    fn send(&mut self) -> std::io::Result<()> {
        let chunk = Bytes::from(std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(CHUNK),
        ));
        self.chunks.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
        })
    }
}

impl Write for BodyWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            self.send()
        }
    }
}

/// A backup of the log, consistent as of the durable head in `X-Tally-Head`.
#[utoipa::path(get, path = "/admin/export", tag = "operations", security(("bearer" = [])),
    responses(
        (status = 200, description = "the backup file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = "default", description = "Cloud Controller's error (401, 403)", body = crate::openapi::CcError)))]
async fn export(caller: Caller, State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    access::export_backup(caller.subject()).map_err(|d| deny(d, ApiError::not_found))?;
    let export = state.engine.begin_export();
    let (head, epoch) = (export.at.head, export.at.epoch);
    let (chunks, body) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let failed = chunks.clone();
        let out = BodyWriter {
            chunks,
            pending: Vec::with_capacity(CHUNK),
        };
        let written = (|| -> Result<u64, String> {
            let mut writer = BackupWriter::new(out).map_err(|e| e.to_string())?;
            export
                .write(&mut |key, value| {
                    writer
                        .entry(key, value)
                        .map_err(|e| StoreError::Io(e.to_string()))
                })
                .map_err(|e| e.to_string())?;
            let (_, entries) = writer.finish().map_err(|e| e.to_string())?;
            Ok(entries)
        })();
        match written {
            Ok(entries) => tracing::info!(head, epoch, entries, "backup exported"),
            Err(error) => {
                // The body ends with an error: the client sees a cut connection, and the
                // backup has no trailer, so nothing can take it for a whole one.
                tracing::warn!(%error, head, "backup export failed");
                let _ = failed.blocking_send(Err(std::io::Error::other(error)));
            }
        }
    });
    let stream = futures_util::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"tally-{head}.tallybak\""))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert("x-tally-head", HeaderValue::from(head));
    headers.insert("x-tally-epoch", HeaderValue::from(epoch));
    Ok(response)
}
