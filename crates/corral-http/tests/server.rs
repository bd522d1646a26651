//! `corral_http::serve_with` on a real port-0 listener, driven by raw TCP clients that
//! misbehave: headers a byte at a time, bodies that stop or are cut off or malformed,
//! idle connections beyond the bound; and by well-behaved ones whose responses outlast
//! every timeout (a long-poll, an event stream), which must not be cut.
//!
//! The limits here are short (1 s) so that the tests are quick; every wait is bounded by a
//! generous deadline so that a regression fails instead of hanging, and no test asserts
//! how fast anything is.

use axum::body::Body;
use axum::routing::{get, post};
use axum::Router;
use corral_http::{serve_with, JsonBody, ServerLimits};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, Semaphore};

/// The timeouts the tests run with.
const SHORT: Duration = Duration::from_secs(1);
/// Longest any step may take before the test counts it as hanging.
const HANG: Duration = Duration::from_secs(30);

struct Server {
    addr: SocketAddr,
    /// Permits for `/hold` requests to finish.
    release: Arc<Semaphore>,
    /// A permit for each `/hold` request that reached its handler.
    arrived: Arc<Semaphore>,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.expect("connect")
    }

    /// Stops the server and waits for `serve_with` to return.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(HANG, self.done)
            .await
            .expect("serve_with returns after shutdown")
            .expect("server task")
            .expect("server result");
    }
}

async fn start(limits: ServerLimits) -> Server {
    let release = Arc::new(Semaphore::new(0));
    let arrived = Arc::new(Semaphore::new(0));
    let held = (release.clone(), arrived.clone());
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/echo",
            post(|JsonBody(body): JsonBody| async move { body.len().to_string() }),
        )
        // A long-poll stand-in: answers after three header timeouts.
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(SHORT * 3).await;
                "done"
            }),
        )
        // An event-stream stand-in: a chunk every 300 ms for three header timeouts.
        .route(
            "/stream",
            get(|| async {
                let chunks = futures_util::stream::unfold(0u32, |n| async move {
                    if n == 10 {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    Some((Ok::<_, std::io::Error>(format!("event {n}\n")), n + 1))
                });
                Body::from_stream(chunks)
            }),
        )
        // A response without end, for a client that never reads it.
        .route(
            "/endless",
            get(|| async {
                let chunks = futures_util::stream::repeat_with(|| {
                    Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024])
                });
                Body::from_stream(chunks)
            }),
        )
        // Busy until the test releases it.
        .route(
            "/hold",
            get(move || {
                let (release, arrived) = held.clone();
                async move {
                    arrived.add_permits(1);
                    let _permit = release.acquire().await;
                    "released"
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve_with(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        limits,
    ));
    Server {
        addr,
        release,
        arrived,
        stop: Some(stop),
        done,
    }
}

fn limits() -> ServerLimits {
    ServerLimits {
        header_timeout: SHORT,
        body_timeout: SHORT,
        write_timeout: SHORT,
        max_connections: 64,
        shutdown_grace: SHORT,
    }
}

/// An HTTP answer read off a raw socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (headers, then a Content-Length body), or `None` when the server
/// closed the connection before sending any byte of one.
async fn read_answer(stream: &mut TcpStream) -> Option<Answer> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .expect("the server neither answered nor closed")
        {
            Ok(0) | Err(_) if buf.is_empty() => return None,
            Ok(0) | Err(_) => panic!("connection closed mid-answer: {buf:?}"),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .expect("body hangs")
            .expect("body read");
        assert!(n > 0, "connection closed mid-body");
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Answer {
        status,
        head,
        body: String::from_utf8_lossy(&body).to_string(),
    })
}

/// Waits for the server to close `stream` (end of file or reset), failing after [`HANG`];
/// returns whatever it sent first.
async fn closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match tokio::time::timeout(HANG, stream.read(&mut chunk))
            .await
            .expect("the server never closed the connection")
        {
            Ok(0) | Err(_) => return seen,
            Ok(n) => seen.extend_from_slice(&chunk[..n]),
        }
    }
}

fn assert_problem(answer: &Answer, status: u16) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert!(
        answer
            .head
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer:?}"
    );
    let problem: serde_json::Value = serde_json::from_str(&answer.body).expect("problem JSON");
    assert_eq!(problem["status"], status, "{answer:?}");
}

#[tokio::test]
async fn headers_sent_a_byte_at_a_time_are_cut_off() {
    let server = start(limits()).await;
    let mut stream = server.connect().await;
    let (mut read, mut write) = stream.split();
    let request = b"GET /healthz HTTP/1.1\r\nHost: corral\r\nUser-Agent: slowloris\r\n\r\n";
    // At 5 bytes a second the request would take 12 s; the header timeout is 1 s.
    let trickle = async {
        let mut sent = 0;
        for byte in request {
            if write.write_all(&[*byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sent
    };
    let mut seen = Vec::new();
    let watch = async {
        let mut chunk = [0u8; 256];
        loop {
            match read.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    // The connection must close while the headers are still trickling in.
    let outcome = tokio::time::timeout(HANG, async {
        tokio::select! {
            () = watch => None,
            sent = trickle => Some(sent),
        }
    })
    .await
    .expect("hung");
    assert_eq!(
        outcome, None,
        "the whole request went through a byte at a time"
    );
    assert!(
        seen.is_empty(),
        "no answer to a request never finished: {:?}",
        String::from_utf8_lossy(&seen)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_coming_is_answered_408() {
    let server = start(limits()).await;
    let mut stream = server.connect().await;
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"from\": 1",
        )
        .await
        .expect("send");
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_problem(&answer, 408);
    // The rest of that body would be read as the next request: the connection is done.
    closed(&mut stream).await;
    server.stop().await;
}

#[tokio::test]
async fn a_body_cut_off_is_400_not_413() {
    let server = start(limits()).await;
    let mut stream = server.connect().await;
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"from\": 1",
        )
        .await
        .expect("send");
    // The client is done sending: fewer bytes than it announced.
    stream.shutdown().await.expect("half-close");
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_problem(&answer, 400);
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_chunked_body_is_400_not_413() {
    let server = start(limits()).await;
    let mut stream = server.connect().await;
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: corral\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        )
        .await
        .expect("send");
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_problem(&answer, 400);
    server.stop().await;
}

#[tokio::test]
async fn only_a_body_too_large_is_413() {
    let server = start(limits()).await;
    let client = reqwest::Client::new();
    let big = vec![b' '; corral_http::MAX_BODY_BYTES + 1];
    let answer = client
        .post(server.url("/echo"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 413);
    // A streamed (chunked) body with no announced length, too large once read.
    let chunks =
        futures_util::stream::iter((0..20).map(|_| Ok::<_, std::io::Error>(vec![b' '; 8 * 1024])));
    let answer = client
        .post(server.url("/echo"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 413);
    let fine = client
        .post(server.url("/echo"))
        .body("{}")
        .send()
        .await
        .expect("send");
    assert_eq!(fine.status(), 200);
    assert_eq!(fine.text().await.expect("body"), "2");
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let server = start(limits()).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .expect("send");
    let answer = read_answer(&mut stream).await.expect("an answer");
    assert_eq!(answer.status, 200);
    // Kept alive after the answer, then closed for sending nothing more.
    assert!(closed(&mut stream).await.is_empty());
    // A connection that never sends anything is closed too.
    let mut silent = server.connect().await;
    assert!(closed(&mut silent).await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn responses_in_progress_outlast_the_timeouts() {
    let server = start(limits()).await;
    let client = reqwest::Client::new();
    // Each takes three header timeouts: a long-poll and an event stream are not idle.
    let (slow, stream) = tokio::join!(
        client.get(server.url("/slow")).send(),
        client.get(server.url("/stream")).send()
    );
    let slow = slow.expect("long-poll answered");
    assert_eq!(slow.status(), 200);
    assert_eq!(slow.text().await.expect("body"), "done");
    let stream = stream.expect("stream answered").text().await.expect("body");
    assert_eq!(stream.lines().count(), 10, "{stream}");
    assert!(stream.ends_with("event 9\n"), "{stream}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected() {
    let server = start(limits()).await;
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /endless HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .expect("send");
    // Not reading: the socket buffers fill up and the server's write blocks.
    tokio::time::sleep(SHORT * 3).await;
    // What was buffered before the server gave up can still be read; then the end.
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(HANG, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the endless response kept coming ({received} bytes): the stalled write was never cut"
    );
    assert!(received > 0);
    server.stop().await;
}

#[tokio::test]
async fn idle_connections_beyond_the_bound_do_not_lock_clients_out() {
    // A long header timeout: only eviction can make room here.
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(120),
        max_connections: 4,
        ..limits()
    })
    .await;
    let mut idle = Vec::new();
    // Four keep-alive clients that made one request each, and six that never send a byte.
    for _ in 0..4 {
        let mut stream = server.connect().await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n")
            .await
            .expect("send");
        assert_eq!(read_answer(&mut stream).await.expect("answer").status, 200);
        idle.push(stream);
    }
    for _ in 0..6 {
        idle.push(server.connect().await);
    }
    let answer = tokio::time::timeout(HANG, reqwest::get(server.url("/healthz")))
        .await
        .expect("a new client was kept waiting")
        .expect("a new client is served");
    assert_eq!(answer.status(), 200);
    // The oldest idle connections made room; at most the bound stay open.
    for stream in idle.iter_mut().take(7) {
        assert!(closed(stream).await.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn when_every_connection_is_busy_a_newcomer_gets_503() {
    let server = start(ServerLimits {
        max_connections: 2,
        ..limits()
    })
    .await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = server.url("/hold");
            tokio::spawn(async move {
                // One client each: its own connection.
                reqwest::Client::new().get(url).send().await
            })
        })
        .collect();
    let arrived = tokio::time::timeout(HANG, server.arrived.acquire_many(2))
        .await
        .expect("both held requests reach their handler");
    arrived.expect("semaphore").forget();
    let mut stream = server.connect().await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: corral\r\n\r\n")
        .await
        .expect("send");
    let refused = read_answer(&mut stream).await.expect("an answer");
    assert_problem(&refused, 503);
    assert!(refused.head.to_ascii_lowercase().contains("retry-after"));
    // The busy requests were not disturbed.
    server.release.add_permits(2);
    for request in held {
        let answer = request.await.expect("task").expect("held request answered");
        assert_eq!(answer.status(), 200);
        assert_eq!(answer.text().await.expect("body"), "released");
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_does_not_wait_for_idle_or_stuck_clients() {
    let server = start(ServerLimits {
        header_timeout: Duration::from_secs(120),
        body_timeout: Duration::from_secs(120),
        ..limits()
    })
    .await;
    let _silent = server.connect().await;
    let mut stuck = server.connect().await;
    stuck
        .write_all(b"POST /echo HTTP/1.1\r\nHost: corral\r\nContent-Length: 10\r\n\r\n{")
        .await
        .expect("send");
    let held = tokio::spawn(reqwest::get(server.url("/hold")));
    let _ = tokio::time::timeout(HANG, server.arrived.acquire()).await;
    // Returns within the grace (bounded by HANG in `stop`), though nobody finished.
    server.stop().await;
    drop(held);
}
