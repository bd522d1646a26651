//! The `corral` command line against a real `corral up` (orchestrator and render nodes in
//! one process) with real Blender: `submit --wait` exit codes for good and broken scenes,
//! the scene's own frame range when `--frames` is omitted, JSON from the read commands,
//! one-line errors, Ctrl-C of `submit --wait` and of `corral up`.

mod common;

use common::up::Up;
use common::{assert_png, blender_processes_under, describe, eventually, scene, Scene, CORRAL};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What these tests do with a `corral up` beyond starting it: scenes, and `corral`
/// commands aimed at it.
impl Up {
    /// Copies a generated scene into the farm's scenes folder as `name`.
    fn add_scene(&self, which: Scene, name: &str) -> PathBuf {
        let path = self.scenes().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("scene sub-folder");
        }
        std::fs::copy(scene(which), &path).expect("copy scene");
        path
    }

    /// A `corral` client command aimed at this farm, run from the scenes folder.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = client(args);
        cmd.env("CORRAL_SERVER", &self.url)
            .current_dir(self.scenes());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run corral")
    }

    /// Runs a read command with `--json` and parses its stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.run(&args);
        assert!(out.status.success(), "{args:?}: {}", describe(&out));
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {}", describe(&out)))
    }

    /// The farm's Blender processes that have work (its nodes' idle warm workers are not
    /// counted).
    fn busy_blenders(&self) -> Vec<i32> {
        let urls: Vec<String> = self
            .json(&["nodes"])
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .filter_map(|n| Some(n["url"].as_str()?.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        common::busy_blenders_under(self.dir.path(), &urls)
    }
}

/// `corral ARGS` with none of the caller's CORRAL_ settings or log filters, so the
/// test sees exactly what a user with a clean environment would.
fn client(args: &[&str]) -> Command {
    let mut cmd = Command::new(CORRAL);
    cmd.args(args).stdin(Stdio::null()).env_remove("RUST_LOG");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CORRAL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// Asserts that a command failed with exit status `code` and said why in exactly one
/// `error:` line on stderr, with nothing on stdout and no panic; returns that line.
fn assert_one_line_error(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "{}", describe(out));
    assert_eq!(stderr.lines().count(), 1, "{}", describe(out));
    assert!(stderr.starts_with("error: "), "{}", describe(out));
    assert!(out.stdout.is_empty(), "{}", describe(out));
    for noise in ["panicked", "backtrace", "reqwest", "hyper"] {
        assert!(!stderr.contains(noise), "{}", describe(out));
    }
    stderr.trim_end().to_string()
}

/// Waits for `child` to exit, up to `timeout`; kills it and fails otherwise.
fn wait_exit(child: &mut Child, timeout: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigint(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("send SIGINT");
}

#[test]
fn submit_wait_renders_the_scenes_own_range_and_read_commands_print_json() {
    let up = Up::start(2);
    up.add_scene(Scene::Range, "shots/range.blend");

    // No --frames: the range comes from the file (5-9), read by Blender.
    let out = up.run(&["submit", "shots/range.blend", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("frames 5-9"), "{stdout}");
    assert!(stdout.contains("5 frames rendered in"), "{stdout}");
    assert!(stdout.contains("frames/s"), "{stdout}");

    let jobs = up.json(&["jobs"]);
    let jobs = jobs.as_array().expect("jobs --json is a list");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(
        (job["from"].as_i64(), job["to"].as_i64()),
        (Some(5), Some(9))
    );
    assert_eq!(job["scene"], "shots/range.blend", "{job}");
    let id = job["id"].as_str().expect("job id").to_string();

    // Stdout names the folder the frames are in; it holds all five, complete.
    let folder = up.dir.path().join("out").join(&id);
    let folder = folder.canonicalize().expect("frame folder exists");
    assert!(stdout.contains(&folder.display().to_string()), "{stdout}");

    let status = up.json(&["status", &id]);
    assert_eq!(status["id"], id.as_str());
    assert_eq!(status["state"], "completed");
    assert_eq!(status["frames_done"], 5);
    let frames = status["frames"].as_array().expect("frames");
    assert_eq!(frames.len(), 5, "{status}");
    for (frame, expected) in frames.iter().zip(5..=9) {
        assert_eq!(frame["frame"], expected, "{frame}");
        assert_eq!(frame["state"], "done", "{frame}");
        let path = Path::new(frame["path"].as_str().expect("frame path"));
        assert!(path.starts_with(&folder), "{}", path.display());
        assert_png(path, 64, 48);
    }

    let nodes = up.json(&["nodes"]);
    let nodes = nodes.as_array().expect("nodes --json is a list");
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    for node in nodes {
        assert_eq!(node["state"], "up", "{node}");
        assert_eq!(node["slots"], 1, "{node}");
        assert!(node["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("http://127.0.0.1:")));
        assert!(node["blender_version"]
            .as_str()
            .is_some_and(|v| !v.is_empty()));
    }

    let logs = up.json(&["logs", &id, "--frame", "7"]);
    let tasks = logs.as_array().expect("logs --json is a list");
    assert_eq!(tasks.len(), 1, "{logs}");
    assert!(tasks[0]["from"].as_i64() <= Some(7) && tasks[0]["to"].as_i64() >= Some(7));

    // The tables for people name the job and the nodes.
    let table = up.run(&["jobs"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.contains(&id) && text.contains("completed"),
        "{text}"
    );
    let table = up.run(&["nodes"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.status.success() && text.lines().count() == 3,
        "{text}"
    );
}

#[test]
fn submit_wait_exits_3_with_frames_and_log_tail_for_a_broken_scene() {
    let up = Up::start(1);
    up.add_scene(Scene::Denoise, "broken.blend");
    let out = up.run(&["submit", "broken.blend", "--frames", "1-2", "--wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed"), "{stderr}");
    assert!(stderr.contains("not rendered: frames 1-2"), "{stderr}");
    // The reason and Blender's own error line, from the log tail.
    assert!(
        stderr.contains("Error: Build without OpenImageDenoiser"),
        "{stderr}"
    );
    let jobs = up.json(&["jobs", "--state", "failed"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{jobs}");
}

#[test]
fn bad_input_and_an_unreachable_server_are_one_line() {
    // Nothing listens on port 1.
    for cmd in [
        &["jobs"][..],
        &["nodes"],
        &["status", "x"],
        &["cancel", "x"],
    ] {
        let out = client(cmd)
            .env("CORRAL_SERVER", "http://127.0.0.1:1")
            .output()
            .expect("run corral");
        let line = assert_one_line_error(&out, 1);
        assert!(
            line.contains("cannot reach the Corral server at http://127.0.0.1:1"),
            "{line}"
        );
    }
    // --server says the same as CORRAL_SERVER.
    let out = client(&["jobs", "--server", "http://127.0.0.1:1"])
        .output()
        .expect("run corral");
    assert_one_line_error(&out, 1);

    // Usage errors: exit 2, the reason, and where the examples are.
    let usage: [&[&str]; 6] = [
        &["submit", "scene.blend", "--frames", "9-3"],
        &["submit", "scene.blend", "--frames", "abc"],
        &["submit", "scene.blend", "--engine", "POVRAY"],
        &["submit"],
        &["status"],
        &["frobnicate"],
    ];
    for args in usage {
        let out = client(args).output().expect("run corral");
        let line = assert_one_line_error(&out, 2);
        assert!(line.contains("--help"), "{args:?}: {line}");
    }
    let out = client(&["submit", "scene.blend", "--frames", "9-3"])
        .output()
        .expect("run corral");
    let line = assert_one_line_error(&out, 2);
    assert!(line.contains("--frames") && line.contains("9"), "{line}");

    let up = Up::start(1);
    let outside = tempfile::tempdir().expect("temp dir");
    let outside_scene = outside.path().join("elsewhere.blend");
    std::fs::copy(scene(Scene::Small), &outside_scene).expect("copy scene");
    let cases: [(&[&str], &str); 6] = [
        (
            &["submit", "missing.blend"],
            "scene file `missing.blend` not found",
        ),
        (
            &["submit", outside_scene.to_str().expect("utf-8")],
            "outside the scenes folder",
        ),
        (
            &["status", "01a20000-0000-7000-8000-000000000000"],
            "no job",
        ),
        (&["status", "../../metrics"], "no job"),
        (&["cancel", "not-a-job"], "no job"),
        (&["logs", "not-a-job"], "no job"),
    ];
    for (args, expected) in cases {
        let out = up.run(args);
        let line = assert_one_line_error(&out, 1);
        assert!(line.contains(expected), "{args:?}: {line}");
    }
}

#[test]
fn ctrl_c_detaches_submit_wait_and_cancel_ends_a_watch() {
    let up = Up::start(1);
    up.add_scene(Scene::Slow, "slow.blend");
    let out_path = up.dir.path().join("submit.stdout");
    let err_path = up.dir.path().join("submit.stderr");
    let mut submit = up
        .command(&["submit", "slow.blend", "--frames", "1-10", "--wait"])
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start submit --wait");
    let rendering = eventually(Duration::from_secs(60), || !up.busy_blenders().is_empty());
    assert!(rendering, "Blender never started:\n{}", up.logs());
    // Let the follower see the running job, then Ctrl-C it.
    std::thread::sleep(Duration::from_millis(700));
    sigint(submit.id());
    let status = wait_exit(&mut submit, Duration::from_secs(10), "submit --wait");
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("keeps rendering"), "{stderr}");
    let jobs = up.json(&["jobs"]);
    let id = jobs[0]["id"].as_str().expect("job id").to_string();
    assert!(stderr.contains(&format!("corral cancel {id}")), "{stderr}");
    // Detaching left the job running.
    assert_eq!(up.json(&["status", &id])["state"], "running");

    let mut watch = up
        .command(&["status", &id, "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start status --watch");
    std::thread::sleep(Duration::from_millis(700));
    let out = up.run(&["cancel", &id]);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Cancelled job"));
    let status = wait_exit(&mut watch, Duration::from_secs(10), "status --watch");
    assert_eq!(status.code(), Some(4), "a watch of a cancelled job exits 4");
    assert_eq!(up.json(&["status", &id])["state"], "cancelled");
    assert!(
        eventually(Duration::from_secs(10), || up.busy_blenders().is_empty()),
        "cancel left Blender running"
    );
}

#[test]
fn ctrl_c_of_up_stops_every_blender() {
    let mut up = Up::start(2);
    up.add_scene(Scene::Slow, "slow.blend");
    let out = up.run(&["submit", "slow.blend", "--frames", "1-20"]);
    assert!(out.status.success(), "{}", describe(&out));
    // Plain submit prints the job id alone on stdout, for scripts.
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(up.json(&["status", &id])["id"], id.as_str());
    let both = eventually(Duration::from_secs(60), || up.busy_blenders().len() >= 2);
    assert!(both, "two renders never ran:\n{}", up.logs());
    sigint(up.child.id());
    let status = wait_exit(&mut up.child, Duration::from_secs(20), "corral up");
    assert!(status.success(), "{status:?}\n{}", up.logs());
    let left = blender_processes_under(up.dir.path());
    assert!(
        left.is_empty(),
        "Blender left behind: {left:?}\n{}",
        up.logs()
    );
}

/// Hardening defect 1: `kill -9` of `corral up` mid-job and a restart on the same data.
/// The restarted farm forgets the earlier run's nodes before it dispatches anything, so
/// no task is leased to a node that no longer exists, and the job finishes (before the
/// fix it stayed half done until the 600 s stall timeout).
#[test]
fn a_killed_up_restarted_on_its_data_finishes_the_job() {
    let mut up = Up::start(2);
    up.add_scene(Scene::Small, "small.blend");
    let out = up.run(&[
        "submit",
        "small.blend",
        "--frames",
        "1-20",
        "--batch-size",
        "2",
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let started = eventually(Duration::from_secs(60), || {
        up.json(&["status", &id])["frames_done"].as_u64() >= Some(1)
    });
    assert!(started, "no frame rendered:\n{}", up.logs());
    let _ = up.child.kill();
    let _ = up.child.wait();
    // Blender dies with its parent (parent-death signal), even on SIGKILL.
    let gone = eventually(Duration::from_secs(10), || {
        blender_processes_under(up.dir.path()).is_empty()
    });
    assert!(gone, "Blender outlived a SIGKILLed corral up");
    let dir = std::mem::replace(&mut up.dir, tempfile::tempdir().expect("temp dir"));
    drop(up);
    let up = Up::start_in(dir, 2);
    let done = eventually(Duration::from_secs(90), || {
        up.json(&["status", &id])["state"] == "completed"
    });
    let status = up.json(&["status", &id]);
    let tasks: Vec<String> = status["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{} on {}", t["state"], t["node"]))
        .collect();
    assert!(
        done,
        "job did not finish after the restart: {}, tasks {tasks:?}\n{}",
        status["state"],
        up.logs()
    );
    for frame in 1..=20 {
        let path = up.dir.path().join(format!("out/{id}/frame_{frame:04}.png"));
        assert_png(&path, 64, 48);
    }
    let nodes = up.json(&["nodes"]);
    assert_eq!(
        nodes.as_array().map(Vec::len),
        Some(2),
        "the earlier run's nodes are forgotten: {nodes}"
    );
}

#[test]
fn help_has_examples_and_completions_print() {
    for sub in [
        "up",
        "submit",
        "status",
        "jobs",
        "nodes",
        "cancel",
        "logs",
        "node",
        "orchestrator",
        "completions",
    ] {
        let out = client(&[sub, "--help"]).output().expect("run corral");
        assert!(out.status.success(), "{sub}: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Examples:"),
            "{sub} --help has no examples:\n{text}"
        );
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = client(&["completions", shell])
            .output()
            .expect("run corral");
        assert!(out.status.success(), "{shell}: {}", describe(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("submit"));
    }
}
