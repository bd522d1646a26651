//! Several orchestrators on one PostgreSQL, for real: a PostgreSQL server the test starts
//! (initdb and pg_ctl), two `corral orchestrator --database postgres://...` processes and
//! three `corral node` processes that know both orchestrators, rendering real Blender
//! scenes. The orchestrator that dispatches is SIGKILLed mid-job; PostgreSQL is stopped
//! for 10 s mid-job; one orchestrator is cut off from the database by a TCP proxy. Every
//! time the job completes with every frame once, and no task is rendered twice.

mod common;

use common::farm::{client, json_of, spawn_farm_node, OrchestratorProcess};
use common::{assert_png, scene, NodeProcess, Scene};
use corral_testkit::PgServer;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// These tests each run a whole farm; one at a time keeps them from fighting over the
/// machine's two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const DEADLINE: Duration = Duration::from_secs(240);

/// A TCP forwarder to PostgreSQL that can be cut: a network partition between one
/// orchestrator and the database, as the orchestrator sees it.
struct Proxy {
    port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                for s in [&client, &server] {
                    if let (Ok(s), Ok(mut list)) = (s.try_clone(), c.lock()) {
                        list.push(s);
                    }
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Proxy { port, open, conns }
    }

    /// Drops every connection and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        if let Ok(mut list) = self.conns.lock() {
            for s in list.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    fn heal(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 || to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// One render of a task on a node: (node, lease, started, finished (seconds), state).
type Render = (usize, i64, f64, f64, String);

/// PostgreSQL, two orchestrators and three nodes sharing one output folder.
struct PgFarm {
    orchestrators: Vec<Option<OrchestratorProcess>>,
    nodes: Vec<NodeProcess>,
    http: reqwest::blocking::Client,
    root: tempfile::TempDir,
    // Declared last: stopped after every process that uses it is gone.
    pg: PgServer,
}

impl PgFarm {
    /// Starts PostgreSQL and the orchestrators (`urls[i]` is the database URL orchestrator
    /// `i` uses), `first` of them first so it dispatches, then three nodes.
    fn start(pg: PgServer, urls: &[String], first: usize) -> PgFarm {
        let root = tempfile::Builder::new()
            .prefix("corral-pgfarm-")
            .tempdir()
            .expect("temp dir");
        let mut farm = PgFarm {
            orchestrators: (0..urls.len()).map(|_| None).collect(),
            nodes: Vec::new(),
            http: client(),
            root,
            pg,
        };
        let order: Vec<usize> = std::iter::once(first)
            .chain((0..urls.len()).filter(|i| *i != first))
            .collect();
        for i in order {
            let args = vec![
                "--database".to_string(),
                urls[i].clone(),
                "--node-timeout".to_string(),
                "4".to_string(),
            ];
            let o = OrchestratorProcess::start(
                &farm.root.path().join(format!("data-{i}")),
                &farm.root.path().join(format!("orchestrator-{i}.stderr")),
                &args,
            );
            farm.orchestrators[i] = Some(o);
            if i == first {
                let url = farm.url(i, "/readyz");
                let leads = common::eventually(Duration::from_secs(20), || {
                    json_of(farm.http.get(&url).send().expect("readyz")).1["dispatching"] == true
                });
                assert!(leads, "orchestrator {i} never dispatched");
            }
        }
        let addresses: Vec<String> = farm
            .orchestrators
            .iter()
            .flatten()
            .map(|o| o.url.clone())
            .collect();
        let join = addresses.join(",");
        let blend = scene(Scene::Small);
        for _ in 0..3 {
            let node = spawn_farm_node(farm.root.path(), &blend, &[], &["--orchestrator", &join]);
            farm.nodes.push(node);
        }
        let all_up = common::eventually(Duration::from_secs(30), || {
            let (_, nodes) = farm.get(first, "/api/v1/nodes");
            nodes
                .as_array()
                .is_some_and(|n| n.len() == 3 && n.iter().all(|n| n["state"] == "up"))
        });
        assert!(
            all_up,
            "nodes never came up: {}",
            farm.get(first, "/api/v1/nodes").1
        );
        farm
    }

    fn url(&self, i: usize, path: &str) -> String {
        let o = self.orchestrators[i]
            .as_ref()
            .expect("orchestrator running");
        format!("{}{path}", o.url)
    }

    fn get(&self, i: usize, path: &str) -> (StatusCode, Value) {
        match self.http.get(self.url(i, path)).send() {
            Ok(resp) => json_of(resp),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({ "error": e.to_string() }),
            ),
        }
    }

    fn submit(&self, i: usize, body: &Value) -> String {
        let resp = self
            .http
            .post(self.url(i, "/api/v1/jobs"))
            .json(body)
            .send()
            .expect("submit");
        let (status, job) = json_of(resp);
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().expect("job id").to_string()
    }

    fn dispatching(&self, i: usize) -> bool {
        self.get(i, "/readyz").1["dispatching"] == true
    }

    fn wait_frames(&self, i: usize, id: &str, at_least: u64) {
        let ok = common::eventually(DEADLINE, || {
            self.get(i, &format!("/api/v1/jobs/{id}")).1["frames_done"].as_u64() >= Some(at_least)
        });
        assert!(
            ok,
            "job {id} never reached {at_least} frames: {}",
            self.logs()
        );
    }

    fn wait_completed(&self, i: usize, id: &str) -> Value {
        let mut last = Value::Null;
        let done = common::eventually(DEADLINE, || {
            last = self.get(i, &format!("/api/v1/jobs/{id}")).1;
            last["state"] == "completed" || last["state"] == "failed"
        });
        assert!(
            done && last["state"] == "completed",
            "job {id} did not complete: {last}\n{}",
            self.logs()
        );
        last
    }

    /// Every frame of `from..=to` on disk, and listed done by orchestrator `i`.
    fn assert_every_frame(&self, i: usize, id: &str, from: i64, to: i64) {
        let (_, page) = self.get(i, &format!("/api/v1/jobs/{id}/frames?limit=5000"));
        let frames = page["frames"].as_array().expect("frames");
        assert_eq!(frames.len() as i64, to - from + 1);
        assert!(frames.iter().all(|f| f["state"] == "done"), "{page}");
        let folder = self.root.path().join("out").join(id);
        let names: BTreeSet<String> = std::fs::read_dir(&folder)
            .expect("frame folder")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        let expected: BTreeSet<String> = (from..=to).map(|f| format!("frame_{f:04}.png")).collect();
        assert_eq!(names, expected, "each frame exactly once");
        for name in &names {
            assert_png(&folder.join(name), 64, 48);
        }
    }

    /// The orchestrators' renders across the nodes, by task.
    fn renders(&self) -> BTreeMap<i64, Vec<Render>> {
        let mut by_task: BTreeMap<i64, Vec<Render>> = BTreeMap::new();
        for (n, node) in self.nodes.iter().enumerate() {
            let (_, jobs) = json_of(
                self.http
                    .get(format!("{}/jobs", node.url))
                    .send()
                    .expect("node jobs"),
            );
            for r in jobs.as_array().cloned().unwrap_or_default() {
                let Some(tag) = r["tag"].as_str() else {
                    continue;
                };
                let mut parts = tag.split(':').skip(1);
                let (Some(task), Some(lease)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let time = |v: &Value| {
                    v.as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map_or(f64::MAX, |t| t.timestamp_millis() as f64 / 1000.0)
                };
                by_task
                    .entry(task.parse().unwrap_or(-1))
                    .or_default()
                    .push((
                        n,
                        lease.parse().unwrap_or(-1),
                        time(&r["started_at"]),
                        time(&r["finished_at"]),
                        r["state"].as_str().unwrap_or("").to_string(),
                    ));
            }
        }
        by_task
    }

    /// No task was rendered by two nodes at the same time, and every task's frames were
    /// rendered to the end once.
    fn assert_no_double_renders(&self) {
        for (task, renders) in self.renders() {
            let completed = renders.iter().filter(|r| r.4 == "completed").count();
            assert_eq!(
                completed, 1,
                "task {task} completed {completed} times: {renders:?}"
            );
            for (i, a) in renders.iter().enumerate() {
                for b in &renders[i + 1..] {
                    let overlap = a.2 < b.3 && b.2 < a.3;
                    assert!(
                        a.0 == b.0 || !overlap,
                        "task {task} rendered on two nodes at once: {a:?} {b:?}"
                    );
                }
            }
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for (i, o) in self.orchestrators.iter().enumerate() {
            let path = self.root.path().join(format!("orchestrator-{i}.stderr"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let running = if o.is_some() { "" } else { " (stopped)" };
            out.push_str(&format!("---- orchestrator {i}{running} ----\n{text}\n"));
        }
        out.push_str(&format!("---- postgres ----\n{}", self.pg.log()));
        out
    }
}

fn database(pg: &PgServer) -> String {
    pg.database()
}

#[test]
fn the_dispatching_orchestrator_is_killed_mid_job_and_the_other_finishes_it() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let pg = PgServer::start();
    let url = database(&pg);
    let mut farm = PgFarm::start(pg, &[url.clone(), url], 0);
    assert!(farm.dispatching(0) && !farm.dispatching(1));
    // Submitted through the orchestrator that does not dispatch: any of them accepts.
    let id = farm.submit(1, &json!({"from": 1, "to": 24, "chunk_size": 2}));
    farm.wait_frames(1, &id, 4);
    let killed_at = Instant::now();
    if let Some(mut o) = farm.orchestrators[0].take() {
        o.kill();
    }
    let took_over = common::eventually(Duration::from_secs(30), || farm.dispatching(1));
    assert!(took_over, "the survivor never took over: {}", farm.logs());
    eprintln!(
        "takeover: the survivor dispatches {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    farm.wait_completed(1, &id);
    eprintln!(
        "the job completed {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    let log =
        std::fs::read_to_string(farm.root.path().join("orchestrator-1.stderr")).unwrap_or_default();
    assert!(
        log.contains("adopted a task") || log.contains("watching a running task"),
        "nothing was adopted:\n{log}"
    );
    farm.assert_every_frame(1, &id, 1, 24);
    farm.assert_no_double_renders();
}

#[test]
fn postgres_stopped_for_ten_seconds_mid_job_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let pg = PgServer::start();
    let url = database(&pg);
    let farm = PgFarm::start(pg, &[url.clone(), url], 0);
    let id = farm.submit(0, &json!({"from": 1, "to": 24, "chunk_size": 2}));
    farm.wait_frames(0, &id, 2);
    farm.pg.stop();
    let stopped = Instant::now();
    // Both report not ready while the database is away (and answer, rather than hang).
    for i in 0..2 {
        let ready = common::eventually(Duration::from_secs(8), || {
            farm.get(i, "/readyz").0 == StatusCode::SERVICE_UNAVAILABLE
        });
        assert!(ready, "orchestrator {i} still ready without its database");
    }
    let (status, _) = farm.get(0, &format!("/api/v1/jobs/{id}"));
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(stopped.elapsed()));
    farm.pg.restart();
    for i in 0..2 {
        let ready = common::eventually(Duration::from_secs(30), || {
            farm.get(i, "/readyz").0 == StatusCode::OK
        });
        assert!(ready, "orchestrator {i} did not recover: {}", farm.logs());
    }
    farm.wait_completed(0, &id);
    farm.assert_every_frame(0, &id, 1, 24);
    // The renders that ended during the outage were kept, not rendered again.
    farm.assert_no_double_renders();
    for (task, renders) in farm.renders() {
        assert_eq!(
            renders.len(),
            1,
            "task {task} was dispatched again: {renders:?}"
        );
    }
}

#[test]
fn an_orchestrator_cut_off_from_the_database_dispatches_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let pg = PgServer::start();
    let direct = database(&pg);
    let proxy = Proxy::start(pg.port);
    let through_proxy = direct.replace(&format!(":{}/", pg.port), &format!(":{}/", proxy.port));
    // Orchestrator 1 reaches the database through the proxy, and dispatches first.
    let farm = PgFarm::start(pg, &[direct, through_proxy], 1);
    assert!(farm.dispatching(1));
    let cut_log = std::fs::read_to_string(farm.root.path().join("orchestrator-1.stderr"))
        .unwrap_or_default()
        .len();
    proxy.cut();
    let ready = common::eventually(Duration::from_secs(10), || {
        farm.get(1, "/readyz").0 == StatusCode::SERVICE_UNAVAILABLE
    });
    assert!(ready, "a partitioned orchestrator still says it is ready");
    let took_over = common::eventually(Duration::from_secs(30), || farm.dispatching(0));
    assert!(took_over, "orchestrator 0 never took over: {}", farm.logs());
    let id = farm.submit(0, &json!({"from": 1, "to": 12, "chunk_size": 2}));
    farm.wait_completed(0, &id);
    farm.assert_every_frame(0, &id, 1, 12);
    farm.assert_no_double_renders();
    let log =
        std::fs::read_to_string(farm.root.path().join("orchestrator-1.stderr")).unwrap_or_default();
    let after_cut = &log[cut_log.min(log.len())..];
    assert!(
        !after_cut.contains("dispatching"),
        "the partitioned orchestrator dispatched:\n{after_cut}"
    );
    // Healed, it comes back as a follower.
    proxy.heal();
    let back = common::eventually(Duration::from_secs(30), || {
        farm.get(1, "/readyz").0 == StatusCode::OK
    });
    assert!(back, "orchestrator 1 did not come back: {}", farm.logs());
    assert!(farm.dispatching(0) && !farm.dispatching(1));
}
