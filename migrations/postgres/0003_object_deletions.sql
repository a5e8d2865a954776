-- Objects still to be removed from storage after their file was deleted. The file's row
-- goes first, in the same transaction that records its key here; the objects (original and
-- reduced copies) follow, and the row here goes last. A node that dies in between leaves
-- the row, and housekeeping finishes the job: never a file without its object.
CREATE TABLE object_deletions (
    key TEXT PRIMARY KEY NOT NULL,
    -- The file's derivatives value when it was deleted (which reduced copies exist).
    derivatives TEXT,
    requested_at TEXT NOT NULL
);
