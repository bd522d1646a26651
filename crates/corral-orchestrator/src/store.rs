//! The orchestrator's database: every job, task, frame and node, in SQLite (WAL mode,
//! versioned migrations in `migrations/`). All SQL lives here, behind plain methods, so a
//! PostgreSQL store can later implement the same methods without touching the scheduler.
//!
//! Architecture invariant: the database is the only source of truth. A task's `lease`
//! number changes on every dispatch and every take-back; every write about a running task
//! names the lease it holds and is ignored if the lease moved on, so a slow watcher of a
//! lost node can never overwrite the work of the node that took over.

use chrono::{DateTime, Utc};
use corral_core::chunk;
use corral_core::orchestrator_api::{JobState, JobSubmission, NodeState, TaskState};
use corral_core::JobId;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{FromRow, SqlitePool};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database holds a value this version cannot read: {0}")]
    Corrupt(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, Clone, FromRow)]
pub struct JobRow {
    pub seq: i64,
    pub id: String,
    pub scene: Option<String>,
    pub frame_from: i64,
    pub frame_to: i64,
    pub chunk_size: i64,
    pub priority: i64,
    pub engine: String,
    pub format: Option<String>,
    pub output: String,
    pub state: String,
    pub paused: bool,
    pub cancelled: bool,
    pub failure: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRow {
    pub fn job_id(&self) -> Result<JobId> {
        self.id
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("job id `{}`", self.id)))
    }

    pub fn job_state(&self) -> Result<JobState> {
        JobState::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("job state `{}`", self.state)))
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct TaskRow {
    pub id: i64,
    pub job_seq: i64,
    pub idx: i64,
    pub frame_from: i64,
    pub frame_to: i64,
    pub state: String,
    pub attempts: i64,
    pub lease: i64,
    pub node_id: Option<String>,
    pub node_job_id: Option<String>,
    pub failure: Option<String>,
    pub log_tail: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl TaskRow {
    pub fn task_state(&self) -> Result<TaskState> {
        TaskState::parse(&self.state)
            .ok_or_else(|| StoreError::Corrupt(format!("task state `{}`", self.state)))
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct FrameRow {
    pub frame: i64,
    pub node_id: String,
    pub path: String,
}

#[derive(Debug, Clone, FromRow)]
pub struct NodeRow {
    pub id: String,
    pub url: String,
    pub state: String,
    pub draining: bool,
    pub slots: i64,
    pub hostname: Option<String>,
    pub blender_version: Option<String>,
    pub last_seen: Option<DateTime<Utc>>,
    pub registered_at: DateTime<Utc>,
}

impl NodeRow {
    pub fn node_state(&self) -> NodeState {
        if self.state == "up" {
            NodeState::Up
        } else {
            NodeState::Down
        }
    }
}

/// A queued task with what the scheduling policy needs to place it.
#[derive(Debug, Clone, FromRow)]
pub struct QueuedTaskRow {
    pub task_id: i64,
    pub job_seq: i64,
    pub job_id: String,
    pub priority: i64,
    pub idx: i64,
    /// Comma-separated nodes the task failed on.
    pub failed_on: Option<String>,
}

/// A task leased to a node.
#[derive(Debug, Clone, FromRow)]
pub struct Lease {
    pub task_id: i64,
    pub lease: i64,
    pub job_seq: i64,
    pub job_id: String,
    pub node_id: String,
    pub node_url: String,
    pub node_job_id: Option<String>,
    pub frame_from: i64,
    pub frame_to: i64,
    pub scene: Option<String>,
    pub engine: String,
    pub format: Option<String>,
    pub output: String,
    pub progress_at: Option<DateTime<Utc>>,
}

/// A job on a node that should be stopped because its task went elsewhere or ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeJob {
    pub node_url: String,
    pub node_job_id: String,
}

const LEASE_SELECT: &str = "SELECT t.id AS task_id, t.lease, t.job_seq, j.id AS job_id,
        t.node_id AS node_id, n.url AS node_url, t.node_job_id, t.frame_from, t.frame_to,
        j.scene, j.engine, j.format, j.output, t.progress_at
    FROM tasks t JOIN jobs j ON j.seq = t.job_seq JOIN nodes n ON n.id = t.node_id";

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL survives a crash of this process (kill -9) but may lose the last
            // commits if the machine loses power; that is fine for progress (a task whose
            // record is lost is rendered again) and saves an fsync per write, which bounds
            // how many tasks a second the farm can schedule. Accepting a job is FULL: see
            // `insert_job`.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // One connection: SQLite runs one writer at a time anyway, and a single connection
        // never meets SQLITE_BUSY when a read transaction tries to become a write one.
        // Every statement here is short, so nothing waits long behind another.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Store { pool })
    }

    // ---- jobs ----------------------------------------------------------------------

    /// Stores a job and its tasks in one transaction, synced to disk before it returns (a
    /// `202` promises the job survives even a power loss).
    pub async fn insert_job(&self, id: JobId, sub: &JobSubmission, output: &str) -> Result<JobRow> {
        let now = Utc::now();
        let mut conn = self.pool.acquire().await?;
        // The pool has one connection, so this setting covers exactly this transaction.
        sqlx::query("PRAGMA synchronous = FULL")
            .execute(&mut *conn)
            .await?;
        let job = Self::insert_job_tx(&mut conn, id, sub, output, now).await;
        sqlx::query("PRAGMA synchronous = NORMAL")
            .execute(&mut *conn)
            .await?;
        job
    }

    async fn insert_job_tx(
        conn: &mut sqlx::SqliteConnection,
        id: JobId,
        sub: &JobSubmission,
        output: &str,
        now: DateTime<Utc>,
    ) -> Result<JobRow> {
        use sqlx::Connection;
        let mut tx = conn.begin().await?;
        let job: JobRow = sqlx::query_as(
            "INSERT INTO jobs (id, scene, frame_from, frame_to, chunk_size, priority, engine,
                format, output, state, submitted_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?) RETURNING *",
        )
        .bind(id.to_string())
        .bind(&sub.scene)
        .bind(sub.range.from())
        .bind(sub.range.to())
        .bind(sub.chunk_size as i64)
        .bind(sub.priority)
        .bind(sub.engine.blender_name())
        .bind(sub.format.map(|f| f.blender_name()))
        .bind(output)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        for (idx, range) in chunk::split(sub.range, sub.chunk_size)
            .into_iter()
            .enumerate()
        {
            sqlx::query(
                "INSERT INTO tasks (job_seq, idx, frame_from, frame_to, state)
                 VALUES (?, ?, ?, ?, 'queued')",
            )
            .bind(job.seq)
            .bind(idx as i64)
            .bind(range.from())
            .bind(range.to())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(job)
    }

    pub async fn job(&self, id: &str) -> Result<Option<JobRow>> {
        Ok(sqlx::query_as("SELECT * FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn job_by_seq(&self, seq: i64) -> Result<Option<JobRow>> {
        Ok(sqlx::query_as("SELECT * FROM jobs WHERE seq = ?")
            .bind(seq)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Jobs, newest first, optionally of one state; and how many there are in all.
    pub async fn list_jobs(
        &self,
        state: Option<JobState>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<JobRow>, u64)> {
        let state = state.map(JobState::as_str);
        let rows = sqlx::query_as(
            "SELECT * FROM jobs WHERE (?1 IS NULL OR state = ?1) ORDER BY seq DESC LIMIT ?2 OFFSET ?3",
        )
        .bind(state)
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE (?1 IS NULL OR state = ?1)")
                .bind(state)
                .fetch_one(&self.pool)
                .await?;
        Ok((rows, total as u64))
    }

    pub async fn tasks_of(&self, job_seq: i64) -> Result<Vec<TaskRow>> {
        Ok(sqlx::query_as(
            "SELECT id, job_seq, idx, frame_from, frame_to, state, attempts, lease, node_id,
                node_job_id, failure, log_tail, started_at, finished_at
             FROM tasks WHERE job_seq = ? ORDER BY idx",
        )
        .bind(job_seq)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn frames_of(&self, job_seq: i64) -> Result<Vec<FrameRow>> {
        Ok(sqlx::query_as(
            "SELECT frame, node_id, path FROM frames WHERE job_seq = ? ORDER BY frame",
        )
        .bind(job_seq)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Frames done and the time of the first and last, for progress and ETA.
    pub async fn frame_progress(
        &self,
        job_seq: i64,
    ) -> Result<(u64, Option<DateTime<Utc>>, Option<DateTime<Utc>>)> {
        let row: (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(done_at), MAX(done_at) FROM frames WHERE job_seq = ?",
        )
        .bind(job_seq)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.0 as u64, row.1, row.2))
    }

    pub async fn count_unfinished_jobs(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running', 'paused')",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Recomputes a job's state from its tasks and stores it. When the job has just
    /// failed, its other tasks are cancelled; the node jobs to stop are returned.
    pub async fn refresh_job(&self, job_seq: i64) -> Result<(Option<JobRow>, Vec<NodeJob>)> {
        let mut tx = self.pool.begin().await?;
        let Some(job): Option<JobRow> = sqlx::query_as("SELECT * FROM jobs WHERE seq = ?")
            .bind(job_seq)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok((None, vec![]));
        };
        let states: Vec<String> = sqlx::query_scalar("SELECT state FROM tasks WHERE job_seq = ?")
            .bind(job_seq)
            .fetch_all(&mut *tx)
            .await?;
        let states: Vec<TaskState> = states
            .iter()
            .map(|s| TaskState::parse(s).ok_or_else(|| StoreError::Corrupt(s.clone())))
            .collect::<Result<_>>()?;
        let new =
            corral_core::orchestrator_api::job_state_from_tasks(&states, job.paused, job.cancelled);
        let old = job.job_state()?;
        let mut stop = Vec::new();
        if new == JobState::Failed && old != JobState::Failed {
            stop = take_back_running(&mut tx, Scope::Job(job_seq), "cancelled").await?;
            sqlx::query(
                "UPDATE tasks SET state = 'cancelled' WHERE job_seq = ? AND state = 'queued'",
            )
            .bind(job_seq)
            .execute(&mut *tx)
            .await?;
        }
        let now = Utc::now();
        let row: JobRow = sqlx::query_as(
            "UPDATE jobs SET state = ?,
                started_at = CASE WHEN started_at IS NULL AND ? THEN ? ELSE started_at END,
                finished_at = CASE WHEN ? THEN COALESCE(finished_at, ?) ELSE NULL END,
                failure = CASE WHEN ? = 'failed' THEN COALESCE(failure,
                    (SELECT failure FROM tasks WHERE job_seq = jobs.seq AND state = 'failed' LIMIT 1))
                    ELSE failure END
             WHERE seq = ? RETURNING *",
        )
        .bind(new.as_str())
        .bind(states.iter().any(|s| *s != TaskState::Queued && *s != TaskState::Cancelled))
        .bind(now)
        .bind(new.is_terminal())
        .bind(now)
        .bind(new.as_str())
        .bind(job_seq)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((Some(row), stop))
    }

    /// Marks a job cancelled: queued tasks are dropped and running ones taken back; the
    /// node jobs to stop are returned. An ended job is left as it is.
    pub async fn cancel_job(&self, job_seq: i64) -> Result<Vec<NodeJob>> {
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE jobs SET cancelled = 1 WHERE seq = ? AND state IN ('queued', 'running', 'paused')",
        )
        .bind(job_seq)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(vec![]);
        }
        let stop = take_back_running(&mut tx, Scope::Job(job_seq), "cancelled").await?;
        sqlx::query("UPDATE tasks SET state = 'cancelled' WHERE job_seq = ? AND state = 'queued'")
            .bind(job_seq)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stop)
    }

    pub async fn set_paused(&self, job_seq: i64, paused: bool) -> Result<()> {
        sqlx::query("UPDATE jobs SET paused = ? WHERE seq = ?")
            .bind(paused)
            .bind(job_seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Puts a failed job's unfinished tasks back in the queue with fresh attempts and a
    /// clean blocklist. Returns how many tasks were requeued.
    pub async fn requeue_failed(&self, job_seq: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "UPDATE tasks SET state = 'queued', attempts = 0, failure = NULL, finished_at = NULL
             WHERE job_seq = ? AND state IN ('failed', 'cancelled')",
        )
        .bind(job_seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM task_failures WHERE job_seq = ?")
            .bind(job_seq)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE jobs SET cancelled = 0, failure = NULL, finished_at = NULL WHERE seq = ?",
        )
        .bind(job_seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Fails every queued task of a job that no node may run any more.
    pub async fn fail_unrunnable(&self, job_seq: i64, reason: &str) -> Result<()> {
        sqlx::query(
            "UPDATE tasks SET state = 'failed', failure = ?, finished_at = ?
             WHERE job_seq = ? AND state = 'queued'",
        )
        .bind(reason)
        .bind(Utc::now())
        .bind(job_seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // ---- scheduling ----------------------------------------------------------------

    /// Queued tasks of jobs that may run (not paused, not cancelled), oldest first within
    /// priority, with the nodes each already failed on.
    pub async fn queued_tasks(&self, limit: u64) -> Result<Vec<QueuedTaskRow>> {
        Ok(sqlx::query_as(
            "SELECT t.id AS task_id, t.job_seq, j.id AS job_id, j.priority, t.idx,
                (SELECT GROUP_CONCAT(DISTINCT f.node_id) FROM task_failures f WHERE f.task_id = t.id)
                    AS failed_on
             FROM tasks t JOIN jobs j ON j.seq = t.job_seq
             WHERE t.state = 'queued' AND j.paused = 0 AND j.cancelled = 0
             ORDER BY j.priority DESC, j.seq, t.idx LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// `(job id, node id)` pairs where the node failed at least `threshold` tasks of the
    /// job, among jobs that still have queued tasks.
    pub async fn blocklist(&self, threshold: u32) -> Result<Vec<(i64, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT f.job_seq, j.id, f.node_id FROM task_failures f JOIN jobs j ON j.seq = f.job_seq
             WHERE j.state IN ('queued', 'running')
             GROUP BY f.job_seq, f.node_id HAVING COUNT(*) >= ?",
        )
        .bind(threshold as i64)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Running tasks per node.
    pub async fn running_per_node(&self) -> Result<HashMap<String, Vec<i64>>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, id FROM tasks WHERE state = 'running' AND node_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut map: HashMap<String, Vec<i64>> = HashMap::new();
        for (node, task) in rows {
            map.entry(node).or_default().push(task);
        }
        Ok(map)
    }

    /// Leases a queued task to a node. `None`, and nothing changed, if the task is no
    /// longer queued or the node is no longer known, up and taking work: a node removed
    /// between a dispatch round's read and this write must not receive a task nobody will
    /// ever dispatch or watch.
    pub async fn lease_task(&self, task_id: i64, node_id: &str) -> Result<Option<Lease>> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        let updated = sqlx::query(
            "UPDATE tasks SET state = 'running', node_id = ?1, node_job_id = NULL,
                lease = lease + 1, started_at = ?2, finished_at = NULL, progress_at = ?2
             WHERE id = ?3 AND state = 'queued'
               AND EXISTS (SELECT 1 FROM nodes WHERE id = ?1 AND state = 'up' AND draining = 0)",
        )
        .bind(node_id)
        .bind(now)
        .bind(task_id)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let lease = sqlx::query_as(&format!("{LEASE_SELECT} WHERE t.id = ?"))
            .bind(task_id)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(lease)
    }

    /// Records the node's job id for a lease. False if the lease moved on meanwhile.
    pub async fn set_node_job(&self, task_id: i64, lease: i64, node_job_id: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE tasks SET node_job_id = ? WHERE id = ? AND lease = ? AND state = 'running'",
        )
        .bind(node_job_id)
        .bind(task_id)
        .bind(lease)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Every running lease (for watchers after a restart, and stall checks).
    pub async fn running_leases(&self) -> Result<Vec<Lease>> {
        Ok(
            sqlx::query_as(&format!("{LEASE_SELECT} WHERE t.state = 'running'"))
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn lease_is_current(&self, task_id: i64, lease: i64) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE id = ? AND lease = ? AND state = 'running'",
        )
        .bind(task_id)
        .bind(lease)
        .fetch_one(&self.pool)
        .await?;
        Ok(n == 1)
    }

    /// Stores frames a node reported saved for a lease; returns the ones that are new.
    /// `progressed` moves the stall clock.
    pub async fn record_progress(
        &self,
        lease: &Lease,
        frames: &[(i64, String)],
        progressed: bool,
    ) -> Result<Vec<(i64, String)>> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        let current = sqlx::query(
            "UPDATE tasks SET progress_at = CASE WHEN ? THEN ? ELSE progress_at END
             WHERE id = ? AND lease = ? AND state = 'running'",
        )
        .bind(progressed)
        .bind(now)
        .bind(lease.task_id)
        .bind(lease.lease)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if current == 0 {
            return Ok(vec![]);
        }
        let mut new = Vec::new();
        for (frame, path) in frames {
            if !(lease.frame_from..=lease.frame_to).contains(frame) {
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO frames (job_seq, frame, node_id, path, done_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (job_seq, frame) DO UPDATE SET node_id = excluded.node_id,
                    path = excluded.path, done_at = excluded.done_at
                 WHERE frames.path != excluded.path OR frames.node_id != excluded.node_id",
            )
            .bind(lease.job_seq)
            .bind(frame)
            .bind(&lease.node_id)
            .bind(path)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                new.push((*frame, path.clone()));
            }
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Ends a lease as completed. False if the lease had moved on.
    pub async fn complete_task(&self, lease: &Lease, log_tail: &[String]) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE tasks SET state = 'completed', finished_at = ?, failure = NULL, log_tail = ?
             WHERE id = ? AND lease = ? AND state = 'running'",
        )
        .bind(Utc::now())
        .bind(serde_json::to_string(log_tail).unwrap_or_default())
        .bind(lease.task_id)
        .bind(lease.lease)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Ends a lease as a failed attempt: back to the queue, or failed for good once it has
    /// used `max_attempts`. Returns the task's new state, or `None` if the lease had moved on.
    pub async fn fail_attempt(
        &self,
        lease: &Lease,
        reason: &str,
        log_tail: &[String],
        max_attempts: u32,
    ) -> Result<Option<TaskState>> {
        let mut tx = self.pool.begin().await?;
        let now = Utc::now();
        let state: Option<String> = sqlx::query_scalar(
            "UPDATE tasks SET attempts = attempts + 1, failure = ?, log_tail = ?,
                state = CASE WHEN attempts + 1 >= ? THEN 'failed' ELSE 'queued' END,
                finished_at = CASE WHEN attempts + 1 >= ? THEN ? ELSE NULL END,
                node_job_id = NULL, lease = lease + 1
             WHERE id = ? AND lease = ? AND state = 'running' RETURNING state",
        )
        .bind(reason)
        .bind(serde_json::to_string(log_tail).unwrap_or_default())
        .bind(max_attempts as i64)
        .bind(max_attempts as i64)
        .bind(now)
        .bind(lease.task_id)
        .bind(lease.lease)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(state) = state else {
            return Ok(None);
        };
        sqlx::query("INSERT INTO task_failures (task_id, job_seq, node_id, reason, at) VALUES (?, ?, ?, ?, ?)")
            .bind(lease.task_id)
            .bind(lease.job_seq)
            .bind(&lease.node_id)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(TaskState::parse(&state))
    }

    /// Takes a lease back without counting an attempt (its node was lost, restarted, or
    /// the dispatch never arrived). False if the lease had moved on.
    pub async fn requeue_lease(&self, lease: &Lease) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE tasks SET state = 'queued', node_job_id = NULL, lease = lease + 1
             WHERE id = ? AND lease = ? AND state = 'running'",
        )
        .bind(lease.task_id)
        .bind(lease.lease)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Takes back every running task of a node (it is down or removed); returns the node
    /// jobs that may still be running there, and the jobs affected.
    pub async fn requeue_node_tasks(&self, node_id: &str) -> Result<(Vec<NodeJob>, Vec<i64>)> {
        let mut tx = self.pool.begin().await?;
        let jobs: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT job_seq FROM tasks WHERE node_id = ? AND state = 'running'",
        )
        .bind(node_id)
        .fetch_all(&mut *tx)
        .await?;
        let stop = take_back_running(&mut tx, Scope::Node(node_id), "queued").await?;
        tx.commit().await?;
        Ok((stop, jobs))
    }

    /// Takes back every running task whose node is no longer known (forgotten while the
    /// task ran, or by a database written by an older version); returns the jobs affected.
    /// Such a task has no node to be watched on, so nothing else would ever end it.
    pub async fn requeue_orphaned(&self) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "UPDATE tasks SET state = 'queued', node_job_id = NULL, lease = lease + 1
             WHERE state = 'running'
               AND (node_id IS NULL OR node_id NOT IN (SELECT id FROM nodes))
             RETURNING job_seq",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Running leases whose node has reported nothing since `before`.
    pub async fn stalled_leases(&self, before: DateTime<Utc>) -> Result<Vec<Lease>> {
        Ok(sqlx::query_as(&format!(
            "{LEASE_SELECT} WHERE t.state = 'running' AND t.progress_at < ?"
        ))
        .bind(before)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Node job ids this orchestrator currently relies on, per node.
    pub async fn live_node_jobs(&self, node_id: &str) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT node_job_id FROM tasks WHERE node_id = ? AND state = 'running' AND node_job_id IS NOT NULL",
        )
        .bind(node_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Leases whose dispatch was cut short by a restart (no node job id recorded): the
    /// POST may or may not have arrived, so they go back to the queue.
    pub async fn requeue_unconfirmed(&self) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE tasks SET state = 'queued', lease = lease + 1
             WHERE state = 'running' AND node_job_id IS NULL",
        )
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    // ---- nodes ---------------------------------------------------------------------

    /// Adds a node by URL (or finds it). New nodes start `down` until a probe answers.
    pub async fn upsert_node(&self, url: &str) -> Result<NodeRow> {
        let id = url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string();
        sqlx::query(
            "INSERT INTO nodes (id, url, state, registered_at) VALUES (?, ?, 'down', ?)
             ON CONFLICT (url) DO NOTHING",
        )
        .bind(&id)
        .bind(url)
        .bind(Utc::now())
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_as("SELECT * FROM nodes WHERE url = ?")
            .bind(url)
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn nodes(&self) -> Result<Vec<NodeRow>> {
        Ok(
            sqlx::query_as("SELECT * FROM nodes ORDER BY registered_at, id")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    pub async fn node(&self, id: &str) -> Result<Option<NodeRow>> {
        Ok(sqlx::query_as("SELECT * FROM nodes WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Records a successful probe. Returns true if the node was down before.
    pub async fn node_seen(
        &self,
        id: &str,
        slots: u64,
        hostname: &str,
        blender_version: &str,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let was: Option<String> = sqlx::query_scalar("SELECT state FROM nodes WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE nodes SET last_seen = ?, slots = ?, hostname = ?, blender_version = ?,
                state = 'up'
             WHERE id = ?",
        )
        .bind(Utc::now())
        .bind(slots as i64)
        .bind(hostname)
        .bind(blender_version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(was.as_deref() == Some("down"))
    }

    /// Marks a node down. Returns true if it was up.
    pub async fn node_down(&self, id: &str) -> Result<bool> {
        let n = sqlx::query("UPDATE nodes SET state = 'down' WHERE id = ? AND state = 'up'")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    pub async fn set_draining(&self, id: &str, draining: bool) -> Result<bool> {
        let n = sqlx::query("UPDATE nodes SET draining = ? WHERE id = ?")
            .bind(draining)
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// Forgets a node and takes back its running tasks in one transaction, so no task
    /// is ever left running on a node that is not known. Returns the node jobs that may
    /// still run there and the jobs affected; `None` if the node was not known.
    pub async fn remove_node(&self, id: &str) -> Result<Option<(Vec<NodeJob>, Vec<i64>)>> {
        let mut tx = self.pool.begin().await?;
        let jobs: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT job_seq FROM tasks WHERE node_id = ? AND state = 'running'",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        let stop = take_back_running(&mut tx, Scope::Node(id), "queued").await?;
        let n = sqlx::query("DELETE FROM nodes WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Ok(None);
        }
        tx.commit().await?;
        Ok(Some((stop, jobs)))
    }

    // ---- metrics -------------------------------------------------------------------

    pub async fn count_by_state(&self, table: &'static str) -> Result<Vec<(String, i64)>> {
        // `table` is one of our own constants, never input.
        let sql = format!("SELECT state, COUNT(*) FROM {table} GROUP BY state");
        Ok(sqlx::query_as(&sql).fetch_all(&self.pool).await?)
    }

    pub async fn count_frames(&self) -> Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM frames")
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Which running tasks [`take_back_running`] takes back.
enum Scope<'a> {
    Job(i64),
    Node(&'a str),
}

/// Takes back the running tasks in `scope` (bumping their lease) and sets them to `state`;
/// returns the node jobs that were running them.
async fn take_back_running(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    scope: Scope<'_>,
    state: &'static str,
) -> Result<Vec<NodeJob>> {
    // One of the two is NULL, and `x = NULL` is never true: the filter is the other one.
    let (job, node) = match scope {
        Scope::Job(seq) => (Some(seq), None),
        Scope::Node(id) => (None, Some(id)),
    };
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT n.url, t.node_job_id FROM tasks t LEFT JOIN nodes n ON n.id = t.node_id
         WHERE t.state = 'running' AND (t.job_seq = ?1 OR t.node_id = ?2)",
    )
    .bind(job)
    .bind(node)
    .fetch_all(&mut **tx)
    .await?;
    let update = "UPDATE tasks SET state = ?1, node_job_id = NULL, lease = lease + 1
         WHERE state = 'running' AND (job_seq = ?2 OR node_id = ?3)";
    sqlx::query(update)
        .bind(state)
        .bind(job)
        .bind(node)
        .execute(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(url, job)| {
            Some(NodeJob {
                node_url: url?,
                node_job_id: job?,
            })
        })
        .collect())
}
