//! [`SqlStore`]: the [`Store`] on SQLite or PostgreSQL, through sqlx's `Any` driver with
//! one set of SQL for both (numbered `$n` parameters, integer times and flags). Where the
//! two differ, [`Dialect`] says so: row locks and notifications exist only on PostgreSQL.
//!
//! SQLite (the default): one writer connection (SQLite runs one writer at a time; one
//! connection never meets `SQLITE_BUSY`) and a few read-only connections that read beside
//! it (WAL). Events go to this process's subscribers after each commit.
//!
//! PostgreSQL (several orchestrators): one pool; a transition locks its job row, then its
//! task row (always in that order, and jobs in ascending order when a transaction touches
//! several, so two transactions never wait on each other in a cycle). Events are sent with
//! `pg_notify` inside the transaction, so every orchestrator's listener receives exactly
//! what was committed.

use super::writer::{Held, Tx, WriteThread, Writer};
use super::*;
use corral_core::lifecycle::{self, check_job_command, Running, Tally, TaskState};
use corral_core::orchestrator_api::TaskStateKind;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyConnection, AnyPool, Row};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the orchestrator's database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL server: `postgres://user:password@host:port/database`.
    Postgres(String),
}

impl DatabaseUrl {
    /// The default: `corral.db` in the data folder.
    pub fn in_data_dir(dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(dir.join("corral.db"))
    }

    /// Reads `sqlite://PATH`, `sqlite:PATH`, `postgres://...` or `postgresql://...`.
    pub fn parse(s: &str) -> std::result::Result<DatabaseUrl, String> {
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(
                    "a sqlite:// URL needs a file path, e.g. sqlite:///var/lib/corral/corral.db"
                        .into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(s.to_string()));
        }
        Err("must start with sqlite:// or postgres://".into())
    }

    /// The URL for logs and messages, without a password.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => match url.split_once('@') {
                Some((credentials, rest)) => {
                    let user = credentials
                        .rsplit_once("//")
                        .map_or(credentials, |(_, u)| u)
                        .split(':')
                        .next()
                        .unwrap_or("");
                    let scheme = url.split("//").next().unwrap_or("postgres:");
                    format!("{scheme}//{user}:***@{rest}")
                }
                None => url.clone(),
            },
        }
    }
}

/// The SQL that differs between the two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Locks the rows read for update. SQLite has a single writer: nothing to lock.
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    fn for_share(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR SHARE",
        }
    }
}

/// The PostgreSQL notification channel events travel on.
const EVENT_CHANNEL: &str = "corral_events";
/// PostgreSQL refuses notification payloads of 8000 bytes or more.
const MAX_NOTIFY_BYTES: usize = 7000;
/// Rows per multi-row `INSERT` of a job's tasks.
const TASK_INSERT_BATCH: usize = 500;
/// Nodes named in one statement: under SQLite's and PostgreSQL's limits on parameters.
const NODES_PER_STATEMENT: usize = 500;
/// The name of the dispatcher's lease in `leadership`.
const DISPATCH: &str = "dispatch";
/// Times a transaction is retried after PostgreSQL broke a deadlock or a serialisation
/// conflict by aborting it (both are safe to retry from the start).
const RETRIES: u32 = 5;

const JOB_COLS: &str = "j.seq AS j_seq, j.id AS j_id, j.scene AS j_scene, j.manifest AS j_manifest,
    j.frame_from AS j_from, j.frame_to AS j_to, j.chunk_size AS j_chunk,
    j.priority AS j_priority, j.engine AS j_engine, j.format AS j_format, j.output AS j_output,
    j.state AS j_state, j.paused AS j_paused, j.cancelled AS j_cancelled,
    j.failure AS j_failure, j.tasks_queued AS j_queued, j.tasks_running AS j_running,
    j.tasks_completed AS j_completed, j.tasks_failed AS j_failed,
    j.tasks_cancelled AS j_cancelled_tasks, j.frames_done AS j_frames_done,
    j.last_frame_at AS j_last_frame_at, j.submitted_at AS j_submitted_at,
    j.started_at AS j_started_at, j.finished_at AS j_finished_at, j.frame_us AS j_frame_us";

const TASK_COLS: &str = "t.id AS t_id, t.job_seq AS t_job_seq, t.idx AS t_idx,
    t.frame_from AS t_from, t.frame_to AS t_to, t.state AS t_state, t.attempts AS t_attempts,
    t.lease AS t_lease, t.node_id AS t_node, t.owner AS t_owner, t.node_job_id AS t_node_job,
    t.failure AS t_failure, t.failed_on AS t_failed_on, t.log_tail AS t_log_tail,
    t.started_at AS t_started_at, t.finished_at AS t_finished_at,
    t.progress_at AS t_progress_at, t.rank AS t_rank, t.splittable AS t_splittable";

const NODE_COLS: &str = "id, url, state, draining, slots, hostname, blender_version, cores,
    memory_bytes, max_frames, frames_rendered, last_seen, registered_at, secret, tls_fingerprint";
const TOKEN_COLS: &str = "id, kind, hash, name, created, revoked";

/// The orchestrator's database on SQLite or PostgreSQL.
pub struct SqlStore {
    dialect: Dialect,
    writer: Writer,
    reader: AnyPool,
    events: broadcast::Sender<Event>,
    listener: Option<tokio::task::JoinHandle<()>>,
    /// SQLite: where the busiest writes run ([`WriteThread`]).
    write_thread: Option<WriteThread>,
    /// This store, for work handed to the write thread (set when opened).
    me: std::sync::OnceLock<std::sync::Weak<SqlStore>>,
    /// SQLite: reports waiting for the write thread, applied together
    /// ([`SqlStore::apply_waiting`]).
    waiting: std::sync::Mutex<Vec<Waiting>>,
    /// Held by the one `apply_waiting` draining the queue.
    draining: tokio::sync::Mutex<()>,
}

/// Most reports applied in one transaction: enough that a thousand renders ending together
/// share a few dozen commits, few enough that a report does not wait long behind others.
const APPLIES_PER_COMMIT: usize = 64;

/// Frames one transaction records at most, near enough: each becomes an event published at
/// the commit, all at once, and the event channel holds 4,096 (a subscriber that falls
/// further behind loses some).
const FRAMES_PER_COMMIT: usize = 2_000;

/// A report waiting for the write thread, and where its answer goes.
struct Waiting {
    task: TaskId,
    command: Command,
    note: Note,
    answer: tokio::sync::oneshot::Sender<Result<Applied>>,
}

/// A report's frames sorted into those to record and those recorded before
/// ([`SqlStore::plan_frames`]), and the node that saved them.
#[derive(Default)]
struct FramesPlan {
    new: Vec<SavedFrame>,
    old: Vec<SavedFrame>,
    node: Option<NodeId>,
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn time_opt(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
}

fn db_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            // Class 08: connection exceptions; 57P01-57P03: the server shutting down or
            // starting up.
            if code.starts_with("08") || code.starts_with("57P") {
                StoreError::Unavailable(e.to_string())
            } else {
                StoreError::Database(e.to_string())
            }
        }
        _ => StoreError::Database(e.to_string()),
    }
}

/// True for errors after which the whole transaction may simply be run again.
fn retryable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("40P01") | Some("40001")))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(col).map_err(|e| corrupt(format!("{col}: {e}")))
}

/// Placeholders `$first, $first+1, ...` for `n` values.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps one job event per job, the last, at the end: a transaction that moves several
/// tasks of a job passes through states nobody needs to see.
fn coalesce(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::with_capacity(events.len());
    let mut jobs: Vec<Event> = Vec::new();
    for event in events {
        match &event {
            Event::Job { id, .. } => {
                jobs.retain(|e| !matches!(e, Event::Job { id: other, .. } if other == id));
                jobs.push(event);
            }
            _ => out.push(event),
        }
    }
    out.extend(jobs);
    out
}

fn job_from_row(row: &AnyRow) -> Result<(i64, JobRecord)> {
    let seq: i64 = get(row, "j_seq")?;
    let id: String = get(row, "j_id")?;
    let id: JobId = id.parse().map_err(|_| corrupt(format!("job id `{id}`")))?;
    let range = FrameRange::new(get(row, "j_from")?, get(row, "j_to")?).map_err(corrupt)?;
    let state: String = get(row, "j_state")?;
    let state = JobState::parse(&state).ok_or_else(|| corrupt(format!("job state `{state}`")))?;
    let engine: String = get(row, "j_engine")?;
    let format: Option<String> = get(row, "j_format")?;
    let manifest: Option<String> = get(row, "j_manifest")?;
    let manifest = manifest
        .map(|m| BlobHash::parse("manifest", &m).map_err(|_| corrupt(format!("manifest `{m}`"))))
        .transpose()?;
    let count = |col: &str| -> Result<u64> { Ok(get::<i64>(row, col)?.max(0) as u64) };
    let life = JobLife {
        id,
        state,
        tally: Tally {
            queued: count("j_queued")?,
            running: count("j_running")?,
            completed: count("j_completed")?,
            failed: count("j_failed")?,
            cancelled: count("j_cancelled_tasks")?,
        },
        paused: get::<i64>(row, "j_paused")? != 0,
        cancelled: get::<i64>(row, "j_cancelled")? != 0,
        frames_total: range.len(),
        frames_done: count("j_frames_done")?,
        failure: get(row, "j_failure")?,
        started_at: time_opt(get(row, "j_started_at")?),
        finished_at: time_opt(get(row, "j_finished_at")?),
        frame_ms: get::<Option<i64>>(row, "j_frame_us")?.map(|us| us as f64 / 1000.0),
    };
    Ok((
        seq,
        JobRecord {
            life,
            range,
            // 0: the farm sizes the job's tasks.
            chunk_size: Some(count("j_chunk")?).filter(|c| *c > 0),
            priority: get(row, "j_priority")?,
            render: RenderSpec {
                scene: get(row, "j_scene")?,
                manifest,
                engine: engine
                    .parse()
                    .map_err(|_| corrupt(format!("engine `{engine}`")))?,
                format: format
                    .map(|f| f.parse().map_err(|_| corrupt(format!("format `{f}`"))))
                    .transpose()?,
                output: get(row, "j_output")?,
            },
            submitted_at: time(get(row, "j_submitted_at")?),
            last_frame_at: time_opt(get(row, "j_last_frame_at")?),
        },
    ))
}

/// A task row, for the job `job`.
fn task_from_row(row: &AnyRow, job: JobId) -> Result<TaskRecord> {
    let state: String = get(row, "t_state")?;
    let kind =
        TaskStateKind::parse(&state).ok_or_else(|| corrupt(format!("task state `{state}`")))?;
    let node: Option<String> = get(row, "t_node")?;
    let failure: Option<String> = get(row, "t_failure")?;
    let started_at = time_opt(get(row, "t_started_at")?);
    let finished_at = time_opt(get(row, "t_finished_at")?);
    let ended_at = finished_at.unwrap_or_default();
    let state = match kind {
        TaskStateKind::Queued => TaskState::Queued,
        TaskStateKind::Running => {
            let node = node
                .clone()
                .ok_or_else(|| corrupt("a running task without a node"))?;
            let owner: Option<String> = get(row, "t_owner")?;
            let node_job: Option<String> = get(row, "t_node_job")?;
            let started = started_at.unwrap_or_default();
            TaskState::Running(Running {
                node: NodeId::new(node),
                // Rows written before owners existed belong to no live orchestrator, so
                // the first one to look adopts them.
                owner: OrchestratorId::new(owner.unwrap_or_default()),
                node_job: node_job.map(NodeJobId::new),
                started_at: started,
                progress_at: time_opt(get(row, "t_progress_at")?).unwrap_or(started),
            })
        }
        TaskStateKind::Completed => TaskState::Completed {
            finished_at: ended_at,
        },
        TaskStateKind::Failed => TaskState::Failed {
            reason: failure.clone().unwrap_or_default(),
            finished_at: ended_at,
        },
        TaskStateKind::Cancelled => TaskState::Cancelled {
            finished_at: ended_at,
        },
    };
    let range = FrameRange::new(get(row, "t_from")?, get(row, "t_to")?).map_err(corrupt)?;
    let log_tail: Option<String> = get(row, "t_log_tail")?;
    Ok(TaskRecord {
        task: Task {
            id: TaskId(get(row, "t_id")?),
            job,
            index: get::<i64>(row, "t_idx")?.max(0) as u32,
            range,
            attempts: get::<i64>(row, "t_attempts")?.max(0) as u32,
            lease: LeaseId(get(row, "t_lease")?),
            last_node: node.map(NodeId::new),
            last_failure: failure,
            state,
        },
        started_at,
        finished_at,
        log_tail: log_tail
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default(),
    })
}

fn node_from_row(row: &AnyRow) -> Result<NodeRecord> {
    let state: String = get(row, "state")?;
    let opt_u64 = |col: &str| -> Result<Option<u64>> {
        Ok(get::<Option<i64>>(row, col)?.map(|v| v.max(0) as u64))
    };
    Ok(NodeRecord {
        id: NodeId::new(get::<String>(row, "id")?),
        url: get(row, "url")?,
        state: if state == "up" {
            NodeState::Up
        } else {
            NodeState::Down
        },
        draining: get::<i64>(row, "draining")? != 0,
        slots: get::<i64>(row, "slots")?.max(0) as u64,
        hostname: get(row, "hostname")?,
        blender_version: get(row, "blender_version")?,
        cores: opt_u64("cores")?,
        memory_bytes: opt_u64("memory_bytes")?,
        max_frames: opt_u64("max_frames")?.filter(|m| *m > 0),
        frames_rendered: get::<i64>(row, "frames_rendered")?.max(0) as u64,
        last_seen: time_opt(get(row, "last_seen")?),
        registered_at: time(get(row, "registered_at")?),
        running: Vec::new(),
        secret: get::<Option<String>>(row, "secret")?.map(NodeSecret),
        // Written only from a checked fingerprint; anything else reads as none (the node
        // is then not reachable over TLS until it registers again).
        fingerprint: get::<Option<String>>(row, "tls_fingerprint")?
            .and_then(|fp| Fingerprint::parse(&fp).ok()),
    })
}

fn token_from_row(row: &AnyRow) -> Result<TokenRecord> {
    let kind: String = get(row, "kind")?;
    Ok(TokenRecord {
        id: get(row, "id")?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        hash: get(row, "hash")?,
        name: get(row, "name")?,
        created: time(get(row, "created")?),
        revoked: time_opt(get(row, "revoked")?),
    })
}

fn node_event(node: &NodeRecord) -> Event {
    Event::Node {
        id: node.id.clone(),
        url: node.url.clone(),
        state: node.state,
        draining: node.draining,
    }
}

/// A task locked with its job, inside a transaction.
struct Locked {
    seq: i64,
    job: JobRecord,
    task: TaskRecord,
    failed_on: Vec<NodeId>,
}

/// Rows a transaction changed that are written once, just before it commits: the reports
/// applied together, or the pieces leased together, are mostly of one job, and each wrote
/// that job's row again; and each report of frames wrote its node's frame counter.
#[derive(Default)]
struct Deferred {
    /// Each job changed, as it is now, with when a frame of it was last recorded.
    jobs: BTreeMap<i64, (JobLife, Option<DateTime<Utc>>)>,
    /// Frames recorded for each node.
    node_frames: BTreeMap<String, i64>,
}

impl Deferred {
    /// Brings `locked`'s job up to what this transaction changed of it (its row is not
    /// written yet).
    fn current(&self, locked: &mut Locked) {
        if let Some((life, _)) = self.jobs.get(&locked.seq) {
            locked.job.life = life.clone();
        }
    }

    /// Job `seq` is now `life`, with a frame recorded at `frame_at` (if any).
    fn set_job(&mut self, seq: i64, life: JobLife, frame_at: Option<DateTime<Utc>>) {
        let before = self.jobs.get(&seq).and_then(|(_, at)| *at);
        self.jobs.insert(seq, (life, frame_at.or(before)));
    }

    /// Writes the jobs, in ascending order (their rows are locked already, by
    /// [`SqlStore::lock`]), and every node's frame counter in one statement.
    async fn write(self, tx: &mut Tx) -> std::result::Result<(), sqlx::Error> {
        for (seq, (life, frame_at)) in self.jobs {
            SqlStore::write_job(tx, seq, &life, frame_at).await?;
        }
        let counts: Vec<(String, i64)> = self.node_frames.into_iter().collect();
        for counts in counts.chunks(NODES_PER_STATEMENT) {
            let values: Vec<String> = (0..counts.len())
                .map(|i| format!("({})", placeholders(1 + i * 2, 2)))
                .collect();
            let sql = format!(
                "WITH v (id, n) AS (VALUES {})
                 UPDATE nodes SET frames_rendered = frames_rendered + v.n
                 FROM v WHERE nodes.id = v.id",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (node, n) in counts {
                query = query.bind(node.as_str()).bind(*n);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

impl Locked {
    /// The tail cut off this task, as [`SqlStore::insert_cut_off`] wrote it (task `id` at
    /// position `index`, queued, never tried), for going on with it in the same
    /// transaction without reading it back.
    fn tail(&self, id: TaskId, index: u32, range: FrameRange) -> Locked {
        Locked {
            seq: self.seq,
            job: self.job.clone(),
            task: TaskRecord {
                task: Task {
                    id,
                    job: self.job.id(),
                    index,
                    range,
                    attempts: 0,
                    lease: LeaseId(0),
                    last_node: None,
                    last_failure: None,
                    state: TaskState::Queued,
                },
                started_at: None,
                finished_at: None,
                log_tail: Vec::new(),
            },
            failed_on: self.failed_on.clone(),
        }
    }
}

impl SqlStore {
    /// Opens the database (creating a SQLite file if needed) and brings its schema up to
    /// date.
    pub async fn open(url: &DatabaseUrl) -> Result<Arc<SqlStore>> {
        sqlx::any::install_default_drivers();
        let (events, _) = broadcast::channel(4096);
        let store = match url {
            DatabaseUrl::Sqlite(path) => Self::open_sqlite(path, events).await?,
            DatabaseUrl::Postgres(url) => Self::open_postgres(url, events).await?,
        };
        let store = Arc::new(store);
        let _ = store.me.set(Arc::downgrade(&store));
        Ok(store)
    }

    async fn open_sqlite(path: &Path, events: broadcast::Sender<Event>) -> Result<SqlStore> {
        // `?` and `#` would end the path part of the URL, and `%` starts an escape.
        let encoded: String = path
            .to_string_lossy()
            .chars()
            .map(|c| match c {
                '%' => "%25".to_string(),
                '?' => "%3F".to_string(),
                '#' => "%23".to_string(),
                c => c.to_string(),
            })
            .collect();
        let url = format!("sqlite://{encoded}?mode=rwc");
        let mut writer = {
            use sqlx::{Connection, Executor};
            let mut conn = AnyConnection::connect(&url).await.map_err(db_err)?;
            // WAL lets readers read beside the writer. NORMAL survives a crash of this
            // process (kill -9) but may lose the last commits on power loss: fine for
            // progress (a task whose record is lost renders again), and it saves an fsync
            // per write. Accepting a job is FULL: see `insert_job`.
            conn.execute(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
            )
            .await
            .map_err(db_err)?;
            conn
        };
        sqlx::migrate!("./migrations/sqlite")
            .run(&mut writer)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let reader = AnyPoolOptions::new()
            .max_connections(4)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    use sqlx::Executor;
                    conn.execute("PRAGMA query_only = ON; PRAGMA busy_timeout = 10000;")
                        .await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(db_err)?;
        Ok(SqlStore {
            dialect: Dialect::Sqlite,
            writer: Writer::Held(Arc::new(tokio::sync::Mutex::new(Held::new(writer)))),
            reader,
            events,
            listener: None,
            write_thread: Some(WriteThread::start().map_err(|e| {
                StoreError::Database(format!("cannot start the database's write thread: {e}"))
            })?),
            me: std::sync::OnceLock::new(),
            waiting: std::sync::Mutex::new(Vec::new()),
            draining: tokio::sync::Mutex::new(()),
        })
    }

    async fn open_postgres(url: &str, events: broadcast::Sender<Event>) -> Result<SqlStore> {
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(db_err)?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))?;
        let mut listener = sqlx::postgres::PgListener::connect(url)
            .await
            .map_err(db_err)?;
        listener.listen(EVENT_CHANNEL).await.map_err(db_err)?;
        let tx = events.clone();
        let listener = tokio::spawn(async move {
            loop {
                // `recv` reconnects by itself after the server restarts; what was sent
                // meanwhile is lost, and clients catch up by reading.
                match listener.recv().await {
                    Ok(note) => {
                        if let Ok(batch) = serde_json::from_str::<Vec<Event>>(note.payload()) {
                            for event in batch {
                                let _ = tx.send(event);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "event listener lost the database; retrying");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(SqlStore {
            dialect: Dialect::Postgres,
            writer: Writer::Pool(pool.clone()),
            reader: pool,
            events,
            listener: Some(listener),
            // Several connections, row locks: PostgreSQL's writes run side by side.
            write_thread: None,
            me: std::sync::OnceLock::new(),
            waiting: std::sync::Mutex::new(Vec::new()),
            draining: tokio::sync::Mutex::new(()),
        })
    }

    /// Commits `tx`, sending `events` with it: on PostgreSQL inside the transaction (so
    /// only committed events travel, to every orchestrator), on SQLite to this process's
    /// subscribers once committed.
    async fn commit(&self, mut tx: Tx, events: Vec<Event>) -> std::result::Result<(), sqlx::Error> {
        let events = coalesce(events);
        if self.dialect == Dialect::Postgres && !events.is_empty() {
            for payload in notify_payloads(&events) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(EVENT_CHANNEL)
                    .bind(payload)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        if self.dialect == Dialect::Sqlite {
            for event in events {
                let _ = self.events.send(event);
            }
        }
        Ok(())
    }

    /// This store, owned (for work handed to the write thread).
    fn me(&self) -> Result<Arc<SqlStore>> {
        self.me
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))
    }

    /// On the write thread (SQLite): applies the reports waiting, in batches of up to
    /// [`APPLIES_PER_COMMIT`] reports (and about [`FRAMES_PER_COMMIT`] frames) per
    /// transaction, and answers each. A thousand renders ending together then share a few
    /// dozen commits instead of a thousand: the commit and the `BEGIN` were a third of each
    /// report's hold on the one writer. Each report queued spawns one of these; one at a
    /// time drains the queue, in order, and those that find it empty end at once, before
    /// any `BEGIN`.
    async fn apply_waiting(self: Arc<Self>) {
        let _draining = self.draining.lock().await;
        while !self.no_one_waiting() {
            // Reports that come while this waits for the writer go with it.
            let tx = self.begin_raw().await;
            let (reports, answers): (Vec<_>, Vec<_>) = self
                .take_waiting()
                .into_iter()
                .map(|w| ((w.task, w.command, w.note), w.answer))
                .unzip();
            let tx = match tx {
                Ok(tx) => tx,
                Err(e) => {
                    // The writer itself is failing (busy past its timeout, say): every
                    // report of the batch would fail alike; their callers try again.
                    tracing::warn!(error = %e, "could not begin a transaction for waiting reports");
                    for answer in answers {
                        let _ = answer.send(Err(StoreError::Database(e.to_string())));
                    }
                    continue;
                }
            };
            let reports = Arc::new(reports);
            // On a task of its own, which owns no answer: a report that panics fails its
            // batch, whose reports are then applied one at a time, so it fails only itself.
            let together = {
                let (me, reports) = (self.clone(), reports.clone());
                tokio::spawn(async move { me.apply_together(tx, &reports).await }).await
            };
            match together {
                Ok(Ok(applied)) => {
                    for (answer, applied) in answers.into_iter().zip(applied) {
                        let _ = answer.send(Ok(applied));
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a batch of reports failed; applying them one at a time")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a batch of reports panicked; applying them one at a time")
                }
            }
            for (i, answer) in answers.into_iter().enumerate() {
                let (me, reports) = (self.clone(), reports.clone());
                let alone = tokio::spawn(async move {
                    let (task, command, note) = &reports[i];
                    me.retrying(|| me.apply_once(*task, command, note)).await
                })
                .await
                .unwrap_or_else(|e| Err(StoreError::Database(format!("a write failed: {e}"))));
                let _ = answer.send(alone);
            }
        }
    }

    /// Applies reports in `tx` and commits them together; answers each one's outcome, or
    /// the first error (the transaction is then rolled back, nothing of it written).
    async fn apply_together(
        &self,
        mut tx: Tx,
        reports: &[(TaskId, Command, Note)],
    ) -> std::result::Result<Vec<Applied>, sqlx::Error> {
        let now = Utc::now();
        let mut applied = Vec::with_capacity(reports.len());
        let mut events = Vec::new();
        let mut deferred = Deferred::default();
        for (task, command, note) in reports {
            match self
                .apply_in(&mut tx, &mut deferred, *task, command, note, now)
                .await
            {
                Ok((outcome, more)) => {
                    applied.push(outcome);
                    events.extend(more);
                }
                Err(e) => {
                    let _ = tx.rollback().await;
                    return Err(e);
                }
            }
        }
        if let Err(e) = deferred.write(&mut tx).await {
            let _ = tx.rollback().await;
            return Err(e);
        }
        self.commit(tx, events).await?;
        Ok(applied)
    }

    fn no_one_waiting(&self) -> bool {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// The next batch of waiting reports: up to [`APPLIES_PER_COMMIT`] of them, and no
    /// more once they bring [`FRAMES_PER_COMMIT`] frames (at least one report).
    fn take_waiting(&self) -> Vec<Waiting> {
        let mut waiting = self
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut frames = 0;
        let n = waiting
            .iter()
            .take(APPLIES_PER_COMMIT)
            .take_while(|w| {
                let under = frames < FRAMES_PER_COMMIT;
                frames += w.note.frames.len();
                under
            })
            .count();
        waiting.drain(..n).collect()
    }

    /// Runs `work` on the write thread (SQLite), or here (PostgreSQL).
    async fn on_write_thread<T, W, Fut>(&self, work: W) -> Result<T>
    where
        T: Send + 'static,
        W: FnOnce(Arc<SqlStore>) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let me = self.me()?;
        match &self.write_thread {
            Some(thread) => thread
                .run(work(me))
                .await
                .map_err(|e| StoreError::Database(format!("a write failed: {e}")))?,
            None => work(me).await,
        }
    }

    /// Runs a whole transaction again when PostgreSQL aborted it to break a deadlock or a
    /// serialisation conflict.
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, sqlx::Error>>,
    {
        let mut tries = 0;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if retryable(&e) && tries < RETRIES => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(5 * u64::from(tries)))
                        .await;
                }
                Err(e) => return Err(db_err(e)),
            }
        }
    }

    /// Locks a task's job, then the task (the one order every transaction uses).
    async fn lock(
        &self,
        tx: &mut Tx,
        task: TaskId,
    ) -> std::result::Result<Option<Locked>, sqlx::Error> {
        let (job_row, task_row) = match self.dialect {
            // One writer at a time: nothing to lock, one statement reads both.
            Dialect::Sqlite => {
                let row = sqlx::query(&format!(
                    "SELECT {TASK_COLS}, {JOB_COLS} FROM tasks t JOIN jobs j ON j.seq = t.job_seq
                     WHERE t.id = $1"
                ))
                .bind(task.0)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                (row.clone(), row)
            }
            // The job's row first, then the task's: the order every transaction locks in.
            Dialect::Postgres => {
                let job_row = sqlx::query(&format!(
                    "SELECT {JOB_COLS} FROM jobs j
                     WHERE j.seq = (SELECT job_seq FROM tasks WHERE id = $1) FOR UPDATE"
                ))
                .bind(task.0)
                .fetch_optional(&mut **tx)
                .await?;
                let Some(job_row) = job_row else {
                    return Ok(None);
                };
                let task_row = sqlx::query(&format!(
                    "SELECT {TASK_COLS} FROM tasks t WHERE t.id = $1 FOR UPDATE"
                ))
                .bind(task.0)
                .fetch_one(&mut **tx)
                .await?;
                (job_row, task_row)
            }
        };
        let (seq, job) = job_from_row(&job_row).map_err(to_sqlx)?;
        let failed_on: Option<String> = task_row.try_get("t_failed_on")?;
        let task = task_from_row(&task_row, job.id()).map_err(to_sqlx)?;
        Ok(Some(Locked {
            seq,
            job,
            task,
            failed_on: failed_on
                .and_then(|f| serde_json::from_str::<Vec<String>>(&f).ok())
                .unwrap_or_default()
                .into_iter()
                .map(NodeId::new)
                .collect(),
        }))
    }

    async fn node_url(
        tx: &mut Tx,
        node: &NodeId,
    ) -> std::result::Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT url FROM nodes WHERE id = $1")
            .bind(node.as_str())
            .fetch_optional(&mut **tx)
            .await
    }

    /// Writes a task's new state (and Blender's last lines, when given).
    async fn write_task(
        tx: &mut Tx,
        task: &Task,
        log_tail: Option<&[String]>,
    ) -> std::result::Result<(), sqlx::Error> {
        let (owner, node_job, started_at, progress_at) = match &task.state {
            TaskState::Running(r) => (
                Some(r.owner.as_str().to_string()),
                r.node_job.as_ref().map(|j| j.as_str().to_string()),
                Some(ms(r.started_at)),
                Some(ms(r.progress_at)),
            ),
            _ => (None, None, None, None),
        };
        let finished_at = match &task.state {
            TaskState::Completed { finished_at }
            | TaskState::Failed { finished_at, .. }
            | TaskState::Cancelled { finished_at } => Some(ms(*finished_at)),
            TaskState::Queued | TaskState::Running(_) => None,
        };
        let failure = match &task.state {
            TaskState::Failed { reason, .. } => Some(reason.clone()),
            _ => task.last_failure.clone(),
        };
        let log_tail = log_tail.map(|t| serde_json::to_string(t).unwrap_or_default());
        sqlx::query(
            "UPDATE tasks SET state = $1, attempts = $2, lease = $3, node_id = $4, owner = $5,
                node_job_id = $6, failure = $7, started_at = COALESCE($8, started_at),
                finished_at = $9, progress_at = $10, log_tail = COALESCE($11, log_tail),
                frame_from = $13, frame_to = $14
             WHERE id = $12",
        )
        .bind(task.state.kind().as_str())
        .bind(i64::from(task.attempts))
        .bind(task.lease.0)
        .bind(task.last_node.as_ref().map(|n| n.as_str().to_string()))
        .bind(owner)
        .bind(node_job)
        .bind(failure)
        .bind(started_at)
        .bind(finished_at)
        .bind(progress_at)
        .bind(log_tail)
        .bind(task.id.0)
        .bind(task.range.from())
        .bind(task.range.to())
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Adds the frames cut off a task (`from`, a task of job `seq`) as a new queued task
    /// beside it, with its queue rank and splittability; answers its id and position.
    async fn insert_cut_off(
        tx: &mut Tx,
        seq: i64,
        from: TaskId,
        range: FrameRange,
    ) -> std::result::Result<(TaskId, u32), sqlx::Error> {
        let (id, index): (i64, i64) = sqlx::query_as(
            "INSERT INTO tasks (job_seq, idx, frame_from, frame_to, state, priority, held, rank,
                splittable, failed_on)
             SELECT t.job_seq, (SELECT MAX(idx) + 1 FROM tasks WHERE job_seq = $1), $2, $3,
                'queued', t.priority, t.held, t.rank,
                -- A tail taken from a running render is shared out among idle slots.
                CASE WHEN t.state = 'running' THEN 1 ELSE t.splittable END, t.failed_on
             FROM tasks t WHERE t.id = $4
             RETURNING id, idx",
        )
        .bind(seq)
        .bind(range.from())
        .bind(range.to())
        .bind(from.0)
        .fetch_one(&mut **tx)
        .await?;
        Ok((TaskId(id), u32::try_from(index.max(0)).unwrap_or(u32::MAX)))
    }

    async fn write_job(
        tx: &mut Tx,
        seq: i64,
        job: &JobLife,
        frame_at: Option<DateTime<Utc>>,
    ) -> std::result::Result<(), sqlx::Error> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "UPDATE jobs SET state = $1, paused = $2, cancelled = $3, failure = $4,
                tasks_queued = $5, tasks_running = $6, tasks_completed = $7, tasks_failed = $8,
                tasks_cancelled = $9, frames_done = $10,
                last_frame_at = COALESCE($11, last_frame_at), started_at = $12, finished_at = $13,
                frame_us = $15
             WHERE seq = $14",
        )
        .bind(job.state.as_str())
        .bind(i64::from(job.paused))
        .bind(i64::from(job.cancelled))
        .bind(job.failure.clone())
        .bind(n(job.tally.queued))
        .bind(n(job.tally.running))
        .bind(n(job.tally.completed))
        .bind(n(job.tally.failed))
        .bind(n(job.tally.cancelled))
        .bind(n(job.frames_done))
        .bind(frame_at.map(ms))
        .bind(job.started_at.map(ms))
        .bind(job.finished_at.map(ms))
        .bind(seq)
        .bind(job.frame_ms.map(|ms| (ms * 1000.0) as i64))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Which of the frames a node reported saved for a running task are new and which
    /// are recorded already; reads only, so a command refused after it has written nothing.
    /// `recorded_in_span`, when known, is how many frames are recorded between the first
    /// and the last of them ([`Self::count_frames`]): none spares looking which.
    async fn plan_frames(
        tx: &mut Tx,
        seq: i64,
        task: &Task,
        node: &NodeId,
        frames: &[SavedFrame],
        recorded_in_span: Option<i64>,
    ) -> std::result::Result<FramesPlan, sqlx::Error> {
        // Each frame once (a node may list one twice: the later entry is its newest copy).
        let mut by_frame: std::collections::BTreeMap<i64, &SavedFrame> = Default::default();
        for f in frames.iter().filter(|f| task.range.contains(f.frame)) {
            by_frame.insert(f.frame, f);
        }
        let frames: Vec<&SavedFrame> = by_frame.into_values().collect();
        if frames.is_empty() {
            return Ok(FramesPlan::default());
        }
        if recorded_in_span == Some(0) {
            return Ok(FramesPlan {
                new: frames.into_iter().cloned().collect(),
                old: Vec::new(),
                node: Some(node.clone()),
            });
        }
        // Which of them are recorded already (a retry after a partial attempt; usually
        // none). The task's row is locked, and its frames are written only under that
        // lock, so none can be added between this read and the insert. Asking for the few
        // that exist, rather than having the insert return the many it added, spares a
        // row sent back from SQLite's thread per frame: a render's end at a farm of a
        // thousand nodes carries a hundred frames.
        // (Frames are sorted, so the first and last span them all.)
        let (first, last) = (frames[0].frame, frames[frames.len() - 1].frame);
        let existing: std::collections::HashSet<i64> = sqlx::query_scalar::<_, i64>(
            "SELECT frame FROM frames WHERE job_seq = $1 AND frame >= $2 AND frame <= $3",
        )
        .bind(seq)
        .bind(first)
        .bind(last)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
        let (old, new): (Vec<&SavedFrame>, Vec<&SavedFrame>) = frames
            .into_iter()
            .partition(|f| existing.contains(&f.frame));
        Ok(FramesPlan {
            new: new.into_iter().cloned().collect(),
            old: old.into_iter().cloned().collect(),
            node: Some(node.clone()),
        })
    }

    /// How many frames of job `seq` are recorded in `range`, and how many of them between
    /// `span`'s first and last frame (none when `span` is `None`): a render's end needs
    /// both, in one statement.
    async fn count_frames(
        tx: &mut Tx,
        seq: i64,
        range: FrameRange,
        span: Option<(i64, i64)>,
    ) -> std::result::Result<(i64, i64), sqlx::Error> {
        let (first, last) = span.unwrap_or((1, 0));
        sqlx::query_as(
            "SELECT COUNT(*),
                    COALESCE(SUM(CASE WHEN frame >= $4 AND frame <= $5 THEN 1 ELSE 0 END), 0)
             FROM frames WHERE job_seq = $1 AND frame >= $2 AND frame <= $3",
        )
        .bind(seq)
        .bind(range.from())
        .bind(range.to())
        .bind(first)
        .bind(last)
        .fetch_one(&mut **tx)
        .await
    }

    /// Records the frames of a plan ([`Self::plan_frames`]) as saved by its node (whose
    /// counter `deferred` writes).
    async fn write_frames(
        tx: &mut Tx,
        deferred: &mut Deferred,
        seq: i64,
        plan: &FramesPlan,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), sqlx::Error> {
        let Some(node) = &plan.node else {
            return Ok(());
        };
        // One statement per thousand frames (a long render's end may carry thousands, more
        // than a statement may bind).
        for new in plan.new.chunks(1000) {
            let values: Vec<String> = (0..new.len())
                .map(|i| format!("($1, $2, $3, {})", placeholders(4 + i * 2, 2)))
                .collect();
            let sql = format!(
                "INSERT INTO frames (job_seq, node_id, done_at, frame, path) VALUES {}
                 ON CONFLICT (job_seq, frame) DO NOTHING",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql)
                .bind(seq)
                .bind(node.as_str())
                .bind(ms(now));
            for frame in new {
                query = query.bind(frame.frame).bind(frame.path.as_str());
            }
            query.execute(&mut **tx).await?;
        }
        for frame in &plan.old {
            // Rendered again (a retry after a partial attempt): the newest copy is the one
            // to point at.
            sqlx::query(
                "UPDATE frames SET node_id = $1, path = $2, done_at = $3
                 WHERE job_seq = $4 AND frame = $5 AND (node_id != $1 OR path != $2)",
            )
            .bind(node.as_str())
            .bind(frame.path.as_str())
            .bind(ms(now))
            .bind(seq)
            .bind(frame.frame)
            .execute(&mut **tx)
            .await?;
        }
        if !plan.new.is_empty() {
            *deferred
                .node_frames
                .entry(node.as_str().to_string())
                .or_default() += plan.new.len() as i64;
        }
        Ok(())
    }

    /// Writes one step of a task (`prev` is the task before it; `failed_on` the nodes it
    /// failed on, grown by a failure); the job is written by the caller once every step of
    /// the transaction is done.
    #[allow(clippy::too_many_arguments)]
    async fn write_step(
        tx: &mut Tx,
        seq: i64,
        prev: &Task,
        failed_on: &mut Vec<NodeId>,
        step: lifecycle::Step,
        log_tail: Option<&[String]>,
        command: &Command,
        now: DateTime<Utc>,
    ) -> std::result::Result<Change, sqlx::Error> {
        Self::write_task(tx, &step.task, log_tail).await?;
        if let (Command::Fail { reason, .. }, TaskState::Running(r)) = (command, &prev.state) {
            if !failed_on.contains(&r.node) {
                failed_on.push(r.node.clone());
            }
            let list: Vec<&str> = failed_on.iter().map(NodeId::as_str).collect();
            sqlx::query("UPDATE tasks SET failed_on = $1 WHERE id = $2")
                .bind(serde_json::to_string(&list).unwrap_or_default())
                .bind(step.task.id.0)
                .execute(&mut **tx)
                .await?;
            sqlx::query(
                "INSERT INTO task_failures (task_id, job_seq, node_id, reason, at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(step.task.id.0)
            .bind(seq)
            .bind(r.node.as_str())
            .bind(reason.as_str())
            .bind(ms(now))
            .execute(&mut **tx)
            .await?;
        }
        let stop = match step.stop {
            Some(stop) => Self::node_url(tx, &stop.node).await?.map(|url| StopAt {
                node: stop.node,
                url,
                node_job: stop.node_job,
            }),
            None => None,
        };
        // The frames cut off a task become a queued task of the job in the same
        // transaction (the job's tally already counts it).
        let cut_off = match step.cut_off {
            Some(range) => Some(Self::insert_cut_off(tx, seq, step.task.id, range).await?.0),
            None => None,
        };
        Ok(Change {
            task: step.task,
            job: step.job,
            stop,
            cut_off,
            events: step.events,
        })
    }

    /// Writes a step of a locked task and keeps `locked` current.
    async fn write_locked(
        tx: &mut Tx,
        locked: &mut Locked,
        step: lifecycle::Step,
        log_tail: Option<&[String]>,
        command: &Command,
        now: DateTime<Utc>,
    ) -> std::result::Result<Change, sqlx::Error> {
        let prev = locked.task.task.clone();
        let change = Self::write_step(
            tx,
            locked.seq,
            &prev,
            &mut locked.failed_on,
            step,
            log_tail,
            command,
            now,
        )
        .await?;
        locked.task.task = change.task.clone();
        locked.job.life = change.job.clone();
        Ok(change)
    }

    /// Cancels every task of job `seq` that has not ended (its job failed or was
    /// cancelled), starting from `job`; answers the changes and the job after them.
    async fn cancel_rest(
        &self,
        tx: &mut Tx,
        seq: i64,
        mut job: JobLife,
        now: DateTime<Utc>,
    ) -> std::result::Result<(Vec<Change>, JobLife), sqlx::Error> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLS} FROM tasks t WHERE t.job_seq = $1
               AND t.state IN ('queued', 'running') ORDER BY t.id{}",
            self.dialect.for_update()
        ))
        .bind(seq)
        .fetch_all(&mut **tx)
        .await?;
        let mut changes = Vec::new();
        for row in rows {
            let record = task_from_row(&row, job.id).map_err(to_sqlx)?;
            let Ok(step) = lifecycle::step(&record.task, &job, &Command::Cancel, now) else {
                continue;
            };
            job = step.job.clone();
            let change = Self::write_step(
                tx,
                seq,
                &record.task,
                &mut Vec::new(),
                step,
                None,
                &Command::Cancel,
                now,
            )
            .await?;
            changes.push(change);
        }
        Ok((changes, job))
    }

    /// Applies one report in its own transaction (PostgreSQL; SQLite when a batch of
    /// them failed, to find the one that fails).
    async fn apply_once(
        &self,
        task: TaskId,
        command: &Command,
        note: &Note,
    ) -> std::result::Result<Applied, sqlx::Error> {
        let mut tx = self.begin_raw().await?;
        let mut deferred = Deferred::default();
        let (applied, events) = self
            .apply_in(&mut tx, &mut deferred, task, command, note, Utc::now())
            .await?;
        match applied {
            Applied::Changed(_) => {
                deferred.write(&mut tx).await?;
                self.commit(tx, events).await?
            }
            // Nothing was written.
            Applied::Refused(_) | Applied::Unknown => tx.rollback().await?,
        }
        Ok(applied)
    }

    /// Applies a report inside `tx`, answering it and the events to publish once `tx`
    /// commits. Everything is read and decided before anything is written, so a report
    /// answered `Refused` or `Unknown` has written nothing: several share a transaction
    /// ([`Self::apply_waiting`]).
    async fn apply_in(
        &self,
        tx: &mut Tx,
        deferred: &mut Deferred,
        task: TaskId,
        command: &Command,
        note: &Note,
        now: DateTime<Utc>,
    ) -> std::result::Result<(Applied, Vec<Event>), sqlx::Error> {
        let Some(mut locked) = self.lock(tx, task).await? else {
            return Ok((Applied::Unknown, Vec::new()));
        };
        deferred.current(&mut locked);
        let job_before = locked.job.life.clone();
        let holds = |locked: &Locked, lease: Option<LeaseId>| {
            lease == Some(locked.task.task.lease)
                && matches!(locked.task.task.state, TaskState::Running(_))
        };
        let mut changes = Vec::new();
        let mut events = Vec::new();
        let mut frame_at = None;
        let mut frames = FramesPlan::default();
        let mut command = command.clone();
        // A render's end is checked against the frames recorded in its range, counted
        // before its own new frames are written; the same statement tells whether any of
        // the frames it brings are recorded already (usually none).
        let counted = if matches!(command, Command::Complete { .. }) {
            let range = locked.task.task.range;
            let span = note
                .frames
                .iter()
                .map(|f| f.frame)
                .filter(|f| range.contains(*f))
                .fold(None, |span: Option<(i64, i64)>, f| {
                    Some(span.map_or((f, f), |(first, last)| (first.min(f), last.max(f))))
                });
            Some(Self::count_frames(tx, locked.seq, range, span).await?)
        } else {
            None
        };
        // Frames count only under the lease that holds: a lost node's late report is
        // the work of a render that was given to another node.
        if !note.frames.is_empty() && holds(&locked, command.lease()) {
            let TaskState::Running(r) = &locked.task.task.state else {
                return Ok((Applied::Unknown, Vec::new()));
            };
            let node = r.node.clone();
            let in_span = counted.map(|(_, in_span)| in_span);
            let (seq, task) = (locked.seq, &locked.task.task);
            frames = Self::plan_frames(tx, seq, task, &node, &note.frames, in_span).await?;
            let new = &frames.new;
            if !new.is_empty() {
                frame_at = Some(now);
                for frame in new {
                    events.push(Event::Frame {
                        job: locked.job.id(),
                        frame: frame.frame,
                        node: node.clone(),
                        path: frame.path.clone(),
                    });
                }
                let lease = locked.task.task.lease;
                let progress = Command::Progress {
                    lease,
                    new_frames: new.len() as u64,
                };
                if matches!(command, Command::Progress { .. }) {
                    command = progress;
                } else if let Ok(step) =
                    lifecycle::step(&locked.task.task, &locked.job.life, &progress, now)
                {
                    // Applied in memory only: the command's own step below writes the
                    // task and the job whole (a statement less for every render's end).
                    locked.task.task = step.task;
                    locked.job.life = step.job;
                    events.extend(step.events);
                }
            }
        }
        if let (
            Command::Complete {
                frames_recorded, ..
            },
            Some((in_range, _)),
        ) = (&mut command, counted)
        {
            // Counted before this report's new frames are written: they are in the task's
            // range and not recorded yet (`plan_frames`).
            *frames_recorded = in_range.max(0) as u64 + frames.new.len() as u64;
        }
        let step = match lifecycle::step(&locked.task.task, &locked.job.life, &command, now) {
            Ok(step) => step,
            Err(refusal) => return Ok((Applied::Refused(refusal), Vec::new())),
        };
        // Decided: from here on, writes.
        Self::write_frames(tx, deferred, locked.seq, &frames, now).await?;
        let cancel_the_rest = step.cancel_the_rest;
        let change = Self::write_locked(
            tx,
            &mut locked,
            step,
            note.log_tail.as_deref(),
            &command,
            now,
        )
        .await?;
        events.extend(change.events.iter().cloned());
        changes.push(change);
        let mut job = locked.job.life.clone();
        if cancel_the_rest {
            let (cancelled, after) = self.cancel_rest(tx, locked.seq, job, now).await?;
            for c in &cancelled {
                events.extend(c.events.iter().cloned());
            }
            changes.extend(cancelled);
            job = after;
        }
        // A dispatch confirmed, a task adopted: the job is as it was, and stays unwritten.
        if job != job_before || frame_at.is_some() {
            deferred.set_job(locked.seq, job, frame_at);
        }
        Ok((Applied::Changed(changes), events))
    }

    async fn begin_raw(&self) -> std::result::Result<Tx, sqlx::Error> {
        self.writer.begin().await
    }

    /// Takes back running tasks (with the job rows locked in ascending order), inside `tx`.
    async fn take_back_all(
        &self,
        tx: &mut Tx,
        tasks: Vec<(i64, TaskId)>,
        now: DateTime<Utc>,
    ) -> std::result::Result<(Vec<Change>, Vec<Event>), sqlx::Error> {
        let mut tasks = tasks;
        tasks.sort();
        let mut changes = Vec::new();
        let mut events = Vec::new();
        for (_, task) in tasks {
            let Some(mut locked) = self.lock(tx, task).await? else {
                continue;
            };
            let command = Command::TakeBack {
                lease: locked.task.task.lease,
            };
            let Ok(step) = lifecycle::step(&locked.task.task, &locked.job.life, &command, now)
            else {
                continue;
            };
            let change = Self::write_locked(tx, &mut locked, step, None, &command, now).await?;
            Self::write_job(tx, locked.seq, &change.job, None).await?;
            events.extend(change.events.iter().cloned());
            changes.push(change);
        }
        Ok((changes, events))
    }

    async fn running_on(
        tx: &mut Tx,
        node: &NodeId,
    ) -> std::result::Result<Vec<(i64, TaskId)>, sqlx::Error> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT job_seq, id FROM tasks WHERE state = 'running' AND node_id = $1",
        )
        .bind(node.as_str())
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows.into_iter().map(|(s, t)| (s, TaskId(t))).collect())
    }

    async fn node_in(
        tx: &mut Tx,
        id: &NodeId,
    ) -> std::result::Result<Option<NodeRecord>, sqlx::Error> {
        let row = sqlx::query(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        row.map(|r| node_from_row(&r)).transpose().map_err(to_sqlx)
    }

    async fn job_by_id(
        &self,
        tx: &mut Tx,
        id: JobId,
    ) -> std::result::Result<Option<(i64, JobRecord)>, sqlx::Error> {
        let row = sqlx::query(&format!(
            "SELECT {JOB_COLS} FROM jobs j WHERE j.id = $1{}",
            self.dialect.for_update()
        ))
        .bind(id.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| job_from_row(&r)).transpose().map_err(to_sqlx)
    }

    async fn job_command_once(
        &self,
        id: JobId,
        command: JobCommand,
    ) -> std::result::Result<JobOutcome, sqlx::Error> {
        let now = Utc::now();
        let mut tx = self.begin_raw().await?;
        let Some((seq, mut job)) = self.job_by_id(&mut tx, id).await? else {
            return Ok(JobOutcome::Unknown);
        };
        if let Err(refusal) = check_job_command(&job.life, command) {
            tx.rollback().await?;
            return Ok(JobOutcome::Refused(refusal));
        }
        let before = job.life.clone();
        let mut changes = Vec::new();
        let mut events = Vec::new();
        match command {
            JobCommand::Cancel => {
                let life = job.life.with_flags(job.life.paused, true, now);
                let (cancelled, after) = self.cancel_rest(&mut tx, seq, life, now).await?;
                changes = cancelled;
                job.life = after;
            }
            JobCommand::Pause | JobCommand::Resume => {
                let paused = command == JobCommand::Pause;
                job.life = job.life.with_flags(paused, job.life.cancelled, now);
            }
            JobCommand::Requeue => {
                let mut life = job.life.with_flags(job.life.paused, false, now);
                let rows = sqlx::query(&format!(
                    "SELECT {TASK_COLS} FROM tasks t WHERE t.job_seq = $1
                       AND t.state IN ('failed', 'cancelled') ORDER BY t.id{}",
                    self.dialect.for_update()
                ))
                .bind(seq)
                .fetch_all(&mut *tx)
                .await?;
                for row in rows {
                    let record = task_from_row(&row, id).map_err(to_sqlx)?;
                    if let Ok(step) = lifecycle::step(&record.task, &life, &Command::Retry, now) {
                        life = step.job.clone();
                        Self::write_task(&mut tx, &step.task, None).await?;
                        changes.push(Change {
                            task: step.task,
                            job: step.job,
                            stop: None,
                            cut_off: None,
                            events: step.events,
                        });
                    }
                }
                sqlx::query("DELETE FROM task_failures WHERE job_seq = $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE tasks SET failed_on = NULL WHERE job_seq = $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                job.life = life;
            }
            JobCommand::Prioritize(priority) => {
                sqlx::query("UPDATE jobs SET priority = $1 WHERE seq = $2")
                    .bind(priority)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE tasks SET priority = $1 WHERE job_seq = $2")
                    .bind(priority)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                job.priority = priority;
            }
        }
        // Queued tasks of a paused or cancelled job are held out of the queue's index.
        sqlx::query("UPDATE tasks SET held = $1 WHERE job_seq = $2")
            .bind(i64::from(job.life.paused || job.life.cancelled))
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        Self::write_job(&mut tx, seq, &job.life, None).await?;
        for change in &changes {
            events.extend(change.events.iter().cloned());
        }
        if job.life != before || matches!(command, JobCommand::Prioritize(_)) {
            events.push(job.life.event());
        }
        self.commit(tx, events).await?;
        Ok(JobOutcome::Done {
            job: Box::new(job),
            changes,
        })
    }

    async fn insert_job_once(
        &self,
        job: &NewJob,
        max_unfinished: u64,
    ) -> std::result::Result<Admission, sqlx::Error> {
        let now = Utc::now();
        let sub = &job.submission;
        let ranges = corral_core::chunk::plan(sub.range, sub.chunk_size, sub.preview_first);
        async {
            // A `202` promises the job survives even a power loss.
            let mut tx = self.writer.begin_durable().await?;
            let unfinished: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running', 'paused')",
            )
            .fetch_one(&mut *tx)
            .await?;
            if unfinished as u64 >= max_unfinished {
                return Ok(Admission::Full(unfinished as u64));
            }
            let life = JobLife::new(job.id, ranges.len() as u64, sub.range.len());
            let seq: i64 = sqlx::query_scalar(
                "INSERT INTO jobs (id, scene, frame_from, frame_to, chunk_size, priority, engine,
                    format, output, state, tasks_queued, submitted_at, manifest)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'queued', $10, $11, $12)
                 RETURNING seq",
            )
            .bind(job.id.to_string())
            .bind(sub.scene.clone())
            .bind(sub.range.from())
            .bind(sub.range.to())
            .bind(sub.chunk_size.map_or(0, |c| c as i64))
            .bind(sub.priority)
            .bind(sub.engine.blender_name())
            .bind(sub.format.map(|f| f.blender_name().to_string()))
            .bind(job.output.as_str())
            .bind(ranges.len() as i64)
            .bind(ms(now))
            .bind(sub.manifest.as_ref().map(|m| m.to_string()))
            .fetch_one(&mut *tx)
            .await?;
            for (batch_no, batch) in ranges.chunks(TASK_INSERT_BATCH).enumerate() {
                let values: Vec<String> = (0..batch.len())
                    .map(|i| {
                        format!(
                            "({}, 'queued', {})",
                            placeholders(i * 6 + 1, 6),
                            sub.priority
                        )
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO tasks (job_seq, idx, frame_from, frame_to, rank, splittable,
                        state, priority) VALUES {}",
                    values.join(", ")
                );
                let mut query = sqlx::query(&sql);
                for (i, planned) in batch.iter().enumerate() {
                    query = query
                        .bind(seq)
                        .bind((batch_no * TASK_INSERT_BATCH + i) as i64)
                        .bind(planned.range.from())
                        .bind(planned.range.to())
                        // Preview frames first in the job's queue order.
                        .bind(i64::from(!planned.preview))
                        .bind(i64::from(planned.splittable));
                }
                query.execute(&mut *tx).await?;
            }
            let record = JobRecord {
                life: life.clone(),
                range: sub.range,
                chunk_size: sub.chunk_size,
                priority: sub.priority,
                render: RenderSpec {
                    scene: sub.scene.clone(),
                    manifest: sub.manifest.clone(),
                    engine: sub.engine,
                    format: sub.format,
                    output: job.output.clone(),
                },
                submitted_at: time(ms(now)),
                last_frame_at: None,
            };
            self.commit(tx, vec![life.event()]).await?;
            Ok(Admission::Accepted(Box::new(record)))
        }
        .await
    }

    async fn lease_once(
        &self,
        assignments: &[Assignment],
        fence: &Fence,
    ) -> std::result::Result<Vec<RunningTask>, sqlx::Error> {
        let now = Utc::now();
        let mut tx = self.begin_raw().await?;
        let holder: Option<(String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT holder, term, expires_at FROM leadership WHERE name = $1{}",
            self.dialect.for_share()
        ))
        .bind(DISPATCH)
        .fetch_optional(&mut *tx)
        .await?;
        let valid = holder.is_some_and(|(holder, term, expires)| {
            holder == fence.holder.as_str() && term == fence.term && expires > ms(now)
        });
        if !valid || assignments.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        // Only the nodes this round leases to, and only their running tasks: the writer
        // holds the database meanwhile, and a farm of a thousand nodes has a round of a
        // few of them.
        let mut named: Vec<&str> = assignments.iter().map(|a| a.node.as_str()).collect();
        named.sort_unstable();
        named.dedup();
        let sql = format!(
            "SELECT {NODE_COLS} FROM nodes WHERE id IN ({})",
            placeholders(1, named.len())
        );
        let mut query = sqlx::query(&sql);
        for id in &named {
            query = query.bind(*id);
        }
        let rows = query.fetch_all(&mut *tx).await?;
        let mut nodes: HashMap<NodeId, NodeRecord> = rows
            .iter()
            .map(|r| node_from_row(r).map(|n| (n.id.clone(), n)))
            .collect::<Result<_>>()
            .map_err(to_sqlx)?;
        let sql = format!(
            "SELECT node_id, id FROM tasks WHERE state = 'running' AND node_id IN ({})",
            placeholders(1, named.len())
        );
        let mut query = sqlx::query_as::<_, (String, i64)>(&sql);
        for id in &named {
            query = query.bind(*id);
        }
        for (node, task) in query.fetch_all(&mut *tx).await? {
            if let Some(n) = nodes.get_mut(&NodeId::new(node)) {
                n.running.push(TaskId(task));
            }
        }
        // Jobs in ascending order (see the module's note on lock order).
        let ids: Vec<i64> = assignments.iter().map(|a| a.task.0).collect();
        let seqs: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT id, job_seq FROM tasks WHERE id IN ({})",
            placeholders(1, ids.len())
        ))
        .bind_all(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let seq_of: HashMap<i64, i64> = seqs.into_iter().collect();
        // A stable sort: the pieces of one task stay in order.
        let mut ordered: Vec<&Assignment> = assignments
            .iter()
            .filter(|a| seq_of.contains_key(&a.task.0))
            .collect();
        ordered.sort_by_key(|a| (seq_of.get(&a.task.0).copied().unwrap_or_default(), a.task.0));
        let mut leased = Vec::new();
        let mut events = Vec::new();
        // Each job as this transaction left it: written once, after every piece, rather
        // than once per piece (a round over a thousand idle slots cuts a thousand).
        let mut deferred = Deferred::default();
        // A task cut for one piece goes on as its cut-off tail for the next piece, known
        // here as it was inserted, so it is not read back.
        let mut continues_as: HashMap<TaskId, Locked> = HashMap::new();
        for assignment in ordered {
            let node_id = &assignment.node;
            let Some(node) = nodes.get_mut(node_id) else {
                continue;
            };
            let free = node.state == NodeState::Up
                && !node.draining
                && (node.running.len() as u64) < node.slots;
            if !free {
                continue;
            }
            let mut locked = match continues_as.remove(&assignment.task) {
                Some(tail) => tail,
                None => match self.lock(&mut tx, assignment.task).await? {
                    Some(locked) => locked,
                    None => continue,
                },
            };
            deferred.current(&mut locked);
            let task = locked.task.task.id;
            // The piece asked for, and never more than the node renders in one task: a
            // piece skipped above leaves the next piece of the same task more frames than
            // it was sized for, and the node would refuse a render past its `--max-frames`.
            let piece = assignment
                .frames
                .into_iter()
                .chain(node.max_frames)
                .min()
                .map(|p| p.max(1));
            let mut cut = false;
            if let Some(piece) = piece {
                let head = &locked.task.task;
                if head.state == TaskState::Queued && piece < head.range.len() {
                    let command = Command::Cut {
                        lease: None,
                        keep_to: head.range.from() + piece as i64 - 1,
                    };
                    let Ok(step) = lifecycle::step(head, &locked.job.life, &command, now) else {
                        // Leasing it uncut would hand the node more than it was given.
                        continues_as.insert(assignment.task, locked);
                        continue;
                    };
                    if let Some(range) = step.cut_off {
                        let (id, index) =
                            Self::insert_cut_off(&mut tx, locked.seq, task, range).await?;
                        continues_as.insert(assignment.task, locked.tail(id, index, range));
                    }
                    // The head's new range is written with its lease below.
                    locked.task.task = step.task;
                    locked.job.life = step.job;
                    cut = true;
                }
            }
            let command = Command::Lease {
                node: node_id.clone(),
                owner: fence.holder.clone(),
            };
            let step = lifecycle::step(&locked.task.task, &locked.job.life, &command, now);
            let Ok(step) = step else {
                // The task is no longer queued (the round read the queue before this
                // transaction): it stays as it is, for the next piece to find the same. A
                // head just cut is queued, so this does not follow a cut; if it ever did,
                // the cut is written and its tail goes on.
                if cut {
                    Self::write_task(&mut tx, &locked.task.task, None).await?;
                    deferred.set_job(locked.seq, locked.job.life.clone(), None);
                }
                continues_as.entry(assignment.task).or_insert(locked);
                continue;
            };
            let change =
                Self::write_locked(&mut tx, &mut locked, step, None, &command, now).await?;
            events.extend(change.events.iter().cloned());
            node.running.push(task);
            leased.push(RunningTask {
                task,
                lease: change.task.lease,
                job: locked.job.id(),
                range: change.task.range,
                node: node_id.clone(),
                node_url: Some(node.url.clone()),
                node_job: None,
                owner: fence.holder.clone(),
                started_at: now,
                progress_at: now,
                render: locked.job.render.clone(),
                sized_by_farm: locked.job.chunk_size.is_none(),
            });
            deferred.set_job(locked.seq, locked.job.life, None);
        }
        deferred.write(&mut tx).await?;
        self.commit(tx, events).await?;
        Ok(leased)
    }

    async fn take_back_orphans_once(&self) -> std::result::Result<Vec<Change>, sqlx::Error> {
        let now = Utc::now();
        let mut tx = self.begin_raw().await?;
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT t.job_seq, t.id FROM tasks t WHERE t.state = 'running'
               AND (t.node_id IS NULL OR NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = t.node_id))",
        )
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.rollback().await?;
            return Ok(Vec::new());
        }
        let tasks = rows.into_iter().map(|(s, t)| (s, TaskId(t))).collect();
        let (changes, events) = self.take_back_all(&mut tx, tasks, now).await?;
        self.commit(tx, events).await?;
        Ok(changes)
    }

    async fn node_lost_once(
        &self,
        id: &NodeId,
    ) -> std::result::Result<Option<Vec<Change>>, sqlx::Error> {
        let now = Utc::now();
        let mut tx = self.begin_raw().await?;
        let marked = sqlx::query("UPDATE nodes SET state = 'down' WHERE id = $1 AND state = 'up'")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if marked == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let tasks = Self::running_on(&mut tx, id).await?;
        let (changes, mut events) = self.take_back_all(&mut tx, tasks, now).await?;
        if let Some(node) = Self::node_in(&mut tx, id).await? {
            events.push(node_event(&node));
        }
        self.commit(tx, events).await?;
        Ok(Some(changes))
    }

    async fn remove_node_once(
        &self,
        id: &NodeId,
    ) -> std::result::Result<Option<Vec<Change>>, sqlx::Error> {
        let now = Utc::now();
        let mut tx = self.begin_raw().await?;
        let Some(mut node) = Self::node_in(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let tasks = Self::running_on(&mut tx, id).await?;
        let (changes, mut events) = self.take_back_all(&mut tx, tasks, now).await?;
        sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        node.state = NodeState::Down;
        events.push(node_event(&node));
        self.commit(tx, events).await?;
        Ok(Some(changes))
    }

    async fn nodes_with_running(&self, only: Option<&NodeId>) -> Result<Vec<NodeRecord>> {
        let rows = match only {
            Some(id) => {
                sqlx::query(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
                    .bind(id.as_str())
                    .fetch_all(&self.reader)
                    .await
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {NODE_COLS} FROM nodes ORDER BY registered_at, id"
                ))
                .fetch_all(&self.reader)
                .await
            }
        }
        .map_err(db_err)?;
        let mut nodes: Vec<NodeRecord> = rows.iter().map(node_from_row).collect::<Result<_>>()?;
        let running: Vec<(String, i64)> = sqlx::query_as(
            "SELECT node_id, id FROM tasks WHERE state = 'running' AND node_id IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let mut by_node: HashMap<String, Vec<TaskId>> = HashMap::new();
        for (node, task) in running {
            by_node.entry(node).or_default().push(TaskId(task));
        }
        for node in &mut nodes {
            node.running = by_node.remove(node.id.as_str()).unwrap_or_default();
        }
        Ok(nodes)
    }
}

/// Lets a query bind a slice of integers in order.
trait BindAll<'q> {
    fn bind_all(self, values: &'q [i64]) -> Self;
}

impl<'q, O> BindAll<'q> for sqlx::query::QueryAs<'q, Any, O, sqlx::any::AnyArguments<'q>> {
    fn bind_all(mut self, values: &'q [i64]) -> Self {
        for v in values {
            self = self.bind(*v);
        }
        self
    }
}

/// Events as JSON arrays, each small enough for one notification.
fn notify_payloads(events: &[Event]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let mut size = 2;
    for event in events {
        let Ok(json) = serde_json::to_string(event) else {
            continue;
        };
        if json.len() + 2 > MAX_NOTIFY_BYTES {
            // One event this large is a frame with an enormous path: skip it rather than
            // fail the transaction; readers still see the frame.
            continue;
        }
        if size + json.len() + 1 > MAX_NOTIFY_BYTES && !batch.is_empty() {
            payloads.push(format!("[{}]", batch.join(",")));
            batch.clear();
            size = 2;
        }
        size += json.len() + 1;
        batch.push(json);
    }
    if !batch.is_empty() {
        payloads.push(format!("[{}]", batch.join(",")));
    }
    payloads
}

/// Carries a store error through a sqlx-typed transaction body.
fn to_sqlx(e: StoreError) -> sqlx::Error {
    sqlx::Error::Decode(Box::new(e))
}

#[async_trait]
impl Store for SqlStore {
    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn shared(&self) -> bool {
        self.dialect == Dialect::Postgres
    }

    fn applies_together(&self) -> usize {
        match self.dialect {
            Dialect::Sqlite => APPLIES_PER_COMMIT,
            Dialect::Postgres => 1,
        }
    }

    async fn insert_job(&self, job: NewJob, max_unfinished: u64) -> Result<Admission> {
        self.retrying(|| self.insert_job_once(&job, max_unfinished))
            .await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobRecord>> {
        let row = sqlx::query(&format!("SELECT {JOB_COLS} FROM jobs j WHERE j.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.map(|r| job_from_row(&r).map(|(_, j)| j)).transpose()
    }

    async fn jobs(
        &self,
        state: Option<JobState>,
        offset: u64,
        limit: u64,
    ) -> Result<(Vec<JobRecord>, u64)> {
        let state = state.map(|s| s.as_str().to_string());
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLS} FROM jobs j WHERE ($1 IS NULL OR j.state = $1)
             ORDER BY j.seq DESC LIMIT $2 OFFSET $3"
        ))
        .bind(state.clone())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let total: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE ($1 IS NULL OR state = $1)")
                .bind(state)
                .fetch_one(&self.reader)
                .await
                .map_err(db_err)?;
        let jobs = rows
            .iter()
            .map(|r| job_from_row(r).map(|(_, j)| j))
            .collect::<Result<_>>()?;
        Ok((jobs, total.max(0) as u64))
    }

    async fn tasks(&self, job: JobId, offset: u64, limit: u64) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLS} FROM tasks t JOIN jobs j ON j.seq = t.job_seq
             WHERE j.id = $1 ORDER BY t.frame_from LIMIT $2 OFFSET $3"
        ))
        .bind(job.to_string())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter().map(|r| task_from_row(r, job)).collect()
    }

    async fn task(&self, id: TaskId) -> Result<Option<TaskRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLS}, j.id AS j_id FROM tasks t JOIN jobs j ON j.seq = t.job_seq
             WHERE t.id = $1"
        ))
        .bind(id.0)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job: String = get(&row, "j_id")?;
        let job: JobId = job
            .parse()
            .map_err(|_| corrupt(format!("job id `{job}`")))?;
        task_from_row(&row, job).map(Some)
    }

    async fn frames(&self, job: JobId, range: FrameRange) -> Result<Vec<FrameRecord>> {
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT f.frame, f.node_id, f.path, f.done_at FROM frames f JOIN jobs j ON j.seq = f.job_seq
             WHERE j.id = $1 AND f.frame >= $2 AND f.frame <= $3 ORDER BY f.frame",
        )
        .bind(job.to_string())
        .bind(range.from())
        .bind(range.to())
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        Ok(rows
            .into_iter()
            .map(|(frame, node, path, done_at)| FrameRecord {
                frame,
                node: NodeId::new(node),
                path,
                done_at: time(done_at),
            })
            .collect())
    }

    async fn failed_frames(&self, job: JobId) -> Result<Vec<FrameSpan>> {
        let failed: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT t.frame_from, t.frame_to FROM tasks t JOIN jobs j ON j.seq = t.job_seq
             WHERE j.id = $1 AND t.state = 'failed' ORDER BY t.idx",
        )
        .bind(job.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let mut frames = Vec::new();
        for (from, to) in failed {
            let Ok(range) = FrameRange::new(from, to) else {
                continue;
            };
            let done: std::collections::HashSet<i64> = self
                .frames(job, range)
                .await?
                .into_iter()
                .map(|f| f.frame)
                .collect();
            frames.extend(range.frames().filter(|f| !done.contains(f)));
        }
        Ok(FrameSpan::runs(frames))
    }

    async fn job_command(&self, job: JobId, command: JobCommand) -> Result<JobOutcome> {
        self.retrying(|| self.job_command_once(job, command)).await
    }

    async fn apply(&self, task: TaskId, command: Command, note: Note) -> Result<Applied> {
        let Some(thread) = &self.write_thread else {
            return self
                .retrying(|| self.apply_once(task, &command, &note))
                .await;
        };
        let me = self.me()?;
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Waiting {
                task,
                command,
                note,
                answer,
            });
        // Queued and its drain started in one step, with no await between: a report queued
        // is applied even if its caller stops waiting for the answer.
        thread.spawn(me.apply_waiting());
        answered
            .await
            .map_err(|_| StoreError::Database("a write failed: the write thread stopped".into()))?
    }

    async fn lease(&self, assignments: &[Assignment], fence: &Fence) -> Result<Vec<RunningTask>> {
        let (assignments, fence) = (assignments.to_vec(), fence.clone());
        self.on_write_thread(move |me| async move {
            me.retrying(|| me.lease_once(&assignments, &fence)).await
        })
        .await
    }

    async fn queue_head(&self, limit: u64) -> Result<Vec<QueuedTask>> {
        let rows = sqlx::query(
            "SELECT t.id, t.job_seq, t.priority, t.failed_on, t.frame_from, t.frame_to,
                t.splittable, j.id AS job_id, j.frame_us
             FROM tasks t JOIN jobs j ON j.seq = t.job_seq
             WHERE t.state = 'queued' AND t.held = 0
             ORDER BY t.priority DESC, t.job_seq, t.rank, t.frame_from LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.iter()
            .enumerate()
            .map(|(position, row)| {
                let job_id: String = get(row, "job_id")?;
                let failed_on: Option<String> = get(row, "failed_on")?;
                let (from, to): (i64, i64) = (get(row, "frame_from")?, get(row, "frame_to")?);
                Ok(QueuedTask {
                    task_id: TaskId(get(row, "id")?),
                    job_id: job_id
                        .parse()
                        .map_err(|_| corrupt(format!("job id `{job_id}`")))?,
                    priority: get(row, "priority")?,
                    job_seq: get(row, "job_seq")?,
                    // The queue's own order (rank, then frame), for the policy to keep.
                    index: u32::try_from(position).unwrap_or(u32::MAX),
                    failed_on: failed_on
                        .and_then(|f| serde_json::from_str::<Vec<String>>(&f).ok())
                        .unwrap_or_default()
                        .into_iter()
                        .map(NodeId::new)
                        .collect(),
                    frames: (to - from + 1).max(1) as u64,
                    splittable: get::<i64>(row, "splittable")? != 0,
                    frame_ms: get::<Option<i64>>(row, "frame_us")?.map(|us| us as f64 / 1000.0),
                })
            })
            .collect()
    }

    async fn blocklist(&self, threshold: u32) -> Result<Vec<(JobId, NodeId)>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT j.id, f.node_id FROM task_failures f JOIN jobs j ON j.seq = f.job_seq
             WHERE j.state IN ('queued', 'running', 'paused')
             GROUP BY j.id, f.node_id HAVING COUNT(*) >= $1",
        )
        .bind(i64::from(threshold))
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(job, node)| {
                Ok((
                    job.parse()
                        .map_err(|_| corrupt(format!("job id `{job}`")))?,
                    NodeId::new(node),
                ))
            })
            .collect()
    }

    async fn running(&self, filter: RunningFilter) -> Result<Vec<RunningTask>> {
        let base = format!(
            "SELECT {TASK_COLS}, {JOB_COLS}, n.url AS node_url FROM tasks t
             JOIN jobs j ON j.seq = t.job_seq LEFT JOIN nodes n ON n.id = t.node_id
             WHERE t.state = 'running'"
        );
        let rows = match &filter {
            RunningFilter::All => sqlx::query(&base).fetch_all(&self.reader).await,
            RunningFilter::OwnedBy(owner) => {
                sqlx::query(&format!("{base} AND t.owner = $1"))
                    .bind(owner.as_str())
                    .fetch_all(&self.reader)
                    .await
            }
            RunningFilter::StalledSince(before) => {
                sqlx::query(&format!("{base} AND t.progress_at < $1"))
                    .bind(ms(*before))
                    .fetch_all(&self.reader)
                    .await
            }
            RunningFilter::OnNode(node) => {
                sqlx::query(&format!("{base} AND t.node_id = $1"))
                    .bind(node.as_str())
                    .fetch_all(&self.reader)
                    .await
            }
            RunningFilter::OwnerNotIn(live) => {
                let sql = if live.is_empty() {
                    base.clone()
                } else {
                    format!(
                        "{base} AND (t.owner IS NULL OR t.owner NOT IN ({}))",
                        placeholders(1, live.len())
                    )
                };
                let mut query = sqlx::query(&sql);
                for id in live {
                    query = query.bind(id.as_str());
                }
                query.fetch_all(&self.reader).await
            }
        }
        .map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let (_, job) = job_from_row(row)?;
                let record = task_from_row(row, job.id())?;
                let TaskState::Running(r) = record.task.state else {
                    return Err(corrupt("a running row that is not running"));
                };
                Ok(RunningTask {
                    task: record.task.id,
                    lease: record.task.lease,
                    job: job.id(),
                    range: record.task.range,
                    node: r.node,
                    node_url: get(row, "node_url")?,
                    node_job: r.node_job,
                    owner: r.owner,
                    started_at: r.started_at,
                    progress_at: r.progress_at,
                    sized_by_farm: job.chunk_size.is_none(),
                    render: job.render,
                })
            })
            .collect()
    }

    async fn take_back_orphans(&self) -> Result<Vec<Change>> {
        self.retrying(|| self.take_back_orphans_once()).await
    }

    async fn upsert_node(&self, url: &str) -> Result<NodeRecord> {
        let id = NodeId::from_url(url);
        let result: std::result::Result<NodeRecord, sqlx::Error> = async {
            let mut tx = self.begin_raw().await?;
            let inserted = sqlx::query(
                "INSERT INTO nodes (id, url, state, registered_at) VALUES ($1, $2, 'down', $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.as_str())
            .bind(url)
            .bind(ms(Utc::now()))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let row = sqlx::query(&format!(
                "SELECT {NODE_COLS} FROM nodes WHERE url = $1 OR id = $2"
            ))
            .bind(url)
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
            let node = node_from_row(&row).map_err(to_sqlx)?;
            let events = if inserted > 0 {
                vec![node_event(&node)]
            } else {
                Vec::new()
            };
            self.commit(tx, events).await?;
            Ok(node)
        }
        .await;
        result.map_err(db_err)
    }

    async fn free_slots(&self) -> Result<FreeSlots> {
        // Counted by the database, which answers a row per node with room only: most
        // rounds of a busy farm find a few.
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT n.id, n.slots - (SELECT COUNT(*) FROM tasks t
                                     WHERE t.node_id = n.id AND t.state = 'running') AS free,
                n.max_frames
             FROM nodes n
             WHERE n.state = 'up' AND n.draining = 0
               AND n.slots > (SELECT COUNT(*) FROM tasks t
                              WHERE t.node_id = n.id AND t.state = 'running')
             ORDER BY n.registered_at, n.id",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(db_err)?;
        let farm: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(slots), 0) AS BIGINT) FROM nodes
             WHERE state = 'up' AND draining = 0",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        Ok(FreeSlots {
            max_frames: rows
                .iter()
                .filter_map(|(id, _, most)| {
                    let most = u64::try_from((*most)?).ok().filter(|m| *m > 0)?;
                    Some((NodeId::new(id.as_str()), most))
                })
                .collect(),
            nodes: rows
                .into_iter()
                .map(|(id, free, _)| (NodeId::new(id), u64::try_from(free).unwrap_or(0)))
                .collect(),
            farm: u64::try_from(farm).unwrap_or(0),
        })
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.nodes_with_running(None).await
    }

    async fn node(&self, id: &NodeId) -> Result<Option<NodeRecord>> {
        Ok(self.nodes_with_running(Some(id)).await?.into_iter().next())
    }

    async fn node_seen(&self, id: &NodeId, info: &NodeInfo) -> Result<bool> {
        let now = Utc::now();
        let result: std::result::Result<bool, sqlx::Error> = async {
            let mut tx = self.begin_raw().await?;
            let was: Option<String> = sqlx::query_scalar(&format!(
                "SELECT state FROM nodes WHERE id = $1{}",
                self.dialect.for_update()
            ))
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(was) = was else {
                tx.rollback().await?;
                return Ok(false);
            };
            sqlx::query(
                "UPDATE nodes SET last_seen = $1, slots = $2, hostname = $3,
                    blender_version = $4, cores = $5, memory_bytes = $6, max_frames = $7,
                    state = 'up'
                 WHERE id = $8",
            )
            .bind(ms(now))
            .bind(info.slots as i64)
            .bind(info.hostname.as_str())
            .bind(info.blender_version.as_str())
            .bind(info.cores as i64)
            .bind(
                info.memory_bytes
                    .map(|m| i64::try_from(m).unwrap_or(i64::MAX)),
            )
            .bind(super::max_frames_of(info).map(|m| m as i64))
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
            let came_up = was != "up";
            let mut events = Vec::new();
            if came_up {
                if let Some(node) = Self::node_in(&mut tx, id).await? {
                    events.push(node_event(&node));
                }
            }
            self.commit(tx, events).await?;
            Ok(came_up)
        }
        .await;
        result.map_err(db_err)
    }

    async fn nodes_still_up(&self, ids: &[NodeId], at: DateTime<Utc>) -> Result<()> {
        for ids in ids.chunks(NODES_PER_STATEMENT) {
            let sql = format!(
                "UPDATE nodes SET last_seen = $1 WHERE state = 'up' AND id IN ({})",
                placeholders(2, ids.len())
            );
            let mut query = sqlx::query(&sql).bind(ms(at));
            for id in ids {
                query = query.bind(id.as_str());
            }
            query
                .execute(&mut *self.writer.conn().await.map_err(db_err)?)
                .await
                .map_err(db_err)?;
        }
        Ok(())
    }

    async fn node_lost(&self, id: &NodeId) -> Result<Option<Vec<Change>>> {
        self.retrying(|| self.node_lost_once(id)).await
    }

    async fn set_draining(&self, id: &NodeId, draining: bool) -> Result<Option<NodeRecord>> {
        let result: std::result::Result<Option<NodeRecord>, sqlx::Error> = async {
            let mut tx = self.begin_raw().await?;
            sqlx::query("UPDATE nodes SET draining = $1 WHERE id = $2")
                .bind(i64::from(draining))
                .bind(id.as_str())
                .execute(&mut *tx)
                .await?;
            let node = Self::node_in(&mut tx, id).await?;
            let events = node.iter().map(node_event).collect();
            self.commit(tx, events).await?;
            Ok(node)
        }
        .await;
        match result.map_err(db_err)? {
            Some(_) => self.node(id).await,
            None => Ok(None),
        }
    }

    async fn remove_node(&self, id: &NodeId) -> Result<Option<Vec<Change>>> {
        self.retrying(|| self.remove_node_once(id)).await
    }

    async fn heartbeat(&self, me: &OrchestratorId, url: Option<&str>) -> Result<()> {
        let now = ms(Utc::now());
        sqlx::query(
            "INSERT INTO orchestrators (id, url, started_at, heartbeat_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (id) DO UPDATE SET heartbeat_at = $3, url = $2",
        )
        .bind(me.as_str())
        .bind(url.map(str::to_string))
        .bind(now)
        .execute(&mut *self.writer.conn().await.map_err(db_err)?)
        .await
        .map_err(db_err)?;
        Ok(())
    }

    async fn lead(&self, me: &OrchestratorId, ttl: Duration) -> Result<Option<Fence>> {
        let now = Utc::now();
        let expires = now + chrono::TimeDelta::from_std(ttl).unwrap_or_default();
        let row: Option<(String, i64, i64)> = sqlx::query_as(
            "INSERT INTO leadership (name, holder, term, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET
                term = CASE WHEN leadership.holder = $2 THEN leadership.term
                            ELSE leadership.term + 1 END,
                holder = $2,
                expires_at = $3
             WHERE leadership.holder = $2 OR leadership.expires_at < $4 OR $5 = 1
             RETURNING holder, term, expires_at",
        )
        .bind(DISPATCH)
        .bind(me.as_str())
        .bind(ms(expires))
        .bind(ms(now))
        // One process uses a SQLite file at a time: a holder there is an earlier process
        // of this one, whose lease need not be waited out.
        .bind(i64::from(self.dialect == Dialect::Sqlite))
        .fetch_optional(&mut *self.writer.conn().await.map_err(db_err)?)
        .await
        .map_err(db_err)?;
        Ok(row.map(|(holder, term, expires_at)| Fence {
            holder: OrchestratorId::new(holder),
            term,
            expires_at: time(expires_at),
        }))
    }

    async fn live_orchestrators(&self, since: DateTime<Utc>) -> Result<Vec<OrchestratorId>> {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT id FROM orchestrators WHERE heartbeat_at >= $1")
                .bind(ms(since))
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
        Ok(ids.into_iter().map(OrchestratorId::new).collect())
    }

    async fn counts(&self) -> Result<Counts> {
        let jobs: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
        let tally: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(tasks_queued), 0) AS BIGINT),
                CAST(COALESCE(SUM(tasks_running), 0) AS BIGINT),
                CAST(COALESCE(SUM(tasks_completed), 0) AS BIGINT),
                CAST(COALESCE(SUM(tasks_failed), 0) AS BIGINT),
                CAST(COALESCE(SUM(tasks_cancelled), 0) AS BIGINT),
                CAST(COALESCE(SUM(frames_done), 0) AS BIGINT) FROM jobs",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        let nodes: (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN state = 'up' THEN 1 ELSE 0 END), 0) AS BIGINT)
             FROM nodes",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(db_err)?;
        let u = |v: i64| v.max(0) as u64;
        Ok(Counts {
            jobs: jobs
                .into_iter()
                .filter_map(|(s, n)| Some((JobState::parse(&s)?, u(n))))
                .collect(),
            tasks: [u(tally.0), u(tally.1), u(tally.2), u(tally.3), u(tally.4)],
            frames_done: u(tally.5),
            nodes_up: u(nodes.1),
            nodes_known: u(nodes.0),
        })
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&mut *self.writer.conn().await.map_err(db_err)?)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_node_secret(&self, id: &NodeId, secret: &NodeSecret) -> Result<()> {
        sqlx::query("UPDATE nodes SET secret = $1 WHERE id = $2")
            .bind(secret.0.as_str())
            .bind(id.as_str())
            .execute(&mut *self.writer.conn().await.map_err(db_err)?)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn set_node_fingerprint(&self, id: &NodeId, fp: Option<&Fingerprint>) -> Result<()> {
        sqlx::query("UPDATE nodes SET tls_fingerprint = $1 WHERE id = $2")
            .bind(fp.map(|fp| fp.to_string()))
            .bind(id.as_str())
            .execute(&mut *self.writer.conn().await.map_err(db_err)?)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_token(&self, kind: TokenKind, hash: &str, name: &str) -> Result<TokenRecord> {
        let row = sqlx::query(&format!(
            "INSERT INTO tokens (kind, hash, name, created) VALUES ($1, $2, $3, $4)
             RETURNING {TOKEN_COLS}"
        ))
        .bind(kind.name())
        .bind(hash)
        .bind(name)
        .bind(ms(Utc::now()))
        .fetch_one(&mut *self.writer.conn().await.map_err(db_err)?)
        .await
        .map_err(db_err)?;
        token_from_row(&row)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens ORDER BY id"))
            .fetch_all(&self.reader)
            .await
            .map_err(db_err)?;
        rows.iter().map(token_from_row).collect()
    }

    async fn revoke_token(&self, id: i64) -> Result<bool> {
        sqlx::query("UPDATE tokens SET revoked = COALESCE(revoked, $1) WHERE id = $2")
            .bind(ms(Utc::now()))
            .bind(id)
            .execute(&mut *self.writer.conn().await.map_err(db_err)?)
            .await
            .map(|r| r.rows_affected() > 0)
            .map_err(db_err)
    }

    async fn revoke_tokens_named(&self, kind: TokenKind, name: &str) -> Result<u64> {
        sqlx::query(
            "UPDATE tokens SET revoked = $1 WHERE kind = $2 AND name = $3 AND revoked IS NULL",
        )
        .bind(ms(Utc::now()))
        .bind(kind.name())
        .bind(name)
        .execute(&mut *self.writer.conn().await.map_err(db_err)?)
        .await
        .map(|r| r.rows_affected())
        .map_err(db_err)
    }

    async fn job_manifests(&self) -> Result<Vec<BlobHash>> {
        // From a reader: a job committed before this read starts is seen (WAL), which is
        // all the collector needs (see `workers::collector`).
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT manifest FROM jobs WHERE manifest IS NOT NULL")
                .fetch_all(&self.reader)
                .await
                .map_err(db_err)?;
        rows.iter()
            .map(|m| BlobHash::parse("manifest", m).map_err(|_| corrupt(format!("manifest `{m}`"))))
            .collect()
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        // From a reader: every request with a token asks this, and SQLite has one writer
        // that progress and lease writes queue on. A read started after a commit sees it
        // (WAL), so a token created a moment ago is found at once all the same.
        let row = sqlx::query(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE hash = $1"))
            .bind(hash)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_err)?;
        row.as_ref().map(token_from_row).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SQLite store with a leader, a node up with four slots and a job of four tasks
    /// of five frames (1-5, 6-10, 11-15, 16-20), each leased to the node and dispatched.
    async fn four_renders(dir: &Path) -> (Arc<SqlStore>, NodeId, Vec<(TaskId, LeaseId)>) {
        let store = SqlStore::open(&DatabaseUrl::Sqlite(dir.join("corral.db")))
            .await
            .unwrap();
        let fence = store
            .lead(&OrchestratorId::new("o1"), Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let node = store.upsert_node("http://n:3000").await.unwrap();
        let info = NodeInfo {
            hostname: "n".into(),
            cores: 2,
            memory_bytes: None,
            blender_version: "3.4.1".into(),
            corral_version: "test".into(),
            slots: 4,
            running: 0,
            queued: 0,
            engines: vec![],
            formats: vec![],
            max_frames_per_job: 1000,
            render_mode: "warm".into(),
            workers: vec![],
        };
        assert!(store.node_seen(&node.id, &info).await.unwrap());
        let limits = corral_core::orchestrator_api::SubmitLimits {
            max_frames: 1000,
            default_chunk_size: None,
        };
        let submission =
            JobSubmission::from_body(br#"{"from":1,"to":20,"chunk_size":5}"#, limits).unwrap();
        let id = JobId::new();
        let job = NewJob {
            id,
            submission,
            output: "out/f_####".into(),
        };
        assert!(matches!(
            store.insert_job(job, 10).await.unwrap(),
            Admission::Accepted(_)
        ));
        let mut renders = Vec::new();
        for record in store.tasks(id, 0, 10).await.unwrap() {
            let one = Assignment {
                task: record.task.id,
                node: node.id.clone(),
                frames: None,
            };
            let leased = store.lease(&[one], &fence).await.unwrap();
            let lease = leased[0].lease;
            let dispatched = Command::Dispatched {
                lease,
                node_job: NodeJobId::new(format!("j{}", record.task.id.0)),
            };
            let applied = store.apply(record.task.id, dispatched, Note::default());
            assert!(applied.await.unwrap().is_applied());
            renders.push((record.task.id, lease));
        }
        (store, node.id, renders)
    }

    fn saved(frames: std::ops::RangeInclusive<i64>) -> Note {
        Note {
            frames: frames
                .map(|frame| SavedFrame {
                    frame,
                    path: format!("/out/f_{frame:04}.png"),
                })
                .collect(),
            log_tail: None,
        }
    }

    fn complete(lease: LeaseId) -> Command {
        Command::Complete {
            lease,
            frames_recorded: 0,
            render_ms: None,
        }
    }

    /// Queues reports as `apply` does, and drains them as one batch.
    async fn apply_together(
        store: &Arc<SqlStore>,
        reports: Vec<(TaskId, Command, Note)>,
    ) -> Vec<Result<Applied>> {
        let mut answers = Vec::new();
        for (task, command, note) in reports {
            let (answer, answered) = tokio::sync::oneshot::channel();
            store.waiting.lock().unwrap().push(Waiting {
                task,
                command,
                note,
                answer,
            });
            answers.push(answered);
        }
        store.clone().apply_waiting().await;
        let mut out = Vec::new();
        for answered in answers {
            out.push(answered.await.unwrap());
        }
        out
    }

    async fn states(store: &Arc<SqlStore>, task: TaskId) -> Vec<TaskStateKind> {
        let job = store.task(task).await.unwrap().unwrap().task.job;
        let tasks = store.tasks(job, 0, 10).await.unwrap();
        tasks.iter().map(|t| t.task.state.kind()).collect()
    }

    /// Reports queued together share one transaction: each gets its own answer, a later
    /// report about the same task sees the earlier one's frames, and a report refused after
    /// its frames were looked at writes none of them while the others commit. When one
    /// fails, the batch is applied again one report at a time: the others are applied once
    /// each, and only it fails.
    #[tokio::test]
    async fn waiting_reports_share_a_transaction_and_fail_alone() {
        use TaskStateKind::{Completed, Queued, Running};
        let dir = tempfile::tempdir().unwrap();
        let (store, node, r) = four_renders(dir.path()).await;
        let progress = |lease| Command::Progress {
            lease,
            new_frames: 0,
        };
        let answers = apply_together(
            &store,
            vec![
                (r[0].0, progress(r[0].1), saved(1..=2)),
                (r[0].0, complete(r[0].1), saved(3..=5)),
                // Under its lease, but three frames of five: refused, none recorded.
                (r[1].0, complete(r[1].1), saved(6..=8)),
                (r[2].0, complete(r[2].1), saved(11..=15)),
            ],
        )
        .await;
        let changed = |a: &Result<Applied>| matches!(a, Ok(Applied::Changed(_)));
        assert!(changed(&answers[0]) && changed(&answers[1]), "{answers:?}");
        assert!(matches!(answers[2], Ok(Applied::Refused(_))), "{answers:?}");
        assert!(changed(&answers[3]), "{answers:?}");
        assert_eq!(
            states(&store, r[0].0).await,
            [Completed, Running, Completed, Running]
        );
        let recorded: Vec<i64> = sqlx::query_scalar("SELECT frame FROM frames ORDER BY frame")
            .fetch_all(&store.reader)
            .await
            .unwrap();
        assert_eq!(recorded, [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]);
        let node = store.node(&node).await.unwrap().unwrap();
        assert_eq!(
            node.frames_rendered, 10,
            "the refused report's frames not counted"
        );
        // The four reports are of one job, whose row is written once, after all of them:
        // it counts what each of them did.
        let seq: i64 = sqlx::query_scalar("SELECT job_seq FROM tasks WHERE id = $1")
            .bind(r[0].0 .0)
            .fetch_one(&store.reader)
            .await
            .unwrap();
        let (done, completed, running, frame_at): (i64, i64, i64, Option<i64>) = sqlx::query_as(
            "SELECT frames_done, tasks_completed, tasks_running, last_frame_at FROM jobs
             WHERE seq = $1",
        )
        .bind(seq)
        .fetch_one(&store.reader)
        .await
        .unwrap();
        assert_eq!((done, completed, running), (10, 2, 2));
        assert!(
            frame_at.is_some(),
            "the batch's frames were recorded at its time"
        );

        // Without a frames table, a report with frames fails. The failure beside it is
        // applied once, after the batch failed.
        let mut conn = store.writer.conn().await.unwrap();
        sqlx::query("DROP TABLE frames")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let answers = apply_together(
            &store,
            vec![
                (
                    r[1].0,
                    Command::Fail {
                        lease: r[1].1,
                        reason: "broken".into(),
                        max_attempts: 3,
                    },
                    Note::default(),
                ),
                (r[3].0, progress(r[3].1), saved(16..=17)),
            ],
        )
        .await;
        assert!(changed(&answers[0]), "{answers:?}");
        assert!(answers[1].is_err(), "{answers:?}");
        let failed = store.task(r[1].0).await.unwrap().unwrap().task;
        assert_eq!(failed.state.kind(), Queued, "to be tried again");
        assert_eq!(failed.attempts, 1, "failed once, not once per try");

        // Many at once through `apply`: each is answered.
        let many = (0..40).map(|_| store.apply(r[3].0, progress(r[3].1), Note::default()));
        for answer in futures_util::future::join_all(many).await {
            assert!(answer.unwrap().is_applied());
        }
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/corral.db"),
            Ok(DatabaseUrl::Sqlite(PathBuf::from("/var/lib/corral.db")))
        );
        assert!(matches!(
            DatabaseUrl::parse("postgresql://u:p@h/db"),
            Ok(DatabaseUrl::Postgres(_))
        ));
        assert!(DatabaseUrl::parse("mysql://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        let url = DatabaseUrl::Postgres("postgres://corral:secret@db:5432/corral".into());
        assert_eq!(url.redacted(), "postgres://corral:***@db:5432/corral");
        assert!(!url.redacted().contains("secret"));
    }

    #[test]
    fn job_events_are_coalesced_to_the_last() {
        let id = JobId::new();
        let job = |done| Event::Job {
            id,
            state: JobState::Running,
            frames_done: done,
            frames_total: 10,
        };
        let task = Event::Task {
            job: id,
            id: TaskId(1),
            state: TaskStateKind::Running,
            node: None,
        };
        let out = coalesce(vec![job(1), task.clone(), job(2)]);
        assert_eq!(out, vec![task, job(2)]);
    }

    #[test]
    fn notifications_stay_under_the_limit() {
        let id = JobId::new();
        let events: Vec<Event> = (0..500)
            .map(|frame| Event::Frame {
                job: id,
                frame,
                node: NodeId::new("n:1"),
                path: "/out/x/frame_0001.png".into(),
            })
            .collect();
        let payloads = notify_payloads(&events);
        assert!(payloads.len() > 1);
        let mut back = 0;
        for p in &payloads {
            assert!(p.len() < MAX_NOTIFY_BYTES);
            back += serde_json::from_str::<Vec<Event>>(p)
                .map(|v| v.len())
                .unwrap_or(0);
        }
        assert_eq!(back, 500);
    }
}
