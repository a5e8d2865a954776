-- The PostgreSQL schema: the same tables, columns and constraints as the SQLite migrations
-- (0001 + 0002), so both engines behave alike. Timestamps are fixed-width RFC 3339 UTC text,
-- as in SQLite, so ordering and round trips are identical; names and keys use the "C"
-- collation so sorting matches SQLite's byte order.

CREATE TABLE files (
    id            TEXT PRIMARY KEY,
    project       TEXT NOT NULL,
    s3_key        TEXT COLLATE "C" NOT NULL UNIQUE,
    original_name TEXT COLLATE "C" NOT NULL,
    mime_type     TEXT NOT NULL,
    size          BIGINT NOT NULL CHECK (size >= 0),
    width         BIGINT,
    height        BIGINT,
    visibility    TEXT NOT NULL CHECK (visibility IN ('public', 'private', 'protected', 'shared')),
    bucket        TEXT NOT NULL DEFAULT '',
    owner_id      TEXT NOT NULL,
    owner_type    TEXT NOT NULL CHECK (owner_type IN ('user', 'session', 'service', 'public')),
    metadata      TEXT NOT NULL DEFAULT '{}',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE INDEX files_project_created ON files (project, created_at);
CREATE INDEX files_owner ON files (project, owner_id);

CREATE TABLE file_shares (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    PRIMARY KEY (file_id, user_id)
);
CREATE INDEX file_shares_user ON file_shares (user_id);

CREATE TABLE uploads (
    key           TEXT PRIMARY KEY,
    project       TEXT NOT NULL,
    owner_id      TEXT NOT NULL,
    owner_type    TEXT NOT NULL,
    filename      TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    max_size      BIGINT NOT NULL,
    category      TEXT NOT NULL,
    visibility    TEXT NOT NULL,
    multipart_id  TEXT UNIQUE,
    completed     BOOLEAN NOT NULL DEFAULT FALSE,
    registered    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    TEXT NOT NULL
);
CREATE INDEX uploads_sweep ON uploads (registered, created_at);
