//! The store on a real SQLite file: leases, attempts, blocklists, take-backs, job states,
//! and that everything survives reopening the file.

#![allow(clippy::unwrap_used)]

use corral_core::orchestrator_api::{JobState, JobSubmission, SubmitLimits, TaskState};
use corral_core::JobId;
use corral_orchestrator::store::{Store, TaskRow};

const LIMITS: SubmitLimits = SubmitLimits {
    max_frames: 1000,
    default_chunk_size: 5,
};

async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (
        Store::open(&dir.path().join("corral.db")).await.unwrap(),
        dir,
    )
}

async fn job(store: &Store, body: &str) -> (JobId, i64) {
    let sub = JobSubmission::from_body(body.as_bytes(), LIMITS).unwrap();
    let id = JobId::new();
    let row = store.insert_job(id, &sub, "out/f_####").await.unwrap();
    (id, row.seq)
}

/// A node that registered and answered its first probe (so it may take tasks).
async fn node_up(store: &Store, name: &str) {
    store
        .upsert_node(&format!("http://{name}:3000"))
        .await
        .unwrap();
    store
        .node_seen(&format!("{name}:3000"), 1, name, "3.4.1")
        .await
        .unwrap();
}

async fn tasks(store: &Store, seq: i64) -> Vec<TaskRow> {
    store.tasks_of(seq).await.unwrap()
}

#[tokio::test]
async fn a_job_is_split_into_queued_tasks_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corral.db");
    let id = {
        let store = Store::open(&path).await.unwrap();
        let (id, seq) = job(&store, r#"{"from":1,"to":12}"#).await;
        let t = tasks(&store, seq).await;
        let ranges: Vec<_> = t.iter().map(|t| (t.frame_from, t.frame_to)).collect();
        assert_eq!(ranges, [(1, 5), (6, 10), (11, 12)]);
        assert!(t.iter().all(|t| t.state == "queued"));
        id
    };
    let store = Store::open(&path).await.unwrap();
    let row = store.job(&id.to_string()).await.unwrap().unwrap();
    assert_eq!(row.job_state().unwrap(), JobState::Queued);
    assert_eq!(tasks(&store, row.seq).await.len(), 3);
}

#[tokio::test]
async fn leases_fence_out_stale_writers() {
    let (store, _dir) = store().await;
    node_up(&store, "a").await;
    node_up(&store, "b").await;
    let (_, seq) = job(&store, r#"{"from":1,"to":2,"chunk_size":2}"#).await;
    let task = tasks(&store, seq).await[0].id;
    let first = store.lease_task(task, "a:3000").await.unwrap().unwrap();
    assert!(
        store.lease_task(task, "b:3000").await.unwrap().is_none(),
        "leased twice"
    );
    assert!(store
        .set_node_job(task, first.lease, "job-a")
        .await
        .unwrap());
    // Node a is lost: the task goes back to the queue and to node b.
    let (stop, jobs) = store.requeue_node_tasks("a:3000").await.unwrap();
    assert_eq!(jobs, [seq]);
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].node_job_id, "job-a");
    let second = store.lease_task(task, "b:3000").await.unwrap().unwrap();
    assert!(second.lease > first.lease);
    // Node a's late report changes nothing.
    assert!(!store.lease_is_current(task, first.lease).await.unwrap());
    let frames = vec![(1, "/out/f_0001.png".to_string())];
    assert!(store
        .record_progress(&first, &frames, true)
        .await
        .unwrap()
        .is_empty());
    assert!(!store.complete_task(&first, &[]).await.unwrap());
    assert!(store
        .fail_attempt(&first, "late", &[], 3)
        .await
        .unwrap()
        .is_none());
    // Node b's report counts.
    assert_eq!(
        store.record_progress(&second, &frames, true).await.unwrap(),
        frames
    );
    assert!(store.complete_task(&second, &[]).await.unwrap());
    assert_eq!(tasks(&store, seq).await[0].state, "completed");
    assert_eq!(tasks(&store, seq).await[0].attempts, 0);
}

#[tokio::test]
async fn attempts_run_out_and_fail_the_job_and_its_other_tasks() {
    let (store, _dir) = store().await;
    node_up(&store, "a").await;
    let (id, seq) = job(&store, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let [first, second] = [
        tasks(&store, seq).await[0].id,
        tasks(&store, seq).await[1].id,
    ];
    let running = store.lease_task(second, "a:3000").await.unwrap().unwrap();
    store
        .set_node_job(second, running.lease, "job-2")
        .await
        .unwrap();
    for attempt in 1..=3 {
        let lease = store.lease_task(first, "a:3000").await.unwrap().unwrap();
        let state = store
            .fail_attempt(
                &lease,
                "Blender exited with code 1",
                &["Error: x".into()],
                3,
            )
            .await
            .unwrap();
        let expected = if attempt < 3 {
            TaskState::Queued
        } else {
            TaskState::Failed
        };
        assert_eq!(state, Some(expected), "attempt {attempt}");
    }
    let blocked = store.blocklist(3).await.unwrap();
    assert_eq!(blocked, [(seq, id.to_string(), "a:3000".to_string())]);
    let (job, stop) = store.refresh_job(seq).await.unwrap();
    let job = job.unwrap();
    assert_eq!(job.job_state().unwrap(), JobState::Failed);
    assert_eq!(job.failure.as_deref(), Some("Blender exited with code 1"));
    assert_eq!(
        stop.len(),
        1,
        "the other running task is stopped on its node"
    );
    let states: Vec<_> = tasks(&store, seq)
        .await
        .into_iter()
        .map(|t| t.state)
        .collect();
    assert_eq!(states, ["failed", "cancelled"]);
    // Re-queue gives fresh attempts and a clean blocklist.
    assert_eq!(store.requeue_failed(seq).await.unwrap(), 2);
    assert!(store.blocklist(3).await.unwrap().is_empty());
    let (job, _) = store.refresh_job(seq).await.unwrap();
    assert_eq!(job.unwrap().job_state().unwrap(), JobState::Queued);
}

#[tokio::test]
async fn cancelling_takes_back_running_tasks_and_drops_queued_ones() {
    let (store, _dir) = store().await;
    node_up(&store, "a").await;
    let (_, seq) = job(&store, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let task = tasks(&store, seq).await[0].id;
    let lease = store.lease_task(task, "a:3000").await.unwrap().unwrap();
    store
        .set_node_job(task, lease.lease, "job-1")
        .await
        .unwrap();
    let stop = store.cancel_job(seq).await.unwrap();
    assert_eq!(stop.len(), 1);
    assert_eq!(stop[0].node_url, "http://a:3000");
    let (job, _) = store.refresh_job(seq).await.unwrap();
    assert_eq!(job.unwrap().job_state().unwrap(), JobState::Cancelled);
    assert!(store.queued_tasks(10).await.unwrap().is_empty());
    // Cancelling an ended job changes nothing.
    assert!(store.cancel_job(seq).await.unwrap().is_empty());
}

#[tokio::test]
async fn queue_order_is_priority_then_submission_and_skips_paused_jobs() {
    let (store, _dir) = store().await;
    let (_, old) = job(&store, r#"{"from":1,"to":1}"#).await;
    let (_, paused) = job(&store, r#"{"from":1,"to":1,"priority":50}"#).await;
    let (_, urgent) = job(&store, r#"{"from":1,"to":1,"priority":10}"#).await;
    store.set_paused(paused, true).await.unwrap();
    let order: Vec<i64> = store
        .queued_tasks(10)
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.job_seq)
        .collect();
    assert_eq!(order, [urgent, old]);
}

#[tokio::test]
async fn unconfirmed_dispatches_are_requeued_on_restart() {
    let (store, _dir) = store().await;
    node_up(&store, "a").await;
    let (_, seq) = job(&store, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let t = tasks(&store, seq).await;
    let confirmed = store.lease_task(t[0].id, "a:3000").await.unwrap().unwrap();
    store
        .set_node_job(t[0].id, confirmed.lease, "job-1")
        .await
        .unwrap();
    store.lease_task(t[1].id, "a:3000").await.unwrap().unwrap();
    assert_eq!(store.requeue_unconfirmed().await.unwrap(), 1);
    let leases = store.running_leases().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].node_job_id.as_deref(), Some("job-1"));
}

/// Hardening defect 1: a node removed between a dispatch round's read and its lease must
/// not receive the task, and the task must stay queued (before the fix it was left
/// `running` on a node nobody knew, forever).
#[tokio::test]
async fn a_task_is_never_leased_to_a_node_that_is_gone_down_or_draining() {
    let (store, _dir) = store().await;
    store.upsert_node("http://a:3000").await.unwrap();
    let (_, seq) = job(&store, r#"{"from":1,"to":2,"chunk_size":2}"#).await;
    let task = tasks(&store, seq).await[0].id;
    // New nodes are down until a probe answers: nothing is leased to them.
    assert!(store.lease_task(task, "a:3000").await.unwrap().is_none());
    store.node_seen("a:3000", 1, "a", "3.4.1").await.unwrap();
    store.set_draining("a:3000", true).await.unwrap();
    assert!(store.lease_task(task, "a:3000").await.unwrap().is_none());
    store.set_draining("a:3000", false).await.unwrap();
    store.remove_node("a:3000").await.unwrap();
    assert!(store.lease_task(task, "a:3000").await.unwrap().is_none());
    assert!(store
        .lease_task(task, "never-known:1")
        .await
        .unwrap()
        .is_none());
    let t = &tasks(&store, seq).await[0];
    assert_eq!((t.state.as_str(), t.node_id.as_deref()), ("queued", None));
    assert!(store.running_leases().await.unwrap().is_empty());
}

/// Removing a node takes its running tasks back in the same transaction, and a running
/// task whose node row is missing anyway (an older database) is found and re-queued.
#[tokio::test]
async fn removing_a_node_requeues_its_tasks_and_orphans_are_found() {
    let (store, dir) = store().await;
    store.upsert_node("http://a:3000").await.unwrap();
    store.node_seen("a:3000", 2, "a", "3.4.1").await.unwrap();
    let (_, seq) = job(&store, r#"{"from":1,"to":10,"chunk_size":5}"#).await;
    let t = tasks(&store, seq).await;
    let lease = store.lease_task(t[0].id, "a:3000").await.unwrap().unwrap();
    store
        .set_node_job(t[0].id, lease.lease, "job-1")
        .await
        .unwrap();
    let (stop, jobs) = store.remove_node("a:3000").await.unwrap().unwrap();
    assert_eq!((stop.len(), jobs), (1, vec![seq]));
    assert_eq!(tasks(&store, seq).await[0].state, "queued");
    assert!(store.remove_node("a:3000").await.unwrap().is_none());

    // Simulate what older versions left behind: a task running on a node row that is gone.
    store.upsert_node("http://b:3000").await.unwrap();
    store.node_seen("b:3000", 2, "b", "3.4.1").await.unwrap();
    let lease = store.lease_task(t[1].id, "b:3000").await.unwrap().unwrap();
    drop(store);
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("corral.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("DELETE FROM nodes WHERE id = 'b:3000'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let store = Store::open(&dir.path().join("corral.db")).await.unwrap();
    assert_eq!(store.requeue_orphaned().await.unwrap(), [seq]);
    let t = &tasks(&store, seq).await[1];
    assert_eq!(t.state, "queued");
    assert!(t.lease > lease.lease, "the orphan's lease is fenced off");
    assert!(store.requeue_orphaned().await.unwrap().is_empty());
}
