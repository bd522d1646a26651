//! A client given several addresses of one farm: requests that cannot reach the first go
//! to the next, and the one that answered is used first from then on. Real servers on
//! port 0, and a port nothing listens on.

#![allow(clippy::unwrap_used)]

use axum::routing::{get, post};
use axum::{Json, Router};
use corral_client::OrchestratorClient;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A loopback address nothing listens on (bound, then released).
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[tokio::test]
async fn requests_fail_over_to_the_next_orchestrator() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let app = Router::new()
        .route(
            "/api/v1/nodes",
            get(|| async { Json(Vec::<serde_json::Value>::new()) }),
        )
        .route(
            "/api/v1/jobs/{id}/cancel",
            post(move || {
                h.fetch_add(1, Ordering::Relaxed);
                async { axum::http::StatusCode::NOT_FOUND }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let alive = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = OrchestratorClient::with_bases(&[dead_address(), alive.clone()]).unwrap();
    assert!(client.nodes().await.unwrap().is_empty());
    assert_eq!(
        client.base(),
        alive,
        "the orchestrator that answered is used first now"
    );
    // A POST whose connection was refused never arrived, so it may go to the next one.
    let client = OrchestratorClient::with_bases(&[dead_address(), alive]).unwrap();
    let err = client.cancel("some-job").await.unwrap_err();
    assert!(
        matches!(err, corral_client::ClientError::NotFound { .. }),
        "{err}"
    );
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    // Nothing answers: the error names the unreachable server.
    let client = OrchestratorClient::with_bases(&[dead_address(), dead_address()]).unwrap();
    assert!(client.nodes().await.unwrap_err().is_unreachable());
}
