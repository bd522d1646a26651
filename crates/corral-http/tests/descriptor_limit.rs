//! A server whose process runs out of file descriptors while idle clients hold connections
//! (the bug: 300 idle connections against a 256-descriptor limit locked every new client
//! out). The server runs in a child process (this test binary again, with a lowered
//! `RLIMIT_NOFILE`), so the limit does not touch the client side or other tests.

use corral_http::{serve_with, ServerLimits};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Set in the child: it is the server, not the test.
const HELPER: &str = "CORRAL_HTTP_FD_HELPER";
/// Descriptors the server process may have open: fewer than the idle clients below.
const SERVER_DESCRIPTORS: u64 = 128;
const IDLE_CLIENTS: usize = 200;
/// Longest any step may take before the test counts it as hanging.
const HANG: Duration = Duration::from_secs(30);

/// Not a test by itself: in the child process the test below starts, serves `/healthz`
/// with at most [`SERVER_DESCRIPTORS`] descriptors until its stdin closes.
#[tokio::test]
async fn descriptor_limited_server() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, SERVER_DESCRIPTORS, hard).expect("setrlimit");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    println!(
        "helper listening on {}",
        listener.local_addr().expect("address")
    );
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let stdin_closed = async {
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
    };
    // A long header timeout and the default bound (far above the descriptors): only the
    // reaction to running out of descriptors can let a new client in.
    let limits = ServerLimits {
        header_timeout: Duration::from_secs(600),
        ..ServerLimits::default()
    };
    serve_with(listener, app, stdin_closed, limits)
        .await
        .expect("serve");
}

#[test]
fn idle_connections_cannot_exhaust_the_descriptors() {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "descriptor_limited_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server process");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        // The test harness prints `test NAME ... ` before it on the same line.
        .find_map(|l| {
            l.split_once("helper listening on ")
                .map(|(_, addr)| addr.trim().to_string())
        })
        .expect("the server's address");

    // More idle connections than the server has descriptors: each is accepted or waits
    // in the listen queue; none sends a byte.
    let idle: Vec<TcpStream> = (0..IDLE_CLIENTS)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();

    let mut client = TcpStream::connect(&addr).expect("connect");
    client.set_read_timeout(Some(HANG)).expect("timeout");
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    let read = client.read_to_string(&mut answer);
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    drop(idle);
    read.expect("the new client was answered (not kept waiting)");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(answer.ends_with("ok"), "{answer:?}");
}
