//! The clients against servers that misbehave on purpose: answers larger than any real
//! one (streamed without a length, or announced by `Content-Length`) and redirects to
//! another address. Real servers on port 0; each counts what it sent or received.

#![allow(clippy::unwrap_used)]

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use corral_client::{ClientError, NodeClient, OrchestratorClient, MAX_NODE_ANSWER_BYTES};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An endless stream of JSON-looking bytes with no length; counts the bytes handed to the
/// connection, so the test can see the client stopped reading.
fn endless(sent: Arc<AtomicUsize>) -> Response {
    let chunk = vec![b' '; 64 * 1024];
    let stream = futures_util::stream::repeat_with(move || {
        sent.fetch_add(chunk.len(), Ordering::Relaxed);
        Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk.clone()))
    });
    Response::new(Body::from_stream(stream))
}

#[tokio::test]
async fn a_node_answer_past_the_limit_is_not_read() {
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let app = Router::new().route("/job/{id}", get(move || async move { endless(s) }));
    let url = serve(app).await;
    let client = NodeClient::new(&url).unwrap();
    let err = client.job("x").await.unwrap_err();
    assert!(
        matches!(err, ClientError::TooLarge { limit, .. } if limit == MAX_NODE_ANSWER_BYTES),
        "{err}"
    );
    // Give the server a moment to notice the closed connection, then check it stopped:
    // what was streamed is about the limit plus what sat in socket buffers, not 1 GB.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let streamed = sent.load(Ordering::Relaxed);
    assert!(
        streamed < MAX_NODE_ANSWER_BYTES + 16 * 1024 * 1024,
        "the server streamed {streamed} bytes"
    );
}

#[tokio::test]
async fn an_announced_oversized_answer_is_refused_before_reading() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw server (hyper refuses to send a body that does not match its length) that
    // announces 1 GiB and then sends it slowly.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1073741824\r\n\r\n";
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b' '; 64 * 1024];
        while socket.write_all(&chunk).await.is_ok() {
            s.fetch_add(chunk.len(), Ordering::Relaxed);
        }
    });
    let err = NodeClient::new(&url).unwrap().info().await.unwrap_err();
    assert!(matches!(err, ClientError::TooLarge { .. }), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let streamed = sent.load(Ordering::Relaxed);
    assert!(streamed < 16 * 1024 * 1024, "{streamed} bytes were sent");
}

#[tokio::test]
async fn redirects_are_never_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let target = serve(Router::new().fallback(move || async move {
        h.fetch_add(1, Ordering::Relaxed);
        "{}"
    }))
    .await;
    let to = target.clone();
    let redirector = serve(
        Router::new()
            .route(
                "/job",
                post(move || async move {
                    (
                        StatusCode::TEMPORARY_REDIRECT,
                        [(header::LOCATION, format!("{to}/job"))],
                    )
                }),
            )
            .fallback(move || {
                let to = target.clone();
                async move { (StatusCode::FOUND, [(header::LOCATION, format!("{to}/x"))]) }
            }),
    )
    .await;
    let node = NodeClient::new(&redirector).unwrap();
    let request = corral_core::node_api::JobRequest {
        from: Some(1),
        to: Some(2),
        ..Default::default()
    };
    let err = node.submit(&request).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Redirect { status: 307, .. }),
        "{err}"
    );
    let farm = OrchestratorClient::new(&redirector).unwrap();
    let err = farm.nodes().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Redirect { status: 302, .. }),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), 0, "a redirect was followed");
}
