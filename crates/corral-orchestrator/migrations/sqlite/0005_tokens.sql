-- Version 5: credentials (docs/remote-farm-protocol.md, "Credentials"). A token is 32
-- random bytes shown once as `corral_` + base64url; only its SHA-256 (64 hex characters)
-- is kept. `kind`: client (the whole API), join (only node registration), node (one
-- node's credential; `name` is that node's id). Times are integer milliseconds.
CREATE TABLE tokens (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    kind    TEXT NOT NULL CHECK (kind IN ('client', 'join', 'node')),
    hash    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL DEFAULT '',
    created INTEGER NOT NULL,
    revoked INTEGER
);
-- The secret a node made and sent when it joined: the orchestrator sends it back as
-- `Authorization: Bearer` on every call to that node, so it is kept as given (a per-node
-- secret the orchestrator must present, not a password it checks).
ALTER TABLE nodes ADD COLUMN secret TEXT;
