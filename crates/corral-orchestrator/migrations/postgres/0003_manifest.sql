-- Version 3: jobs on uploaded scenes (see the SQLite migration of the same name).
ALTER TABLE jobs ADD COLUMN manifest TEXT;
