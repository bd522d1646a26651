-- Corral orchestrator schema, version 2 (SQLite): times as integer milliseconds since the
-- Unix epoch (the same in SQLite and PostgreSQL), each job's task tally kept on its row (a
-- job's summary and state never count its tasks), the queue's order denormalised onto the
-- tasks (priority, held) so the queue's head is an index scan, the orchestrator that follows
-- each running task, and the tables several orchestrators coordinate through.
--
-- Version 1 rows are copied across. Old tables are dropped children first, so their
-- ON DELETE CASCADE has nothing left to delete.

CREATE TABLE jobs_v2 (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    scene           TEXT,
    frame_from      INTEGER NOT NULL,
    frame_to        INTEGER NOT NULL,
    chunk_size      INTEGER NOT NULL,
    priority        INTEGER NOT NULL DEFAULT 0,
    engine          TEXT NOT NULL,
    format          TEXT,
    output          TEXT NOT NULL,
    state           TEXT NOT NULL,
    paused          INTEGER NOT NULL DEFAULT 0,
    cancelled       INTEGER NOT NULL DEFAULT 0,
    failure         TEXT,
    tasks_queued    INTEGER NOT NULL DEFAULT 0,
    tasks_running   INTEGER NOT NULL DEFAULT 0,
    tasks_completed INTEGER NOT NULL DEFAULT 0,
    tasks_failed    INTEGER NOT NULL DEFAULT 0,
    tasks_cancelled INTEGER NOT NULL DEFAULT 0,
    frames_done     INTEGER NOT NULL DEFAULT 0,
    last_frame_at   INTEGER,
    submitted_at    INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);

CREATE TABLE tasks_v2 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_seq     INTEGER NOT NULL REFERENCES jobs_v2 (seq) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    frame_from  INTEGER NOT NULL,
    frame_to    INTEGER NOT NULL,
    state       TEXT NOT NULL,
    priority    INTEGER NOT NULL DEFAULT 0,  -- the job's, for the queue index
    held        INTEGER NOT NULL DEFAULT 0,  -- 1 while the job is paused or cancelled
    attempts    INTEGER NOT NULL DEFAULT 0,  -- attempts that ended in failure
    lease       INTEGER NOT NULL DEFAULT 0,  -- the fencing token: moves on at every lease and take-back
    node_id     TEXT,                        -- node of the latest lease
    owner       TEXT,                        -- orchestrator following the running task
    node_job_id TEXT,                        -- the node's id for the render; NULL until accepted
    failure     TEXT,                        -- why the latest attempt failed
    failed_on   TEXT,                        -- JSON array of the nodes it failed on
    log_tail    TEXT,                        -- JSON array of Blender's last lines
    started_at  INTEGER,
    finished_at INTEGER,
    progress_at INTEGER,
    UNIQUE (job_seq, idx)
);

CREATE TABLE task_failures_v2 (
    task_id INTEGER NOT NULL REFERENCES tasks_v2 (id) ON DELETE CASCADE,
    job_seq INTEGER NOT NULL REFERENCES jobs_v2 (seq) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      INTEGER NOT NULL
);

CREATE TABLE frames_v2 (
    job_seq INTEGER NOT NULL REFERENCES jobs_v2 (seq) ON DELETE CASCADE,
    frame   INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    path    TEXT NOT NULL,
    done_at INTEGER NOT NULL,
    PRIMARY KEY (job_seq, frame)
);

CREATE TABLE nodes_v2 (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    draining        INTEGER NOT NULL DEFAULT 0,
    slots           INTEGER NOT NULL DEFAULT 1,
    hostname        TEXT,
    blender_version TEXT,
    cores           INTEGER,
    memory_bytes    INTEGER,
    frames_rendered INTEGER NOT NULL DEFAULT 0,
    last_seen       INTEGER,
    registered_at   INTEGER NOT NULL
);

-- Version 1 stored times as sqlx's RFC 3339-like text, which julianday() reads.
INSERT INTO jobs_v2 (seq, id, scene, frame_from, frame_to, chunk_size, priority, engine, format,
        output, state, paused, cancelled, failure, submitted_at, started_at, finished_at)
    SELECT seq, id, scene, frame_from, frame_to, chunk_size, priority, engine, format, output,
        state, paused, cancelled, failure,
        CAST(ROUND((julianday(submitted_at) - 2440587.5) * 86400000) AS INTEGER),
        CAST(ROUND((julianday(started_at) - 2440587.5) * 86400000) AS INTEGER),
        CAST(ROUND((julianday(finished_at) - 2440587.5) * 86400000) AS INTEGER)
    FROM jobs;

INSERT INTO tasks_v2 (id, job_seq, idx, frame_from, frame_to, state, priority, held, attempts,
        lease, node_id, node_job_id, failure, log_tail, started_at, finished_at, progress_at)
    SELECT t.id, t.job_seq, t.idx, t.frame_from, t.frame_to, t.state, j.priority,
        CASE WHEN j.paused != 0 OR j.cancelled != 0 THEN 1 ELSE 0 END,
        t.attempts, t.lease, t.node_id, t.node_job_id, t.failure, t.log_tail,
        CAST(ROUND((julianday(t.started_at) - 2440587.5) * 86400000) AS INTEGER),
        CAST(ROUND((julianday(t.finished_at) - 2440587.5) * 86400000) AS INTEGER),
        CAST(ROUND((julianday(t.progress_at) - 2440587.5) * 86400000) AS INTEGER)
    FROM tasks t JOIN jobs j ON j.seq = t.job_seq;

INSERT INTO task_failures_v2 (task_id, job_seq, node_id, reason, at)
    SELECT task_id, job_seq, node_id, reason,
        CAST(ROUND((julianday(at) - 2440587.5) * 86400000) AS INTEGER)
    FROM task_failures;

INSERT INTO frames_v2 (job_seq, frame, node_id, path, done_at)
    SELECT job_seq, frame, node_id, path,
        CAST(ROUND((julianday(done_at) - 2440587.5) * 86400000) AS INTEGER)
    FROM frames;

INSERT INTO nodes_v2 (id, url, state, draining, slots, hostname, blender_version, last_seen,
        registered_at)
    SELECT id, url, state, draining, slots, hostname, blender_version,
        CAST(ROUND((julianday(last_seen) - 2440587.5) * 86400000) AS INTEGER),
        CAST(ROUND((julianday(registered_at) - 2440587.5) * 86400000) AS INTEGER)
    FROM nodes;

-- Tallies, frame counts and the nodes' failures, from the copied rows.
UPDATE tasks_v2 SET failed_on = (
    SELECT json_group_array(DISTINCT f.node_id) FROM task_failures_v2 f WHERE f.task_id = tasks_v2.id)
    WHERE EXISTS (SELECT 1 FROM task_failures_v2 f WHERE f.task_id = tasks_v2.id);
UPDATE jobs_v2 SET
    tasks_queued    = (SELECT COUNT(*) FROM tasks_v2 t WHERE t.job_seq = jobs_v2.seq AND t.state = 'queued'),
    tasks_running   = (SELECT COUNT(*) FROM tasks_v2 t WHERE t.job_seq = jobs_v2.seq AND t.state = 'running'),
    tasks_completed = (SELECT COUNT(*) FROM tasks_v2 t WHERE t.job_seq = jobs_v2.seq AND t.state = 'completed'),
    tasks_failed    = (SELECT COUNT(*) FROM tasks_v2 t WHERE t.job_seq = jobs_v2.seq AND t.state = 'failed'),
    tasks_cancelled = (SELECT COUNT(*) FROM tasks_v2 t WHERE t.job_seq = jobs_v2.seq AND t.state = 'cancelled'),
    frames_done     = (SELECT COUNT(*) FROM frames_v2 f WHERE f.job_seq = jobs_v2.seq),
    last_frame_at   = (SELECT MAX(done_at) FROM frames_v2 f WHERE f.job_seq = jobs_v2.seq);
UPDATE nodes_v2 SET frames_rendered = (SELECT COUNT(*) FROM frames_v2 f WHERE f.node_id = nodes_v2.id);

DROP TABLE frames;
DROP TABLE task_failures;
DROP TABLE tasks;
DROP TABLE jobs;
DROP TABLE nodes;
ALTER TABLE jobs_v2 RENAME TO jobs;
ALTER TABLE tasks_v2 RENAME TO tasks;
ALTER TABLE task_failures_v2 RENAME TO task_failures;
ALTER TABLE frames_v2 RENAME TO frames;
ALTER TABLE nodes_v2 RENAME TO nodes;

CREATE INDEX jobs_by_state ON jobs (state, seq);
-- The queue's head: queued tasks of runnable jobs, by priority, submission, position.
CREATE INDEX tasks_queue ON tasks (priority DESC, job_seq, idx) WHERE state = 'queued' AND held = 0;
CREATE INDEX tasks_running ON tasks (node_id) WHERE state = 'running';
CREATE INDEX tasks_by_job_state ON tasks (job_seq, state);
CREATE INDEX task_failures_by_job_node ON task_failures (job_seq, node_id);
CREATE INDEX task_failures_by_task ON task_failures (task_id);

-- Orchestrators sharing this database: each heartbeats; tasks whose owner stopped
-- heartbeating are adopted by another.
CREATE TABLE orchestrators (
    id           TEXT PRIMARY KEY,
    url          TEXT,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);

-- Who dispatches: one holder at a time, for a term that only grows, until expires_at.
CREATE TABLE leadership (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
