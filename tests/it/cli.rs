//! The `tally` binary: serve on its defaults, stop on SIGTERM, verify, refuse corruption.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tally_store::backend::{Backend, Op};
use tally_store::{LogStore, SledLog, SledOptions};

use crate::helpers::write_history;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// Starts `tally serve` in `cwd` and waits for the address it logs.
pub(crate) fn serve(
    cwd: &Path,
    args: &[&str],
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    serve_with_env(cwd, args, &[])
}

/// [`serve`] with these variables set too.
pub(crate) fn serve_with_env(
    cwd: &Path,
    args: &[&str],
    env: &[(String, String)],
) -> (Child, String, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(TALLY)
        .arg("serve")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = received
            .recv_timeout(Duration::from_secs(30))
            .expect("tally serve printed nothing");
        if let Some(at) = line.find("tally is listening on http://") {
            let rest = &line[at + "tally is listening on http://".len()..];
            // Text logs end the address with a space, JSON logs with a quote.
            let address: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"')
                .collect();
            return (child, address, received);
        }
        assert!(
            Instant::now() < deadline,
            "tally serve never said where it listens"
        );
    }
}

/// Waits for a child that should exit by itself; kills it (failing the test) if it does not.
fn wait_or_kill(mut child: Child, limit: Duration) -> std::process::Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `tally serve` on `data_dir` and a free port, its stderr piped.
fn spawn_serve(data_dir: &Path) -> Child {
    let child = Command::new(TALLY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
}

/// Runs `tally serve` on a data directory it must refuse; what it printed.
fn serve_refuses(data_dir: &Path) -> String {
    let child = spawn_serve(data_dir);
    let output = wait_or_kill(child, Duration::from_secs(30));
    assert!(
        !output.status.success(),
        "tally serve started on a damaged log"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

use crate::helpers::verify;

#[test]
fn serve_on_the_embedded_default_then_stop_on_sigterm() {
    let cwd = tempfile::tempdir().unwrap();
    let (mut child, address, _) = serve(cwd.path(), &["--listen", "127.0.0.1:0"]);
    let body = reqwest::blocking_get(&format!("http://{address}/v2/info"));
    assert!(body.contains("\"api_version\":\"2.186.0\""), "{body}");
    let status = terminate(&mut child);
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let data_dir = cwd.path().join("tally-data");
    assert!(
        data_dir.join("log").is_dir(),
        "the default data directory is ./tally-data"
    );
    let (ok, report) = verify(&data_dir);
    assert!(ok, "{report}");
    assert!(report.contains("ok:"), "{report}");
}

#[test]
fn json_logs_carry_one_span_per_request_with_route_status_and_latency() {
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("tally.toml");
    std::fs::write(&config, "[log]\nformat = \"json\"\n").unwrap();
    let (mut child, address, lines) = serve(
        cwd.path(),
        &[
            "--config",
            config.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let guid = "7c3e1a52-0000-4000-8000-000000000001";
    reqwest::blocking_get(&format!("http://{address}/v2/apps/{guid}"));
    assert!(terminate(&mut child).success());
    let logged: Vec<serde_json::Value> = lines
        .try_iter()
        .chain(std::iter::from_fn(|| {
            lines.recv_timeout(Duration::from_secs(2)).ok()
        }))
        .map(|line| serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}")))
        .collect();
    let served = logged
        .iter()
        .find(|l| {
            l["message"] == "request served" && l["span"]["path"] == format!("/v2/apps/{guid}")
        })
        .unwrap_or_else(|| panic!("no request line in {logged:?}"));
    assert_eq!(served["level"], "INFO");
    assert_eq!(served["status"], 401);
    assert!(served["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(served["span"]["method"], "GET");
    assert_eq!(served["span"]["route"], "/v2/apps/{guid}");
    assert!(!served["span"]["request_id"].as_str().unwrap().is_empty());
}

#[test]
fn verify_passes_on_history_and_names_the_position_of_a_corrupt_record() {
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(write_history(&data_dir, 5));
    let (ok, report) = verify(&data_dir);
    assert!(ok, "{report}");
    assert!(report.contains("usage events"), "{report}");

    // Flip one bit in the value of the first usage block (key layout: ARCHITECTURE.md).
    {
        let store = SledLog::open(&data_dir.join("log"), &SledOptions::default()).unwrap();
        let usage = store.usage_range(1, u64::MAX, 1).unwrap();
        let (seq, _) = usage[0];
        let mut key = vec![b'u'];
        key.extend_from_slice(&seq.to_be_bytes());
        let mut value = store.backend().get(&key).unwrap().unwrap();
        let last = value.len() - 1;
        value[last] ^= 0x10;
        store
            .backend()
            .apply(vec![Op::Put(key, value)], true)
            .unwrap();
    }
    let (ok, report) = verify(&data_dir);
    assert!(!ok, "verify must fail on a corrupt record: {report}");
    assert!(report.contains("usage event block at seq"), "{report}");

    // Start-up refuses too, naming the position.
    let stderr = serve_refuses(&data_dir);
    assert!(
        stderr.contains("usage event block at seq") && stderr.contains("checksum"),
        "{stderr}"
    );
}

#[test]
fn verify_refuses_a_directory_that_is_not_a_data_directory() {
    let cwd = tempfile::tempdir().unwrap();
    let (ok, report) = verify(&cwd.path().join("nothing-here"));
    assert!(!ok);
    assert!(report.contains("is not a tally data directory"), "{report}");
}

#[test]
fn unknown_config_keys_stop_start_up_with_the_key_named() {
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("tally.toml");
    std::fs::write(
        &config,
        "[server]\nlisten = \"127.0.0.1:0\"\nlistne = \"x\"\n",
    )
    .unwrap();
    let child = Command::new(TALLY)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_or_kill(child, Duration::from_secs(30));
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("listne"), "{stderr}");
}

#[test]
fn environment_variables_override_the_config_file() {
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("tally.toml");
    std::fs::write(&config, "[storage]\ndata_dir = \"from-file\"\n").unwrap();
    let mut child = Command::new(TALLY)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .current_dir(cwd.path())
        .env("TALLY_STORAGE__DATA_DIR", "from-env")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let listening = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("tally is listening")))
        .unwrap()
        .unwrap();
    assert!(listening.contains("from-env"), "{listening}");
    assert!(terminate(&mut child).success());
    assert!(cwd.path().join("from-env/log").is_dir());
    assert!(!cwd.path().join("from-file").exists());
}

#[test]
fn a_data_directory_serves_one_tally_at_a_time() {
    let cwd = tempfile::tempdir().unwrap();
    let (mut first, _, _) = serve(cwd.path(), &["--listen", "127.0.0.1:0"]);
    let second = Command::new(TALLY)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = wait_or_kill(second, Duration::from_secs(30));
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another tally process"),
        "{stderr}"
    );
    assert!(terminate(&mut first).success());
}

#[test]
fn sigterm_writes_a_final_checkpoint() {
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(write_history(&data_dir, 3));
    let dir = data_dir.to_string_lossy().into_owned();
    let (mut child, _, _) = serve(cwd.path(), &["--listen", "127.0.0.1:0", "--data-dir", &dir]);
    assert!(terminate(&mut child).success());
    let store = SledLog::open(&data_dir.join("log"), &SledOptions::default()).unwrap();
    let recovered = store.recover().unwrap();
    assert_eq!(
        recovered.replayed, 0,
        "nothing to replay after a graceful stop"
    );
    assert_eq!(recovered.state.app_count(), 3);
}

mod reqwest {
    /// A tiny blocking GET over std, so the binary tests need no async runtime.
    pub fn blocking_get(url: &str) -> String {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }
}

fn token(args: &[&str]) -> std::process::Output {
    Command::new(TALLY)
        .arg("token")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn first_start_creates_a_private_dev_secret_and_tally_token_signs_with_it() {
    let cwd = tempfile::tempdir().unwrap();
    let (mut child, _, lines) = serve(cwd.path(), &["--listen", "127.0.0.1:0"]);
    assert!(terminate(&mut child).success());
    let logged: Vec<String> = lines.try_iter().collect();
    let data_dir = cwd.path().join("tally-data");
    let secret = tally::auth::dev_secret_path(&data_dir);
    assert!(secret.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the secret is readable by its owner only");
    }
    let dir = data_dir.to_string_lossy().into_owned();
    let output = token(&[
        "--data-dir",
        &dir,
        "--scope",
        "cloud_controller.admin",
        "--scope",
        "cloud_controller.read",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let jwt = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    // The server's own verifier for this data directory accepts it.
    let overrides = tally::config::Overrides {
        data_dir: Some(data_dir.clone()),
        listen: None,
    };
    let settings = tally::config::load(None, Vec::new(), &overrides).unwrap();
    let identity = tally::auth::verifier(&settings)
        .unwrap()
        .verify(Some(&format!("bearer {jwt}")))
        .unwrap();
    assert_eq!(identity.id, "tally-developer");
    assert!(
        identity.has(tally_http::auth::Role::Admin) && identity.has(tally_http::auth::Role::Read)
    );
    // The secret itself never reaches the log.
    let secret_text = std::fs::read_to_string(&secret).unwrap();
    assert!(!logged.iter().any(|l| l.contains(&secret_text)));
    // A second start reuses the same secret: the token stays valid.
    let (mut child, _, _) = serve(cwd.path(), &["--listen", "127.0.0.1:0"]);
    assert!(terminate(&mut child).success());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), secret_text);
}

#[test]
fn tally_token_explains_what_is_missing() {
    let cwd = tempfile::tempdir().unwrap();
    let dir = cwd
        .path()
        .join("never-started")
        .to_string_lossy()
        .into_owned();
    let output = token(&["--data-dir", &dir, "--scope", "cloud_controller.admin"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("start `tally serve` once"), "{stderr}");
    let output = token(&["--data-dir", &dir]);
    assert!(
        !output.status.success(),
        "a token without a scope is refused"
    );
}

#[test]
fn configured_secrets_sign_and_verify_without_a_dev_secret() {
    let cwd = tempfile::tempdir().unwrap();
    let config = cwd.path().join("tally.toml");
    let data_dir = cwd.path().join("data");
    std::fs::write(
        &config,
        format!("[storage]\ndata_dir = \"{}\"\n[auth]\nhmac_secrets = [\"new-secret\", \"old-secret\"]\n", data_dir.display()),
    )
    .unwrap();
    let config_path = config.to_string_lossy().into_owned();
    let output = token(&[
        "--config",
        &config_path,
        "--scope",
        "cloud_controller.write",
        "--user-id",
        "ci-bot",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let jwt = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let settings = tally::config::load(
        Some(&config),
        Vec::new(),
        &tally::config::Overrides::default(),
    )
    .unwrap();
    let identity = tally::auth::verifier(&settings)
        .unwrap()
        .verify(Some(&format!("Bearer {jwt}")))
        .unwrap();
    assert_eq!(identity.id, "ci-bot");
    assert!(
        !tally::auth::dev_secret_path(&data_dir).exists(),
        "no dev secret when secrets are configured"
    );
}

#[test]
fn bytes_flipped_in_sleds_files_stop_start_up_and_fail_verify() {
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(write_history(&data_dir, 20));
    assert!(verify(&data_dir).0);
    // Flip a byte of live data in sled's files, below tally's API: every copy of an app's
    // name (a flip in free space would damage nothing, so the test aims at data that is read).
    let mut files = vec![data_dir.join("log/db")];
    files.extend(
        std::fs::read_dir(data_dir.join("log/blobs"))
            .unwrap()
            .map(|entry| entry.unwrap().path()),
    );
    let needle = b"app-13";
    let mut flipped = 0;
    for file in &files {
        let mut bytes = std::fs::read(file).unwrap();
        for at in 0..bytes.len().saturating_sub(needle.len()) {
            if &bytes[at..at + needle.len()] == needle {
                bytes[at + 4] ^= 0x01;
                flipped += 1;
            }
        }
        std::fs::write(file, bytes).unwrap();
    }
    assert!(flipped > 0, "the app's name is not in sled's files");

    let (ok, report) = verify(&data_dir);
    assert!(!ok, "verify passed a damaged data directory: {report}");
    assert!(report.contains("corrupt record at"), "{report}");
    let stderr = serve_refuses(&data_dir);
    assert!(
        stderr.contains("corrupt record at") && stderr.contains("checksum"),
        "{stderr}"
    );
}

/// Starts `tally serve` on `data_dir`, serves one request, stops it; what it warned of the
/// data directory's modes (those lines come before "listening", so all of stderr is read).
fn serve_once_and_warnings(data_dir: &Path) -> Vec<String> {
    let child = spawn_serve(data_dir);
    let log = data_dir.join("log").join("db");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = wait_or_kill(child, Duration::from_secs(30));
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.contains("others may read this part of the data directory"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_data_directory_is_private_and_start_up_warns_when_it_is_not() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let cwd = tempfile::tempdir().unwrap();
    let data_dir = cwd.path().join("data");
    let warnings = serve_once_and_warnings(&data_dir);
    assert!(
        warnings.is_empty(),
        "a new data directory is private: {warnings:?}"
    );
    assert_eq!(mode(&data_dir), 0o700);
    assert_eq!(mode(&data_dir.join("log")), 0o700);
    assert_eq!(mode(&data_dir.join("log").join("db")), 0o600, "sled's log");
    assert_eq!(mode(&data_dir.join("log").join("conf")), 0o600);
    assert_eq!(mode(&data_dir.join("auth").join("dev-hmac-secret")), 0o600);
    // Opened up by hand (an old tally, a careless copy): start-up names what is open.
    std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = data_dir.join("log").join("db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warnings = serve_once_and_warnings(&data_dir);
    let dir = data_dir.to_string_lossy();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("755") && l.contains(&*dir))
            && warnings
                .iter()
                .any(|l| l.contains("644") && l.contains("db")),
        "{warnings:?}"
    );
}
