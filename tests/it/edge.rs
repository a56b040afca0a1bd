//! What a client may hold at the edge, on the real binary: a half-sent request does not stop a
//! shutdown, slow heads and idle connections are closed, long requests are not, the number of
//! connections is bounded, and a request still in flight when the grace runs out is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::cli::serve;

const TALLY: &str = env!("CARGO_BIN_EXE_tally");

/// `tally serve` with `[server]` settings from a config file.
fn serve_with(dir: &Path, server: &str) -> (Child, String) {
    let config = dir.join("tally.toml");
    std::fs::write(&config, format!("[server]\n{server}\n")).unwrap();
    let data = dir.join("data");
    let (child, address, _) = serve(
        dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    (child, address)
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection; what it sent.
fn read_to_close(stream: &mut TcpStream) -> String {
    let mut text = Vec::new();
    let _ = stream.read_to_end(&mut text);
    String::from_utf8_lossy(&text).into_owned()
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the child to exit; kills it and fails if it takes longer than `limit`.
fn exits_within(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tally did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn admin_token(dir: &Path) -> String {
    let output = Command::new(TALLY)
        .args(["token", "--scope", "cloud_controller.admin", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn sigterm_with_half_sent_and_idle_connections_exits_0_with_a_final_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    // Timeouts far longer than the test: only the shutdown may end these connections.
    let (mut child, address) = serve_with(
        dir.path(),
        "header_read_timeout_seconds = 600\nidle_timeout_seconds = 600\nshutdown_grace_seconds = 600",
    );
    let mut half_sent = connect(&address);
    half_sent
        .write_all(b"GET /v2/info HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut idle = connect(&address);
    let mut kept_alive = connect(&address);
    kept_alive
        .write_all(b"GET /v2/info HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    kept_alive.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&child);
    // The grace is 600 s: exiting at once means nothing waited for these clients.
    let status = exits_within(&mut child, Duration::from_secs(20));
    assert!(
        status.success(),
        "a graceful shutdown exits 0, got {status}"
    );
    assert_eq!(
        read_to_close(&mut half_sent),
        "",
        "a request never completed gets no answer"
    );
    assert_eq!(read_to_close(&mut idle), "");
    let (ok, report) = crate::helpers::verify(&dir.path().join("data"));
    assert!(ok, "{report}");
    let store = tally_store::SledLog::open(
        &dir.path().join("data").join("log"),
        &tally_store::SledOptions::default(),
    )
    .unwrap();
    use tally_store::LogStore;
    assert_eq!(
        store.recover().unwrap().replayed,
        0,
        "the final checkpoint was written"
    );
}

#[test]
fn a_request_still_in_flight_when_the_grace_runs_out_is_dropped_and_tally_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = serve_with(
        dir.path(),
        "header_read_timeout_seconds = 600\nidle_timeout_seconds = 600\nshutdown_grace_seconds = 1",
    );
    let token = admin_token(dir.path());
    // A whole head and half a body: the request is in flight, waiting for the rest.
    let mut slow = connect(&address);
    write!(
        slow,
        "POST /v2/organizations HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(&child);
    let status = exits_within(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exits 0 after the grace, got {status}");
    assert_eq!(
        read_to_close(&mut slow),
        "",
        "the dropped request got no answer"
    );
    let (ok, report) = crate::helpers::verify(&dir.path().join("data"));
    assert!(ok, "{report}");
}

#[test]
fn slow_heads_and_idle_connections_are_closed_but_long_requests_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = serve_with(
        dir.path(),
        "header_read_timeout_seconds = 1\nidle_timeout_seconds = 2",
    );
    let token = admin_token(dir.path());
    // A head dribbled one byte at a time never completes in time: the server hangs up.
    let mut dribble = connect(&address);
    dribble.write_all(b"GET /v2/info HTTP/1.1\r\n").unwrap();
    let started = Instant::now();
    let closed = loop {
        if dribble.write_all(b"X").is_err() || started.elapsed() > Duration::from_secs(30) {
            break started.elapsed() <= Duration::from_secs(30);
        }
        let mut byte = [0u8; 1];
        dribble
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok(0) = dribble.read(&mut byte) {
            break true;
        }
    };
    assert!(closed, "a head sent one byte at a time was never cut off");
    // An idle connection, before its first byte and after an answered request.
    let mut silent = connect(&address);
    assert_eq!(read_to_close(&mut silent), "");
    let mut kept_alive = connect(&address);
    kept_alive
        .write_all(b"GET /v2/info HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answered = read_to_close(&mut kept_alive);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    // A long poll lasts longer than both timeouts and is still answered.
    let mut long_poll = connect(&address);
    write!(
        long_poll,
        "GET /v3/app_usage_events?wait=4 HTTP/1.1\r\nHost: x\r\nAuthorization: bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let answer = read_to_close(&mut long_poll);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    sigterm(&child);
    assert!(exits_within(&mut child, Duration::from_secs(20)).success());
}

#[test]
fn connections_beyond_the_limit_wait_for_one_to_close() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, address) = serve_with(dir.path(), "max_connections = 2");
    let first = connect(&address);
    let _second = connect(&address);
    std::thread::sleep(Duration::from_millis(200));
    let mut third = connect(&address);
    third
        .write_all(b"GET /v2/info HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert!(
        third.read(&mut byte).is_err(),
        "a third connection was served while two were held"
    );
    drop(first);
    third
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let answer = read_to_close(&mut third);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    sigterm(&child);
    assert!(exits_within(&mut child, Duration::from_secs(20)).success());
}
