-- Version 4: jobs on uploaded scenes. A job names its scene by `scene` (a path under the
-- nodes' scenes folder) or by `manifest` (the id of an uploaded manifest, 64 hex
-- characters; nodes fetch its files from the orchestrator and upload their frames to it).
ALTER TABLE jobs ADD COLUMN manifest TEXT;
