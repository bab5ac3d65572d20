-- The resources (RFC 8707) tokens may be issued for: the MCP servers of the platform, each
-- with the scopes it understands.
CREATE TABLE resources (
    uri        TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    scopes     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
