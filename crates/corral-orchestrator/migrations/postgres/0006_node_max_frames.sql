-- Version 6: a node's most frames per task (see the SQLite migration 0007_node_max_frames.sql).
ALTER TABLE nodes ADD COLUMN max_frames BIGINT;
