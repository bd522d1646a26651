//! `corral_http::serve_tls` on a real port-0 listener with a certificate made by
//! `TlsIdentity`, against clients that never finish their handshake (they connect and
//! stall, or send a fragment of a ClientHello), more of them than the connection bound:
//! each is closed at the header deadline, and meanwhile a client pinning the server's
//! certificate is served. One pinning another certificate, or speaking plain HTTP, gets no
//! answer.
//!
//! The header deadline is 1 s here so that the test is quick; every wait is bounded by a
//! generous deadline so that a regression fails instead of hanging.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

use axum::routing::get;
use axum::Router;
use corral_client::{http_client_pinned, Pins};
use corral_core::tls::Fingerprint;
use corral_http::tls::TlsIdentity;
use corral_http::{serve_tls, ServerLimits};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SHORT: Duration = Duration::from_secs(1);
const HANG: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection; what it sent.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(HANG, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the server kept a stalled handshake open for {HANG:?}"),
        }
    }
}

#[tokio::test]
async fn stalled_handshakes_are_closed_and_a_pinned_client_is_served_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let identity = TlsIdentity::load_or_create(dir.path(), &["localhost".into()]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ServerLimits {
        header_timeout: SHORT,
        body_timeout: SHORT,
        max_connections: 4,
        ..ServerLimits::default()
    };
    let app = Router::new().route("/", get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_tls(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        limits,
        Some(identity.acceptor().unwrap()),
    ));

    // Twice the bound of clients that never finish a handshake: half send nothing, half a
    // TLS record header and then nothing.
    let mut stalled = Vec::new();
    for i in 0..8 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 1 {
            stream.write_all(&[0x16, 0x03, 0x01, 0x02]).await.unwrap();
        }
        stalled.push(stream);
    }

    // A client pinning the server's certificate is answered while they hang.
    let pinned = http_client_pinned(&Pins(vec![identity.fingerprint()])).unwrap();
    let url = format!("https://127.0.0.1:{}/", addr.port());
    let answer = tokio::time::timeout(HANG, pinned.get(&url).send())
        .await
        .expect("the pinned client was answered")
        .unwrap();
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "ok");

    // Every stalled handshake is closed without a byte of HTTP.
    for mut stream in stalled {
        let sent = until_closed(&mut stream).await;
        assert!(!sent.starts_with(b"HTTP/"), "{sent:?}");
    }

    // Another pin gets nothing; plain HTTP gets no HTTP answer.
    let other = http_client_pinned(&Pins(vec![Fingerprint::of_der(b"another")])).unwrap();
    let refused = tokio::time::timeout(HANG, other.get(&url).send())
        .await
        .expect("the handshake ended");
    assert!(refused.is_err(), "{refused:?}");
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let sent = until_closed(&mut plain).await;
    assert!(!sent.starts_with(b"HTTP/"), "{sent:?}");

    let _ = stop.send(());
    tokio::time::timeout(HANG, server)
        .await
        .expect("serve_tls returns after shutdown")
        .unwrap()
        .unwrap();
}
