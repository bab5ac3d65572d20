//! The audit log's event names and the bound its record ids give a time: a leaf that the
//! domain (which writes records) and storage (which indexes, filters and purges them) share.

use crate::clock::Millis;

/// Every event the audit log records.
pub mod events {
    pub const USER_CREATED: &str = "user.created";
    pub const LOGIN_SUCCEEDED: &str = "user.login.succeeded";
    pub const LOGIN_FAILED: &str = "user.login.failed";
    pub const USER_LOCKED: &str = "user.locked";
    pub const TOKEN_ISSUED: &str = "token.issued";
    pub const TOKEN_REFRESHED: &str = "token.refreshed";
    pub const TOKEN_REVOKED: &str = "token.revoked";
    pub const TOKEN_REUSE_DETECTED: &str = "token.reuse_detected";
    pub const SESSION_CREATED: &str = "session.created";
    pub const SESSION_REVOKED: &str = "session.revoked";
    pub const SESSION_EXPIRED: &str = "session.expired";
    pub const DEVICE_REGISTERED: &str = "device.registered";
    pub const CLIENT_CREATED: &str = "client.created";
    pub const CLIENT_UPDATED: &str = "client.updated";
    pub const CLIENT_DELETED: &str = "client.deleted";
    pub const USER_ROLE_CHANGED: &str = "user.role_changed";
    pub const KEY_ROTATED: &str = "key.rotated";
    pub const CONSENT_GRANTED: &str = "consent.granted";
    pub const RESOURCE_CREATED: &str = "resource.created";
    pub const RESOURCE_DELETED: &str = "resource.deleted";
    pub const CLIENT_REGISTERED: &str = "client.registered";
    pub const USER_ERASED: &str = "user.erased";

    /// Every event type.
    pub const ALL: [&str; 22] = [
        USER_CREATED,
        LOGIN_SUCCEEDED,
        LOGIN_FAILED,
        USER_LOCKED,
        TOKEN_ISSUED,
        TOKEN_REFRESHED,
        TOKEN_REVOKED,
        TOKEN_REUSE_DETECTED,
        SESSION_CREATED,
        SESSION_REVOKED,
        SESSION_EXPIRED,
        DEVICE_REGISTERED,
        CLIENT_CREATED,
        CLIENT_UPDATED,
        CLIENT_DELETED,
        USER_ROLE_CHANGED,
        KEY_ROTATED,
        CONSENT_GRANTED,
        RESOURCE_CREATED,
        RESOURCE_DELETED,
        CLIENT_REGISTERED,
        USER_ERASED,
    ];

    /// The per-request events, which are most of the log: the SQL event index leaves them
    /// out (a query for one of them reads in id order, where nearly every record matches).
    pub const UNINDEXED: [&str; 2] = [TOKEN_ISSUED, TOKEN_REFRESHED];
}

/// The smallest record id of time `at`: ids are UUIDv7, whose text starts with the Unix time
/// in milliseconds (48 bits of hex), so comparing ids against it compares times.
pub fn id_floor(at: Millis) -> String {
    let ms = at.clamp(0, (1 << 48) - 1);
    format!("{:08x}-{:04x}-0000-0000-000000000000", ms >> 16, ms & 0xffff)
}
