//! Farm harness: a real `corral orchestrator` and real `corral node` processes, all on
//! port 0, sharing one output folder (as a farm shares a network folder), with helpers for
//! the orchestrator's API. Every process's stderr is printed when a test fails.
//!
//! Each node renders its own copy of the scene (`NODE_DIR/scene.blend`, and
//! `NODE_DIR/scenes/` for per-job scenes), so Blender's command line names the node's
//! folder and `blender_processes_under(node.dir)` finds exactly that node's renders.

use super::{assert_png, eventually, scene, NodeProcess, Scene, CORRAL};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An HTTP client with a generous timeout (a cancel waits for nodes to kill Blender).
pub fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client")
}

/// A running `corral orchestrator`; killed (SIGKILL) when dropped.
pub struct OrchestratorProcess {
    pub child: Child,
    pub url: String,
    stderr_path: PathBuf,
}

impl OrchestratorProcess {
    /// Starts `corral orchestrator --listen 127.0.0.1:0 --data DATA EXTRA...` and waits for
    /// its listening line. Its stderr is appended to `stderr_path` (kept across restarts).
    pub fn start(data: &Path, stderr_path: &Path, extra: &[String]) -> OrchestratorProcess {
        Self::start_listening("127.0.0.1:0", data, stderr_path, extra)
    }

    /// Like [`start`](Self::start), listening on `listen` (`host:port`): an orchestrator
    /// restarted on the address its nodes register with.
    pub fn start_listening(
        listen: &str,
        data: &Path,
        stderr_path: &Path,
        extra: &[String],
    ) -> OrchestratorProcess {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .expect("orchestrator stderr file");
        let mut child = Command::new(CORRAL)
            .arg("orchestrator")
            .args(["--listen", listen, "--data"])
            .arg(data)
            .args(extra)
            .env("RUST_LOG", "info,corral_orchestrator=debug")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start corral orchestrator");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        let Some(url) = line
            .trim()
            .strip_prefix("corral orchestrator listening on ")
        else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "orchestrator did not start ({read:?}, {line:?}):\n{}",
                std::fs::read_to_string(stderr_path).unwrap_or_default()
            );
        };
        OrchestratorProcess {
            url: url.to_string(),
            child,
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL, as a crash or power cut would; waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OrchestratorProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- orchestrator stderr ({}) ----\n{}",
                self.url,
                self.stderr()
            );
        }
    }
}

/// How nodes meet the orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// `corral node --orchestrator URL`: the node registers and heartbeats.
    Register,
    /// `corral orchestrator --node URL`: survives an orchestrator that comes back on
    /// another port.
    Static,
}

/// What a farm starts with.
pub struct FarmBuilder {
    nodes: usize,
    scene: Scene,
    scene_files: Vec<(String, Vec<u8>)>,
    orchestrator_args: Vec<String>,
    node_args: Vec<String>,
    join: Join,
}

impl FarmBuilder {
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// The nodes' `--blend` (default [`Scene::Small`]).
    pub fn scene(mut self, scene: Scene) -> Self {
        self.scene = scene;
        self
    }

    /// A file `name` with `contents` in every node's `--scenes` folder.
    pub fn scene_file(mut self, name: &str, contents: &[u8]) -> Self {
        self.scene_files.push((name.to_string(), contents.to_vec()));
        self
    }

    /// Extra `corral orchestrator` flags.
    pub fn orchestrator_args(mut self, args: &[&str]) -> Self {
        self.orchestrator_args
            .extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Extra `corral node` flags, for every node of the farm.
    pub fn node_args(mut self, args: &[&str]) -> Self {
        self.node_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn join(mut self, join: Join) -> Self {
        self.join = join;
        self
    }

    /// Starts the orchestrator and the nodes, and waits until every node is `up`.
    pub fn start(self) -> Farm {
        let root = tempfile::Builder::new()
            .prefix("corral-farm-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(root.path().join("out")).expect("shared output folder");
        let blend = scene(self.scene);
        let mut farm = Farm {
            orchestrator: None,
            nodes: Vec::new(),
            blend,
            scene_files: self.scene_files,
            orchestrator_args: self.orchestrator_args,
            node_args: self.node_args,
            join: self.join,
            http: client(),
            root,
        };
        match farm.join {
            Join::Register => {
                farm.start_orchestrator();
                for _ in 0..self.nodes {
                    farm.add_node();
                }
            }
            Join::Static => {
                for _ in 0..self.nodes {
                    let node = farm.spawn_node(&[]);
                    farm.nodes.push(node);
                }
                farm.start_orchestrator();
            }
        }
        farm.wait_nodes_up(self.nodes);
        farm
    }
}

/// Starts a node for a farm whose folder is `root`: its own copy of `blend` (and of the
/// `scene_files` in its `--scenes`), writing frames into the farm's shared `root/out`.
pub fn spawn_farm_node(
    root: &Path,
    blend: &Path,
    scene_files: &[(String, Vec<u8>)],
    extra: &[&str],
) -> NodeProcess {
    let dir = tempfile::Builder::new()
        .prefix("node-")
        .tempdir_in(root)
        .expect("node folder");
    let node_blend = dir.path().join("scene.blend");
    std::fs::copy(blend, &node_blend).expect("copy the scene for the node");
    // The node's `out` is the farm's shared output folder.
    std::fs::create_dir_all(root.join("out")).expect("shared output folder");
    std::os::unix::fs::symlink(root.join("out"), dir.path().join("out"))
        .expect("link the shared output folder");
    let scenes = dir.path().join("scenes");
    std::fs::create_dir_all(&scenes).expect("scenes folder");
    for (name, contents) in scene_files {
        std::fs::write(scenes.join(name), contents).expect("write a scene file");
    }
    let mut args = vec![
        "--blend".to_string(),
        node_blend.to_str().expect("utf-8 path").to_string(),
        "--scenes".to_string(),
        scenes.to_str().expect("utf-8 path").to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    NodeProcess::start_in(dir, &args)
}

/// An orchestrator and its nodes. Dropping it kills every process (the orchestrator
/// first), printing their logs if the test is failing.
pub struct Farm {
    orchestrator: Option<OrchestratorProcess>,
    pub nodes: Vec<NodeProcess>,
    blend: PathBuf,
    scene_files: Vec<(String, Vec<u8>)>,
    orchestrator_args: Vec<String>,
    node_args: Vec<String>,
    join: Join,
    http: Client,
    /// Holds `data/` (the orchestrator's), `out/` (shared frames) and one folder per node;
    /// declared last so it is removed after every process is gone.
    pub root: tempfile::TempDir,
}

impl Farm {
    pub fn builder() -> FarmBuilder {
        FarmBuilder {
            nodes: 2,
            scene: Scene::Small,
            scene_files: Vec::new(),
            orchestrator_args: Vec::new(),
            node_args: Vec::new(),
            join: Join::Register,
        }
    }

    pub fn orchestrator(&self) -> &OrchestratorProcess {
        self.orchestrator
            .as_ref()
            .expect("the orchestrator is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.orchestrator().url)
    }

    pub fn http(&self) -> &Client {
        &self.http
    }

    /// The folder every node writes frames to.
    /// The Blender processes of this farm that have work (idle warm workers are not
    /// counted).
    pub fn busy_blenders(&self) -> Vec<i32> {
        let urls: Vec<String> = self.nodes.iter().map(|n| n.url.clone()).collect();
        super::busy_blenders_under(self.root.path(), &urls)
    }

    pub fn output_dir(&self) -> PathBuf {
        self.root.path().join("out")
    }

    /// The id the orchestrator gives node `i` (its URL's `host:port`).
    pub fn node_id(&self, i: usize) -> String {
        self.nodes[i].url.trim_start_matches("http://").to_string()
    }

    fn start_orchestrator(&mut self) {
        let mut args = self.orchestrator_args.clone();
        if self.join == Join::Static {
            for node in &self.nodes {
                args.push("--node".into());
                args.push(node.url.clone());
            }
        }
        self.orchestrator = Some(OrchestratorProcess::start(
            &self.root.path().join("data"),
            &self.root.path().join("orchestrator.stderr"),
            &args,
        ));
    }

    /// SIGKILLs the orchestrator (nodes keep rendering).
    pub fn kill_orchestrator(&mut self) {
        // Its log file stays; the next orchestrator appends to it and prints it all.
        if let Some(mut o) = self.orchestrator.take() {
            o.kill();
        }
    }

    /// Starts a new orchestrator on the same database (on a new port).
    pub fn restart_orchestrator(&mut self) {
        assert!(self.orchestrator.is_none(), "kill the orchestrator first");
        self.start_orchestrator();
    }

    /// The flags the orchestrator gets from its next start on (besides `--node`s).
    pub fn set_orchestrator_args(&mut self, args: &[&str]) {
        self.orchestrator_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// SIGKILLs the orchestrator, waits `down` (nodes keep rendering, some renders end
    /// with nobody watching), and starts a new one on the same database and the same
    /// address, where registered nodes find it again with their next heartbeat.
    pub fn kill_and_restart_orchestrator(&mut self, down: Duration) {
        let old = self
            .orchestrator
            .take()
            .expect("the orchestrator is running");
        let listen = old.url.trim_start_matches("http://").to_string();
        drop(old);
        std::thread::sleep(down);
        let mut args = self.orchestrator_args.clone();
        if self.join == Join::Static {
            for node in &self.nodes {
                args.push("--node".into());
                args.push(node.url.clone());
            }
        }
        self.orchestrator = Some(OrchestratorProcess::start_listening(
            &listen,
            &self.root.path().join("data"),
            &self.root.path().join("orchestrator.stderr"),
            &args,
        ));
    }

    /// SIGKILLs node `i` if it still runs and starts it again in its folder on its
    /// address, joined as the farm's nodes are (same node id, same data).
    pub fn restart_node(&mut self, i: usize) {
        let dir = self.nodes[i].dir.path().to_path_buf();
        let blend = dir.join("scene.blend");
        let scenes = dir.join("scenes");
        let mut args = vec![
            "--blend".to_string(),
            blend.to_str().expect("utf-8 path").to_string(),
            "--scenes".to_string(),
            scenes.to_str().expect("utf-8 path").to_string(),
        ];
        if self.join == Join::Register {
            args.push("--orchestrator".into());
            args.push(self.orchestrator().url.clone());
        }
        args.extend(self.node_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes[i].restart(&args);
    }

    fn spawn_node(&self, extra: &[&str]) -> NodeProcess {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(self.node_args.iter().map(String::as_str));
        spawn_farm_node(self.root.path(), &self.blend, &self.scene_files, &args)
    }

    /// Starts one more node that registers itself with the orchestrator; returns its index.
    pub fn add_node(&mut self) -> usize {
        let orchestrator = self.orchestrator().url.clone();
        let node = self.spawn_node(&["--orchestrator", &orchestrator]);
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Waits until the orchestrator lists at least `n` nodes as `up`.
    pub fn wait_nodes_up(&self, n: usize) {
        let mut last = Value::Null;
        let up = eventually(Duration::from_secs(30), || {
            let (_, nodes) = self.get("/api/v1/nodes");
            let count = nodes
                .as_array()
                .map_or(0, |a| a.iter().filter(|n| n["state"] == "up").count());
            last = nodes;
            count >= n
        });
        assert!(up, "{n} node(s) never came up: {last}");
    }

    pub fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(self.url(path)).send().expect("GET");
        json_of(resp)
    }

    pub fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .expect("POST");
        json_of(resp)
    }

    /// `POST /api/v1/jobs`; asserts 202 and returns the job's id.
    pub fn submit(&self, body: &Value) -> String {
        let (status, job) = self.post("/api/v1/jobs", body);
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().expect("job id").to_string()
    }

    /// `POST /api/v1/jobs/{id}/{action}` (cancel, requeue, pause, resume), with no body.
    pub fn job_action(&self, id: &str, action: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(self.url(&format!("/api/v1/jobs/{id}/{action}")))
            .send()
            .expect("POST job action");
        json_of(resp)
    }

    /// `GET /api/v1/jobs/{id}`.
    /// Every frame of a job (`GET /api/v1/jobs/{id}/frames`, one page).
    pub fn frames(&self, id: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/api/v1/jobs/{id}/frames?limit=5000"));
        assert_eq!(status, StatusCode::OK, "{page}");
        page["frames"].as_array().cloned().unwrap_or_default()
    }

    pub fn job(&self, id: &str) -> Value {
        let (status, job) = self.get(&format!("/api/v1/jobs/{id}"));
        assert_eq!(status, StatusCode::OK, "{job}");
        job
    }

    /// Polls the job until it has ended; returns its detail.
    pub fn wait_job_ended(&self, id: &str, timeout: Duration) -> Value {
        let mut last = Value::Null;
        let ended = eventually(timeout, || {
            let (_, job) = self.get(&format!("/api/v1/jobs/{id}"));
            let done = ["completed", "failed", "cancelled"]
                .iter()
                .any(|s| job["state"] == *s);
            last = job;
            if !done {
                std::thread::sleep(Duration::from_millis(200));
            }
            done
        });
        assert!(ended, "job {id} did not end in {timeout:?}: {last}");
        last
    }

    /// Polls until some task of the job is running on node `i` and that node's Blender
    /// has started.
    pub fn wait_task_running_on(&self, id: &str, i: usize) {
        let node = self.node_id(i);
        let mut last = Value::Null;
        let running = eventually(Duration::from_secs(60), || {
            let job = self.job(id);
            let on_node = job["tasks"]
                .as_array()
                .expect("tasks")
                .iter()
                .any(|t| t["state"] == "running" && t["node"] == node.as_str());
            last = job;
            on_node && !super::blender_processes_under(self.nodes[i].dir.path()).is_empty()
        });
        assert!(running, "no task ever ran on node {node}: {last}");
    }

    /// The node ids that tasks of the job ran on (last attempt of each task).
    pub fn task_nodes(job: &Value) -> Vec<String> {
        job["tasks"]
            .as_array()
            .expect("tasks")
            .iter()
            .filter_map(|t| t["node"].as_str().map(str::to_string))
            .collect()
    }

    /// Asserts that frames `from..=to` of the job are 64x48 PNGs under
    /// `out/{job}/frame_####.png`.
    pub fn assert_frames(&self, id: &str, from: i64, to: i64) {
        let dir = self.output_dir().join(id);
        for frame in from..=to {
            assert_png(&dir.join(format!("frame_{frame:04}.png")), 64, 48);
        }
    }

    /// Names in the job's output folder, sorted.
    pub fn output_files(&self, id: &str) -> Vec<String> {
        let dir = self.output_dir().join(id);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }
}

/// `frame_FROM.png` .. `frame_TO.png`.
pub fn frame_names(from: i64, to: i64) -> Vec<String> {
    (from..=to).map(|f| format!("frame_{f:04}.png")).collect()
}

/// Status and JSON body of an answer (`Null` if the body is not JSON).
pub fn json_of(resp: Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().expect("response body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}
