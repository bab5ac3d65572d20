//! The storage contract for browser sign-in (browser sessions, consents, authorization
//! codes), against every backend.

use atoms_auth::clock::{Clock, SystemClock};
use atoms_auth::ids::UserId;
use atoms_auth::storage::*;
use uuid::Uuid;

use crate::backend_tests;
use crate::fixtures::*;
use crate::helpers::{Backend, TestDb};

async fn new_user(storage: &dyn Storage) -> String {
    let u = user(&format!("user-{}", Uuid::new_v4()));
    storage.create_user(&u).await.expect("user");
    u.id
}

fn browser(user_id: &str, hash: u8, now: i64) -> BrowserSession {
    BrowserSession {
        hash: vec![hash; 32],
        user_id: user_id.into(),
        created_at: now,
        idle_expires_at: now + 1_000,
        expires_at: now + 5_000,
        ip: Some("198.51.100.7".into()),
        user_agent: None,
    }
}

fn code(user_id: &str, hash: u8, now: i64) -> AuthorizationCode {
    AuthorizationCode {
        hash: vec![hash; 32],
        client_id: "web".into(),
        redirect_uri: "http://127.0.0.1/cb".into(),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        scope: "read".into(),
        resource: Some("https://mcp.example.com/mcp".into()),
        user_id: user_id.into(),
        ip: None,
        user_agent: Some("agent/1".into()),
        created_at: now,
        expires_at: now + 60_000,
    }
}

async fn browser_sessions_are_found_by_hash_until_they_time_out(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let alice = new_user(storage.as_ref()).await;
    let now = SystemClock.now_ms();
    let session = browser(&alice, 1, now);
    storage.create_browser_session(&session).await.expect("create");
    let touched = storage.touch_browser_session(&[1; 32], now + 500, now + 1_500).await;
    let touched = touched.expect("touch").expect("active");
    assert_eq!(touched, BrowserSession { idle_expires_at: now + 1_500, ..session.clone() });
    // The idle expiry never passes the absolute one.
    let capped = storage.touch_browser_session(&[1; 32], now + 600, now + 9_000).await;
    assert_eq!(capped.expect("touch").expect("active").idle_expires_at, now + 5_000);
    assert_eq!(storage.touch_browser_session(&[2; 32], now, now + 1).await.expect("none"), None);
    assert_eq!(
        storage.touch_browser_session(&[1; 32], now + 5_000, now + 6_000).await.expect("late"),
        None,
        "past its absolute expiry"
    );

    let other = browser(&alice, 3, now);
    storage.create_browser_session(&other).await.expect("create");
    storage.end_browser_session(&[3; 32]).await.expect("end");
    assert_eq!(storage.touch_browser_session(&[3; 32], now, now + 1).await.expect("ended"), None);
    for hash in [4, 5] {
        storage.create_browser_session(&browser(&alice, hash, now)).await.expect("create");
    }
    let ended = storage.end_user_browser_sessions(UserId::new(&alice)).await.expect("end all");
    assert!(ended >= 2, "{ended}");
    for hash in [4, 5] {
        assert_eq!(
            storage.touch_browser_session(&[hash; 32], now, now + 1).await.expect("get"),
            None
        );
    }
}

async fn consents_are_per_user_and_client(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let (alice, bob) = (new_user(storage.as_ref()).await, new_user(storage.as_ref()).await);
    let (a, b) = (UserId::new(&alice), UserId::new(&bob));
    assert_eq!(storage.consent(a, "web").await.expect("none"), None);
    storage.save_consent(a, "web", "read", 1).await.expect("save");
    storage.save_consent(a, "web", "read write", 2).await.expect("replace");
    assert_eq!(storage.consent(a, "web").await.expect("get").as_deref(), Some("read write"));
    assert_eq!(storage.consent(a, "other").await.expect("other client"), None);
    assert_eq!(storage.consent(b, "web").await.expect("other user"), None);
}

async fn a_code_is_taken_once_and_a_replay_finds_its_session(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let alice = new_user(storage.as_ref()).await;
    let now = SystemClock.now_ms();
    let stored = code(&alice, 7, now);
    storage.create_code(&stored).await.expect("create");
    assert_eq!(
        storage.take_code(&[7; 32], now).await.expect("take"),
        CodeTaken::First(Box::new(stored))
    );
    assert!(storage.bind_code_session(&[7; 32], "session-1").await.expect("bind"));
    assert_eq!(
        storage.take_code(&[7; 32], now).await.expect("again"),
        CodeTaken::Again { session_id: Some("session-1".into()) }
    );
    assert_eq!(storage.take_code(&[8; 32], now).await.expect("unknown"), CodeTaken::Unknown);

    // A replay while the first exchange runs: its binding reports it.
    storage.create_code(&code(&alice, 9, now)).await.expect("create");
    assert!(matches!(storage.take_code(&[9; 32], now).await.expect("take"), CodeTaken::First(_)));
    assert_eq!(
        storage.take_code(&[9; 32], now).await.expect("again"),
        CodeTaken::Again { session_id: None }
    );
    assert!(!storage.bind_code_session(&[9; 32], "session-2").await.expect("bind"));
}

/// Exchanges of one code at the same moment: exactly one takes it.
async fn concurrent_exchanges_take_a_code_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let alice = new_user(storage.as_ref()).await;
    let now = SystemClock.now_ms();
    storage.create_code(&code(&alice, 11, now)).await.expect("create");
    let takes = (0..8).map(|_| {
        let storage = storage.clone();
        tokio::spawn(async move { storage.take_code(&[11; 32], now).await.expect("take") })
    });
    let taken = futures::future::join_all(takes).await;
    let first = taken.iter().filter(|t| matches!(t, Ok(CodeTaken::First(_)))).count();
    assert_eq!(first, 1, "{taken:?}");
}

async fn purge_removes_timed_out_sign_ins_and_old_codes(backend: Backend) {
    if backend == Backend::Redis {
        // Redis expires both by TTL (the contract above reads expiry either way).
        return;
    }
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let alice = new_user(storage.as_ref()).await;
    let now = SystemClock.now_ms();
    storage.create_browser_session(&browser(&alice, 20, now - 10_000)).await.expect("old");
    storage.create_browser_session(&browser(&alice, 21, now)).await.expect("live");
    storage.create_code(&code(&alice, 22, now - CODE_KEPT_MS - 1)).await.expect("old code");
    storage.create_code(&code(&alice, 23, now)).await.expect("new code");
    let policy = PurgePolicy { now, ended_before: 0, used_before: 0, audit_before: 0, batch: 100 };
    let report = storage.purge(&policy).await.expect("purge");
    assert_eq!(report.sign_ins, 2);
    assert_eq!(storage.take_code(&[22; 32], now).await.expect("gone"), CodeTaken::Unknown);
    assert!(matches!(storage.take_code(&[23; 32], now).await.expect("kept"), CodeTaken::First(_)));
    assert!(storage.touch_browser_session(&[21; 32], now, now + 1).await.expect("kept").is_some());
}

backend_tests!(
    browser_sessions_are_found_by_hash_until_they_time_out,
    consents_are_per_user_and_client,
    a_code_is_taken_once_and_a_replay_finds_its_session,
    concurrent_exchanges_take_a_code_once,
    purge_removes_timed_out_sign_ins_and_old_codes,
);
