//! The `corral` client commands against a hostile fake orchestrator (an axum server on
//! port 0 in this test) whose every string carries terminal escapes: ESC sequences that
//! clear the screen, retitle the window or hide text, BEL, a C1 CSI, bidi overrides. No
//! human-readable output may pass a raw control character to the terminal; `--json`
//! output stays valid JSON (which escapes control characters itself).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::process::Output;

const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
const JOB: &str = "01a2202f-24a9-70e4-8413-dcefffffc63e";
/// Clears the screen, sets the window title, rings the bell, hides text, reverses it.
const NASTY: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}[8m\u{9b}31m\u{202e}\u{2066}\r\n\t\u{7f}";

fn nasty(label: &str) -> String {
    format!("{label}{NASTY}end")
}

fn summary(state: &str) -> Value {
    json!({
        "id": JOB, "state": state, "status": nasty("status"), "scene": nasty("scene.blend"),
        "from": 1, "to": 2, "chunk_size": 1, "priority": 0, "engine": "CYCLES",
        "format": null, "output": nasty("out"), "frames_total": 2, "frames_done": 1,
        "tasks_total": 2, "tasks_done": 1, "tasks_running": 0, "tasks_failed": 1,
        "failure": nasty("failure"),
        "submitted_at": "2025-01-01T00:00:00Z", "started_at": "2025-01-01T00:00:01Z",
        "finished_at": "2025-01-01T00:00:09Z", "eta_seconds": null
    })
}

fn detail() -> Value {
    let mut job = summary("failed");
    let extra = json!({
        "tasks": [{
            "id": 1, "index": 0, "from": 1, "to": 1, "state": "failed", "attempts": 3,
            "node": nasty("http://node"), "started_at": "2025-01-01T00:00:01Z",
            "finished_at": "2025-01-01T00:00:05Z", "failure": nasty("task failure"),
            "log_tail": [nasty("Error: log line"), nasty("Fra:1 Error")]
        }, {
            "id": 2, "index": 1, "from": 2, "to": 2, "state": "completed", "attempts": 0,
            "node": nasty("http://other"), "started_at": "2025-01-01T00:00:01Z",
            "finished_at": "2025-01-01T00:00:05Z", "failure": null, "log_tail": []
        }]
    });
    if let (Some(job), Some(extra)) = (job.as_object_mut(), extra.as_object()) {
        job.extend(extra.clone());
    }
    job
}

fn node() -> Value {
    json!({
        "id": nasty("node-id"), "url": nasty("http://evil:3000"), "state": "up", "draining": false,
        "slots": 1, "running_tasks": [], "hostname": nasty("host"),
        "blender_version": nasty("3.4.1"), "cores": 2, "memory_bytes": null,
        "frames_rendered": 0, "last_seen": "2025-01-01T00:00:00Z",
        "registered_at": "2025-01-01T00:00:00Z"
    })
}

/// A page of the job's frames (the detail no longer lists them).
fn frames() -> Value {
    json!({
        "frames": [
            {"frame": 1, "state": nasty("pending"), "node": null, "path": null},
            {"frame": 2, "state": "done", "node": nasty("n"), "path": nasty("/srv/frames/x/frame_0002.png")}
        ],
        "total": 2, "offset": 0, "limit": 5000
    })
}

fn problem() -> impl IntoResponse {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/problem+json")],
        json!({"type": "/problems/invalid-field", "title": nasty("title"), "status": 400,
               "detail": nasty("detail"), "field": nasty("field")})
        .to_string(),
    )
}

/// Starts the fake orchestrator; returns its URL and the scenes folder it announces.
async fn fake_orchestrator(scenes: &std::path::Path) -> String {
    let farm = json!({
        "scenes": scenes.to_string_lossy(), "output": nasty("/srv/out"), "nodes": 1, "threads": 1
    });
    let app = Router::new()
        .route("/api/v1/nodes", get(|| async { Json(json!([node()])) }))
        .route(
            "/api/v1/jobs",
            get(|| async {
                Json(json!({"jobs": [summary("failed")], "total": 5, "offset": 0, "limit": 50}))
            })
            .post(|| async { (StatusCode::ACCEPTED, Json(summary("queued"))) }),
        )
        .route(
            "/api/v1/jobs/{id}",
            get(|Path(id): Path<String>| async move {
                if id == JOB {
                    Json(detail()).into_response()
                } else {
                    problem().into_response()
                }
            }),
        )
        .route("/api/v1/jobs/{id}/frames", get(|| async { Json(frames()) }))
        .route(
            "/api/v1/jobs/{id}/cancel",
            post(|| async { Json(summary("cancelled")) }),
        )
        .route("/api/v1/local-farm", get(move || async move { Json(farm) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn corral(server: &str, dir: &std::path::Path, args: &[&str]) -> Output {
    tokio::process::Command::new(CORRAL)
        .args(args)
        .env("CORRAL_SERVER", server)
        .env("NO_COLOR", "1")
        .current_dir(dir)
        .output()
        .await
        .expect("run corral")
}

/// No byte or character a terminal would act on: C0 controls other than the newline
/// ending each line, DEL, C1 controls, bidi overrides.
fn assert_terminal_safe(args: &[&str], out: &Output) {
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        let bad: Vec<(usize, char)> = text
            .char_indices()
            .filter(|(_, c)| {
                (c.is_control() && *c != '\n')
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect();
        assert!(
            bad.is_empty(),
            "corral {args:?} printed raw control characters {bad:?} on {name}:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn server_strings_reach_the_terminal_escaped() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("scene.blend"),
        b"not read: --frames is given",
    )
    .expect("scene");
    let server = fake_orchestrator(dir.path()).await;
    let cases: &[(&[&str], Option<u8>, &str)] = &[
        (&["nodes"], Some(0), "host\\x1b[2J"),
        (&["jobs"], Some(0), "scene.blend\\x1b[2J"),
        (&["status", JOB], Some(0), "failure\\x1b[2J"),
        (&["logs", JOB], Some(0), "Error: log line\\x1b[2J"),
        (&["logs", JOB, "--frame", "1"], Some(0), "\\u{202e}"),
        (&["cancel", JOB], Some(0), "Cancelled job"),
        (
            &["submit", "scene.blend", "--frames", "1-2", "--wait"],
            Some(3),
            "task failure\\x1b[2J",
        ),
        (&["status", "no-such-job"], Some(1), "detail\\x1b[2J"),
    ];
    for (args, code, shown) in cases {
        let out = corral(&server, dir.path(), args).await;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.status.code(),
            code.map(i32::from),
            "corral {args:?}:\n{text}"
        );
        assert_terminal_safe(args, &out);
        assert!(
            text.contains(shown),
            "corral {args:?} should show {shown:?} escaped:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn json_output_keeps_the_server_strings_as_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = fake_orchestrator(dir.path()).await;
    for args in [
        &["nodes", "--json"][..],
        &["jobs", "--json"],
        &["status", JOB, "--json"],
        &["logs", JOB, "--json"],
    ] {
        let out = corral(&server, dir.path(), args).await;
        assert!(out.status.success(), "corral {args:?}: {out:?}");
        assert!(
            !out.stdout.contains(&0x1b),
            "corral {args:?}: JSON escapes ESC"
        );
        let value: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        // The data itself is untouched: a program gets exactly what the server said.
        assert!(value.to_string().contains("\\u001b[2J"), "{value}");
    }
}
