-- File metadata: one row per stored object that the service knows about.
CREATE TABLE files (
    id            TEXT PRIMARY KEY NOT NULL,
    project       TEXT NOT NULL,
    s3_key        TEXT NOT NULL UNIQUE,
    original_name TEXT NOT NULL,
    mime_type     TEXT NOT NULL,
    size          INTEGER NOT NULL CHECK (size >= 0),
    width         INTEGER,
    height        INTEGER,
    visibility    TEXT NOT NULL CHECK (visibility IN ('public', 'private', 'protected', 'shared')),
    bucket        TEXT NOT NULL DEFAULT '',
    owner_id      TEXT NOT NULL,
    owner_type    TEXT NOT NULL CHECK (owner_type IN ('user', 'session', 'service', 'public')),
    metadata      TEXT NOT NULL DEFAULT '{}',
    shared_with   TEXT NOT NULL DEFAULT '[]',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

CREATE INDEX files_project_created ON files (project, created_at);
CREATE INDEX files_owner ON files (project, owner_id);
