-- Version 3: tasks the farm sizes as it goes. A job without a chunk size (chunk_size 0)
-- starts with splittable tasks, cut into pieces at dispatch by the frame time measured on
-- its completed tasks (jobs.frame_us); a job that asked for its first, middle and last
-- frames first has them as rank-0 tasks, ahead of the rest in the queue. The queue is
-- ordered by frame, not by creation, since cut-off tails are created later.
ALTER TABLE tasks ADD COLUMN rank INTEGER NOT NULL DEFAULT 1;
ALTER TABLE tasks ADD COLUMN splittable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN frame_us INTEGER;
DROP INDEX tasks_queue;
CREATE INDEX tasks_queue ON tasks (priority DESC, job_seq, rank, frame_from) WHERE state = 'queued' AND held = 0;
CREATE INDEX tasks_by_job_frame ON tasks (job_seq, frame_from);
