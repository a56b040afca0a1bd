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
    venv_with(package, &[&[package]])
}

/// A virtual environment named after `name`, made by the `pip install` argument lists of
/// `installs` in turn; created once and kept between runs.
fn venv_with(name: &str, installs: &[&[&str]]) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join(format!("py-{}", name.replace("==", "-")));
    let marker = dir.join("installed");
    if marker.exists() {
        return dir;
    }
    // Tests of this binary run on threads, and several want the same venv (the client tests,
    // schemathesis): one makes it while the others wait, then find the marker.
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _creating = CREATING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
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
    for args in installs {
        let output = Command::new(dir.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(*args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pip install {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    std::fs::write(&marker, name).unwrap();
    dir
}

/// A fake UAA on `listener` whose password grant hands out `token` (as its refresh token too:
/// UAA's refresh tokens are JWTs, and `cf-api` decodes both).
fn fake_uaa(listener: tokio::net::TcpListener, token: String) {
    let uaa_app = axum::Router::new().route(
        "/oauth/token",
        axum::routing::post(move || {
            let token = token.clone();
            async move {
                axum::Json(json!({"access_token": token, "refresh_token": token, "token_type": "bearer", "expires_in": 600}))
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, uaa_app).await });
}

/// Runs `script` (in `tests/it/`) with the venv's Python against `address`; it must print `ok`.
async fn run_script(venv: PathBuf, script: &str, address: String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it")
        .join(script);
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
}

/// tally with a fake UAA that hands out an admin token; `env` on top.
async fn tally_with_uaa(env: Vec<(String, String)>) -> crate::helpers::TestApp {
    let uaa = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uaa_url = format!("http://{}", uaa.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut env = env;
    env.push(("TALLY_UAA__URL".into(), uaa_url));
    let app = spawn_app_in(dir, env).await;
    let token = tally::auth::developer_token(
        &app.settings,
        "admin",
        &["cloud_controller.admin".to_owned()],
        600,
    )
    .unwrap();
    fake_uaa(uaa, token);
    app
}

/// The same client drives the v3 lifecycle through the links tally returns: create, push bits
/// through a package and a build, start, scale, restart, stop, a task and its cancel, delete
/// with the job polled, then the usage and audit events. Tasks run until canceled here.
#[tokio::test]
async fn the_pypi_cloudfoundry_client_drives_the_v3_lifecycle() {
    let venv = tokio::task::spawn_blocking(|| pypi_venv(CLIENT))
        .await
        .unwrap();
    let env = vec![("TALLY_STAGING__TASK_SECONDS".to_owned(), "3600".to_owned())];
    let app = tally_with_uaa(env).await;
    run_script(venv, "cf_python_client_v3.py", app.address.clone()).await;
    app.stop().await;
}

/// PyPI `cf-api` 1.0.0 connects: it reads `/v2/info` (a null doppler endpoint stops it), logs in,
/// and reads v2 and v3 lists. Its `pycrypto` pin no longer builds, so it is installed without
/// dependencies and `pycryptodome` (the same `Crypto` module) stands in.
#[tokio::test]
async fn the_pypi_cf_api_client_connects_to_tally() {
    let venv = tokio::task::spawn_blocking(|| {
        venv_with(
            "cf-api==1.0.0",
            &[
                &["--no-deps", "cf-api==1.0.0"],
                &[
                    "six",
                    "PyYAML",
                    "pycryptodome",
                    "PyJWT>=1.4.2,<2.0.0",
                    "protobuf",
                    "requests-factory>=0.1.0,<1.0.0",
                    "paramiko",
                    "dropsonde",
                ],
            ],
        )
    })
    .await
    .unwrap();
    let app = tally_with_uaa(Vec::new()).await;
    run_script(venv, "cf_api_client.py", app.address.clone()).await;
    app.stop().await;
}

#[tokio::test]
async fn the_pypi_cloudfoundry_client_manages_apps_against_tally() {
    let venv = tokio::task::spawn_blocking(|| pypi_venv(CLIENT))
        .await
        .unwrap();
    let app = tally_with_uaa(Vec::new()).await;
    run_script(venv.clone(), "cf_python_client.py", app.address.clone()).await;
    app.stop().await;
}
