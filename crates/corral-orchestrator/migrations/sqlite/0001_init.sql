-- Corral orchestrator schema, version 1. Times are RFC 3339 text (UTC).

CREATE TABLE jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT, -- submission order
    id           TEXT NOT NULL UNIQUE,              -- UUIDv7, the public id
    scene        TEXT,                              -- relative to the nodes' --scenes; NULL: their --blend
    frame_from   INTEGER NOT NULL,
    frame_to     INTEGER NOT NULL,
    chunk_size   INTEGER NOT NULL,
    priority     INTEGER NOT NULL DEFAULT 0,
    engine       TEXT NOT NULL,
    format       TEXT,
    output       TEXT NOT NULL,
    state        TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    failure      TEXT,
    submitted_at TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT
);
CREATE INDEX jobs_by_state ON jobs (state, seq);

CREATE TABLE tasks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_seq     INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,
    frame_from  INTEGER NOT NULL,
    frame_to    INTEGER NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,   -- attempts that ended in failure
    lease       INTEGER NOT NULL DEFAULT 0,   -- bumped on every dispatch and every take-back
    node_id     TEXT,                         -- node of the current (or last) lease
    node_job_id TEXT,                         -- the node's job id; NULL while the POST is in flight
    failure     TEXT,
    log_tail    TEXT,                         -- JSON array of the last Blender lines
    started_at  TEXT,
    finished_at TEXT,
    progress_at TEXT,                         -- last time the node reported progress
    UNIQUE (job_seq, idx)
);
CREATE INDEX tasks_by_state ON tasks (state);

CREATE TABLE task_failures (
    task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    node_id TEXT NOT NULL,
    reason  TEXT NOT NULL,
    at      TEXT NOT NULL
);
CREATE INDEX task_failures_by_job_node ON task_failures (job_seq, node_id);

CREATE TABLE frames (
    job_seq INTEGER NOT NULL REFERENCES jobs (seq) ON DELETE CASCADE,
    frame   INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    path    TEXT NOT NULL,
    done_at TEXT NOT NULL,
    PRIMARY KEY (job_seq, frame)
);

CREATE TABLE nodes (
    id              TEXT PRIMARY KEY,             -- host:port of its URL
    url             TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,                -- up | down
    draining        INTEGER NOT NULL DEFAULT 0,
    slots           INTEGER NOT NULL DEFAULT 1,
    hostname        TEXT,
    blender_version TEXT,
    last_seen       TEXT,
    registered_at   TEXT NOT NULL
);
