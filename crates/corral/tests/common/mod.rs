//! Test harness: generates small real Blender scenes once, starts real `corral node`
//! processes on port 0, and finds leftover Blender processes by the folders they use.
//! A node's stderr goes to a file that is printed when the test fails.

#![allow(dead_code)]

pub mod farm;
pub mod up;
pub mod uploads;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");

/// The render mode nodes are started in: `CORRAL_TEST_RENDER_MODE` (`warm` or `cold`) when
/// set, else the node's default, `warm`. Run a suite once per mode to cover both.
pub fn render_mode() -> String {
    std::env::var("CORRAL_TEST_RENDER_MODE").unwrap_or_else(|_| "warm".into())
}

pub fn warm() -> bool {
    render_mode() == "warm"
}

/// A scene the tests render; each is generated once and reused by every test binary.
#[derive(Debug, Clone, Copy)]
pub enum Scene {
    /// 64x48, 4 samples, frames 1-20: renders in well under a second per frame.
    Small,
    /// 64x48, 4000 samples, frames 1-500: a render that is still running when the test
    /// cancels, signals or kills something.
    Slow,
    /// Denoising on: Debian's Blender (no OpenImageDenoise) prints an `Error:` line.
    Denoise,
    /// 64x48, 4 samples, frames 5-9: a range no default would guess, to see it read from
    /// the file.
    Range,
    /// 160x120, 16 samples, frames 1-24, several moving objects: frames worth looking at in
    /// the dashboard's screenshots.
    Showcase,
    /// 64x48, Workbench, frames 1-20.
    Workbench,
    /// 32x24, 2 samples, frames 1-5: the smallest render worth checking.
    Tiny,
    /// 32x24, 300 samples, frames 1-12: the soak's Cycles scene. A frame takes a few
    /// tenths of a second, so many small jobs fit in a few minutes and faults still meet
    /// renders in flight (at 2 samples a frame takes milliseconds and nodes sit idle).
    SoakCycles,
    /// 32x24, Workbench, frames 1-12: the soak's second engine.
    SoakWorkbench,
}

impl Scene {
    fn name(self) -> &'static str {
        match self {
            Scene::Small => "small",
            Scene::Slow => "slow",
            Scene::Denoise => "denoise",
            Scene::Range => "range",
            Scene::Showcase => "showcase",
            Scene::Workbench => "workbench",
            Scene::Tiny => "tiny",
            Scene::SoakCycles => "soak-cycles",
            Scene::SoakWorkbench => "soak-workbench",
        }
    }

    fn script_args(self) -> Vec<&'static str> {
        match self {
            Scene::Small => vec!["--samples", "4", "--start", "1", "--end", "20"],
            Scene::Slow => vec!["--samples", "4000", "--start", "1", "--end", "500"],
            Scene::Denoise => vec!["--samples", "4", "--denoise"],
            Scene::Range => vec!["--samples", "4", "--start", "5", "--end", "9"],
            Scene::Showcase => vec![
                "--motion",
                "--width",
                "160",
                "--height",
                "120",
                "--samples",
                "16",
                "--start",
                "1",
                "--end",
                "24",
            ],
            Scene::Workbench => vec!["--engine", "BLENDER_WORKBENCH", "--end", "20"],
            Scene::Tiny => vec![
                "--width",
                "32",
                "--height",
                "24",
                "--samples",
                "2",
                "--start",
                "1",
                "--end",
                "5",
            ],
            Scene::SoakCycles => vec![
                "--width",
                "32",
                "--height",
                "24",
                "--samples",
                "300",
                "--start",
                "1",
                "--end",
                "12",
            ],
            Scene::SoakWorkbench => vec![
                "--engine",
                "BLENDER_WORKBENCH",
                "--width",
                "32",
                "--height",
                "24",
                "--end",
                "12",
            ],
        }
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/corral sits two levels below the repository root")
        .to_path_buf()
}

static GENERATE: Mutex<()> = Mutex::new(());

/// Path of `scene`, generating it with `scripts/make_scene.py` on first use.
pub fn scene(scene: Scene) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scenes");
    std::fs::create_dir_all(&dir).expect("create scene folder");
    let path = dir.join(format!("{}.blend", scene.name()));
    let _guard = GENERATE.lock().unwrap_or_else(|p| p.into_inner());
    let script = repo_root().join("scripts/make_scene.py");
    let fresh = |p: &Path| {
        let (Ok(scene_meta), Ok(script_meta)) = (p.metadata(), script.metadata()) else {
            return false;
        };
        scene_meta.modified().ok() >= script_meta.modified().ok()
    };
    if fresh(&path) {
        return path;
    }
    // Write to a unique name, then rename: another test binary may be generating too.
    let tmp = dir.join(format!("{}.{}.tmp.blend", scene.name(), std::process::id()));
    let out = Command::new("blender")
        .args(["-b", "--factory-startup", "--python"])
        .arg(&script)
        .arg("--")
        .arg(&tmp)
        .args(scene.script_args())
        .output()
        .expect("run Blender to generate a test scene (is Blender installed?)");
    assert!(
        out.status.success(),
        "scene generation failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &path).expect("move generated scene into place");
    path
}

/// A running `corral node` with its own folders; killed (SIGKILL) when dropped.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    stderr_path: PathBuf,
}

impl NodeProcess {
    /// Starts `corral node --listen 127.0.0.1:0 --output DIR/out --data DIR/data
    /// --threads 1 [--render-mode MODE] EXTRA...` and waits for its listening line. The
    /// mode is [`render_mode`], unless EXTRA names one.
    pub fn start(extra: &[&str]) -> NodeProcess {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> NodeProcess {
        Self::start_with_env(dir, extra, &[])
    }

    /// Like [`start_in`](Self::start_in), with extra environment variables for the node
    /// (and so for every process it starts).
    pub fn start_with_env(
        dir: tempfile::TempDir,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let stderr_path = dir.path().join("node.stderr");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(CORRAL)
            .arg("node")
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .arg("--output")
            .arg(dir.path().join("out"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(
                (!extra.contains(&"--render-mode"))
                    .then(|| ["--render-mode".to_string(), render_mode()])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .envs(env.iter().copied())
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start corral node");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let Some(url) = line.trim().strip_prefix("corral node listening on ") else {
            let _ = child.kill();
            panic!(
                "node did not start ({read:?}, {line:?}):\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        };
        NodeProcess {
            url: url.to_string(),
            child,
            dir,
            stderr_path,
        }
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Sends `signal` and waits up to `timeout` for the node to exit.
    pub fn signal_and_wait(
        &mut self,
        signal: nix::sys::signal::Signal,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        nix::sys::signal::kill(self.pid(), signal).expect("signal node");
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- node stderr ({}) ----\n{}", self.url, self.stderr());
        }
    }
}

impl NodeProcess {
    /// The `host:port` this node listens on (from its URL).
    pub fn listen_addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    /// SIGKILLs the node if it still runs, then starts `corral node` again in the same
    /// folder (same data, output and stderr file, which is appended to) on the same
    /// address, so the orchestrator sees the same node come back. `extra` as for
    /// [`start_in`](Self::start_in). Panics if the new process does not start (the port
    /// can only be lost to another process in the moment between the kill and the bind).
    pub fn restart(&mut self, extra: &[&str]) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let stderr = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.stderr_path)
            .expect("stderr file");
        let listen = self.listen_addr();
        let mut child = Command::new(CORRAL)
            .arg("node")
            .args(["--listen", &listen, "--threads", "1"])
            .arg("--output")
            .arg(self.dir.path().join("out"))
            .arg("--data")
            .arg(self.dir.path().join("data"))
            .args(
                (!extra.contains(&"--render-mode"))
                    .then(|| ["--render-mode".to_string(), render_mode()])
                    .into_iter()
                    .flatten(),
            )
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start corral node again");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let expected = format!("corral node listening on {}", self.url);
        if line.trim() != expected {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "node did not start again on {listen} ({read:?}, {line:?}):\n{}",
                self.stderr()
            );
        }
        self.child = child;
    }
}

/// Process ids of live Blender processes whose command line mentions `dir` (every Blender
/// a test's node starts writes below the test's own temporary folder). Blender's
/// supervisor (`corral __reaper -- blender ...`) is not counted.
pub fn blender_processes_under(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // Zombies (state Z) are already dead; only a reaper is missing.
            let alive = !stat.contains(") Z ");
            let supervisor = cmdline.split(|&b| b == 0).nth(1) == Some(b"__reaper");
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            alive && !supervisor && text.contains("blender") && text.contains(&needle)
        })
        .collect()
}

/// Process ids of the idle warm workers of the node at `node_url` (`GET /info`); none for
/// a cold node, or a node that does not answer.
pub fn idle_worker_pids(node_url: &str) -> Vec<i32> {
    let info: serde_json::Value =
        match reqwest::blocking::get(format!("{node_url}/info")).and_then(|r| r.json()) {
            Ok(info) => info,
            Err(_) => return Vec::new(),
        };
    info["workers"]
        .as_array()
        .map(|workers| {
            workers
                .iter()
                .filter(|w| w["state"] == "idle")
                .filter_map(|w| i32::try_from(w["pid"].as_i64()?).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The Blender processes under `dir` that have work: every one but the idle warm workers of
/// the nodes at `node_urls` (which a warm node keeps running between tasks).
pub fn busy_blenders_under(dir: &Path, node_urls: &[String]) -> Vec<i32> {
    let idle: Vec<i32> = node_urls.iter().flat_map(|u| idle_worker_pids(u)).collect();
    blender_processes_under(dir)
        .into_iter()
        .filter(|pid| !idle.contains(pid))
        .collect()
}

/// Live processes (zombies excluded) whose environment holds `NAME=value`: what a node
/// started with that variable, and everything below it, however far it wandered from its
/// process group or session.
pub fn processes_with_env(name: &str, value: &str) -> Vec<(i32, String)> {
    let needle = format!("{name}={value}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let marked = environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_bytes());
            let alive = !stat.contains(") Z ");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (marked && alive).then_some((pid, cmdline))
        })
        .collect()
}

/// Polls `check` every 20 ms until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts that `path` is a PNG of `width`x`height`.
pub fn assert_png(path: &Path, width: u32, height: u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        (img.width(), img.height()),
        (width, height),
        "{}",
        path.display()
    );
}

/// A finished command's exit status and output, for an assertion's message.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
