//! Tokens end to end (docs/remote-farm-protocol.md, "Credentials"): a real `corral
//! orchestrator --auth` whose first start prints a client and a join token, a real `corral
//! node` that joins with the join token (and a secret of its own), and a real Blender job
//! submitted with `corral submit --upload --token` (so the node's own credential fetches
//! the scene's blobs and uploads the frames). Calls without a token are 401 and store
//! nothing; a join token cannot read jobs; a revoked token is 403; the node answers only
//! its orchestrator; and an orchestrator listening on 0.0.0.0 requires tokens by itself.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::farm::{client, json_of, OrchestratorProcess};
use common::{describe, eventually, scene, NodeProcess, Scene, CORRAL};
use reqwest::blocking::RequestBuilder;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The token printed after `label` (`client token:`, `join token:`) on the first start.
fn printed_token(stderr: &str, label: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|t| t.trim().to_string())
        .unwrap_or_else(|| panic!("no `{label}` in:\n{stderr}"))
}

fn bearer(req: RequestBuilder, token: &str) -> RequestBuilder {
    req.header("Authorization", format!("Bearer {token}"))
}

/// A 401 with `WWW-Authenticate: Bearer` and a problem body.
fn assert_unauthorized(req: RequestBuilder) {
    let resp = req.send().unwrap();
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    let (status, body) = json_of(resp);
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["status"], 401, "{body}");
}

fn corral(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(CORRAL)
        .args(args)
        .current_dir(dir)
        .env_remove("CORRAL_TOKEN")
        .env_remove("CORRAL_SERVER")
        .output()
        .expect("run corral")
}

#[test]
fn a_farm_with_tokens_renders_only_for_its_token_holders() {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("orchestrator");
    let orchestrator =
        OrchestratorProcess::start(&data, &work.path().join("o.stderr"), &["--auth".into()]);
    let url = orchestrator.url.clone();
    let stderr = orchestrator.stderr();
    let client_token = printed_token(&stderr, "client token:");
    let join_token = printed_token(&stderr, "join token:");
    assert!(client_token.starts_with("corral_") && client_token.len() == 7 + 43);
    let http = client();
    let api = |path: &str| format!("{url}{path}");

    // Without a token: 401, and nothing is stored.
    assert_unauthorized(
        http.post(api("/api/v1/jobs"))
            .json(&json!({"from": 1, "to": 2})),
    );
    assert_unauthorized(http.get(api("/api/v1/jobs")));
    assert_unauthorized(
        http.post(api("/api/v1/nodes"))
            .json(&json!({"url": "http://127.0.0.1:9"})),
    );
    assert_unauthorized(bearer(http.get(api("/api/v1/jobs")), "corral_unknown"));
    let (status, jobs) = json_of(
        bearer(http.get(api("/api/v1/jobs")), &client_token)
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::OK, "{jobs}");
    assert_eq!(jobs["total"], 0, "{jobs}");
    let (_, nodes) = json_of(
        bearer(http.get(api("/api/v1/nodes")), &client_token)
            .send()
            .unwrap(),
    );
    assert_eq!(nodes, json!([]));
    // The probes and the dashboard's page stay open; the page asks for the token.
    for open in ["/healthz", "/readyz", "/", "/jobs"] {
        let status = http.get(api(open)).send().unwrap().status();
        assert!(status.is_success(), "{open}: {status}");
    }
    // A join token joins, and does nothing else.
    let (status, body) = json_of(
        bearer(http.get(api("/api/v1/jobs")), &join_token)
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["status"], 403, "{body}");

    // A real node joins with the join token and a secret of its own.
    let tiny = scene(Scene::Tiny);
    let node = NodeProcess::start(&[
        "--blend",
        tiny.to_str().unwrap(),
        "--orchestrator",
        &url,
        "--token",
        &join_token,
    ]);
    let secret_file = node.dir.path().join("data/node-secret");
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    assert_eq!(secret.len(), 43, "32 bytes as base64url");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&secret_file)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let up = eventually(Duration::from_secs(20), || {
        let (_, nodes) = json_of(
            bearer(http.get(api("/api/v1/nodes")), &client_token)
                .send()
                .unwrap(),
        );
        nodes[0]["state"] == "up"
    });
    assert!(up, "the node never came up:\n{}", node.stderr());

    // The node answers only its orchestrator (its secret), but for the probe.
    let to_node = |path: &str| format!("{}{path}", node.url);
    assert_unauthorized(
        http.post(to_node("/job"))
            .json(&json!({"from": 1, "to": 1})),
    );
    assert_unauthorized(bearer(http.get(to_node("/jobs")), &client_token));
    assert!(http
        .get(to_node("/healthz"))
        .send()
        .unwrap()
        .status()
        .is_success());
    let (status, _) = json_of(bearer(http.get(to_node("/jobs")), &secret).send().unwrap());
    assert_eq!(status, StatusCode::OK);

    // A real job through `corral submit --upload --token`: the node fetches the scene and
    // uploads its frames with its own credential.
    let shot = work.path().join("shot.blend");
    std::fs::copy(&tiny, &shot).unwrap();
    let refused = corral(&["jobs", "--server", &url], work.path());
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    let line = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(line.trim().lines().count(), 1, "{line}");
    assert!(line.contains("pass a client token with --token"), "{line}");
    let out = corral(
        &[
            "submit",
            "shot.blend",
            "--upload",
            "--frames",
            "1-2",
            "--wait",
            "--server",
            &url,
            "--token",
            &client_token,
        ],
        work.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        describe(&out),
        node.stderr()
    );
    let (_, jobs) = json_of(
        bearer(http.get(api("/api/v1/jobs")), &client_token)
            .send()
            .unwrap(),
    );
    assert_eq!(jobs["total"], 1, "{jobs}");
    assert_eq!(jobs["jobs"][0]["state"], "completed", "{jobs}");
    let job = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let out = corral(
        &["status", &job, "--server", &url, "--token", &client_token],
        work.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));

    // `corral token`: listed without their secrets; a revoked client token is 403.
    let out = corral(
        &["token", "list", "--data", data.to_str().unwrap()],
        work.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let list = String::from_utf8_lossy(&out.stdout).to_string();
    for kind in ["client", "join", "node"] {
        assert!(list.contains(kind), "{list}");
    }
    assert!(
        !list.contains("corral_"),
        "no token is shown again:\n{list}"
    );
    let out = corral(
        &[
            "token",
            "create",
            "client",
            "--name",
            "ci",
            "--data",
            data.to_str().unwrap(),
        ],
        work.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, _) = json_of(
        bearer(http.get(api("/api/v1/jobs")), &second)
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::OK);
    let list = String::from_utf8_lossy(
        &corral(
            &["token", "list", "--data", data.to_str().unwrap()],
            work.path(),
        )
        .stdout,
    )
    .to_string();
    let id = list
        .lines()
        .find(|l| l.contains(" ci "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{list}"))
        .to_string();
    let out = corral(
        &["token", "revoke", &id, "--data", data.to_str().unwrap()],
        work.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let (status, body) = json_of(
        bearer(http.get(api("/api/v1/jobs")), &second)
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let out = corral(&["jobs", "--server", &url, "--token", &second], work.path());
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));

    // `?token=` only for what cannot set headers (the dashboard's event stream and media,
    // here the job's preview); anywhere else it would only end up in logs, so it is refused.
    let (status, body) = json_of(
        http.get(api(&format!("/api/v1/jobs?token={client_token}&limit=1")))
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = json_of(
        http.get(api(&format!(
            "/api/v1/jobs/{job}/preview?token={client_token}"
        )))
        .send()
        .unwrap(),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = json_of(
        http.get(api(&format!("/api/v1/jobs/{job}/preview")))
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    eprintln!("auth end to end: {:?}", started.elapsed());
}

/// Listening on 0.0.0.0 requires tokens without being asked; `--auth --no-auth` is a
/// usage error; `--no-auth` opens it again with a warning.
#[test]
fn off_loopback_tokens_are_required_unless_no_auth() {
    let work = tempfile::tempdir().unwrap();
    // Plain HTTP (--no-tls, warned about) to read the answers here; tests/tls.rs covers
    // the default, HTTPS.
    let orchestrator = OrchestratorProcess::start_listening(
        "0.0.0.0:0",
        &work.path().join("a"),
        &work.path().join("a.stderr"),
        &["--no-tls".into()],
    );
    let port = orchestrator.url.rsplit(':').next().unwrap().to_string();
    let http = client();
    assert_unauthorized(http.get(format!("http://127.0.0.1:{port}/api/v1/jobs")));
    assert!(orchestrator.stderr().contains("join token:"));
    assert!(orchestrator.stderr().contains("--no-tls"));

    let out = corral(&["orchestrator", "--auth", "--no-auth"], work.path());
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    let open = OrchestratorProcess::start_listening(
        "0.0.0.0:0",
        &work.path().join("b"),
        &work.path().join("b.stderr"),
        &["--no-auth".into()],
    );
    let port = open.url.rsplit(':').next().unwrap().to_string();
    let (status, body): (StatusCode, Value) = json_of(
        http.get(format!("http://127.0.0.1:{port}/api/v1/jobs"))
            .send()
            .unwrap(),
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(open.stderr().contains("--no-auth"), "{}", open.stderr());
    assert!(!open.stderr().contains("join token:"));
}

/// A join token adds machines but cannot take over a node the farm knows: joining an
/// address already known under another secret is a 409 problem naming `secret`, and the
/// node keeps its secret and credential; the node itself (its secret, or its credential)
/// still refreshes; once an admin removes the node, its credential stops working and the
/// address may join anew.
#[test]
fn a_join_token_cannot_take_over_a_known_node() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("orchestrator");
    let orchestrator =
        OrchestratorProcess::start(&data, &work.path().join("o.stderr"), &["--auth".into()]);
    let url = orchestrator.url.clone();
    let stderr = orchestrator.stderr();
    let client_token = printed_token(&stderr, "client token:");
    let join_token = printed_token(&stderr, "join token:");
    let http = client();
    let api = |path: &str| format!("{url}{path}");
    // Nothing listens there: the node stays down, which changes nothing here.
    let node_url = "http://127.0.0.1:9";
    let (s1, s2, s3) = ("a".repeat(43), "b".repeat(43), "c".repeat(43));
    let join = |token: &str, secret: Option<&str>| {
        let mut body = json!({ "url": node_url });
        if let Some(secret) = secret {
            body["secret"] = json!(secret);
        }
        let resp = bearer(http.post(api("/api/v1/nodes")), token)
            .json(&body)
            .send()
            .unwrap();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (status, body) = json_of(resp);
        (status, body, ct)
    };

    let (status, first, _) = join(&join_token, Some(&s1));
    assert_eq!(status, StatusCode::OK, "{first}");
    let credential = first["credential"].as_str().unwrap().to_string();
    let node_id = first["id"].as_str().unwrap().to_string();

    // Another secret, or none, under the join token: refused, and nothing changes.
    for other in [Some(s2.as_str()), None] {
        let (status, body, ct) = join(&join_token, other);
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert_eq!(ct, "application/problem+json");
        assert_eq!(body["field"], "secret", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("DELETE /api/v1/nodes/"),
            "{body}"
        );
    }
    // The first credential still works (the refused joins revoked nothing).
    let (status, body, _) = join(&credential, Some(&s1));
    assert_eq!(status, StatusCode::OK, "{body}");

    // The node itself joins again with its secret (a restart): a new credential.
    let (status, again, _) = join(&join_token, Some(&s1));
    assert_eq!(status, StatusCode::OK, "{again}");
    let credential = again["credential"].as_str().unwrap().to_string();

    // Its own credential may change its secret.
    let (status, body, _) = join(&credential, Some(&s2));
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = join(&join_token, Some(&s1));
    assert_eq!(status, StatusCode::CONFLICT, "the secret is s2 now: {body}");

    // An admin removes the node: its credential is revoked, and the address joins anew.
    let resp = bearer(
        http.delete(api(&format!("/api/v1/nodes/{node_id}"))),
        &client_token,
    )
    .send()
    .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (status, body, _) = join(&credential, Some(&s2));
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a removed node's credential: {body}"
    );
    let (status, body, _) = join(&join_token, Some(&s3));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["credential"].is_string(), "{body}");
}
