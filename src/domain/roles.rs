//! Who may do what on the admin API: one table, checked by every admin endpoint and mirrored
//! in the README (a test keeps the two equal).

use std::fmt;
use std::str::FromStr;

/// A user's role. Every user has one; new users are members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything, including key rotation and making other owners.
    Owner,
    /// Runs the service day to day: users, clients, sessions, webhooks.
    Admin,
    /// An ordinary user: only their own account, no admin API.
    Member,
    /// Reads everything an admin reads, changes nothing.
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Member, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("role must be one of owner, admin, member, viewer; not {s:?}"))
    }
}

/// What an admin request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    ReadUsers,
    ChangeUsers,
    EraseUsers,
    ReadClients,
    ChangeClients,
    ReadSessions,
    ChangeSessions,
    ReadAudit,
    ReadWebhooks,
    ChangeWebhooks,
    ReadKeys,
    RotateKeys,
}

use Permission::*;
use Role::*;

/// The access matrix: each permission with the roles that have it. Sessions and devices here
/// are other users' (everyone manages their own through `/auth/sessions`).
pub const MATRIX: [(Permission, &str, &[Role]); 12] = [
    (ReadUsers, "read users", &[Owner, Admin, Viewer]),
    (ChangeUsers, "create users, change roles", &[Owner, Admin]),
    (EraseUsers, "erase users", &[Owner, Admin]),
    (ReadClients, "read clients", &[Owner, Admin, Viewer]),
    (ChangeClients, "register clients", &[Owner, Admin]),
    (ReadSessions, "read others' sessions", &[Owner, Admin, Viewer]),
    (ChangeSessions, "end others' sessions", &[Owner, Admin]),
    (ReadAudit, "read the audit log", &[Owner, Admin, Viewer]),
    (ReadWebhooks, "read webhooks and deliveries", &[Owner, Admin, Viewer]),
    (ChangeWebhooks, "create, delete, test webhooks", &[Owner, Admin]),
    (ReadKeys, "read signing keys", &[Owner, Admin, Viewer]),
    (RotateKeys, "rotate signing keys", &[Owner]),
];

/// Whether `role` has `permission`.
pub fn allows(role: Role, permission: Permission) -> bool {
    MATRIX.iter().any(|(p, _, roles)| *p == permission && roles.contains(&role))
}

/// The matrix as the README's Markdown table.
pub fn markdown() -> String {
    let mut out = String::from("| permission | owner | admin | member | viewer |\n");
    out.push_str("|---|---|---|---|---|\n");
    for (permission, label, _) in MATRIX {
        out.push_str(&format!("| {label} |"));
        for role in Role::ALL {
            out.push_str(if allows(role, permission) { " yes |" } else { " no |" });
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_shows_the_matrix_of_the_code() {
        let readme = include_str!("../../README.md");
        assert!(readme.contains(&markdown()), "README's access matrix differs:\n{}", markdown());
    }

    #[test]
    fn roles_parse_and_print() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn members_have_no_admin_permission_and_only_owners_rotate_keys() {
        for (permission, _, _) in MATRIX {
            assert!(!allows(Member, permission));
            assert!(allows(Owner, permission));
        }
        assert!(!allows(Admin, RotateKeys));
        assert!(!allows(Viewer, ChangeUsers));
    }
}
