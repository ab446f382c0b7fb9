-- Accounts and their quota usage, shared by every ferry node that points at this database.
CREATE TABLE ferry_users (
    name        text PRIMARY KEY,
    -- argon2id PHC string: it carries its own salt and costs.
    password    text NOT NULL,
    -- Relative to each node's data directory, or absolute.
    home        text NOT NULL,
    read_only   boolean NOT NULL DEFAULT false,
    require_tls boolean NOT NULL DEFAULT false,
    -- NULL: unlimited.
    quota_bytes bigint CHECK (quota_bytes >= 0),
    quota_files bigint CHECK (quota_files >= 0),
    -- What the user stores plus what running uploads have reserved; NULL until the first
    -- login (or `ferry user rescan`) measured the home.
    used_bytes  bigint CHECK (used_bytes >= 0),
    used_files  bigint CHECK (used_files >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
