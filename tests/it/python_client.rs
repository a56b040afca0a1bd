//! A real third-party client against tally: `cloudfoundry-client==1.40.4` from PyPI, installed
//! into a virtual environment under the target directory (kept between runs), drives
//! `tests/it/cf_python_client.py`. A fake UAA served by the test hands out tally tokens.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::helpers::spawn_app_in;

const CLIENT: &str = "cloudfoundry-client==1.40.4";

fn python() -> String {
    for candidate in ["python3", "python"] {
        if Command::new(candidate)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return candidate.to_owned();
        }
    }
    // A fresh machine without Python: install it when we may (CI runs as root).
    let installed = Command::new("sh")
        .args([
            "-c",
            "apt-get update -q && apt-get install -y -q python3 python3-venv",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        installed,
        "python3 is needed for the cloudfoundry-client test and could not be installed"
    );
    "python3".to_owned()
}

/// A virtual environment under the target directory with `package` (`name==version`) from
/// PyPI, created once and kept between runs (`target/py-<name>-<version>`).
pub(crate) fn pypi_venv(package: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join(format!("py-{}", package.replace("==", "-")));
    let marker = dir.join("installed");
    if marker.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new(python())
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "python3 -m venv failed");
    let output = Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", package])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pip install {package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::write(&marker, package).unwrap();
    dir
}

#[tokio::test]
async fn the_pypi_cloudfoundry_client_manages_apps_against_tally() {
    let venv = tokio::task::spawn_blocking(|| pypi_venv(CLIENT))
        .await
        .unwrap();
    // The fake UAA: its address must be known before tally starts (tally links to it).
    let uaa = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uaa_url = format!("http://{}", uaa.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_app_in(dir, vec![("TALLY_UAA__URL".into(), uaa_url)]).await;
    let token = tally::auth::developer_token(
        &app.settings,
        "admin",
        &["cloud_controller.admin".to_owned()],
        600,
    )
    .unwrap();
    let uaa_app = axum::Router::new().route(
        "/oauth/token",
        axum::routing::post(move || {
            let token = token.clone();
            async move {
                axum::Json(json!({"access_token": token, "refresh_token": "refresh", "token_type": "bearer", "expires_in": 600}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(uaa, uaa_app).await });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/cf_python_client.py");
    let address = app.address.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/python"))
            .arg(script)
            .arg(address)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "the client failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
    app.stop().await;
}
