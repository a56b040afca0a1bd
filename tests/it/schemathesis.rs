//! Fuzzing the API with schemathesis (PyPI) against a real tally, from the OpenAPI document it
//! serves: bounded in examples and time, with a fixed seed (a failure reproduces). No 500s,
//! no response that breaks the document (status codes, content types, schemas), and the log
//! still verifies afterwards. schemathesis is installed into a virtual environment under the
//! target directory on first use (kept between runs).

use std::process::Command;

use crate::helpers::spawn_app_in;

const SCHEMATHESIS: &str = "schemathesis==4.32.5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_that_breaks_the_document() {
    let venv = tokio::task::spawn_blocking(|| crate::python_client::pypi_venv(SCHEMATHESIS))
        .await
        .unwrap();
    // Long polls end within 2 s here (`wait` is capped below the request timeout), so the
    // fuzzer's generated waits do not stall it.
    let app = spawn_app_in(
        tempfile::tempdir().unwrap(),
        vec![("TALLY_SERVER__REQUEST_TIMEOUT_SECONDS".into(), "3".into())],
    )
    .await;
    let token = tally::auth::developer_token(
        &app.settings,
        "admin",
        &["cloud_controller.admin".to_owned()],
        3600,
    )
    .unwrap();
    let schema = format!("{}/openapi.json", app.address);
    // schemathesis keeps a cache (`.schemathesis/`) in its working directory: not the repository.
    let workdir = tempfile::tempdir().unwrap();
    let cwd = workdir.path().to_path_buf();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(venv.join("bin/schemathesis"))
            .current_dir(cwd)
            .args(["run", &schema])
            .args(["--header", &format!("Authorization: bearer {token}")])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "5", "--max-time", "60", "--seed", "20261122"])
            .args(["--request-timeout", "15"])
            // The stream answers until shutdown; it has its own tests.
            .args(["--exclude-path", "/v3/app_usage_events/stream"])
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "schemathesis failed:\n{report}");
    assert!(report.contains("Tested:"), "{report}");
    let data_dir = app.data_dir.clone();
    let _dir = app.stop().await;
    let (ok, verified) = crate::helpers::verify(&data_dir);
    assert!(
        ok,
        "the log does not verify after the fuzz run:\n{verified}"
    );
}
