-- Version 2: tasks the farm sizes as it goes (see the SQLite migration of the same name).
ALTER TABLE tasks ADD COLUMN rank BIGINT NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN splittable BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN frame_us BIGINT;
DROP INDEX tasks_queue;
CREATE INDEX tasks_queue ON tasks (priority DESC, job_seq, rank, frame_from) WHERE state = 'queued' AND held = 0;
CREATE INDEX tasks_by_job_frame ON tasks (job_seq, frame_from);
