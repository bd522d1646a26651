//! Integration tests of `corral node`: a real node process on port 0, real Blender, real
//! (small, generated) scenes, real files on disk.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    assert_png, blender_processes_under, eventually, processes_with_env, scene, warm, NodeProcess,
    Scene, CORRAL,
};
use nix::sys::signal::Signal;
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("http client")
}

fn small_node(extra: &[&str]) -> NodeProcess {
    let blend = scene(Scene::Small);
    let mut args = vec!["--blend", blend.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    NodeProcess::start(&args)
}

fn post_job(node: &NodeProcess, body: &Value) -> Response {
    client()
        .post(format!("{}/job", node.url))
        .json(body)
        .send()
        .expect("POST /job")
}

/// Long-polls `GET /job/{key}` until the job has ended; returns the final view.
fn wait_done(node: &NodeProcess, key: &str) -> Value {
    let http = client();
    let mut since = 0u64;
    for _ in 0..600 {
        let resp = http
            .get(format!("{}/job/{key}?wait=20&since={since}", node.url))
            .send()
            .expect("GET /job");
        let status = resp.status();
        let view: Value = resp.json().expect("job JSON");
        if status == StatusCode::OK {
            return view;
        }
        assert_eq!(status, StatusCode::ACCEPTED, "{view}");
        since = view["version"].as_u64().expect("version");
    }
    panic!("job {key} did not end");
}

fn get_json(url: &str) -> (StatusCode, Value) {
    let resp = client().get(url).send().expect("GET");
    let status = resp.status();
    (status, resp.json().expect("JSON body"))
}

#[test]
fn renders_frames_and_reports_completion_with_the_tutorial_api() {
    let node = small_node(&[]);
    let resp = post_job(&node, &json!({"from": 1, "to": 3}));
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after));
    let accepted: Value = resp.json().unwrap();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/job/{id}"));
    assert_eq!(accepted["status"], "Job still running");
    // The tutorial's orchestrator polls GET /job/{pid}; pid must be accepted there.
    let pid = accepted["pid"].as_u64().unwrap();

    let (status, running) = get_json(&format!("{}/job/{pid}", node.url));
    assert!(
        status == StatusCode::ACCEPTED || running["state"] == "completed",
        "{status} {running}"
    );
    assert_eq!(running["id"], id.as_str());

    let done = wait_done(&node, &pid.to_string());
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["status"], "Job completed");
    assert_eq!(done["frames_total"], 3);
    assert_eq!(done["frames_done"], 3);
    // A warm worker does not exit after a task: there is no exit code to report.
    assert_eq!(
        done["exit_code"],
        if warm() { json!(null) } else { json!(0) }
    );
    assert!(done["failure"].is_null());
    assert!(
        done["blender_pid"].is_null(),
        "no Blender pid once it has ended"
    );
    assert!(done["finished_at"].is_string() && done["started_at"].is_string());
    let outputs = done["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 3);
    for (i, out) in outputs.iter().enumerate() {
        let frame = i as u64 + 1;
        assert_eq!(out["frame"], frame);
        let expected = node
            .out_dir()
            .join(format!("blender-render_{frame:04}.png"));
        assert_eq!(
            out["path"],
            expected.canonicalize().unwrap().to_str().unwrap()
        );
        assert_png(&expected, 64, 48);
    }
    // Nothing but the three frames (no partial folder debris) in the output folder.
    let mut names: Vec<String> = std::fs::read_dir(node.out_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "blender-render_0001.png",
            "blender-render_0002.png",
            "blender-render_0003.png"
        ]
    );

    // The UUID answers too, with the same 200.
    let (status, by_id) = get_json(&format!("{}/job/{id}", node.url));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_id["state"], "completed");

    let log = client()
        .get(format!("{}/job/{id}/log", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(log.contains("Saved: '"), "{log}");
    assert!(
        log.starts_with("# "),
        "log starts with the command line: {log}"
    );

    let (_, jobs) = get_json(&format!("{}/jobs", node.url));
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["id"], id.as_str());

    let (status, health) = get_json(&format!("{}/healthz", node.url));
    assert_eq!(
        (status, health["status"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    let (_, info) = get_json(&format!("{}/info", node.url));
    assert_eq!(info["blender_version"], "3.4.1");
    assert_eq!(info["slots"], 1);
    assert!(info["cores"].as_u64().unwrap() >= 1);
    assert!(info["memory_bytes"].as_u64().unwrap() > 0);
    assert!(!info["hostname"].as_str().unwrap().is_empty());
    assert!(info["engines"]
        .as_array()
        .unwrap()
        .contains(&json!("CYCLES")));
    assert_eq!(info["render_mode"], common::render_mode());
    let workers = info["workers"].as_array().unwrap();
    if warm() {
        assert_eq!(workers.len(), 1, "{info}");
        assert_eq!(workers[0]["state"], "idle");
        assert_eq!(
            (workers[0]["tasks"].as_u64(), workers[0]["frames"].as_u64()),
            (Some(1), Some(3))
        );
    } else {
        assert!(workers.is_empty(), "{info}");
    }
}

/// The Blender processes below `node` are only its idle warm workers (none in cold mode):
/// nothing is rendering.
fn assert_nothing_renders(node: &NodeProcess) {
    let (_, info) = get_json(&format!("{}/info", node.url));
    let workers = info["workers"].as_array().unwrap();
    let mut idle: Vec<i64> = workers
        .iter()
        .filter(|w| w["state"] == "idle")
        .map(|w| w["pid"].as_i64().unwrap())
        .collect();
    idle.sort();
    let mut blenders: Vec<i64> = blender_processes_under(node.dir.path())
        .into_iter()
        .map(i64::from)
        .collect();
    blenders.sort();
    assert_eq!(workers.len(), idle.len(), "a worker is busy: {info}");
    assert_eq!(
        blenders, idle,
        "Blender processes besides idle workers: {info}"
    );
}

#[test]
fn long_poll_answers_when_the_job_changes() {
    let node = small_node(&[]);
    let accepted: Value = post_job(&node, &json!({"from": 1, "to": 2}))
        .json()
        .unwrap();
    let id = accepted["id"].as_str().unwrap();
    let first_version = accepted["version"].as_u64().unwrap();
    // With `since` set to the version we saw, the answer comes back as soon as the job
    // moves on (started, a frame, a sample...), long before the 100 s wait.
    let (_, changed) = get_json(&format!(
        "{}/job/{id}?wait=100&since={first_version}",
        node.url
    ));
    assert!(
        changed["version"].as_u64().unwrap() > first_version,
        "{changed}"
    );
    let done = wait_done(&node, id);
    assert_eq!(done["state"], "completed");
    // Once ended, a long-poll answers at once with 200.
    let resp = client()
        .get(format!("{}/job/{id}?wait=100", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// `batch` holds progress short of the end for that long, so a watcher of a fast render
/// gets several frames per answer; the render's end is answered at once.
#[test]
fn a_batched_long_poll_holds_progress_but_not_the_end() {
    let node = small_node(&[]);
    let accepted: Value = post_job(&node, &json!({"from": 1, "to": 20}))
        .json()
        .unwrap();
    let id = accepted["id"].as_str().unwrap();
    let version = accepted["version"].as_u64().unwrap();
    // Progress comes within the first second, but is held for the whole second.
    let asked = Instant::now();
    let (_, held) = get_json(&format!(
        "{}/job/{id}?wait=60&since={version}&batch=1",
        node.url
    ));
    if held["state"] != "completed" {
        assert!(asked.elapsed() >= Duration::from_secs(1), "{held}");
    }
    assert!(held["version"].as_u64().unwrap() > version, "{held}");
    // Held for up to 60 s, progress would come after a minute: the end comes when it
    // happens, with every frame.
    let asked = Instant::now();
    let mut since = held["version"].as_u64().unwrap();
    let done = loop {
        let (_, view) = get_json(&format!(
            "{}/job/{id}?wait=60&since={since}&batch=60",
            node.url
        ));
        if view["state"] == "completed" {
            break view;
        }
        since = view["version"].as_u64().unwrap();
        assert!(asked.elapsed() >= Duration::from_secs(60), "{view}");
    };
    assert!(asked.elapsed() < Duration::from_secs(60), "{done}");
    assert_eq!(done["outputs"].as_array().unwrap().len(), 20, "{done}");
}

#[test]
fn jobs_beyond_the_slots_wait_in_fifo_order() {
    let node = small_node(&["--slots", "1"]);
    let ids: Vec<String> = (0..3)
        .map(|i| {
            let resp = post_job(&node, &json!({"from": 1 + i * 2, "to": 2 + i * 2}));
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let v: Value = resp.json().unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let mut max_running = 0;
    let mut max_blenders = 0;
    let all_done = eventually(Duration::from_secs(120), || {
        let (_, jobs) = get_json(&format!("{}/jobs", node.url));
        let jobs = jobs.as_array().unwrap().clone();
        let running = jobs.iter().filter(|j| j["state"] == "running").count();
        max_running = max_running.max(running);
        max_blenders = max_blenders.max(blender_processes_under(node.dir.path()).len());
        jobs.iter().all(|j| j["state"] == "completed")
    });
    assert!(all_done, "jobs did not complete");
    assert_eq!(max_running, 1, "more jobs ran than slots");
    assert!(
        max_blenders <= 1,
        "{max_blenders} Blender processes for one slot"
    );
    let started: Vec<String> = ids
        .iter()
        .map(|id| {
            let (_, v) = get_json(&format!("{}/job/{id}", node.url));
            v["started_at"].as_str().unwrap().to_string()
        })
        .collect();
    let mut sorted = started.clone();
    sorted.sort();
    assert_eq!(started, sorted, "jobs did not start in submission order");
    for frame in 1..=6 {
        assert_png(
            &node
                .out_dir()
                .join(format!("blender-render_{frame:04}.png")),
            64,
            48,
        );
    }
}

#[test]
fn per_job_scene_engine_format_and_output() {
    let scenes = tempfile::tempdir().unwrap();
    std::fs::copy(scene(Scene::Small), scenes.path().join("shot.blend")).unwrap();
    let node = NodeProcess::start(&["--scenes", scenes.path().to_str().unwrap()]);
    let resp = post_job(
        &node,
        &json!({"from": 2, "to": 3, "scene": "shot.blend", "engine": "BLENDER_WORKBENCH",
                "format": "JPEG", "threads": 1, "output": "shots/a/f_####"}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let v: Value = resp.json().unwrap();
    let done = wait_done(&node, v["id"].as_str().unwrap());
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["engine"], "BLENDER_WORKBENCH");
    for frame in [2, 3] {
        let path = node.out_dir().join(format!("shots/a/f_{frame:04}.jpg"));
        let img = image::ImageReader::open(&path)
            .and_then(|r| r.with_guessed_format())
            .unwrap();
        assert_eq!(
            img.format(),
            Some(image::ImageFormat::Jpeg),
            "{}",
            path.display()
        );
    }
}

/// A bad request gets a 4xx problem body naming the field, and changes nothing.
#[test]
fn bad_input_is_refused_with_a_problem_and_changes_nothing() {
    let scenes = tempfile::tempdir().unwrap();
    std::fs::copy(scene(Scene::Small), scenes.path().join("ok.blend")).unwrap();
    std::fs::write(scenes.path().join("empty.blend"), b"").unwrap();
    std::fs::write(
        scenes.path().join("text.blend"),
        b"not a blend file\n".repeat(64),
    )
    .unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::copy(scene(Scene::Small), outside.path().join("secret.blend")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.blend"),
        scenes.path().join("link.blend"),
    )
    .unwrap();
    let blend = scene(Scene::Small);
    let node = NodeProcess::start(&[
        "--blend",
        blend.to_str().unwrap(),
        "--scenes",
        scenes.path().to_str().unwrap(),
        "--max-frames",
        "100",
    ]);
    let marker = node.dir.path().join("pwned");
    let injection = format!("1; touch {}", marker.display());
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing from", json!({"to": 2}).to_string(), "from"),
        ("missing to", json!({"from": 1}).to_string(), "to"),
        ("null", json!({"from": null, "to": 2}).to_string(), "from"),
        (
            "shell string",
            json!({"from": injection, "to": 2}).to_string(),
            "from",
        ),
        (
            "numeric string",
            json!({"from": "1", "to": 2}).to_string(),
            "from",
        ),
        ("float", r#"{"from": 1.5, "to": 2}"#.into(), "from"),
        ("float to", r#"{"from": 1, "to": 2.0}"#.into(), "to"),
        ("array", json!({"from": [1], "to": 2}).to_string(), "from"),
        (
            "object",
            json!({"from": {"a": 1}, "to": 2}).to_string(),
            "from",
        ),
        ("bool", json!({"from": true, "to": 2}).to_string(), "from"),
        ("body array", "[1, 2]".into(), "body"),
        ("non-JSON", "from=1&to=2".into(), "body"),
        ("truncated", r#"{"from": 1, "#.into(), "body"),
        (
            "trailing garbage",
            r#"{"from": 1, "to": 2} rm -rf"#.into(),
            "body",
        ),
        (
            "duplicate key",
            r#"{"from": 1, "from": 2, "to": 2}"#.into(),
            "from",
        ),
        ("empty", "".into(), "body"),
        ("from > to", json!({"from": 5, "to": 2}).to_string(), "to"),
        (
            "below Blender",
            json!({"from": -3, "to": -1}).to_string(),
            "from",
        ),
        (
            "above Blender",
            json!({"from": 1, "to": 1048575}).to_string(),
            "to",
        ),
        (
            "huge",
            json!({"from": 1, "to": 1u64 << 62}).to_string(),
            "to",
        ),
        (
            "too many frames",
            json!({"from": 1, "to": 101}).to_string(),
            "to",
        ),
        (
            "unknown field",
            json!({"from": 1, "to": 2, "frm": 1}).to_string(),
            "frm",
        ),
        (
            "bad engine",
            json!({"from": 1, "to": 2, "engine": "LUX"}).to_string(),
            "engine",
        ),
        (
            "movie format",
            json!({"from": 1, "to": 2, "format": "FFMPEG"}).to_string(),
            "format",
        ),
        (
            "threads",
            json!({"from": 1, "to": 2, "threads": -1}).to_string(),
            "threads",
        ),
        (
            "scene escapes",
            json!({"from": 1, "to": 2, "scene": "../x.blend"}).to_string(),
            "scene",
        ),
        (
            "absolute scene",
            json!({"from": 1, "to": 2, "scene": blend}).to_string(),
            "scene",
        ),
        (
            "symlink escape",
            json!({"from": 1, "to": 2, "scene": "link.blend"}).to_string(),
            "scene",
        ),
        (
            "missing scene",
            json!({"from": 1, "to": 2, "scene": "nope.blend"}).to_string(),
            "scene",
        ),
        (
            "empty scene",
            json!({"from": 1, "to": 2, "scene": "empty.blend"}).to_string(),
            "scene",
        ),
        (
            "not a blend",
            json!({"from": 1, "to": 2, "scene": "text.blend"}).to_string(),
            "scene",
        ),
        (
            "scene folder",
            json!({"from": 1, "to": 2, "scene": "."}).to_string(),
            "scene",
        ),
        (
            "output escapes",
            json!({"from": 1, "to": 2, "output": "../../x_####"}).to_string(),
            "output",
        ),
        (
            "output backslashes",
            json!({"from": 1, "to": 2, "output": "..\\..\\..\\tmp\\x_"}).to_string(),
            "output",
        ),
        (
            "output dot",
            json!({"from": 1, "to": 2, "output": "."}).to_string(),
            "output",
        ),
        (
            "output newline",
            json!({"from": 1, "to": 2, "output": "a\nSaved: x_####"}).to_string(),
            "output",
        ),
        (
            "output too long",
            json!({"from": 1, "to": 2, "output": "abcdefgh/".repeat(108) + "x_####"}).to_string(),
            "output",
        ),
        (
            "output long name",
            json!({"from": 1, "to": 2, "output": "x".repeat(300)}).to_string(),
            "output",
        ),
        (
            "output in a partial folder",
            json!({"from": 1, "to": 2, "output": ".corral-partial-x/f_####"}).to_string(),
            "output",
        ),
        (
            "output reserved name below",
            json!({"from": 1, "to": 2, "output": "shots/.corral-x/f_####"}).to_string(),
            "output",
        ),
        (
            "output right-to-left override",
            json!({"from": 1, "to": 2, "output": "f_####\u{202e}gnp.exe"}).to_string(),
            "output",
        ),
        (
            "output isolate",
            json!({"from": 1, "to": 2, "output": "\u{2067}shots/f_####"}).to_string(),
            "output",
        ),
        (
            "output C1 control",
            json!({"from": 1, "to": 2, "output": "shots\u{9b}/f_####"}).to_string(),
            "output",
        ),
        (
            "negative frames",
            json!({"from": -3, "to": -3}).to_string(),
            "from",
        ),
    ];
    let http = client();
    for (what, body, field) in &cases {
        let resp = http
            .post(format!("{}/job", node.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}: {body}");
        assert_eq!(
            resp.headers()["content-type"],
            "application/problem+json",
            "{what}"
        );
        let problem: Value = resp.json().unwrap();
        assert_eq!(problem["status"], 400, "{what}");
        assert_eq!(problem["field"], *field, "{what}: {problem}");
        assert!(
            problem["title"].is_string() && problem["detail"].is_string(),
            "{what}"
        );
    }

    // Oversized body, wrong content type.
    let big = format!(
        r#"{{"from": 1, "to": 2, "scene": "{}"}}"#,
        "a".repeat(100_000)
    );
    let resp = http
        .post(format!("{}/job", node.url))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let resp = http
        .post(format!("{}/job", node.url))
        .header("content-type", "text/plain")
        .body(r#"{"from": 1, "to": 2}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    // Unknown ids on every route: 404 problem.
    for key in [
        "999",
        "0",
        "not-a-job",
        "01a2202f-24a9-70e4-8413-dcefffffc63e",
        "-1",
        "%FF",
    ] {
        for (method, path) in [
            ("GET", format!("/job/{key}")),
            ("DELETE", format!("/job/{key}")),
            ("GET", format!("/job/{key}/log")),
        ] {
            let resp = http
                .request(method.parse().unwrap(), format!("{}{path}", node.url))
                .send()
                .unwrap();
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method} {path}");
            assert_eq!(resp.headers()["content-type"], "application/problem+json");
            let problem: Value = resp.json().unwrap();
            assert_eq!(problem["status"], 404, "{method} {path}");
        }
    }
    let resp = http.get(format!("{}/nope", node.url)).send().unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = http.put(format!("{}/job", node.url)).send().unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");

    // Nothing was accepted, nothing ran, no shell ever saw the string.
    let (_, jobs) = get_json(&format!("{}/jobs", node.url));
    assert_eq!(jobs, json!([]));
    assert!(!marker.exists(), "a shell ran the injected command");
    assert_nothing_renders(&node);

    // A good job, then bad query parameters on it.
    let ok: Value = post_job(&node, &json!({"from": 1, "to": 1, "scene": "ok.blend"}))
        .json()
        .unwrap();
    let id = ok["id"].as_str().unwrap();
    for query in [
        "wait=abc",
        "wait=-1",
        "wait=1e9",
        "wait=NaN",
        "since=x&wait=1",
        "wait=1&batch=-1",
        "wait=1&batch=1e9",
        "wiat=30",
    ] {
        let (status, problem) = get_json(&format!("{}/job/{id}?{query}", node.url));
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert!(problem["field"].is_string(), "{query}: {problem}");
    }
    assert_eq!(wait_done(&node, id)["state"], "completed");
}

/// Folders in the output folder may be symbolic links, but frames never land outside it:
/// a link leading out is refused at submission, and a folder that becomes one while the
/// job waits fails the job when it starts, with nothing written through the link.
#[test]
fn output_folders_behind_symbolic_links_out_are_refused() {
    let slow = scene(Scene::Slow);
    let node = NodeProcess::start(&["--blend", slow.to_str().unwrap(), "--slots", "1"]);
    let out = node.out_dir();
    let elsewhere = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), out.join("escape")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/corral", out.join("dangling")).unwrap();
    std::fs::create_dir(out.join("real")).unwrap();
    std::os::unix::fs::symlink(out.join("real"), out.join("inside")).unwrap();
    for output in ["escape/f_####", "escape/new/f_####", "dangling/f_####"] {
        let resp = post_job(&node, &json!({"from": 1, "to": 1, "output": output}));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{output}");
        let problem: Value = resp.json().unwrap();
        assert_eq!(problem["field"], "output", "{output}: {problem}");
    }

    // A job waits behind a slow one; meanwhile its folder turns into a link out.
    let (slow_id, _) = start_slow_job(&node);
    let resp = post_job(
        &node,
        &json!({"from": 1, "to": 1, "output": "later/f_####"}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let queued: Value = resp.json().unwrap();
    assert_eq!(queued["state"], "queued");
    std::os::unix::fs::symlink(elsewhere.path(), out.join("later")).unwrap();
    client()
        .delete(format!("{}/job/{slow_id}", node.url))
        .send()
        .unwrap();
    let done = wait_done(&node, queued["id"].as_str().unwrap());
    assert_eq!(done["state"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(
        failure.contains("outside the node's output folder"),
        "{failure}"
    );
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "something was written through the link"
    );

    // A link that stays inside is followed.
    let resp = post_job(
        &node,
        &json!({"from": 1, "to": 1, "output": "inside/f_####"}),
    );
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

/// Writes an executable shell script `name` into `dir` to be given as `--blender`: it
/// runs the real Blender (found on PATH) as `body` says. The node still runs it from an
/// argument vector; the script is the test's, standing in for a site's wrapper.
fn blender_wrapper(dir: &std::path::Path, name: &str, body: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A frame that was placed but is gone when Blender ends (deleted by someone else, a
/// full or failing disk) makes the job fail, naming the frame, instead of `completed`.
#[test]
fn a_job_whose_placed_frame_vanished_fails() {
    let blend = scene(Scene::Small);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // After Blender exits, and before the node decides, frame 2 disappears. Only a cold
    // render has a Blender that exits after each task, so the test pins that mode.
    let wrapper = blender_wrapper(
        dir.path(),
        "blender-then-rm",
        &format!(
            "blender \"$@\"\nrc=$?\nrm -f '{}/blender-render_0002.png'\nexit $rc",
            out.display()
        ),
    );
    let node = NodeProcess::start_in(
        dir,
        &[
            "--blend",
            blend.to_str().unwrap(),
            "--blender",
            wrapper.to_str().unwrap(),
            "--render-mode",
            "cold",
        ],
    );
    let v: Value = post_job(&node, &json!({"from": 1, "to": 3}))
        .json()
        .unwrap();
    let done = wait_done(&node, v["id"].as_str().unwrap());
    assert_eq!(done["state"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(failure.contains("frame(s) 2"), "{failure}");
    let frames: Vec<u64> = done["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["frame"].as_u64().unwrap())
        .collect();
    assert_eq!(
        frames,
        [1, 3],
        "outputs list only frames that exist: {done}"
    );
}

/// A 50 MB output line does not make a 50 MB log: each line is cut at 16 KiB in the log
/// file (and in the job's tail), marked, and the render is unaffected.
#[test]
fn a_huge_output_line_is_cut_in_the_log() {
    let blend = scene(Scene::Small);
    let dir = tempfile::tempdir().unwrap();
    let wrapper = blender_wrapper(
        dir.path(),
        "blender-chatty",
        "[ \"$1\" = --version ] || { head -c 50000000 /dev/zero | tr '\\0' x; echo; echo after; }\nexec blender \"$@\"",
    );
    let node = NodeProcess::start_in(
        dir,
        &[
            "--blend",
            blend.to_str().unwrap(),
            "--blender",
            wrapper.to_str().unwrap(),
        ],
    );
    let v: Value = post_job(&node, &json!({"from": 1, "to": 2}))
        .json()
        .unwrap();
    let id = v["id"].as_str().unwrap();
    let done = wait_done(&node, id);
    assert_eq!(done["state"], "completed", "{done}");
    let log = client()
        .get(format!("{}/job/{id}/log", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(log.len() < 1_000_000, "the log is {} bytes", log.len());
    let cut = log
        .lines()
        .find(|l| l.starts_with("xxxx"))
        .expect("the long line's start is in the log");
    assert!(
        cut.ends_with(" [corral: line cut, 49983616 more bytes dropped]"),
        "{}",
        &cut[cut.len().saturating_sub(80)..]
    );
    assert!(log.lines().any(|l| l == "after"), "the next line is kept");
    assert!(log.contains("Saved: '"), "Blender's own output follows");
}

/// Unmounts a file system mounted for a test, when the test ends.
struct Mounted(std::path::PathBuf);

impl Mounted {
    /// Mounts a tmpfs of `size` at `dir` (created); `None` when mounting is not allowed
    /// here (not root).
    fn tmpfs(dir: &std::path::Path, size: &str) -> Option<Mounted> {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .ok()?;
        status.success().then(|| Mounted(dir.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk under the node's data folder stops the job's log, not the job: the log
/// ends with a line saying so, the job view has `log_error`, and every frame is rendered.
#[test]
fn a_full_log_disk_is_reported_and_the_render_goes_on() {
    let blend = scene(Scene::Small);
    let dir = tempfile::tempdir().unwrap();
    let Some(mounted) = Mounted::tmpfs(&dir.path().join("data"), "48k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let node = NodeProcess::start_in(dir, &["--blend", blend.to_str().unwrap()]);
    let v: Value = post_job(&node, &json!({"from": 1, "to": 12}))
        .json()
        .unwrap();
    let id = v["id"].as_str().unwrap();
    let done = wait_done(&node, id);
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["frames_done"], 12);
    let error = done["log_error"].as_str().expect("log_error is set");
    assert!(error.contains("No space left on device"), "{error}");
    let log = client()
        .get(format!("{}/job/{id}/log", node.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("# corral: cannot write the log") && last.contains("not in this file"),
        "the log ends with: {last:?}"
    );
    drop(node);
    drop(mounted);
}

#[test]
fn only_the_newest_ended_jobs_are_kept() {
    let node = small_node(&["--keep-jobs", "2"]);
    let ids: Vec<String> = (1..=3)
        .map(|f| {
            let v: Value = post_job(&node, &json!({"from": f, "to": f}))
                .json()
                .unwrap();
            let id = v["id"].as_str().unwrap().to_string();
            assert_eq!(wait_done(&node, &id)["state"], "completed");
            id
        })
        .collect();
    let (_, jobs) = get_json(&format!("{}/jobs", node.url));
    let kept: Vec<_> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].clone())
        .collect();
    assert_eq!(kept, [json!(ids[1]), json!(ids[2])]);
    let (status, _) = get_json(&format!("{}/job/{}", node.url, ids[0]));
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get_json(&format!("{}/job/1", node.url));
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the alias of a forgotten job"
    );
    let logs = node.dir.path().join("data/logs");
    assert_eq!(std::fs::read_dir(logs).unwrap().count(), 2);
}

#[test]
fn a_broken_blend_ends_failed_with_the_reason_and_log_tail() {
    let scenes = tempfile::tempdir().unwrap();
    // A .blend header, then garbage: it passes the node's check at submission, and
    // Blender itself finds it broken.
    let mut broken = b"BLENDER-v304REND".to_vec();
    broken.extend(b"not a blend file\n".repeat(256));
    std::fs::write(scenes.path().join("broken.blend"), broken).unwrap();
    let node = NodeProcess::start(&["--scenes", scenes.path().to_str().unwrap()]);
    let v: Value = post_job(&node, &json!({"from": 1, "to": 2, "scene": "broken.blend"}))
        .json()
        .unwrap();
    let done = wait_done(&node, v["id"].as_str().unwrap());
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["status"], "Job failed");
    let failure = done["failure"].as_str().unwrap();
    assert!(failure.contains("Failed to read blend file"), "{failure}");
    let tail = done["log_tail"].as_array().unwrap();
    assert!(
        tail.iter()
            .any(|l| l.as_str().unwrap().starts_with("Error:")),
        "{done}"
    );
    assert_eq!(done["frames_done"], 0);
}

/// A scene the node cannot read, or that is no .blend file at all, is refused when the
/// job is submitted (400 naming `scene`), not accepted and failed later.
#[test]
fn an_unreadable_scene_is_refused_at_submission() {
    use std::os::unix::fs::PermissionsExt;
    let scenes = tempfile::tempdir().unwrap();
    let locked = scenes.path().join("locked.blend");
    std::fs::copy(scene(Scene::Small), &locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut bodies = vec![("truncated gzip", {
        let path = scenes.path().join("gz.blend");
        std::fs::write(&path, [0x1f, 0x8b]).unwrap();
        "gz.blend"
    })];
    // Root reads a file whatever its mode says; the check is still made by opening it.
    if !running_as_root() {
        bodies.push(("mode 000", "locked.blend"));
    }
    let node = NodeProcess::start(&["--scenes", scenes.path().to_str().unwrap()]);
    for (what, scene) in bodies {
        let resp = post_job(&node, &json!({"from": 1, "to": 1, "scene": scene}));
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{what}");
        let problem: Value = resp.json().unwrap();
        assert_eq!(problem["field"], "scene", "{what}: {problem}");
    }
    let (_, jobs) = get_json(&format!("{}/jobs", node.url));
    assert_eq!(jobs, json!([]));
}

#[test]
fn an_error_line_fails_the_job_even_with_frames_missing() {
    // Denoising on, in a Blender built without OpenImageDenoise: `Error:` and exit 1.
    let denoise = scene(Scene::Denoise);
    let node = NodeProcess::start(&["--blend", denoise.to_str().unwrap()]);
    let v: Value = post_job(&node, &json!({"from": 1, "to": 2}))
        .json()
        .unwrap();
    let done = wait_done(&node, v["id"].as_str().unwrap());
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["failure"]
            .as_str()
            .unwrap()
            .contains("OpenImageDenoise"),
        "{done}"
    );
}

fn start_slow_job(node: &NodeProcess) -> (String, i32) {
    let v: Value = post_job(node, &json!({"from": 1, "to": 500}))
        .json()
        .unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    let mut blender_pid = 0;
    assert!(
        eventually(Duration::from_secs(30), || {
            let (_, v) = get_json(&format!("{}/job/{id}", node.url));
            blender_pid = v["blender_pid"].as_i64().unwrap_or(0) as i32;
            blender_pid > 0 && v["current_frame"].is_number()
        }),
        "slow job never started rendering"
    );
    (id, blender_pid)
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[test]
fn cancel_kills_the_running_blender_and_drops_queued_jobs() {
    let slow = scene(Scene::Slow);
    let node = NodeProcess::start(&["--blend", slow.to_str().unwrap(), "--slots", "1"]);
    let (id, blender_pid) = start_slow_job(&node);
    let queued: Value = post_job(&node, &json!({"from": 1, "to": 2}))
        .json()
        .unwrap();
    let queued_id = queued["id"].as_str().unwrap();
    assert_eq!(queued["state"], "queued");

    let resp = client()
        .delete(format!("{}/job/{queued_id}", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["state"], "cancelled");
    assert_eq!(v["status"], "Job cancelled");

    let resp = client()
        .delete(format!("{}/job/{id}", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().unwrap();
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(
        !process_alive(blender_pid),
        "Blender {blender_pid} survived cancel"
    );
    // In warm mode a fresh worker took the killed one's place.
    assert!(
        eventually(Duration::from_secs(10), || {
            let (_, info) = get_json(&format!("{}/info", node.url));
            info["workers"].as_array().unwrap().len() == usize::from(warm())
        }),
        "no fresh worker"
    );
    assert_nothing_renders(&node);
    // Cancelling again changes nothing.
    let (status, again) = get_json(&format!("{}/job/{id}", node.url));
    assert_eq!(
        (status, again["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
}

#[test]
fn sigterm_stops_the_node_and_leaves_no_blender() {
    let slow = scene(Scene::Slow);
    let mut node = NodeProcess::start(&["--blend", slow.to_str().unwrap()]);
    let (_, blender_pid) = start_slow_job(&node);
    let status = node
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
        .expect("node did not exit after SIGTERM");
    assert!(status.success(), "{status:?}\n{}", node.stderr());
    assert!(!process_alive(blender_pid), "Blender outlived the node");
    assert!(blender_processes_under(node.dir.path()).is_empty());
}

#[test]
fn sigint_with_finish_lets_the_running_job_end() {
    let blend = scene(Scene::Small);
    let mut node = NodeProcess::start(&[
        "--blend",
        blend.to_str().unwrap(),
        "--on-shutdown",
        "finish",
    ]);
    let v: Value = post_job(&node, &json!({"from": 1, "to": 8}))
        .json()
        .unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert!(eventually(Duration::from_secs(30), || {
        get_json(&format!("{}/job/{id}", node.url)).1["state"] == "running"
    }));
    let status = node
        .signal_and_wait(Signal::SIGINT, Duration::from_secs(60))
        .expect("node did not exit after finishing");
    assert!(status.success());
    for frame in 1..=8 {
        assert_png(
            &node
                .out_dir()
                .join(format!("blender-render_{frame:04}.png")),
            64,
            48,
        );
    }
    assert!(node.stderr().contains("all renders ended"));
}

#[test]
fn blender_dies_with_a_crashed_node() {
    let slow = scene(Scene::Slow);
    let mut node = NodeProcess::start(&["--blend", slow.to_str().unwrap()]);
    let (_, blender_pid) = start_slow_job(&node);
    node.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5))
        .expect("node did not die");
    assert!(
        eventually(Duration::from_secs(5), || !process_alive(blender_pid)),
        "Blender {blender_pid} outlived a SIGKILLed node"
    );
}

/// A site's `blender` wrapper that starts helpers before Blender: a child with a
/// grandchild in Blender's process group, and one that leaves the group and the session
/// (`setsid`). Returns the node (with every process it starts marked by an environment
/// variable), and the mark.
fn node_with_helper_spawning_wrapper(blend: &std::path::Path) -> (NodeProcess, String) {
    let dir = tempfile::tempdir().unwrap();
    let wrapper = blender_wrapper(
        dir.path(),
        "blender-with-helpers",
        "[ \"$1\" = --version ] && exec blender \"$@\"\n\
         sh -c 'sleep 600 & sleep 600' &\n\
         setsid sleep 600 &\n\
         exec blender \"$@\"",
    );
    let mark = format!("{}-{}", std::process::id(), dir.path().display());
    let node = NodeProcess::start_with_env(
        dir,
        &[
            "--blend",
            blend.to_str().unwrap(),
            "--blender",
            wrapper.to_str().unwrap(),
        ],
        &[("CORRAL_TEST_MARK", &mark)],
    );
    (node, mark)
}

/// What runs below the node: every marked process but the node itself.
fn below_node(node: &NodeProcess, mark: &str) -> Vec<(i32, String)> {
    let node_pid = node.pid().as_raw();
    processes_with_env("CORRAL_TEST_MARK", mark)
        .into_iter()
        .filter(|(pid, _)| *pid != node_pid)
        .collect()
}

/// Waits until the running job's helpers (two `sleep`s in Blender's group and one in a
/// session of its own) are up; returns everything below the node.
fn wait_for_helpers(node: &NodeProcess, mark: &str) -> Vec<(i32, String)> {
    let mut below = Vec::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            below = below_node(node, mark);
            below
                .iter()
                .filter(|(_, cmd)| cmd.starts_with("sleep"))
                .count()
                >= 3
        }),
        "helpers never started: {below:?}"
    );
    below
}

/// A node killed with SIGKILL leaves nothing behind: not Blender, not what a wrapper
/// script started beside it in its process group, not what left the group.
#[test]
fn nothing_blender_started_survives_a_sigkilled_node() {
    let slow = scene(Scene::Slow);
    let (mut node, mark) = node_with_helper_spawning_wrapper(&slow);
    let (_, blender_pid) = start_slow_job(&node);
    let before = wait_for_helpers(&node, &mark);
    assert!(
        before.iter().any(|(pid, _)| *pid == blender_pid),
        "{before:?}"
    );
    node.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5))
        .expect("node did not die");
    let mut left = Vec::new();
    assert!(
        eventually(Duration::from_secs(10), || {
            left = processes_with_env("CORRAL_TEST_MARK", &mark);
            left.is_empty()
        }),
        "survived the node: {left:?}"
    );
}

/// Cancel ends Blender and every helper of its wrapper, those that left its process
/// group included; so does a supervisor killed from outside (its orphans are handed to
/// the node, which kills them).
#[test]
fn cancel_and_a_killed_supervisor_leave_no_helper_behind() {
    let slow = scene(Scene::Slow);
    let (node, mark) = node_with_helper_spawning_wrapper(&slow);
    let (id, _) = start_slow_job(&node);
    let before = wait_for_helpers(&node, &mark);
    let resp = client()
        .delete(format!("{}/job/{id}", node.url))
        .send()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let gone = |old: &[(i32, String)]| {
        eventually(Duration::from_secs(10), || {
            old.iter().all(|(pid, _)| !process_alive(*pid))
        })
    };
    assert!(
        gone(&before),
        "survived cancel: {:?}",
        below_node(&node, &mark)
    );

    let (_, blender_pid) = start_slow_job(&node);
    let before = wait_for_helpers(&node, &mark);
    let supervisor = parent_of(blender_pid);
    assert!(
        before
            .iter()
            .any(|(pid, cmd)| *pid == supervisor && cmd.contains("__reaper")),
        "Blender {blender_pid} runs under {supervisor}: {before:?}"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(supervisor), Signal::SIGKILL).unwrap();
    assert!(
        gone(&before),
        "survived their supervisor: {:?}",
        below_node(&node, &mark)
    );
}

fn parent_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Renders `from`-`to` of `scene` with plain Blender, as a cold node would (`blender -b
/// SCENE -o OUT -E ENGINE -s A -e B -j 1 -t 1 -a`), into `out`; returns the frames' paths.
fn cold_reference(
    scene: &std::path::Path,
    engine: &str,
    (from, to): (i64, i64),
    out: &std::path::Path,
) -> Vec<std::path::PathBuf> {
    let status = std::process::Command::new("blender")
        .arg("-b")
        .arg(scene)
        .arg("-o")
        .arg(out.join("ref_####"))
        .args(["-E", engine, "-s", &from.to_string(), "-e", &to.to_string()])
        .args(["-j", "1", "-t", "1", "-a"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    (from..=to)
        .map(|f| out.join(format!("ref_{f:04}.png")))
        .collect()
}

/// Asserts that two images have the same size and the same pixels (PNG metadata such as
/// render times may differ).
fn assert_same_pixels(a: &std::path::Path, b: &std::path::Path) {
    let (ia, ib) = (image::open(a).unwrap(), image::open(b).unwrap());
    assert_eq!(
        (ia.width(), ia.height()),
        (ib.width(), ib.height()),
        "{} vs {}",
        a.display(),
        b.display()
    );
    assert!(
        ia.to_rgba8().as_raw() == ib.to_rgba8().as_raw(),
        "{} and {} differ",
        a.display(),
        b.display()
    );
}

fn outputs(done: &Value) -> Vec<std::path::PathBuf> {
    done["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().into())
        .collect()
}

fn worker_pids(node: &NodeProcess) -> Vec<i64> {
    let (_, info) = get_json(&format!("{}/info", node.url));
    info["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_i64().unwrap())
        .collect()
}

/// A warm worker renders the same pixels as a cold `blender -b ... -a` of the same frames,
/// for Cycles and Workbench, whatever the tasks it rendered before (another scene, another
/// engine and format, another frame range), and picks up a scene file that changed.
#[test]
fn warm_frames_match_a_cold_render() {
    let scenes = tempfile::tempdir().unwrap();
    let cycles = scenes.path().join("cycles.blend");
    let workbench = scenes.path().join("workbench.blend");
    std::fs::copy(scene(Scene::Small), &cycles).unwrap();
    std::fs::copy(scene(Scene::Workbench), &workbench).unwrap();
    let reference = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&[
        "--scenes",
        scenes.path().to_str().unwrap(),
        "--render-mode",
        "warm",
    ]);
    let render = |body: Value| -> Value {
        let resp = post_job(&node, &body);
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        let v: Value = resp.json().unwrap();
        let done = wait_done(&node, v["id"].as_str().unwrap());
        assert_eq!(done["state"], "completed", "{done}");
        done
    };
    let compare = |done: &Value, expected: &[std::path::PathBuf]| {
        let got = outputs(done);
        assert_eq!(got.len(), expected.len(), "{done}");
        for (g, e) in got.iter().zip(expected) {
            assert_same_pixels(g, e);
        }
    };

    let done = render(json!({"from": 1, "to": 3, "scene": "cycles.blend", "output": "a/f_####"}));
    let worker = worker_pids(&node);
    compare(
        &done,
        &cold_reference(&cycles, "CYCLES", (1, 3), &reference.path().join("a")),
    );

    let done = render(json!({"from": 2, "to": 3, "scene": "workbench.blend",
                             "engine": "BLENDER_WORKBENCH", "output": "b/f_####"}));
    compare(
        &done,
        &cold_reference(
            &workbench,
            "BLENDER_WORKBENCH",
            (2, 3),
            &reference.path().join("b"),
        ),
    );

    // Another engine, another format, one frame: none of it may stay for the next task.
    let done = render(json!({"from": 7, "to": 7, "scene": "cycles.blend",
                             "engine": "BLENDER_WORKBENCH", "format": "JPEG", "output": "c/f_####"}));
    assert!(
        outputs(&done)[0].to_string_lossy().ends_with(".jpg"),
        "{done}"
    );

    let done = render(json!({"from": 4, "to": 5, "scene": "cycles.blend", "output": "d/f_####"}));
    compare(
        &done,
        &cold_reference(&cycles, "CYCLES", (4, 5), &reference.path().join("d")),
    );

    // The file changes (replaced, as a save does): the worker opens it again.
    let tmp = scenes.path().join("cycles.blend.tmp");
    std::fs::copy(&workbench, &tmp).unwrap();
    std::fs::rename(&tmp, &cycles).unwrap();
    let done = render(json!({"from": 1, "to": 1, "scene": "cycles.blend", "output": "e/f_####"}));
    compare(
        &done,
        &cold_reference(&cycles, "CYCLES", (1, 1), &reference.path().join("e")),
    );

    // Every task ran on the one worker started with the node.
    assert_eq!(worker_pids(&node), worker);
    let (_, info) = get_json(&format!("{}/info", node.url));
    assert_eq!(info["workers"][0]["tasks"], 5, "{info}");
}

/// A warm worker is replaced by a fresh one after `--recycle-after-frames` frames, or when
/// its memory passes `--recycle-above-mb`; until then the same process takes every task.
#[test]
fn warm_workers_are_recycled() {
    let blend = scene(Scene::Small);
    let node = small_node(&["--render-mode", "warm", "--recycle-after-frames", "3"]);
    let run = |from: i64, to: i64| {
        let v: Value = post_job(&node, &json!({"from": from, "to": to}))
            .json()
            .unwrap();
        assert_eq!(
            wait_done(&node, v["id"].as_str().unwrap())["state"],
            "completed"
        );
    };
    run(1, 2);
    let first = worker_pids(&node);
    assert_eq!(first.len(), 1);
    run(3, 3);
    // Three frames: recycled once the task was over.
    let second = worker_pids(&node);
    assert_eq!(second.len(), 1);
    assert_ne!(second, first, "not recycled after 3 frames");
    assert!(
        !process_alive(first[0] as i32),
        "the old worker is still running"
    );
    run(4, 4);
    assert_eq!(worker_pids(&node), second, "recycled too early");

    let node = NodeProcess::start(&[
        "--blend",
        blend.to_str().unwrap(),
        "--render-mode",
        "warm",
        "--recycle-above-mb",
        "1",
    ]);
    let before = worker_pids(&node);
    let v: Value = post_job(&node, &json!({"from": 1, "to": 1}))
        .json()
        .unwrap();
    assert_eq!(
        wait_done(&node, v["id"].as_str().unwrap())["state"],
        "completed"
    );
    let after = worker_pids(&node);
    assert_eq!(after.len(), 1);
    assert_ne!(after, before, "a worker above 1 MB was kept");
}

/// A Blender that crashes fails only the task it was rendering: the next task renders
/// (in warm mode, on a fresh worker).
#[test]
fn a_crashed_blender_fails_only_its_task() {
    let slow = scene(Scene::Slow);
    let node = NodeProcess::start(&["--blend", slow.to_str().unwrap()]);
    let (id, blender_pid) = start_slow_job(&node);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(blender_pid), Signal::SIGSEGV).unwrap();
    let done = wait_done(&node, &id);
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["failure"], "Blender was killed by SIGSEGV", "{done}");
    // The next task runs; a short range of the slow scene is enough to see it render.
    let (next, next_pid) = start_slow_job(&node);
    assert_ne!(next_pid, blender_pid);
    let (_, view) = get_json(&format!("{}/job/{next}", node.url));
    assert_eq!(view["state"], "running", "{view}");
}

/// A Blender that stops printing anything for `--stall-timeout` seconds is killed and its
/// task fails; the node goes on.
#[test]
fn a_stalled_blender_is_killed_and_its_task_fails() {
    let slow = scene(Scene::Slow);
    // Long enough that a Blender starting on a loaded machine is not taken for stalled.
    let node = NodeProcess::start(&["--blend", slow.to_str().unwrap(), "--stall-timeout", "8"]);
    let (id, blender_pid) = start_slow_job(&node);
    // Stopped, it prints nothing more (and SIGKILL still ends it).
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(blender_pid), Signal::SIGSTOP).unwrap();
    let done = wait_done(&node, &id);
    assert_eq!(done["state"], "failed", "{done}");
    let failure = done["failure"].as_str().unwrap();
    assert!(failure.contains("printed nothing for 8 s"), "{failure}");
    assert!(
        eventually(Duration::from_secs(10), || !process_alive(blender_pid)),
        "the stalled Blender is still there"
    );
    let (_, next_pid) = start_slow_job(&node);
    assert_ne!(next_pid, blender_pid);
}

#[test]
fn the_node_refuses_to_start_without_blender() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(CORRAL)
        .args(["node", "--listen", "127.0.0.1:0", "--blender"])
        .arg(dir.path().join("no-blender"))
        .arg("--output")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].starts_with("error: Blender not found"), "{stderr}");

    let out = std::process::Command::new(CORRAL)
        .args(["node", "--listen", "127.0.0.1:0", "--blend"])
        .arg(dir.path().join("missing.blend"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.blend` is not a file"), "{stderr}");

    let text = dir.path().join("notes.blend");
    std::fs::write(&text, "not a scene").unwrap();
    let out = std::process::Command::new(CORRAL)
        .args(["node", "--listen", "127.0.0.1:0", "--blend"])
        .arg(&text)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a .blend file"), "{stderr}");
}

/// The tutorial orchestrator's logic, reproduced: split 1-10 into batches of 5, post
/// each to a node round-robin, read `pid`, and poll `GET /job/{pid}` until `status` is
/// `Job completed`.
#[test]
fn the_tutorial_orchestrator_logic_drives_nodes_to_completion() {
    let nodes = [small_node(&[]), small_node(&[])];
    let http = client();
    let mut batches = Vec::new();
    let (from, to, batch_size) = (1, 10, 5);
    let mut start = from;
    let mut index = 0;
    while start <= to {
        let end = (start + batch_size - 1).min(to);
        let node = &nodes[index % nodes.len()];
        let data: Value = http
            .post(format!("{}/job", node.url))
            .json(&json!({"from": start, "to": end}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        batches.push((node, data["pid"].clone()));
        start += batch_size;
        index += 1;
    }
    let completed = eventually(Duration::from_secs(120), || {
        batches.iter().all(|(node, pid)| {
            let data: Value = http
                .get(format!("{}/job/{pid}", node.url))
                .send()
                .unwrap()
                .json()
                .unwrap();
            data["status"] == "Job completed"
        })
    });
    assert!(completed, "the tutorial's completion check never succeeded");
    for frame in 1..=5 {
        assert_png(
            &nodes[0]
                .out_dir()
                .join(format!("blender-render_{frame:04}.png")),
            64,
            48,
        );
    }
    for frame in 6..=10 {
        assert_png(
            &nodes[1]
                .out_dir()
                .join(format!("blender-render_{frame:04}.png")),
            64,
            48,
        );
    }
}

#[test]
fn a_second_signal_kills_renders_a_finish_shutdown_waits_for() {
    let slow = scene(Scene::Slow);
    let mut node =
        NodeProcess::start(&["--blend", slow.to_str().unwrap(), "--on-shutdown", "finish"]);
    let (_, blender_pid) = start_slow_job(&node);
    nix::sys::signal::kill(node.pid(), Signal::SIGTERM).unwrap();
    // The first signal lets the render go on...
    std::thread::sleep(Duration::from_millis(500));
    assert!(process_alive(blender_pid), "finish mode killed the render");
    // ...the second one does not.
    let status = node
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(10))
        .expect("node did not exit after a second SIGTERM");
    assert!(status.success());
    assert!(!process_alive(blender_pid));
}

#[test]
fn a_client_stuck_mid_request_does_not_keep_a_stopped_node_alive() {
    use std::io::Write;
    let mut node = small_node(&[]);
    let addr = node.url.trim_start_matches("http://").to_string();
    let mut stuck = std::net::TcpStream::connect(addr).unwrap();
    stuck
        .write_all(b"GET /jobs HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let status = node
        .signal_and_wait(Signal::SIGTERM, Duration::from_secs(15))
        .expect("node kept running for a client that never finished its request");
    assert!(status.success(), "{status:?}\n{}", node.stderr());
}
