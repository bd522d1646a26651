//! Fault soak (issue 12): a real orchestrator and three real nodes (one slot, one Blender
//! thread each) render a stream of small real-Blender jobs (Cycles and Workbench, 32x24,
//! a few to 12 frames, fixed or farm-sized chunks) while a seeded random sequence of faults
//! hits them: a node SIGKILLed and started again on its port and data, a node SIGSTOPped
//! for a few seconds and continued, the orchestrator killed -9 and restarted on its
//! database and address, nodes deleted (they register again with their next heartbeat),
//! drained and enabled, jobs cancelled, requeued, paused and resumed.
//!
//! Checked at every step: every accepted job is still known; no job is cancelled that the
//! soak did not cancel, and neither a job nor a task's attempt fails for a reason the
//! faults do not explain (a lost node loses its lease, not an attempt); no task stays
//! `running` for longer than [`WATCH_LIMIT`] without its node being up and rendering it
//! (what a live watcher guarantees); no Blender outlives its SIGKILLed node by more than
//! [`REAP_LIMIT`]; the orchestrator's RSS stays under [`RSS_LIMIT_KB`]. Then the faults stop,
//! everything is restored and every job must end; a completed job's tasks cover its range
//! exactly once, and its folder holds exactly one 32x24 PNG per frame under the farm's
//! names and nothing else; no partial folder is left anywhere; no Blender has work, and
//! none survives the nodes.
//!
//! `CORRAL_SOAK_SEED=N` replays the same sequence of actions and parameters (printed, with
//! a digest to compare runs by); which job a job action lands on, and everything the farm
//! does in between, depends on timing. `CORRAL_SOAK_SECS` sets how long faults are injected
//! (default [`DEFAULT_SECS`]). Ignored by `cargo test --workspace` so it never shares the
//! cores with other tests; `make test` runs it alone:
//! `cargo test -p corral --test soak -- --ignored --nocapture`.

// Panicking on an unexpected answer is how these tests fail.
#![allow(clippy::unwrap_used)]

mod common;

use common::farm::{frame_names, Farm};
use common::{assert_png, blender_processes_under, eventually, scene, Scene};
use nix::sys::signal::{kill, Signal};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const NODES: usize = 3;
/// One planned step (actions, then checks) per second.
const STEP: Duration = Duration::from_secs(1);
/// Seconds of faults by default: with the drain and start-up, about three minutes.
const DEFAULT_SECS: u64 = 150;
/// The orchestrator's `--node-timeout`: short, so a SIGSTOP of a few seconds sometimes
/// outlasts it (the node is marked down, its task re-run elsewhere, the stray render
/// stopped when the node answers again) and sometimes not.
const NODE_TIMEOUT: &str = "3";
/// Longest a task may stay `running` without its node up and rendering it. A live watcher
/// notices a render's end within one long-poll; the health worker takes a task back
/// within the node timeout (3 s) of its node going silent; a restarted orchestrator
/// adopts or re-queues its tasks at start-up. 30 s is all of these with room for two
/// cores shared with Blender.
const WATCH_LIMIT: Duration = Duration::from_secs(30);
/// A SIGKILLed node's Blender must be gone within this (the reaper sees its socket close
/// at once; the rest is Blender dying on two busy cores).
const REAP_LIMIT: Duration = Duration::from_secs(5);
/// How long the farm gets to end every job once the faults stop.
const DRAIN_DEADLINE: Duration = Duration::from_secs(300);
/// The orchestrator's resident memory bound. A fresh debug-build orchestrator with SQLite
/// holds a few tens of MB; the soak adds only small jobs, so 200 MB can only be passed by
/// something that grows with time (watchers, events, connections never freed).
const RSS_LIMIT_KB: u64 = 200 * 1024;
/// Most unfinished jobs before the plan's submissions are skipped. In warm mode the farm
/// keeps up and this never binds; in cold mode (a Blender start per task on two busy
/// cores) a 420 s run built a queue of 130 jobs that 300 s could not drain.
const MAX_UNFINISHED: usize = 10;
/// Actions shown with a violation.
const RECENT: usize = 30;
/// The Workbench scene, in every node's `--scenes` folder.
const WORKBENCH: &str = "tiny-workbench.blend";
/// Failures the injected faults explain: (a substring of the job's failure, why). None so
/// far: a node lost, stopped or deleted only loses its lease (the task is taken back
/// without counting an attempt), and an orchestrator restart adopts or re-queues.
const EXPECTED_FAILURES: &[(&str, &str)] = &[];

/// What the plan does in one step, drawn from the seed alone (never from the farm's state,
/// so a seed always replays the same plan).
#[derive(Debug, Clone)]
enum Action {
    /// SIGKILL node `node`; start it again `down` steps later (0: at once).
    KillNode {
        node: usize,
        down: usize,
    },
    /// SIGSTOP node `node`; SIGCONT `steps` steps later.
    StopNode {
        node: usize,
        steps: usize,
    },
    /// kill -9 the orchestrator; a new one starts `down_ms` later on the same database.
    KillOrchestrator {
        down_ms: u64,
    },
    /// `DELETE /api/v1/nodes/{id}`.
    DeleteNode {
        node: usize,
    },
    /// Drain node `node`; enable it `steps` steps later.
    DrainNode {
        node: usize,
        steps: usize,
    },
    /// Cancel one of the unfinished jobs (`pick` modulo their number).
    Cancel {
        pick: usize,
    },
    /// Requeue one of the failed or cancelled jobs.
    Requeue {
        pick: usize,
    },
    /// Pause one of the unfinished jobs; resume it `steps` steps later.
    Pause {
        pick: usize,
        steps: usize,
    },
    Nothing,
}

/// A job the plan submits.
#[derive(Debug, Clone)]
struct Submission {
    workbench: bool,
    from: i64,
    to: i64,
    chunk: Option<u64>,
    preview_first: bool,
}

fn plan_step(rng: &mut fastrand::Rng) -> (Option<Submission>, Action) {
    // About one job every two seconds: more than three one-slot nodes finish between
    // faults, so faults meet renders in flight and the queue is rarely empty.
    let submission = (rng.u32(0..100) < 50).then(|| {
        let from = rng.i64(1..=4);
        Submission {
            workbench: rng.u32(0..3) == 0,
            from,
            to: rng.i64(from + 1..=12),
            // Unset a quarter of the time: the farm sizes the tasks (and cuts tails).
            chunk: (rng.u32(0..4) != 0).then(|| rng.u64(1..=4)),
            preview_first: rng.u32(0..4) == 0,
        }
    });
    let node = rng.usize(0..NODES);
    let action = match rng.u32(0..100) {
        0..=7 => Action::KillNode {
            node,
            down: rng.usize(0..=3),
        },
        8..=15 => Action::StopNode {
            node,
            steps: rng.usize(1..=5),
        },
        16..=19 => Action::KillOrchestrator {
            down_ms: rng.u64(0..=2000),
        },
        20..=24 => Action::DeleteNode { node },
        25..=30 => Action::DrainNode {
            node,
            steps: rng.usize(2..=6),
        },
        31..=36 => Action::Cancel {
            pick: rng.usize(0..1000),
        },
        37..=42 => Action::Requeue {
            pick: rng.usize(0..1000),
        },
        43..=48 => Action::Pause {
            pick: rng.usize(0..1000),
            steps: rng.usize(1..=5),
        },
        _ => Action::Nothing,
    };
    (submission, action)
}

/// A job the soak submitted, and what it last saw of it.
struct SoakJob {
    id: String,
    from: i64,
    to: i64,
    /// The soak asked for it to be cancelled (only then may it end cancelled).
    cancel_sent: bool,
    state: String,
    failure: Option<String>,
}

/// A task found `running` without its node up and rendering it: since when, and why.
struct Unbacked {
    since: Instant,
    why: String,
}

struct Soak {
    farm: Farm,
    seed: u64,
    step: usize,
    recent: VecDeque<String>,
    /// FNV-1a of the plan (not of the farm's answers): equal for equal seeds and lengths.
    digest: u64,
    actions: usize,
    jobs: Vec<SoakJob>,
    /// A short-timeout client for the nodes' own API (a stopped node must not stall a step).
    node_http: Client,
    /// Per node: the step it is to be started again at, while it is killed.
    dead: [Option<usize>; NODES],
    /// Per node: the step it is to be continued at, while it is stopped.
    stopped: [Option<usize>; NODES],
    /// Per node: the step it is to be enabled at, while drained.
    drained: [Option<usize>; NODES],
    /// Paused jobs (index into `jobs`) and the step each is resumed at.
    paused: Vec<(usize, usize)>,
    unbacked: HashMap<i64, Unbacked>,
    peak_rss_kb: u64,
    /// When the running orchestrator started, and the longest any lived: the RSS bound
    /// only sees growth within one orchestrator's life.
    orchestrator_since: Instant,
    longest_life: Duration,
    failures_seen: Vec<(String, String)>,
}

impl Soak {
    /// Panics with the seed and the last actions, so the run can be replayed.
    fn violation(&self, what: &str) -> ! {
        let recent: Vec<&str> = self.recent.iter().map(String::as_str).collect();
        panic!(
            "soak invariant violated at step {}: {what}\n\
             seed {} (rerun with CORRAL_SOAK_SEED={})\nlast actions:\n  {}",
            self.step,
            self.seed,
            self.seed,
            recent.join("\n  ")
        );
    }

    fn note(&mut self, line: String) {
        eprintln!("soak[{:>3}] {line}", self.step);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(format!("[{}] {line}", self.step));
    }

    fn digest_plan(&mut self, plan: &str) {
        for byte in plan.bytes() {
            self.digest ^= u64::from(byte);
            self.digest = self.digest.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn submit(&mut self, s: &Submission) {
        let mut body = json!({"from": s.from, "to": s.to, "preview_first": s.preview_first});
        if let Some(chunk) = s.chunk {
            body["chunk_size"] = json!(chunk);
        }
        if s.workbench {
            body["scene"] = json!(WORKBENCH);
            body["engine"] = json!("BLENDER_WORKBENCH");
        }
        let id = self.farm.submit(&body);
        self.note(format!("submit job#{} {id} {body}", self.jobs.len()));
        self.jobs.push(SoakJob {
            id,
            from: s.from,
            to: s.to,
            cancel_sent: false,
            state: "queued".into(),
            failure: None,
        });
    }

    /// Submits `s` unless [`MAX_UNFINISHED`] jobs are unfinished: a slower farm (cold
    /// mode, busier cores) is not buried under a queue it cannot drain in time, and the
    /// plan stays the same (only its effect is skipped, and logged).
    fn submit_unless_backlogged(&mut self, s: &Submission) {
        let unfinished = self
            .jobs
            .iter()
            .filter(|j| !["completed", "failed", "cancelled"].contains(&j.state.as_str()))
            .count();
        if unfinished >= MAX_UNFINISHED {
            return self.note(format!("submit skipped: {unfinished} jobs unfinished"));
        }
        self.submit(s);
    }

    fn node_path(&self, node: usize, action: &str) -> String {
        format!("/api/v1/nodes/{}{action}", self.farm.node_id(node))
    }

    /// Restarts killed nodes, continues stopped ones, enables drained ones and resumes
    /// paused jobs whose time has come (`now`: every one).
    fn restore(&mut self, now: bool) {
        let due = |at: Option<usize>, step: usize| at.is_some_and(|at| now || at <= step);
        for n in 0..NODES {
            if due(self.dead[n], self.step) {
                self.dead[n] = None;
                self.farm.restart_node(n);
                self.note(format!("node {n} started again"));
            }
            if due(self.stopped[n], self.step) {
                self.stopped[n] = None;
                kill(self.farm.nodes[n].pid(), Signal::SIGCONT).unwrap();
                self.note(format!("node {n} continued (SIGCONT)"));
            }
            if due(self.drained[n], self.step) {
                self.drained[n] = None;
                let path = self.node_path(n, "/enable");
                let (status, _) = self.farm.post(&path, &json!({}));
                self.note(format!("node {n} enabled: {status}"));
            }
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .paused
            .iter()
            .partition(|&&(_, at)| now || at <= self.step);
        self.paused = waiting;
        for (job, _) in ready {
            let (status, _) = self.farm.job_action(&self.jobs[job].id, "resume");
            self.note(format!("resume job#{job}: {status}"));
        }
    }

    /// Index of one of the jobs last seen in one of `states`, chosen by `pick`.
    fn pick_job(&self, pick: usize, states: &[&str]) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| states.contains(&self.jobs[i].state.as_str()))
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()])
    }

    fn act(&mut self, action: &Action) {
        match *action {
            Action::Nothing => {}
            Action::KillNode { node, down } => {
                if self.dead[node].is_some() {
                    return self.note(format!("kill node {node}: already down"));
                }
                self.actions += 1;
                let busy = self.rendering(node);
                // SIGKILL also ends a stopped node.
                self.stopped[node] = None;
                let killed =
                    self.farm.nodes[node].signal_and_wait(Signal::SIGKILL, Duration::from_secs(5));
                if killed.is_none() {
                    self.violation(&format!("node {node} survived SIGKILL"));
                }
                self.note(format!(
                    "kill -9 node {node} (rendering tasks {busy}), down for {down} step(s)"
                ));
                self.dead[node] = Some(self.step + down);
                self.check_reaped(node);
                if down == 0 {
                    self.restore(false);
                }
            }
            Action::StopNode { node, steps } => {
                if self.dead[node].is_some() || self.stopped[node].is_some() {
                    return self.note(format!("stop node {node}: down or stopped already"));
                }
                self.actions += 1;
                let busy = self.rendering(node);
                kill(self.farm.nodes[node].pid(), Signal::SIGSTOP).unwrap();
                self.stopped[node] = Some(self.step + steps);
                self.note(format!(
                    "SIGSTOP node {node} (rendering tasks {busy}) for {steps} step(s)"
                ));
            }
            Action::KillOrchestrator { down_ms } => {
                self.actions += 1;
                self.note(format!("kill -9 orchestrator, down for {down_ms} ms"));
                self.longest_life = self.longest_life.max(self.orchestrator_since.elapsed());
                self.farm
                    .kill_and_restart_orchestrator(Duration::from_millis(down_ms));
                self.orchestrator_since = Instant::now();
            }
            Action::DeleteNode { node } => {
                self.actions += 1;
                let busy = self.rendering(node);
                let resp = self
                    .farm
                    .http()
                    .delete(self.farm.url(&self.node_path(node, "")))
                    .send()
                    .unwrap();
                self.note(format!(
                    "delete node {node} (rendering tasks {busy}): {}",
                    resp.status()
                ));
            }
            Action::DrainNode { node, steps } => {
                self.actions += 1;
                let (status, _) = self.farm.post(&self.node_path(node, "/drain"), &json!({}));
                // Enabled later even when the drain found no node (deleted just now):
                // the enable then finds it registered again, or answers 404.
                self.drained[node] = Some(self.step + steps);
                self.note(format!("drain node {node} for {steps} step(s): {status}"));
            }
            Action::Cancel { pick } => {
                let Some(job) = self.pick_job(pick, &["queued", "running", "paused"]) else {
                    return self.note("cancel: no unfinished job".into());
                };
                self.actions += 1;
                // Marked before the request: an answer lost to a timeout may still have
                // cancelled it.
                self.jobs[job].cancel_sent = true;
                let (status, _) = self.farm.job_action(&self.jobs[job].id, "cancel");
                self.note(format!("cancel job#{job}: {status}"));
            }
            Action::Requeue { pick } => {
                let Some(job) = self.pick_job(pick, &["failed", "cancelled"]) else {
                    return self.note("requeue: no failed or cancelled job".into());
                };
                self.actions += 1;
                let (status, _) = self.farm.job_action(&self.jobs[job].id, "requeue");
                self.note(format!("requeue job#{job}: {status}"));
            }
            Action::Pause { pick, steps } => {
                let Some(job) = self.pick_job(pick, &["queued", "running"]) else {
                    return self.note("pause: no queued or running job".into());
                };
                self.actions += 1;
                let (status, _) = self.farm.job_action(&self.jobs[job].id, "pause");
                if status == StatusCode::OK {
                    self.paused.push((job, self.step + steps));
                }
                self.note(format!("pause job#{job} for {steps} step(s): {status}"));
            }
        }
    }

    /// The tasks node `node` is rendering, for the log: shows whether a fault met work
    /// in flight.
    fn rendering(&self, node: usize) -> String {
        match self.node_render(node) {
            Some(tasks) => format!("{tasks:?}"),
            None => "unknown".into(),
        }
    }

    /// A killed node's Blender processes (warm workers and renders alike: their command
    /// lines name the node's folder) are gone within [`REAP_LIMIT`].
    fn check_reaped(&self, node: usize) {
        let dir = self.farm.nodes[node].dir.path();
        if !eventually(REAP_LIMIT, || blender_processes_under(dir).is_empty()) {
            self.violation(&format!(
                "Blender outlived its SIGKILLed node {node} by {REAP_LIMIT:?}: pids {:?}",
                blender_processes_under(dir)
            ));
        }
    }

    /// The invariants that hold at every moment.
    fn check(&mut self) {
        self.check_rss();
        for n in 0..NODES {
            if self.dead[n].is_some()
                && !blender_processes_under(self.farm.nodes[n].dir.path()).is_empty()
            {
                self.violation(&format!(
                    "node {n} is dead but a Blender runs in its folder"
                ));
            }
        }
        self.check_jobs();
        self.check_running_tasks();
    }

    fn check_rss(&mut self) {
        let pid = self.farm.orchestrator().child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let Some(kb) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        else {
            self.violation(&format!("cannot read the orchestrator's VmRSS (pid {pid})"));
        };
        self.peak_rss_kb = self.peak_rss_kb.max(kb);
        if kb > RSS_LIMIT_KB {
            self.violation(&format!(
                "orchestrator RSS {kb} kB is over {RSS_LIMIT_KB} kB"
            ));
        }
    }

    /// Every accepted job is known; cancelled only if the soak cancelled it; failed only
    /// for an expected reason.
    fn check_jobs(&mut self) {
        let (status, page) = self.farm.get("/api/v1/jobs?limit=500");
        assert_eq!(status, StatusCode::OK, "{page}");
        let listed: HashMap<String, Value> = page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["id"].as_str().unwrap().to_string(), j.clone()))
            .collect();
        for i in 0..self.jobs.len() {
            let Some(job) = listed.get(&self.jobs[i].id) else {
                self.violation(&format!(
                    "job#{i} {} was accepted (202) but the orchestrator no longer knows it",
                    self.jobs[i].id
                ));
            };
            let state = job["state"].as_str().unwrap().to_string();
            if state == "cancelled" && !self.jobs[i].cancel_sent {
                self.violation(&format!(
                    "job#{i} was cancelled, but not by the soak: {job}"
                ));
            }
            if state == "failed" {
                let failure = job["failure"].as_str().unwrap_or("(no reason)").to_string();
                if self.jobs[i].failure.as_deref() != Some(&failure) {
                    self.note(format!("job#{i} failed: {failure}"));
                    self.failures_seen
                        .push((self.jobs[i].id.clone(), failure.clone()));
                }
                if !EXPECTED_FAILURES.iter().any(|(s, _)| failure.contains(s)) {
                    self.violation(&format!(
                        "job#{i} failed for a reason no injected fault explains: {failure}\n{job}"
                    ));
                }
                self.jobs[i].failure = Some(failure);
            }
            self.jobs[i].state = state;
        }
    }

    /// What node `n` is rendering: the task ids in its unfinished renders' tags
    /// (`corral:{task}:{lease}`); `None` for a node that is dead or does not answer.
    fn node_render(&self, n: usize) -> Option<Vec<i64>> {
        if self.dead[n].is_some() {
            return None;
        }
        let resp = self
            .node_http
            .get(format!("{}/jobs", self.farm.nodes[n].url))
            .send()
            .ok()?;
        let jobs: Value = resp.json().ok()?;
        Some(
            jobs.as_array()?
                .iter()
                .filter(|j| j["state"] == "queued" || j["state"] == "running")
                .filter_map(|j| {
                    let tag = j["tag"].as_str()?.strip_prefix("corral:")?;
                    tag.split(':').next()?.parse().ok()
                })
                .collect(),
        )
    }

    /// A task's failed attempt (which counts toward failing its job) is explained by
    /// the faults: a lost, stopped or deleted node only loses its lease, which does not
    /// count an attempt.
    fn check_attempts(&self, task: &Value) {
        let failure = task["failure"].as_str().unwrap_or("(no reason)");
        if !EXPECTED_FAILURES.iter().any(|(s, _)| failure.contains(s)) {
            self.violation(&format!(
                "task {} failed an attempt for a reason no injected fault explains: \
                 {failure}\n{task}",
                task["id"]
            ));
        }
    }

    /// No task stays `running` for longer than [`WATCH_LIMIT`] unless its node is up (as
    /// the orchestrator sees it) and rendering it (as the node sees it).
    fn check_running_tasks(&mut self) {
        let (_, nodes) = self.farm.get("/api/v1/nodes");
        let up: Vec<String> = nodes
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["state"] == "up")
            .filter_map(|n| n["id"].as_str().map(str::to_string))
            .collect();
        let renders: Vec<_> = (0..NODES).map(|n| self.node_render(n)).collect();
        let mut running = Vec::new();
        let mut attempts_failed = Vec::new();
        for job in &self.jobs {
            if !["queued", "running", "paused"].contains(&job.state.as_str()) {
                continue;
            }
            let (status, page) = self
                .farm
                .get(&format!("/api/v1/jobs/{}/tasks?limit=500", job.id));
            assert_eq!(status, StatusCode::OK, "{page}");
            for task in page["tasks"].as_array().unwrap() {
                if task["state"] == "running" {
                    running.push(task.clone());
                }
                if task["attempts"].as_u64().unwrap() > 0 || !task["failure"].is_null() {
                    attempts_failed.push(task.clone());
                }
            }
        }
        for task in attempts_failed {
            self.check_attempts(&task);
        }
        let now = Instant::now();
        let mut still = HashMap::new();
        for task in running {
            let id = task["id"].as_i64().unwrap();
            let node_id = task["node"].as_str().unwrap_or_default();
            let Some(n) = (0..NODES).find(|&n| self.farm.node_id(n) == node_id) else {
                self.violation(&format!("a task runs on a node the farm never had: {task}"));
            };
            let why = if !up.iter().any(|u| u == node_id) {
                Some(format!("node {n} is not up"))
            } else {
                match &renders[n] {
                    None => Some(format!("node {n} does not answer")),
                    Some(tasks) if !tasks.contains(&id) => {
                        Some(format!("node {n} is not rendering it"))
                    }
                    Some(_) => None,
                }
            };
            let Some(why) = why else { continue };
            let entry = self.unbacked.remove(&id).unwrap_or(Unbacked {
                since: now,
                why: why.clone(),
            });
            if now.duration_since(entry.since) > WATCH_LIMIT {
                self.violation(&format!(
                    "task {id} has been running for {:?} without a live watcher \
                     (first: {}; now: {why}): {task}",
                    now.duration_since(entry.since),
                    entry.why
                ));
            }
            still.insert(id, entry);
        }
        self.unbacked = still;
    }

    /// Stops the faults, restores every node and job, and waits for every job to end,
    /// checking as it goes.
    fn drain(&mut self) {
        self.note("faults stop: restoring every node and job".into());
        self.restore(true);
        // Drained nodes (an enable that met a deleted node) are all enabled.
        let (_, nodes) = self.farm.get("/api/v1/nodes");
        for node in nodes.as_array().unwrap() {
            if node["draining"] == true {
                let id = node["id"].as_str().unwrap();
                self.farm
                    .post(&format!("/api/v1/nodes/{id}/enable"), &json!({}));
            }
        }
        let deadline = Instant::now() + DRAIN_DEADLINE;
        loop {
            self.step += 1;
            self.check();
            let unfinished: Vec<String> = (0..self.jobs.len())
                .filter(|&i| {
                    !["completed", "failed", "cancelled"].contains(&self.jobs[i].state.as_str())
                })
                .map(|i| format!("job#{i} {} {}", self.jobs[i].id, self.jobs[i].state))
                .collect();
            if unfinished.is_empty() {
                return;
            }
            // A job paused by a pause whose resume raced its answer (or a 409) is resumed.
            for i in 0..self.jobs.len() {
                if self.jobs[i].state == "paused" {
                    let (status, _) = self.farm.job_action(&self.jobs[i].id, "resume");
                    self.note(format!("resume job#{i} (still paused): {status}"));
                }
            }
            if Instant::now() > deadline {
                self.violation(&format!(
                    "jobs did not end within {DRAIN_DEADLINE:?} of the faults stopping: {unfinished:?}"
                ));
            }
            std::thread::sleep(STEP);
        }
    }

    /// A completed job's tasks are all completed and cover its range exactly once, the
    /// orchestrator counts every frame done, and its folder holds exactly its frames.
    fn check_completed(&self, i: usize) {
        let job = &self.jobs[i];
        let (status, page) = self
            .farm
            .get(&format!("/api/v1/jobs/{}/tasks?limit=500", job.id));
        assert_eq!(status, StatusCode::OK, "{page}");
        let tasks = page["tasks"].as_array().unwrap();
        if let Some(t) = tasks.iter().find(|t| t["state"] != "completed") {
            self.violation(&format!("job#{i} completed with a task that did not: {t}"));
        }
        for task in tasks {
            if task["attempts"].as_u64().unwrap() > 0 || !task["failure"].is_null() {
                self.check_attempts(task);
            }
        }
        let mut frames: Vec<i64> = tasks
            .iter()
            .flat_map(|t| t["from"].as_i64().unwrap()..=t["to"].as_i64().unwrap())
            .collect();
        frames.sort_unstable();
        if frames != (job.from..=job.to).collect::<Vec<_>>() {
            self.violation(&format!(
                "job#{i}'s tasks do not cover {}-{} exactly once: {frames:?}",
                job.from, job.to
            ));
        }
        if let Some(f) = self
            .farm
            .frames(&job.id)
            .iter()
            .find(|f| f["state"] != "done")
        {
            self.violation(&format!("job#{i} completed with a frame not done: {f}"));
        }
        let names = self.farm.output_files(&job.id);
        if names != frame_names(job.from, job.to) {
            self.violation(&format!(
                "job#{i}'s folder does not hold exactly frames {}-{}: {names:?}",
                job.from, job.to
            ));
        }
        let dir = self.farm.output_dir().join(&job.id);
        for name in names {
            assert_png(&dir.join(name), 32, 24);
        }
    }
}

/// Paths of `.corral-partial-*` folders under `dir`.
fn partial_folders(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".corral-partial-")
        {
            found.push(path.display().to_string());
        } else if path.is_dir() {
            found.extend(partial_folders(&path));
        }
    }
    found
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number")),
    )
}

#[test]
#[ignore = "a fault soak of a few minutes; `make test` runs it alone"]
fn the_farm_survives_random_faults() {
    let seed = env_u64("CORRAL_SOAK_SEED").unwrap_or_else(|| {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        now.as_secs() ^ u64::from(now.subsec_nanos())
    });
    let secs = env_u64("CORRAL_SOAK_SECS").unwrap_or(DEFAULT_SECS);
    eprintln!("soak seed: {seed} (rerun with CORRAL_SOAK_SEED={seed}); {secs} s of faults");
    let started = Instant::now();

    let workbench = std::fs::read(scene(Scene::SoakWorkbench)).unwrap();
    let farm = Farm::builder()
        .nodes(NODES)
        .scene(Scene::SoakCycles)
        .scene_file(WORKBENCH, &workbench)
        .orchestrator_args(&["--node-timeout", NODE_TIMEOUT])
        .start();
    let mut soak = Soak {
        farm,
        seed,
        step: 0,
        recent: VecDeque::new(),
        digest: 0xcbf2_9ce4_8422_2325,
        actions: 0,
        jobs: Vec::new(),
        node_http: Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
        dead: [None; NODES],
        stopped: [None; NODES],
        drained: [None; NODES],
        paused: Vec::new(),
        unbacked: HashMap::new(),
        peak_rss_kb: 0,
        orchestrator_since: Instant::now(),
        longest_life: Duration::ZERO,
        failures_seen: Vec::new(),
    };

    let mut rng = fastrand::Rng::with_seed(seed);
    let steps = usize::try_from(secs).unwrap() * 1000 / usize::try_from(STEP.as_millis()).unwrap();
    let faults_start = Instant::now();
    for step in 0..steps {
        soak.step = step;
        let (submission, action) = plan_step(&mut rng);
        soak.digest_plan(&format!("{step}:{submission:?}:{action:?};"));
        soak.restore(false);
        if let Some(s) = &submission {
            soak.submit_unless_backlogged(s);
        }
        soak.act(&action);
        soak.check();
        // Steps start on a fixed beat, however long a step took (restarts take a while).
        let next = faults_start + STEP * u32::try_from(step + 1).unwrap();
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    let faults_took = faults_start.elapsed();
    let drain_start = Instant::now();
    soak.drain();
    let drain_took = drain_start.elapsed();

    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..soak.jobs.len() {
        *by_state.entry(soak.jobs[i].state.as_str()).or_default() += 1;
        if soak.jobs[i].state == "completed" {
            soak.check_completed(i);
        }
    }
    let debris = partial_folders(&soak.farm.output_dir());
    if !debris.is_empty() {
        soak.violation(&format!(
            "partial folders left after every job ended: {debris:?}"
        ));
    }
    if !eventually(Duration::from_secs(10), || {
        soak.farm.busy_blenders().is_empty()
    }) {
        soak.violation(&format!(
            "Blender still has work after every job ended: {:?}",
            soak.farm.busy_blenders()
        ));
    }
    // Finally every node dies at once: nothing of theirs may survive them.
    for node in &mut soak.farm.nodes {
        node.signal_and_wait(Signal::SIGKILL, Duration::from_secs(5))
            .expect("node survived SIGKILL");
    }
    let root = soak.farm.root.path().to_path_buf();
    if !eventually(REAP_LIMIT, || blender_processes_under(&root).is_empty()) {
        soak.violation(&format!(
            "Blender outlived the killed nodes: {:?}",
            blender_processes_under(&root)
        ));
    }

    eprintln!(
        "soak seed {seed}: {} jobs {by_state:?}, {} fault actions in {} steps, \
         failures {:?}, peak orchestrator RSS {} kB (limit {RSS_LIMIT_KB} kB; \
         longest orchestrator life {:?}), \
         faults {faults_took:?}, drain {drain_took:?}, total {:?}, plan digest {:016x}",
        soak.jobs.len(),
        soak.actions,
        steps,
        soak.failures_seen,
        soak.peak_rss_kb,
        soak.longest_life.max(soak.orchestrator_since.elapsed()),
        started.elapsed(),
        soak.digest,
    );
    assert!(
        by_state.get("completed").copied().unwrap_or(0) > 0,
        "no job completed at all (seed {seed})"
    );
}
