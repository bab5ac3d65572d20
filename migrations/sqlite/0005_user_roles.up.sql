-- Each user has a role on the admin API: owner, admin, member (the default) or viewer.
ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'member'
    CHECK (role IN ('owner', 'admin', 'member', 'viewer'));
