//! The store suite: one set of tests run against both databases, on real servers (a SQLite
//! file, and a PostgreSQL server the test starts with initdb and pg_ctl): jobs and their
//! tasks, leases fencing out stale writers, attempts and blocklists, job commands and their
//! rules, the queue's order, nodes that are gone, orphans, adoption, the dispatcher's lease,
//! events reaching a second store on the same database, tokens and node secrets, and
//! (SQLite) the upgrade from schema version 1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use chrono::Utc;
use corral_core::lifecycle::{Command, JobCommand, Refusal, TaskState};
use corral_core::node_api::NodeInfo;
use corral_core::orchestrator_api::{
    Event, FrameSpan, JobState, JobSubmission, NodeState, SubmitLimits, TaskStateKind,
};
use corral_core::schedule::Assignment;
use corral_core::{JobId, LeaseId, NodeId, NodeJobId, OrchestratorId, TaskId};
use corral_orchestrator::store::{
    Admission, Applied, DatabaseUrl, Fence, FreeSlots, JobOutcome, NewJob, NodeSecret, Note,
    RunningFilter, SavedFrame, SqlStore, Store, TaskRecord, TokenKind,
};
use corral_testkit::PgServer;
use sqlx::Connection;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const LIMITS: SubmitLimits = SubmitLimits {
    max_frames: 1000,
    default_chunk_size: Some(5),
};

/// A database for one test: a SQLite file or a database on a PostgreSQL server of its own.
struct Db {
    url: DatabaseUrl,
    _dir: Option<tempfile::TempDir>,
    _server: Option<PgServer>,
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        Db {
            url: DatabaseUrl::Sqlite(dir.path().join("corral.db")),
            _dir: Some(dir),
            _server: None,
        }
    }

    fn postgres() -> Db {
        let server = PgServer::start();
        Db {
            url: DatabaseUrl::Postgres(server.database()),
            _dir: None,
            _server: Some(server),
        }
    }

    /// A store on this database (a second call is a second orchestrator's store).
    async fn open(&self) -> Arc<SqlStore> {
        SqlStore::open(&self.url).await.unwrap()
    }

    /// Runs SQL outside the store, as an older version or an operator would.
    async fn exec(&self, sql: &str) {
        sqlx::any::install_default_drivers();
        let url = match &self.url {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        };
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
}

/// Runs a test against SQLite and against PostgreSQL.
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(&super::Db::sqlite()).await;
            }

            #[tokio::test]
            async fn postgres() {
                super::$name(&super::Db::postgres()).await;
            }
        }
    };
}

async fn submit(store: &dyn Store, body: &str) -> JobId {
    submit_under(store, body, LIMITS).await
}

/// Submits a job with no chunk size under limits with no default, so the farm sizes its
/// tasks (one splittable task to start with).
async fn submit_sized(store: &dyn Store, body: &str) -> JobId {
    let limits = SubmitLimits {
        default_chunk_size: None,
        ..LIMITS
    };
    submit_under(store, body, limits).await
}

async fn submit_under(store: &dyn Store, body: &str, limits: SubmitLimits) -> JobId {
    let sub = JobSubmission::from_body(body.as_bytes(), limits).unwrap();
    let id = JobId::new();
    let job = NewJob {
        id,
        submission: sub,
        output: "out/f_####".into(),
    };
    match store.insert_job(job, 100).await.unwrap() {
        Admission::Accepted(job) => assert_eq!(job.id(), id),
        Admission::Full(n) => panic!("refused with {n} unfinished"),
    }
    id
}

fn info(slots: usize) -> NodeInfo {
    NodeInfo {
        hostname: "host".into(),
        cores: 2,
        memory_bytes: Some(1 << 30),
        blender_version: "3.4.1".into(),
        corral_version: "test".into(),
        slots,
        running: 0,
        queued: 0,
        engines: vec![],
        formats: vec![],
        max_frames_per_job: 1000,
        render_mode: "warm".into(),
        workers: vec![],
    }
}

/// A node that registered and answered its first probe, with `slots` slots.
async fn node_up(store: &dyn Store, name: &str, slots: usize) -> NodeId {
    let node = store
        .upsert_node(&format!("http://{name}:3000"))
        .await
        .unwrap();
    assert_eq!(node.state, NodeState::Down, "new nodes wait for a probe");
    assert!(store.node_seen(&node.id, &info(slots)).await.unwrap());
    node.id
}

async fn tasks(store: &dyn Store, job: JobId) -> Vec<TaskRecord> {
    store.tasks(job, 0, 1000).await.unwrap()
}

fn kinds(tasks: &[TaskRecord]) -> Vec<TaskStateKind> {
    tasks.iter().map(|t| t.task.state.kind()).collect()
}

async fn leader(store: &dyn Store, me: &str) -> Fence {
    store
        .lead(&OrchestratorId::new(me), Duration::from_secs(30))
        .await
        .unwrap()
        .expect("leadership")
}

/// Leases one task to one node under `fence`; its lease.
async fn lease(store: &dyn Store, fence: &Fence, task: TaskId, node: &NodeId) -> Option<LeaseId> {
    let one = Assignment {
        task,
        node: node.clone(),
        frames: None,
    };
    let leased = store.lease(&[one], fence).await.unwrap();
    leased.first().map(|t| t.lease)
}

async fn dispatched(store: &dyn Store, task: TaskId, lease: LeaseId, node_job: &str) {
    let cmd = Command::Dispatched {
        lease,
        node_job: NodeJobId::new(node_job),
    };
    assert!(store
        .apply(task, cmd, Note::default())
        .await
        .unwrap()
        .is_applied());
}

fn frames(list: &[i64]) -> Note {
    Note {
        frames: list
            .iter()
            .map(|f| SavedFrame {
                frame: *f,
                path: format!("/out/f_{f:04}.png"),
            })
            .collect(),
        log_tail: None,
    }
}

async fn a_job_is_split_into_queued_tasks_and_survives_reopening(db: &Db) {
    let id = {
        let store = db.open().await;
        let id = submit(store.as_ref(), r#"{"from":1,"to":12}"#).await;
        let t = tasks(store.as_ref(), id).await;
        let ranges: Vec<_> = t
            .iter()
            .map(|t| (t.task.range.from(), t.task.range.to()))
            .collect();
        assert_eq!(ranges, [(1, 5), (6, 10), (11, 12)]);
        assert!(t.iter().all(|t| t.task.state == TaskState::Queued));
        id
    };
    let store = db.open().await;
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.life.tally.queued, 3);
    assert_eq!(job.life.frames_total, 12);
    assert_eq!(tasks(store.as_ref(), id).await.len(), 3);
    let (page, total) = store.jobs(Some(JobState::Queued), 0, 10).await.unwrap();
    assert_eq!((page.len(), total), (1, 1));
}
both!(a_job_is_split_into_queued_tasks_and_survives_reopening);

/// What an upload of a frame is checked against: a task read by its id (its job, range,
/// lease and state), and a job on an uploaded scene keeps its manifest.
async fn a_task_is_read_by_id_and_a_job_keeps_its_manifest(db: &Db) {
    let manifest = "ab".repeat(32);
    let (id, first) = {
        let store = db.open().await;
        let store = store.as_ref();
        let id = submit(
            store,
            &format!(r#"{{"from":1,"to":7,"manifest":"{manifest}"}}"#),
        )
        .await;
        let other = submit(store, r#"{"from":1,"to":3}"#).await;
        let job = store.job(id).await.unwrap().unwrap();
        assert_eq!(
            job.render.manifest.as_ref().map(|m| m.as_str()),
            Some(manifest.as_str())
        );
        assert_eq!(job.render.scene, None);
        let other = store.job(other).await.unwrap().unwrap();
        assert_eq!(other.render.manifest, None);
        // The collector's list: every manifest a job names, once.
        submit(
            store,
            &format!(r#"{{"from":1,"to":2,"manifest":"{manifest}"}}"#),
        )
        .await;
        let named: Vec<String> = store
            .job_manifests()
            .await
            .unwrap()
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(named, std::slice::from_ref(&manifest));

        let t = tasks(store, id).await;
        let first = t[0].task.id;
        let read = store.task(first).await.unwrap().unwrap();
        assert_eq!(read.task.job, id);
        assert_eq!((read.task.range.from(), read.task.range.to()), (1, 5));
        assert_eq!(read.task.state, TaskState::Queued);
        assert_eq!(read.task.lease, t[0].task.lease);

        // Leased: the read shows the new lease and the running state.
        let fence = leader(store, "o1").await;
        let node = node_up(store, "n1", 1).await;
        let lease = lease(store, &fence, first, &node).await.unwrap();
        let read = store.task(first).await.unwrap().unwrap();
        assert_eq!(read.task.lease, lease);
        assert_eq!(read.task.state.kind(), TaskStateKind::Running);
        // Taken back: the lease it was leased under is no longer running.
        assert!(store
            .apply(first, Command::TakeBack { lease }, Note::default())
            .await
            .unwrap()
            .is_applied());
        let read = store.task(first).await.unwrap().unwrap();
        assert_eq!(read.task.state, TaskState::Queued);
        assert!(store
            .task(TaskId(first.0 + 10_000))
            .await
            .unwrap()
            .is_none());
        (id, first)
    };
    // Both survive reopening the database.
    let store = db.open().await;
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(
        job.render.manifest.as_ref().map(|m| m.as_str()),
        Some(manifest.as_str())
    );
    assert_eq!(store.task(first).await.unwrap().unwrap().task.job, id);
}
both!(a_task_is_read_by_id_and_a_job_keeps_its_manifest);

async fn leases_fence_out_stale_writers(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let fence = leader(store, "o1").await;
    let a = node_up(store, "a", 1).await;
    let b = node_up(store, "b", 1).await;
    let job = submit(store, r#"{"from":1,"to":2,"chunk_size":2}"#).await;
    let task = tasks(store, job).await[0].task.id;
    let first = lease(store, &fence, task, &a).await.expect("leased to a");
    assert!(
        lease(store, &fence, task, &b).await.is_none(),
        "leased twice"
    );
    let on = |node: &NodeId| store.running(RunningFilter::OnNode(node.clone()));
    let on_a: Vec<TaskId> = on(&a).await.unwrap().iter().map(|t| t.task).collect();
    assert_eq!(on_a, [task], "running on a");
    assert!(on(&b).await.unwrap().is_empty(), "nothing runs on b");
    dispatched(store, task, first, "job-a").await;
    // Node a is lost: the task goes back to the queue (atomically with the node going
    // down) and then to node b.
    let changes = store.node_lost(&a).await.unwrap().expect("a was up");
    assert_eq!(changes.len(), 1);
    let stop = changes[0]
        .stop
        .clone()
        .expect("a's render is to be stopped");
    assert_eq!(
        (stop.url.as_str(), stop.node_job.as_str()),
        ("http://a:3000", "job-a")
    );
    assert!(store.node_lost(&a).await.unwrap().is_none(), "already down");
    let second = lease(store, &fence, task, &b).await.expect("leased to b");
    assert!(second > first);
    // Node a's late reports change nothing, frames included.
    for cmd in [
        Command::Progress {
            lease: first,
            new_frames: 0,
        },
        Command::Complete {
            lease: first,
            frames_recorded: 0,
            render_ms: None,
        },
        Command::Fail {
            lease: first,
            reason: "late".into(),
            max_attempts: 3,
        },
    ] {
        let applied = store.apply(task, cmd, frames(&[1])).await.unwrap();
        assert!(
            matches!(applied, Applied::Refused(Refusal::Stale { .. })),
            "{applied:?}"
        );
    }
    assert_eq!(store.job(job).await.unwrap().unwrap().life.frames_done, 0);
    // Node b's reports count.
    dispatched(store, task, second, "job-b").await;
    let progress = Command::Progress {
        lease: second,
        new_frames: 0,
    };
    assert!(store
        .apply(task, progress.clone(), frames(&[1]))
        .await
        .unwrap()
        .is_applied());
    // The same frame again is not counted twice, nor one listed twice in a report.
    assert!(store
        .apply(task, progress.clone(), frames(&[1]))
        .await
        .unwrap()
        .is_applied());
    assert!(store
        .apply(task, progress, frames(&[1, 1]))
        .await
        .unwrap()
        .is_applied());
    assert_eq!(store.job(job).await.unwrap().unwrap().life.frames_done, 1);
    let done = store
        .apply(
            task,
            Command::Complete {
                lease: second,
                frames_recorded: 0,
                render_ms: None,
            },
            frames(&[2, 2]),
        )
        .await
        .unwrap();
    assert!(done.is_applied());
    let job = store.job(job).await.unwrap().unwrap();
    assert_eq!(
        (job.state(), job.life.frames_done),
        (JobState::Completed, 2)
    );
    let t = &tasks(store, job.id()).await[0];
    assert_eq!(
        (t.task.state.kind(), t.task.attempts),
        (TaskStateKind::Completed, 0)
    );
    let frames = store.frames(job.id(), job.range).await.unwrap();
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.node == b));
    let nodes = store.nodes().await.unwrap();
    let b_rec = nodes.iter().find(|n| n.id == b).unwrap();
    assert_eq!(b_rec.frames_rendered, 2);
}
both!(leases_fence_out_stale_writers);

async fn attempts_run_out_and_fail_the_job_and_its_other_tasks(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let fence = leader(store, "o1").await;
    let a = node_up(store, "a", 2).await;
    let id = submit(store, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let t = tasks(store, id).await;
    let (first, second) = (t[0].task.id, t[1].task.id);
    let running = lease(store, &fence, second, &a).await.unwrap();
    dispatched(store, second, running, "job-2").await;
    for attempt in 1..=3 {
        let l = lease(store, &fence, first, &a).await.unwrap();
        let cmd = Command::Fail {
            lease: l,
            reason: "Blender exited with code 1".into(),
            max_attempts: 3,
        };
        let note = Note {
            frames: vec![],
            log_tail: Some(vec!["Error: x".into()]),
        };
        let applied = store.apply(first, cmd, note).await.unwrap();
        let Applied::Changed(changes) = applied else {
            panic!("attempt {attempt} not applied");
        };
        let expected = if attempt < 3 {
            TaskStateKind::Queued
        } else {
            TaskStateKind::Failed
        };
        assert_eq!(changes[0].task.state.kind(), expected, "attempt {attempt}");
        if attempt == 3 {
            // The job failed: its other (running) task is cancelled and stopped.
            assert_eq!(changes.len(), 2);
            assert_eq!(changes[1].task.id, second);
            assert_eq!(changes[1].task.state.kind(), TaskStateKind::Cancelled);
            assert!(changes[1].stop.is_some());
        }
    }
    assert_eq!(store.blocklist(3).await.unwrap(), [], "the job has ended");
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::Failed);
    assert_eq!(
        job.life.failure.as_deref(),
        Some("Blender exited with code 1")
    );
    assert_eq!(
        kinds(&tasks(store, id).await),
        [TaskStateKind::Failed, TaskStateKind::Cancelled]
    );
    let failed = &tasks(store, id).await[0];
    assert_eq!(failed.log_tail, ["Error: x"]);
    assert_eq!(
        store.failed_frames(id).await.unwrap(),
        [FrameSpan { from: 1, to: 5 }],
        "only the failed task's frames, not the cancelled one's"
    );
    // Re-queue gives fresh attempts and a clean blocklist.
    let JobOutcome::Done { job, changes } =
        store.job_command(id, JobCommand::Requeue).await.unwrap()
    else {
        panic!("requeue refused");
    };
    assert_eq!(changes.len(), 2);
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.life.failure, None);
    let t = tasks(store, id).await;
    assert!(t
        .iter()
        .all(|t| t.task.state == TaskState::Queued && t.task.attempts == 0));
    let queue = store.queue_head(10).await.unwrap();
    assert!(queue.iter().all(|q| q.failed_on.is_empty()));
}
both!(attempts_run_out_and_fail_the_job_and_its_other_tasks);

async fn blocklists_count_failures_per_job_and_node(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let fence = leader(store, "o1").await;
    let a = node_up(store, "a", 1).await;
    let id = submit(store, r#"{"from":1,"to":20,"chunk_size":5}"#).await;
    for t in tasks(store, id).await.iter().take(2) {
        let l = lease(store, &fence, t.task.id, &a).await.unwrap();
        let cmd = Command::Fail {
            lease: l,
            reason: "boom".into(),
            max_attempts: 5,
        };
        store.apply(t.task.id, cmd, Note::default()).await.unwrap();
    }
    assert_eq!(store.blocklist(2).await.unwrap(), [(id, a.clone())]);
    assert!(store.blocklist(3).await.unwrap().is_empty());
    let head = store.queue_head(10).await.unwrap();
    let retried: Vec<_> = head.iter().filter(|q| !q.failed_on.is_empty()).collect();
    assert_eq!(retried.len(), 2);
    assert!(retried.iter().all(|q| q.failed_on == [a.clone()]));
}
both!(blocklists_count_failures_per_job_and_node);

async fn job_commands_follow_one_rule(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let fence = leader(store, "o1").await;
    let a = node_up(store, "a", 1).await;
    let id = submit(store, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let task = tasks(store, id).await[0].task.id;
    let l = lease(store, &fence, task, &a).await.unwrap();
    dispatched(store, task, l, "job-1").await;
    // Pause and resume keep the running task; resume of a running job is allowed (no-op).
    let JobOutcome::Done { job, .. } = store.job_command(id, JobCommand::Pause).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(job.state(), JobState::Paused);
    assert!(
        store.queue_head(10).await.unwrap().is_empty(),
        "paused jobs wait"
    );
    store.job_command(id, JobCommand::Resume).await.unwrap();
    assert_eq!(store.queue_head(10).await.unwrap().len(), 1);
    let JobOutcome::Done { job, changes } =
        store.job_command(id, JobCommand::Cancel).await.unwrap()
    else {
        panic!("cancel refused")
    };
    assert_eq!(job.state(), JobState::Cancelled);
    let stops: Vec<_> = changes.iter().filter_map(|c| c.stop.clone()).collect();
    assert_eq!(stops.len(), 1);
    assert_eq!(stops[0].url, "http://a:3000");
    assert!(store.queue_head(10).await.unwrap().is_empty());
    // An ended job can be neither cancelled, paused, resumed nor re-prioritised: one rule.
    for cmd in [
        JobCommand::Cancel,
        JobCommand::Pause,
        JobCommand::Resume,
        JobCommand::Prioritize(5),
    ] {
        let outcome = store.job_command(id, cmd).await.unwrap();
        assert!(
            matches!(outcome, JobOutcome::Refused(_)),
            "{cmd:?}: {outcome:?}"
        );
    }
    assert!(matches!(
        store
            .job_command(JobId::new(), JobCommand::Cancel)
            .await
            .unwrap(),
        JobOutcome::Unknown
    ));
    // The running task's late report is refused: its lease was fenced off by the cancel.
    let late = store
        .apply(
            task,
            Command::Complete {
                lease: l,
                frames_recorded: 0,
                render_ms: None,
            },
            Note::default(),
        )
        .await
        .unwrap();
    assert!(matches!(late, Applied::Refused(_)));
}
both!(job_commands_follow_one_rule);

async fn queue_order_is_priority_then_submission_and_skips_held_jobs(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let old = submit(store, r#"{"from":1,"to":1}"#).await;
    let paused = submit(store, r#"{"from":1,"to":1,"priority":50}"#).await;
    let urgent = submit(store, r#"{"from":1,"to":1,"priority":10}"#).await;
    store.job_command(paused, JobCommand::Pause).await.unwrap();
    let order = |head: Vec<corral_core::schedule::QueuedTask>| -> Vec<JobId> {
        head.into_iter().map(|t| t.job_id).collect()
    };
    assert_eq!(order(store.queue_head(10).await.unwrap()), [urgent, old]);
    store
        .job_command(old, JobCommand::Prioritize(20))
        .await
        .unwrap();
    assert_eq!(order(store.queue_head(10).await.unwrap()), [old, urgent]);
    assert_eq!(store.job(old).await.unwrap().unwrap().priority, 20);
}
both!(queue_order_is_priority_then_submission_and_skips_held_jobs);

/// Hardening defect 1: a task is never leased to a node that is gone, down, draining or
/// full, and stays queued when that is refused.
async fn a_task_is_never_leased_to_a_node_that_cannot_take_it(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let fence = leader(store, "o1").await;
    let id = submit(store, r#"{"from":1,"to":4,"chunk_size":2}"#).await;
    let t = tasks(store, id).await;
    let (task, other) = (t[0].task.id, t[1].task.id);
    let a = store.upsert_node("http://a:3000").await.unwrap().id;
    assert!(
        lease(store, &fence, task, &a).await.is_none(),
        "down until probed"
    );
    store.node_seen(&a, &info(1)).await.unwrap();
    store.set_draining(&a, true).await.unwrap();
    assert!(lease(store, &fence, task, &a).await.is_none(), "draining");
    store.set_draining(&a, false).await.unwrap();
    assert!(lease(store, &fence, task, &a).await.is_some());
    assert!(
        lease(store, &fence, other, &a).await.is_none(),
        "its one slot is taken"
    );
    store.remove_node(&a).await.unwrap();
    assert!(lease(store, &fence, other, &a).await.is_none(), "removed");
    assert!(lease(store, &fence, other, &NodeId::new("never:1"))
        .await
        .is_none());
    assert_eq!(kinds(&tasks(store, id).await), [TaskStateKind::Queued; 2]);
    assert!(store.running(RunningFilter::All).await.unwrap().is_empty());
}
both!(a_task_is_never_leased_to_a_node_that_cannot_take_it);

/// The dispatcher's view of room: only up, undrained nodes with a free slot, each with
/// how many, and the slots of every node that takes work, busy or not.
async fn free_slots_name_only_nodes_with_room(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let fence = leader(s, "o1").await;
    assert_eq!(s.free_slots().await.unwrap(), FreeSlots::default());
    let a = node_up(s, "a", 2).await;
    let b = node_up(s, "b", 1).await;
    let c = node_up(s, "c", 3).await;
    s.upsert_node("http://down:3000").await.unwrap();
    let id = submit(s, r#"{"from":1,"to":20,"chunk_size":5}"#).await;
    let t = tasks(s, id).await;
    lease(s, &fence, t[0].task.id, &a).await.unwrap();
    lease(s, &fence, t[1].task.id, &b).await.unwrap();
    s.set_draining(&c, true).await.unwrap();
    let room = s.free_slots().await.unwrap();
    assert_eq!(
        room.nodes,
        [(a.clone(), 1)],
        "b is full, c draining, one down"
    );
    assert_eq!(room.farm, 3, "a's and b's slots");
    s.set_draining(&c, false).await.unwrap();
    lease(s, &fence, t[2].task.id, &a).await.unwrap();
    let room = s.free_slots().await.unwrap();
    assert_eq!(room.nodes, [(c.clone(), 3)]);
    assert_eq!(room.farm, 6);
    // Each node's `--max-frames`, as its probe answered it, so no piece passes it.
    assert_eq!(room.max_frames, HashMap::from([(c.clone(), 1000)]));
    let mut smaller = info(3);
    smaller.max_frames_per_job = 7;
    s.node_seen(&c, &smaller).await.unwrap();
    let room = s.free_slots().await.unwrap();
    assert_eq!(room.max_frames, HashMap::from([(c.clone(), 7)]));
    assert_eq!(s.node(&c).await.unwrap().unwrap().max_frames, Some(7));
}
both!(free_slots_name_only_nodes_with_room);

/// A lease never hands a node more frames than its `--max-frames`, whatever the round
/// asked for: a piece skipped earlier in a round leaves the next piece of the same task
/// the frames that piece was not sized for. The rest of the task stays queued.
async fn a_lease_gives_no_node_more_than_its_max_frames(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let fence = leader(s, "o1").await;
    let node = s.upsert_node("http://small:3000").await.unwrap();
    let mut small = info(1);
    small.max_frames_per_job = 3;
    assert!(s.node_seen(&node.id, &small).await.unwrap());
    let id = submit(s, r#"{"from":1,"to":10,"chunk_size":10}"#).await;
    let t = tasks(s, id).await;
    assert_eq!(t.len(), 1);
    // The round asked for the whole task (a piece before it was skipped, say).
    lease(s, &fence, t[0].task.id, &node.id).await.unwrap();
    let t = tasks(s, id).await;
    let ranges: Vec<(i64, i64, TaskStateKind)> = t
        .iter()
        .map(|r| (r.task.range.from(), r.task.range.to(), r.task.state.kind()))
        .collect();
    assert_eq!(
        ranges,
        [
            (1, 3, TaskStateKind::Running),
            (4, 10, TaskStateKind::Queued)
        ]
    );
}
both!(a_lease_gives_no_node_more_than_its_max_frames);

/// Removing a node takes its running tasks back in the same transaction, and a running
/// task whose node row is missing anyway (left by an older version) is found and re-queued.
async fn removing_a_node_requeues_its_tasks_and_orphans_are_found(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let fence = leader(s, "o1").await;
    let a = node_up(s, "a", 2).await;
    let id = submit(s, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let t = tasks(s, id).await;
    let l = lease(s, &fence, t[0].task.id, &a).await.unwrap();
    dispatched(s, t[0].task.id, l, "job-1").await;
    let changes = s.remove_node(&a).await.unwrap().unwrap();
    assert_eq!(changes.len(), 1);
    assert!(
        changes[0].stop.is_some(),
        "the removed node's render is stopped"
    );
    assert_eq!(tasks(s, id).await[0].task.state, TaskState::Queued);
    assert!(s.remove_node(&a).await.unwrap().is_none());
    let b = node_up(s, "b", 2).await;
    let l = lease(s, &fence, t[1].task.id, &b).await.unwrap();
    db.exec("DELETE FROM nodes WHERE id = 'b:3000'").await;
    let orphans = s.take_back_orphans().await.unwrap();
    assert_eq!(orphans.len(), 1);
    let task = &tasks(s, id).await[1];
    assert_eq!(task.task.state, TaskState::Queued);
    assert!(task.task.lease > l, "the orphan's lease is fenced off");
    assert!(s.take_back_orphans().await.unwrap().is_empty());
    let job = s.job(id).await.unwrap().unwrap();
    assert_eq!((job.life.tally.queued, job.life.tally.running), (2, 0));
}
both!(removing_a_node_requeues_its_tasks_and_orphans_are_found);

/// Only the holder of the current dispatcher's lease leases tasks; a second orchestrator
/// takes over only when the first stopped renewing it, and the first is fenced off then.
async fn only_the_current_leader_leases(db: &Db) {
    let first = db.open().await;
    let second = db.open().await;
    let a = node_up(first.as_ref(), "a", 4).await;
    let id = submit(first.as_ref(), r#"{"from":1,"to":4,"chunk_size":1}"#).await;
    let t = tasks(first.as_ref(), id).await;
    let short = first
        .lead(&OrchestratorId::new("o1"), Duration::from_millis(300))
        .await
        .unwrap()
        .expect("o1 leads");
    let forged = Fence {
        holder: OrchestratorId::new("o2"),
        term: short.term,
        expires_at: Utc::now() + chrono::TimeDelta::seconds(60),
    };
    assert!(lease(second.as_ref(), &forged, t[0].task.id, &a)
        .await
        .is_none());
    if second.shared() {
        // On a shared database, o2 waits until o1's lease lapses.
        let o2 = OrchestratorId::new("o2");
        assert!(second
            .lead(&o2, Duration::from_secs(30))
            .await
            .unwrap()
            .is_none());
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let o2 = second
        .lead(&OrchestratorId::new("o2"), Duration::from_secs(30))
        .await
        .unwrap()
        .expect("o2 leads once o1's lease lapsed");
    assert!(o2.term > short.term);
    assert!(
        lease(first.as_ref(), &short, t[0].task.id, &a)
            .await
            .is_none(),
        "o1 is fenced off"
    );
    assert!(lease(second.as_ref(), &o2, t[0].task.id, &a)
        .await
        .is_some());
    let running = second
        .running(RunningFilter::OwnedBy(OrchestratorId::new("o2")))
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
}
both!(only_the_current_leader_leases);

/// A task followed by an orchestrator that stopped is adopted by another: same lease, new
/// owner, and the stopped one's later reports still count only under the lease.
async fn tasks_of_a_stopped_orchestrator_are_adopted(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let old = OrchestratorId::new("old");
    let new = OrchestratorId::new("new");
    s.heartbeat(&old, None).await.unwrap();
    let fence = leader(s, "old").await;
    let a = node_up(s, "a", 1).await;
    let id = submit(s, r#"{"from":1,"to":2,"chunk_size":2}"#).await;
    let task = tasks(s, id).await[0].task.id;
    let l = lease(s, &fence, task, &a).await.unwrap();
    dispatched(s, task, l, "job-1").await;
    s.heartbeat(&new, None).await.unwrap();
    let live = s
        .live_orchestrators(Utc::now() - chrono::TimeDelta::seconds(60))
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    let orphaned = s
        .running(RunningFilter::OwnerNotIn(vec![new.clone()]))
        .await
        .unwrap();
    assert_eq!(orphaned.len(), 1);
    assert_eq!(orphaned[0].owner, old);
    let cmd = Command::Adopt {
        lease: l,
        owner: new.clone(),
    };
    assert!(s
        .apply(task, cmd, Note::default())
        .await
        .unwrap()
        .is_applied());
    let mine = s
        .running(RunningFilter::OwnedBy(new.clone()))
        .await
        .unwrap();
    assert_eq!(
        (mine.len(), mine[0].lease, mine[0].node_job.clone()),
        (1, l, Some(NodeJobId::new("job-1")))
    );
    assert!(s
        .running(RunningFilter::OwnerNotIn(vec![new]))
        .await
        .unwrap()
        .is_empty());
}
both!(tasks_of_a_stopped_orchestrator_are_adopted);

/// Events are published only from committed changes, to every store on the database: a
/// second store (another orchestrator) hears the first one's changes.
async fn events_reach_every_orchestrator(db: &Db) {
    let first = db.open().await;
    let second = db.open().await;
    let mut heard = second.subscribe();
    let mut own = first.subscribe();
    let fence = leader(first.as_ref(), "o1").await;
    let a = node_up(first.as_ref(), "a", 1).await;
    let id = submit(first.as_ref(), r#"{"from":1,"to":2,"chunk_size":2}"#).await;
    let task = tasks(first.as_ref(), id).await[0].task.id;
    let l = lease(first.as_ref(), &fence, task, &a).await.unwrap();
    // A refused command publishes nothing.
    let stale = Command::Complete {
        lease: LeaseId(99),
        frames_recorded: 0,
        render_ms: None,
    };
    first.apply(task, stale, Note::default()).await.unwrap();
    first
        .apply(
            task,
            Command::Complete {
                lease: l,
                frames_recorded: 0,
                render_ms: None,
            },
            frames(&[1, 2]),
        )
        .await
        .unwrap();
    let expect_completed = |events: &[Event]| {
        events.iter().any(|e| {
            matches!(e, Event::Job { id: j, state: JobState::Completed, frames_done: 2, .. } if *j == id)
        })
    };
    for (who, rx) in [
        ("the first store", &mut own),
        ("the second store", &mut heard),
    ] {
        if !first.shared() && who == "the second store" {
            // SQLite has one orchestrator: events stay in its process.
            continue;
        }
        let mut events = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !expect_completed(&events) {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(e)) => events.push(e),
                other => panic!("{who} heard {events:?} then {other:?}"),
            }
        }
        let frame_events = events
            .iter()
            .filter(|e| matches!(e, Event::Frame { .. }))
            .count();
        assert_eq!(frame_events, 2, "{who}: {events:?}");
        assert!(events.iter().any(|e| matches!(
            e,
            Event::Node {
                state: NodeState::Up,
                ..
            }
        )));
        assert!(!events.iter().any(|e| matches!(
            e,
            Event::Task {
                state: TaskStateKind::Failed,
                ..
            }
        )));
    }
}
both!(events_reach_every_orchestrator);

async fn unfinished_jobs_are_bounded_and_counts_come_from_tallies(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let sub = JobSubmission::from_body(br#"{"from":1,"to":3,"chunk_size":1}"#, LIMITS).unwrap();
    for n in 0..3 {
        let job = NewJob {
            id: JobId::new(),
            submission: sub.clone(),
            output: "o/f_####".into(),
        };
        let admission = s.insert_job(job, 2).await.unwrap();
        match (n, admission) {
            (0 | 1, Admission::Accepted(_)) => {}
            (2, Admission::Full(2)) => {}
            (n, a) => panic!("submission {n}: {a:?}"),
        }
    }
    let counts = s.counts().await.unwrap();
    assert_eq!(counts.jobs.get(&JobState::Queued), Some(&2));
    assert_eq!(counts.tasks[0], 6, "queued tasks");
    assert_eq!(counts.frames_done, 0);
    s.ping().await.unwrap();
}
both!(unfinished_jobs_are_bounded_and_counts_come_from_tallies);

/// A database written by schema version 1 (times as text, no tallies) is upgraded in place
/// with every job, task, frame and node kept.
#[tokio::test]
async fn a_version_1_database_is_upgraded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.db");
    {
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let v1 = include_str!("../migrations/sqlite/0001_init.sql");
        sqlx::raw_sql(v1).execute(&mut conn).await.unwrap();
        // sqlx's bookkeeping, as version 1 left it.
        let migrator = sqlx::migrate!("./migrations/sqlite");
        let first = migrator.iter().next().unwrap();
        sqlx::raw_sql(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
                installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
                checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        sqlx::query("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (?, ?, TRUE, ?, 0)")
            .bind(first.version)
            .bind(first.description.as_ref())
            .bind(first.checksum.as_ref())
            .execute(&mut conn)
            .await
            .unwrap();
        let job = "01a2206d-292a-714f-ab1b-e73548b774f6";
        sqlx::raw_sql(&format!(
            "INSERT INTO jobs (seq, id, frame_from, frame_to, chunk_size, engine, output, state,
                submitted_at, started_at)
             VALUES (1, '{job}', 1, 4, 2, 'CYCLES', 'o/f_####', 'running',
                '2026-11-30 04:45:12.386687703+00:00', '2026-11-30 04:45:13.5+00:00');
             INSERT INTO nodes (id, url, state, registered_at)
             VALUES ('a:3000', 'http://a:3000', 'up', '2026-11-30 04:45:10+00:00');
             INSERT INTO tasks (id, job_seq, idx, frame_from, frame_to, state, lease, node_id,
                node_job_id, started_at)
             VALUES (1, 1, 0, 1, 2, 'completed', 1, 'a:3000', 'x', '2026-11-30 04:45:13+00:00'),
                    (2, 1, 1, 3, 4, 'running', 1, 'a:3000', 'y', '2026-11-30 04:45:14+00:00');
             INSERT INTO frames (job_seq, frame, node_id, path, done_at)
             VALUES (1, 1, 'a:3000', '/o/f_0001.png', '2026-11-30 04:45:15+00:00'),
                    (1, 2, 'a:3000', '/o/f_0002.png', '2026-11-30 04:45:16+00:00');"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let store = SqlStore::open(&DatabaseUrl::Sqlite(path)).await.unwrap();
    let id: JobId = "01a2206d-292a-714f-ab1b-e73548b774f6".parse().unwrap();
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::Running);
    assert_eq!(job.life.frames_done, 2);
    assert_eq!((job.life.tally.completed, job.life.tally.running), (1, 1));
    // SQLite reads times to the nearest millisecond.
    let submitted = chrono::DateTime::parse_from_rfc3339("2026-11-30T04:45:12.386687703Z")
        .unwrap()
        .timestamp_millis();
    assert!((job.submitted_at.timestamp_millis() - submitted).abs() <= 1);
    let running = store.running(RunningFilter::All).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].node_job, Some(NodeJobId::new("y")));
    assert_eq!(
        running[0].owner.as_str(),
        "",
        "no owner yet: the first orchestrator adopts it"
    );
    let nodes = store.nodes().await.unwrap();
    assert_eq!((nodes.len(), nodes[0].frames_rendered), (1, 2));
}

/// Issue 8: a splittable task is cut at lease time, and a running task's unstarted tail
/// is cut off under its lease; every cut-off becomes a queued task of its own, and the
/// job's tally always counts exactly the tasks there are.
async fn cuts_make_queued_tasks_of_their_tails(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let fence = leader(s, "o1").await;
    let a = node_up(s, "a", 1).await;
    let id = submit_sized(s, r#"{"from":1,"to":10}"#).await;
    let tally_matches = |job: &corral_orchestrator::store::JobRecord, n: usize| {
        assert_eq!(job.life.tally.total(), n as u64, "{:?}", job.life.tally);
    };
    let t = tasks(s, id).await;
    assert_eq!(t.len(), 1, "one splittable task to start with");
    let piece = Assignment {
        task: t[0].task.id,
        node: a.clone(),
        frames: Some(3),
    };
    let leased = s.lease(&[piece], &fence).await.unwrap();
    assert_eq!(leased.len(), 1);
    let head = &leased[0];
    assert_eq!((head.range.from(), head.range.to()), (1, 3));
    let t = tasks(s, id).await;
    let ranges: Vec<_> = t
        .iter()
        .map(|t| (t.task.range.from(), t.task.range.to(), t.task.state.kind()))
        .collect();
    assert_eq!(
        ranges,
        [
            (1, 3, TaskStateKind::Running),
            (4, 10, TaskStateKind::Queued)
        ]
    );
    tally_matches(&s.job(id).await.unwrap().unwrap(), 2);
    // The running head gives up its unstarted tail (frame 3).
    dispatched(s, head.task, head.lease, "job-1").await;
    let steal = Command::Cut {
        lease: Some(head.lease),
        keep_to: 2,
    };
    let Applied::Changed(changes) = s.apply(head.task, steal, Note::default()).await.unwrap()
    else {
        panic!("the cut was refused");
    };
    assert!(changes[0].cut_off.is_some());
    let t = tasks(s, id).await;
    let ranges: Vec<_> = t
        .iter()
        .map(|t| (t.task.range.from(), t.task.range.to(), t.task.state.kind()))
        .collect();
    assert_eq!(
        ranges,
        [
            (1, 2, TaskStateKind::Running),
            (3, 3, TaskStateKind::Queued),
            (4, 10, TaskStateKind::Queued)
        ]
    );
    tally_matches(&s.job(id).await.unwrap().unwrap(), 3);
    // The head completes with its two frames: its range is what counts now.
    let done = s
        .apply(
            head.task,
            Command::Complete {
                lease: head.lease,
                frames_recorded: 0,
                render_ms: None,
            },
            frames(&[1, 2]),
        )
        .await
        .unwrap();
    assert!(done.is_applied(), "{done:?}");
    let queue: Vec<(i64, bool)> = s
        .queue_head(10)
        .await
        .unwrap()
        .iter()
        .map(|q| (q.frames as i64, q.splittable))
        .collect();
    assert_eq!(
        queue,
        [(1, true), (7, true)],
        "the stolen tail is shared out too"
    );
    // A completion missing frames of its range is refused as incomplete.
    let next = s
        .lease(
            &[Assignment {
                task: t[1].task.id,
                node: a.clone(),
                frames: None,
            }],
            &fence,
        )
        .await
        .unwrap();
    let short = Command::Complete {
        lease: next[0].lease,
        frames_recorded: 0,
        render_ms: None,
    };
    assert!(matches!(
        s.apply(next[0].task, short, Note::default()).await.unwrap(),
        Applied::Refused(Refusal::Incomplete { missing: 1 })
    ));
}
both!(cuts_make_queued_tasks_of_their_tails);

/// Issue 8: one lease call cuts many pieces off one task (a round over many idle slots),
/// skips the piece for a node with no free slot, and leases a task of another job beside
/// them. The store ends as leasing the pieces one at a time would leave it: each piece a
/// running task under the lease it was given, the rest queued, each job's tally counting
/// exactly its tasks, and every piece's reports taken under its lease.
async fn one_round_cuts_many_pieces_off_a_task(db: &Db) {
    let store = db.open().await;
    let s = store.as_ref();
    let fence = leader(s, "o1").await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c", "busy", "d"] {
        nodes.push(node_up(s, name, 1).await);
    }
    let [a, b, c, busy, d] = &nodes[..] else {
        unreachable!()
    };
    let other = submit(s, r#"{"from":1,"to":10}"#).await;
    let o = tasks(s, other).await;
    assert_eq!(o.len(), 2);
    lease(s, &fence, o[0].task.id, busy).await.unwrap();
    let sized = submit_sized(s, r#"{"from":1,"to":20}"#).await;
    let head = tasks(s, sized).await[0].task.id;
    let piece = |node: &NodeId, frames: Option<u64>| Assignment {
        task: head,
        node: node.clone(),
        frames,
    };
    let round = [
        piece(a, Some(3)),
        piece(busy, Some(4)),
        piece(b, Some(4)),
        piece(c, Some(5)),
        Assignment {
            task: o[1].task.id,
            node: d.clone(),
            frames: None,
        },
    ];
    let leased = s.lease(&round, &fence).await.unwrap();
    let got: Vec<(i64, i64, &str)> = leased
        .iter()
        .map(|t| (t.range.from(), t.range.to(), t.node.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (6, 10, "d:3000"),
            (1, 3, "a:3000"),
            (4, 7, "b:3000"),
            (8, 12, "c:3000")
        ],
        "jobs in submission order, pieces in order, none for the busy node"
    );
    // What was written is what was answered.
    let rows = tasks(s, sized).await;
    let written: Vec<(i64, i64, TaskStateKind, Option<&str>)> = rows
        .iter()
        .map(|r| {
            let node = r.task.last_node.as_ref().map(NodeId::as_str);
            (
                r.task.range.from(),
                r.task.range.to(),
                r.task.state.kind(),
                node,
            )
        })
        .collect();
    assert_eq!(
        written,
        [
            (1, 3, TaskStateKind::Running, Some("a:3000")),
            (4, 7, TaskStateKind::Running, Some("b:3000")),
            (8, 12, TaskStateKind::Running, Some("c:3000")),
            (13, 20, TaskStateKind::Queued, None)
        ]
    );
    for t in &leased[1..] {
        let row = rows.iter().find(|r| r.task.id == t.task).expect("its row");
        assert_eq!(row.task.lease, t.lease, "task {}", t.task);
    }
    let job = s.job(sized).await.unwrap().unwrap();
    assert_eq!((job.life.tally.running, job.life.tally.queued), (3, 1));
    assert_eq!(job.life.tally.total(), 4);
    let job = s.job(other).await.unwrap().unwrap();
    assert_eq!((job.life.tally.running, job.life.tally.queued), (2, 0));
    // Each piece's reports are taken under the lease it was given.
    for (i, t) in leased[1..].iter().enumerate() {
        dispatched(s, t.task, t.lease, &format!("job-{i}")).await;
        let list: Vec<i64> = (t.range.from()..=t.range.to()).collect();
        let done = Command::Complete {
            lease: t.lease,
            frames_recorded: 0,
            render_ms: None,
        };
        let applied = s.apply(t.task, done, frames(&list)).await.unwrap();
        assert!(applied.is_applied(), "{applied:?}");
    }
    let job = s.job(sized).await.unwrap().unwrap();
    assert_eq!(job.life.frames_done, 12);
    assert_eq!((job.life.tally.completed, job.life.tally.queued), (3, 1));
}
both!(one_round_cuts_many_pieces_off_a_task);

/// Tokens are stored by hash only, found by it, listed, revoked once (the first time
/// kept); a node's secret is kept with it; a node's earlier credentials are revoked by name.
async fn tokens_are_stored_by_hash_and_revoked(db: &Db) {
    let store = db.open().await;
    let hash = |c: char| c.to_string().repeat(64);
    let client = store
        .create_token(TokenKind::Client, &hash('a'), "laptop")
        .await
        .unwrap();
    assert_eq!(client.kind, TokenKind::Client);
    assert_eq!(client.name, "laptop");
    assert_eq!(client.revoked, None);
    let join = store
        .create_token(TokenKind::Join, &hash('b'), "")
        .await
        .unwrap();
    assert_ne!(client.id, join.id);
    assert!(
        store
            .create_token(TokenKind::Client, &hash('a'), "again")
            .await
            .is_err(),
        "a hash is unique"
    );
    let found = store.token_by_hash(&hash('a')).await.unwrap().unwrap();
    assert_eq!(found, client);
    assert_eq!(store.token_by_hash(&hash('c')).await.unwrap(), None);

    assert!(store.revoke_token(client.id).await.unwrap());
    assert!(!store.revoke_token(9999).await.unwrap());
    let revoked = store.token_by_hash(&hash('a')).await.unwrap().unwrap();
    let when = revoked.revoked.expect("revoked");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert!(store.revoke_token(client.id).await.unwrap());
    let again = store.token_by_hash(&hash('a')).await.unwrap().unwrap();
    assert_eq!(
        again.revoked,
        Some(when),
        "the first revocation's time is kept"
    );

    for c in ['d', 'e'] {
        store
            .create_token(TokenKind::Node, &hash(c), "n1:3000")
            .await
            .unwrap();
    }
    store
        .create_token(TokenKind::Node, &hash('f'), "n2:3000")
        .await
        .unwrap();
    assert_eq!(
        store
            .revoke_tokens_named(TokenKind::Node, "n1:3000")
            .await
            .unwrap(),
        2
    );
    let all = db.open().await.tokens().await.unwrap();
    assert_eq!(all.len(), 5);
    let live: Vec<&str> = all
        .iter()
        .filter(|t| t.revoked.is_none())
        .map(|t| t.kind.name())
        .collect();
    assert_eq!(live, ["join", "node"]);

    let node = store.upsert_node("http://n1:3000").await.unwrap();
    assert_eq!(node.secret, None);
    let secret = NodeSecret("s3cret".into());
    store.set_node_secret(&node.id, &secret).await.unwrap();
    let node = store.node(&node.id).await.unwrap().unwrap();
    assert_eq!(node.secret, Some(secret));
    assert!(
        !format!("{node:?}").contains("s3cret"),
        "Debug hides the secret"
    );
}
both!(tokens_are_stored_by_hash_and_revoked);

both!(a_probe_round_moves_only_the_last_seen_of_nodes_still_up);
async fn a_probe_round_moves_only_the_last_seen_of_nodes_still_up(db: &Db) {
    let store = db.open().await;
    let store = store.as_ref();
    let _fence = leader(store, "o1").await;
    let a = node_up(store, "a", 1).await;
    let b = node_up(store, "b", 1).await;
    assert!(store.node_lost(&b).await.unwrap().is_some(), "b was up");
    let before = |id: &NodeId| {
        let id = id.clone();
        async move { store.node(&id).await.unwrap().unwrap() }
    };
    let (a_before, b_before) = (before(&a).await, before(&b).await);
    let at = a_before.last_seen.unwrap() + chrono::TimeDelta::seconds(30);
    // Many at once, past the statement's size, and unknown ids among them.
    let mut ids: Vec<NodeId> = (0..1200)
        .map(|i| NodeId::new(format!("nobody-{i}")))
        .collect();
    ids.push(a.clone());
    ids.push(b.clone());
    store.nodes_still_up(&ids, at).await.unwrap();
    let (a_after, b_after) = (before(&a).await, before(&b).await);
    assert_eq!(
        a_after.last_seen,
        Some(at),
        "a is up: its probe is recorded"
    );
    assert_eq!(a_after.state, NodeState::Up);
    // A node marked down meanwhile stays down, as last seen: coming back up is
    // `node_seen`'s, with the events it sends.
    assert_eq!(b_after.state, NodeState::Down);
    assert_eq!(b_after.last_seen, b_before.last_seen);
    assert_eq!(
        store.nodes().await.unwrap().len(),
        2,
        "nothing else written"
    );
}
