-- Corral orchestrator schema for PostgreSQL (the same shape as SQLite's version 2): times
-- are integer milliseconds since the Unix epoch and flags are 0/1 integers, so the store's
-- SQL reads the same on both databases.

CREATE TABLE jobs (
    seq             BIGSERIAL PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    scene           TEXT,
    frame_from      BIGINT NOT NULL,
    frame_to        BIGINT NOT NULL,
    chunk_size      BIGINT NOT NULL,
    priority        BIGINT NOT NULL DEFAULT 0,
    engine          TEXT NOT NULL,
    format          TEXT,
    output          TEXT NOT NULL,
    state           TEXT NOT NULL,
    paused          BIGINT NOT NULL DEFAULT 0,
    cancelled       BIGINT NOT NULL DEFAULT 0,
    failure         TEXT,
    tasks_queued    BIGINT NOT NULL DEFAULT 0,
    tasks_running   BIGINT NOT NULL DEFAULT 0,
    tasks_completed BIGINT NOT NULL DEFAULT 0,
    tasks_failed    BIGINT NOT NULL DEFAULT 0,
    tasks_cancelled BIGINT NOT NULL DEFAULT 0,
    frames_done     BIGINT NOT NULL DEFAULT 0,
    last_frame_at   BIGINT,
    submitted_at    BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT
);
CREATE INDEX jobs_by_state ON jobs (state, seq);

CREATE TABLE tasks (
    id          BIGSERIAL PRIMARY KEY,
    job_seq     BIGINT NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    idx         BIGINT NOT NULL,
    frame_from  BIGINT NOT NULL,
    frame_to    BIGINT NOT NULL,
    state       TEXT NOT NULL,
    priority    BIGINT NOT NULL DEFAULT 0,
    held        BIGINT NOT NULL DEFAULT 0,
    attempts    BIGINT NOT NULL DEFAULT 0,
    lease       BIGINT NOT NULL DEFAULT 0,
    node_id     TEXT,
    owner       TEXT,
    node_job_id TEXT,
    failure     TEXT,
    failed_on   TEXT,
    log_tail    TEXT,
    started_at  BIGINT,
    finished_at BIGINT,
    progress_at BIGINT,
    UNIQUE (job_seq, idx)
);
CREATE INDEX tasks_queue ON tasks (priority DESC, job_seq, idx) WHERE state = 'queued' AND held = 0;
CREATE INDEX tasks_running ON tasks (node_id) WHERE state = 'running';
CREATE INDEX tasks_by_job_state ON tasks (job_seq, state);

CREATE TABLE task_failures (
    task_id BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    job_seq BIGINT NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX task_failures_by_job_node ON task_failures (job_seq, node_id);
CREATE INDEX task_failures_by_task ON task_failures (task_id);

CREATE TABLE frames (
    job_seq BIGINT NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    frame   BIGINT NOT NULL,
    node_id TEXT NOT NULL,
    path    TEXT NOT NULL,
    done_at BIGINT NOT NULL,
    PRIMARY KEY (job_seq, frame)
);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,
    url             TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    draining        BIGINT NOT NULL DEFAULT 0,
    slots           BIGINT NOT NULL DEFAULT 1,
    hostname        TEXT,
    blender_version TEXT,
    cores           BIGINT,
    memory_bytes    BIGINT,
    frames_rendered BIGINT NOT NULL DEFAULT 0,
    last_seen       BIGINT,
    registered_at   BIGINT NOT NULL
);

CREATE TABLE orchestrators (
    id           TEXT PRIMARY KEY,
    url          TEXT,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

CREATE TABLE leadership (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
