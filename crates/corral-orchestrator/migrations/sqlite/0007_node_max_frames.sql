-- Version 7: the most frames a node renders in one task (its `--max-frames`, from its
-- `GET /info`), so the dispatcher never hands it a piece it would refuse. NULL until the
-- node answers a probe.
ALTER TABLE nodes ADD COLUMN max_frames INTEGER;
