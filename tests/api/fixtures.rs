//! Records the storage contract tests build on.

use atoms_auth::storage::*;
use uuid::Uuid;

pub const DAY: i64 = 24 * 3600 * 1000;

pub fn user(name: &str) -> User {
    User {
        id: Uuid::now_v7().to_string(),
        username: name.into(),
        password_hash: "$argon2id$fake".into(),
        created_at: 1,
        disabled: false,
        role: "member".into(),
    }
}

pub fn session(user_id: &str, now: i64) -> Session {
    Session {
        id: Uuid::now_v7().to_string(),
        user_id: user_id.into(),
        client_id: "app".into(),
        scope: "read".into(),
        created_at: now,
        last_used_at: now,
        idle_expires_at: now + 7 * DAY,
        expires_at: now + 30 * DAY,
        ip: Some("192.0.2.1".into()),
        user_agent: Some("agent/1.0".into()),
        revoked_at: None,
        revoke_reason: None,
        device_id: None,
        access_jti: None,
        resource: Some("https://mcp.example.com/mcp".into()),
    }
}

pub fn device(user_id: &str, fingerprint: &str, now: i64) -> Device {
    Device {
        id: Uuid::now_v7().to_string(),
        user_id: user_id.into(),
        fingerprint: fingerprint.into(),
        name: "Laptop".into(),
        platform: Some("Linux".into()),
        user_agent: Some("agent/1.0".into()),
        last_ip: Some("192.0.2.1".into()),
        first_seen_at: now,
        last_seen_at: now,
        trusted: false,
    }
}

/// Logs `s` in on the device with fingerprint `fp`, with room for `max` sessions.
pub async fn login(
    storage: &dyn Storage,
    s: &Session,
    hash: &[u8],
    fp: &str,
    max: usize,
) -> LoginOutcome {
    login_indexed(storage, s, hash, fp, max, false).await
}

/// A login whose token is of the format before (`index_token`: found by its hash alone).
pub async fn login_indexed(
    storage: &dyn Storage,
    s: &Session,
    hash: &[u8],
    fp: &str,
    max: usize,
    index_token: bool,
) -> LoginOutcome {
    let d = device(&s.user_id, fp, s.created_at);
    let login = Login {
        session: s,
        refresh_hash: hash,
        device: &d,
        device_named_by_client: false,
        max_sessions: max,
        index_token,
    };
    storage.create_session(&login).await.expect("login")
}
