-- Version 4: credentials (see the SQLite migration 0005_tokens.sql).
CREATE TABLE tokens (
    id      BIGSERIAL PRIMARY KEY,
    kind    TEXT NOT NULL CHECK (kind IN ('client', 'join', 'node')),
    hash    TEXT NOT NULL UNIQUE,
    name    TEXT NOT NULL DEFAULT '',
    created BIGINT NOT NULL,
    revoked BIGINT
);
ALTER TABLE nodes ADD COLUMN secret TEXT;
