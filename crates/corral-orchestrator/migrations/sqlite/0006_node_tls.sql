-- Version 6: a node that serves HTTPS (off loopback, joined with a token) sends the
-- SHA-256 fingerprint of its self-made certificate when it registers; the orchestrator
-- accepts that node only with exactly that certificate (64 lowercase hex characters).
ALTER TABLE nodes ADD COLUMN tls_fingerprint TEXT;
