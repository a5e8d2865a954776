-- Users a `shared` file is shared with (one row per user), replacing the JSON column so
-- that "shared with me" is an indexed lookup on every engine.
CREATE TABLE file_shares (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (file_id, user_id)
);
CREATE INDEX file_shares_user ON file_shares (user_id);

ALTER TABLE files DROP COLUMN shared_with;

-- Keys issued by presign / multipart init. Registration must match one issued to the same
-- project and owner; rows never registered are swept (with their objects) after a while.
CREATE TABLE uploads (
    key           TEXT PRIMARY KEY NOT NULL,
    project       TEXT NOT NULL,
    owner_id      TEXT NOT NULL,
    owner_type    TEXT NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    max_size      INTEGER NOT NULL,
    category      TEXT NOT NULL,
    visibility    TEXT NOT NULL,
    multipart_id  TEXT UNIQUE,
    completed     INTEGER NOT NULL DEFAULT 0,
    registered    INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);
CREATE INDEX uploads_sweep ON uploads (registered, created_at);
