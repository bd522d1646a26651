//! The tutorial's `POST /render` names no scene: on a real `corral up` it renders the farm's
//! default scene (`scene.blend` in --scenes), and without one it is refused at submission
//! with a 400 naming `scene`, as is any scene that cannot be opened or leads out of the
//! scenes folder (hardening issue, defect 9: it used to be accepted and then fail on every
//! node with "no default scene").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::up::Up;
use common::{assert_png, eventually, scene, Scene};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

fn post(http: &Client, url: &str, body: &Value) -> (StatusCode, Value) {
    let resp = http.post(url).json(body).send().unwrap();
    let status = resp.status();
    (status, resp.json().unwrap_or(Value::Null))
}

fn job_count(http: &Client, up: &Up) -> u64 {
    let list: Value = http
        .get(format!("{}/api/v1/jobs", up.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    list["total"].as_u64().unwrap()
}

#[test]
fn the_tutorial_render_uses_the_default_scene_and_bad_scenes_are_refused_at_submission() {
    let up = Up::start(1);
    let http = common::farm::client();
    let render = format!("{}/render", up.url);

    // No scene.blend yet: refused, naming the field and saying what to do; nothing stored.
    let (status, problem) = post(&http, &render, &json!({"from": 1, "to": 2}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(problem["field"], "scene", "{problem}");
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("scene.blend") && detail.contains("--blend"),
        "{problem}"
    );
    for bad in ["missing.blend", "../up.stdout", "/etc/passwd", "."] {
        let (status, problem) = post(
            &http,
            &format!("{}/api/v1/jobs", up.url),
            &json!({"scene": bad, "from": 1, "to": 1}),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
        assert_eq!(problem["field"], "scene", "{bad}: {problem}");
    }
    // A symbolic link inside the folder that leads out of it is refused too.
    std::os::unix::fs::symlink(scene(Scene::Tiny), up.scenes().join("link.blend")).unwrap();
    let (status, problem) = post(
        &http,
        &format!("{}/api/v1/jobs", up.url),
        &json!({"scene": "link.blend", "from": 1, "to": 1}),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(
        job_count(&http, &up),
        0,
        "a refused submission stored a job"
    );

    // With scene.blend in the folder, the tutorial's request renders it.
    std::fs::copy(scene(Scene::Tiny), up.scenes().join("scene.blend")).unwrap();
    let resp = http
        .post(&render)
        .json(&json!({"from": 1, "to": 2}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let id = resp.json::<Value>().unwrap()["jobId"]
        .as_str()
        .unwrap()
        .to_string();
    let mut last = Value::Null;
    let done = eventually(Duration::from_secs(120), || {
        let resp = http.get(format!("{}{location}", up.url)).send().unwrap();
        let ended = resp.status() == StatusCode::OK;
        last = resp.json().unwrap();
        ended
    });
    assert!(done, "the job did not end: {last}");
    assert_eq!(last["status"], "Job completed", "{last}");
    for n in 1..=2 {
        assert_png(
            &up.out().join(&id).join(format!("frame_{n:04}.png")),
            32,
            24,
        );
    }
}
