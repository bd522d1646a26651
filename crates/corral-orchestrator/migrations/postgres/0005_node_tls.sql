-- Version 5: a node's certificate fingerprint (see the SQLite migration 0006_node_tls.sql).
ALTER TABLE nodes ADD COLUMN tls_fingerprint TEXT;
