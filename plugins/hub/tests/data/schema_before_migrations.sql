-- The tables as the hub created them itself, before it had migrations (a file to adopt).
CREATE TABLE IF NOT EXISTS hub_workflows (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    created_by TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    description TEXT NOT NULL DEFAULT '',
    default_view TEXT NOT NULL DEFAULT 'workflow',
    latest_version INTEGER NOT NULL,
    forked_from_workflow_id TEXT,
    forked_from_version_id TEXT,
    source_file TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    deleted_at REAL
);
CREATE INDEX IF NOT EXISTS hub_workflows_owner ON hub_workflows(owner, deleted_at);
CREATE UNIQUE INDEX IF NOT EXISTS hub_workflows_file ON hub_workflows(owner, source_file)
    WHERE source_file IS NOT NULL AND deleted_at IS NULL;

CREATE TABLE IF NOT EXISTS hub_versions (
    id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES hub_workflows(id),
    version INTEGER NOT NULL,
    workflow_json TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (workflow_id, version)
);

CREATE TABLE IF NOT EXISTS hub_shares (
    share_id TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    listed INTEGER NOT NULL DEFAULT 0,
    profile_username TEXT,
    status TEXT NOT NULL DEFAULT 'approved',
    hub_fields TEXT NOT NULL DEFAULT '{}',
    unpublished_at REAL
);

CREATE TABLE IF NOT EXISTS hub_snapshots (
    id TEXT PRIMARY KEY,
    share_id TEXT NOT NULL REFERENCES hub_shares(share_id),
    seq INTEGER NOT NULL,
    version_id TEXT NOT NULL,
    name TEXT NOT NULL,
    workflow_json TEXT NOT NULL,
    assets TEXT NOT NULL,
    publish_time REAL NOT NULL,
    UNIQUE (share_id, seq)
);

CREATE TABLE IF NOT EXISTS hub_profiles (
    username TEXT PRIMARY KEY,
    owner TEXT NOT NULL UNIQUE,
    display_name TEXT,
    description TEXT,
    avatar_url TEXT,
    website_urls TEXT NOT NULL DEFAULT '[]',
    created_at REAL NOT NULL
);

CREATE TABLE IF NOT EXISTS hub_labels (
    type TEXT NOT NULL,
    name TEXT NOT NULL,
    display_name TEXT NOT NULL,
    description TEXT,
    PRIMARY KEY (type, name)
);

CREATE TABLE IF NOT EXISTS hub_uploads (
    token TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    stored_name TEXT NOT NULL,
    expires_at REAL NOT NULL,
    uploaded_at REAL,
    claimed_at REAL
);

CREATE TABLE IF NOT EXISTS hub_feedback (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT,
    rating INTEGER,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
