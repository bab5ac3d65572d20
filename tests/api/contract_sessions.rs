//! The storage contract for sessions, devices and the purge job, against every backend.

use atoms_auth::clock::{Clock, SystemClock};
use atoms_auth::ids::{DeviceId, SessionId, UserId};
use atoms_auth::storage::*;
use uuid::Uuid;

use crate::backend_tests;
use crate::fixtures::*;
use crate::helpers::{Backend, TestDb};

fn base() -> i64 {
    SystemClock.now_ms()
}

async fn new_user(storage: &dyn Storage) -> String {
    let u = user(&format!("user-{}", Uuid::new_v4()));
    storage.create_user(&u).await.expect("user");
    u.id
}

async fn login_at(
    storage: &dyn Storage,
    user_id: &str,
    fp: &str,
    now: i64,
    max: usize,
) -> LoginOutcome {
    let hash: [u8; 32] = *Uuid::new_v4().as_bytes().repeat(2).first_chunk().expect("32 bytes");
    login(storage, &session(user_id, now), &hash, fp, max).await
}

async fn the_eleventh_login_evicts_the_least_recently_used(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let user = new_user(storage.as_ref()).await;
    let t0 = base();
    let mut ids = Vec::new();
    for i in 0..10 {
        let out = login_at(storage.as_ref(), &user, "fp", t0 + i, 10).await;
        assert!(out.evicted.is_empty());
        ids.push(out.session.id);
    }
    let out = login_at(storage.as_ref(), &user, "fp", t0 + 100, 10).await;
    assert_eq!(out.evicted.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()]);
    assert_eq!(out.evicted[0].revoke_reason.as_deref(), Some(revoke_reason::EVICTED));
    let live = storage.user_sessions(&user, t0 + 101).await.expect("list");
    assert_eq!(live.len(), 10);
    assert!(live.iter().all(|(s, _)| s.id != ids[0]));
    assert_eq!(live[0].0.id, out.session.id, "most recently used first");
}

async fn concurrent_logins_never_exceed_the_limit(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let user = new_user(storage.as_ref()).await;
    let t0 = base();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (storage, user) = (storage.clone(), user.clone());
            tokio::spawn(async move { login_at(storage.as_ref(), &user, "fp", t0 + i, 5).await })
        })
        .collect();
    for task in tasks {
        task.await.expect("join");
    }
    assert_eq!(storage.user_sessions(&user, t0 + 100).await.expect("list").len(), 5);
}

async fn logins_upsert_one_device_per_fingerprint(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let user = new_user(storage.as_ref()).await;
    let t0 = base();
    let first = login_at(storage.as_ref(), &user, "fp-a", t0, 10).await;
    assert!(first.new_device);
    assert_eq!(first.session.device_id.as_deref(), Some(first.device.id.as_str()));
    let again = login_at(storage.as_ref(), &user, "fp-a", t0 + 50, 10).await;
    assert!(!again.new_device);
    assert_eq!(again.device.id, first.device.id);
    assert_eq!((again.device.first_seen_at, again.device.last_seen_at), (t0, t0 + 50));
    let other = login_at(storage.as_ref(), &user, "fp-b", t0 + 60, 10).await;
    assert!(other.new_device);
    let devices = storage.user_devices(&user).await.expect("devices");
    assert_eq!(
        devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        [other.device.id.as_str(), first.device.id.as_str()]
    );
}

async fn devices_belong_to_their_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let (alice, mallory) = (new_user(storage.as_ref()).await, new_user(storage.as_ref()).await);
    let t0 = base();
    let out = login_at(storage.as_ref(), &alice, "fp", t0, 10).await;
    let id = out.device.id.as_str();
    assert_eq!(storage.device(UserId::new(&mallory), DeviceId::new(id)).await.expect("get"), None);
    assert_eq!(
        storage
            .update_device(UserId::new(&mallory), DeviceId::new(id), Some("mine"), Some(true))
            .await
            .expect("patch"),
        None
    );
    assert_eq!(
        storage.delete_device(UserId::new(&mallory), DeviceId::new(id), t0).await.expect("delete"),
        None
    );
    assert!(storage.user_devices(&mallory).await.expect("list").is_empty());

    let updated = storage
        .update_device(UserId::new(&alice), DeviceId::new(id), Some("Work"), Some(true))
        .await
        .expect("patch");
    let updated = updated.expect("alice's device");
    assert_eq!((updated.name.as_str(), updated.trusted), ("Work", true));
    let kept = storage
        .update_device(UserId::new(&alice), DeviceId::new(id), None, Some(false))
        .await
        .expect("patch")
        .expect("device");
    assert_eq!((kept.name.as_str(), kept.trusted), ("Work", false));

    let ended = storage
        .delete_device(UserId::new(&alice), DeviceId::new(id), t0 + 5)
        .await
        .expect("delete")
        .expect("found");
    assert_eq!(ended.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [out.session.id.as_str()]);
    assert_eq!(storage.device(UserId::new(&alice), DeviceId::new(id)).await.expect("get"), None);
    let session = storage.session(&out.session.id).await.expect("get").expect("kept");
    assert_eq!(session.revoke_reason.as_deref(), Some(revoke_reason::DEVICE_REMOVED));
    assert!(storage.user_sessions(&alice, t0 + 6).await.expect("list").is_empty());
    // A new login from the same fingerprint registers the device anew.
    assert!(login_at(storage.as_ref(), &alice, "fp", t0 + 7, 10).await.new_device);
}

async fn revoking_all_sessions_can_spare_the_current_one(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let (alice, bob) = (new_user(storage.as_ref()).await, new_user(storage.as_ref()).await);
    let t0 = base();
    let keep = login_at(storage.as_ref(), &alice, "a", t0, 10).await.session;
    for i in 1..4 {
        login_at(storage.as_ref(), &alice, "a", t0 + i, 10).await;
    }
    let bobs = login_at(storage.as_ref(), &bob, "b", t0, 10).await.session;
    let ended = storage
        .revoke_user_sessions(UserId::new(&alice), Some(SessionId::new(&keep.id)), t0 + 10, "test")
        .await
        .expect("revoke");
    assert_eq!(ended.len(), 3);
    let live = storage.user_sessions(&alice, t0 + 11).await.expect("list");
    assert_eq!(live.iter().map(|(s, _)| s.id.as_str()).collect::<Vec<_>>(), [keep.id.as_str()]);
    let ended = storage
        .revoke_user_sessions(UserId::new(&alice), None, t0 + 12, "test")
        .await
        .expect("revoke");
    assert_eq!(ended.len(), 1);
    assert_eq!(storage.user_sessions(&bob, t0 + 12).await.expect("list")[0].0.id, bobs.id);
}

async fn purge_removes_ended_records_and_keeps_live_ones(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let user = new_user(storage.as_ref()).await;
    let t0 = base();
    let revoked = login_at(storage.as_ref(), &user, "fp", t0, 10).await.session;
    storage.revoke_session(&revoked.id, t0 + 10, "test").await.expect("revoke");
    let idle = login_at(storage.as_ref(), &user, "fp", t0, 10).await.session;
    let other = login_at(storage.as_ref(), &user, "fp", t0, 10).await.session;

    // At t0 + 8 days the idle session has timed out; the revoked one ended at t0 + 10.
    let now = t0 + 8 * DAY;
    let policy =
        PurgePolicy { now, ended_before: now, used_before: now, audit_before: 0, batch: 1 };
    let mut total = PurgeReport::default();
    for _ in 0..10 {
        total.add(storage.purge(&policy).await.expect("purge"));
    }
    assert_eq!(total.expired.len(), 2, "the idle ones expired; the revoked one did not");
    // Every session of this user was idle for 8 days: all three are gone, in batches of one.
    assert_eq!(total.sessions, 3);
    for id in [&revoked.id, &idle.id, &other.id] {
        assert_eq!(storage.session(id).await.expect("get"), None);
    }
    assert!(storage.user_sessions(&user, now).await.expect("list").is_empty());
}

async fn purge_keeps_live_sessions_and_unexpired_entries(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let user = new_user(storage.as_ref()).await;
    let t0 = base();
    let live = login_at(storage.as_ref(), &user, "fp", t0, 10).await.session;
    let ended = login_at(storage.as_ref(), &user, "fp", t0, 10).await.session;
    storage.revoke_session(&ended.id, t0 + 1, "test").await.expect("revoke");
    storage.revoke_access_token("fresh", t0 + DAY).await.expect("revoke");
    let now = t0 + 2;
    let policy =
        PurgePolicy { now, ended_before: now, used_before: now, audit_before: 0, batch: 100 };
    let report = storage.purge(&policy).await.expect("purge");
    assert_eq!(report.sessions, 1);
    assert_eq!(storage.session(&ended.id).await.expect("get"), None);
    assert_eq!(storage.session(&live.id).await.expect("get").map(|s| s.id), Some(live.id.clone()));
    assert!(storage.access_token_state("fresh", None).await.expect("state").revoked);
    assert_eq!(storage.user_sessions(&user, now).await.expect("list").len(), 1);
}

async fn purge_forgets_used_refresh_tokens_and_stale_revocations(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let user = new_user(storage.as_ref()).await;
    let t0 = base();
    // A token of the format before (indexed by its hash): its row is marked used when it
    // rotates, and the purge forgets it after the window. Tokens that name their session
    // leave nothing to purge.
    let s = session(&user, t0);
    login_indexed(storage.as_ref(), &s, &[1; 32], "fp", 10, true).await;
    let sid = s.id.clone();
    let rotate = |presented: &'static [u8; 32], new: &'static [u8; 32], now: i64| Rotation {
        session_id: &sid,
        presented_generation: None,
        presented_hash: presented,
        new_hash: new,
        new_generation: 1,
        client_id: "app",
        now,
        grace_ms: 0,
        idle_timeout_ms: 7 * DAY,
        ip: Some("198.51.100.9"),
        reuse_window_ms: 1_000,
        new_jti: "jti",
        superseded_until: now + 900_000,
    };
    assert!(matches!(
        storage.rotate_refresh(&rotate(&[1; 32], &[2; 32], t0 + 10)).await.expect("r"),
        RotationOutcome::Rotated(_)
    ));
    let seen = storage.user_devices(&user).await.expect("devices");
    // Seen at login a moment ago: a refresh within the minute does not write the device.
    assert_eq!(seen[0].last_seen_at, t0);
    storage.revoke_access_token("stale", t0 + 5).await.expect("revoke");

    let now = t0 + 2_000;
    let policy = PurgePolicy {
        now,
        ended_before: now - DAY,
        used_before: now - 1_000,
        audit_before: 0,
        batch: 100,
    };
    let report = storage.purge(&policy).await.expect("purge");
    if backend != Backend::Redis {
        // Redis expires these by TTL instead of in the purge pass.
        assert_eq!((report.refresh_tokens, report.revocations), (1, 1));
    }
    assert_eq!(report.sessions, 0);
    // The live token still rotates; the forgotten one is simply unknown now.
    let live = storage.session_by_refresh(&[2; 32], Some(&sid)).await.expect("get");
    assert!(live.is_some_and(|(_, live)| live));
    if backend != Backend::Redis {
        assert_eq!(storage.session_by_refresh(&[1; 32], None).await.expect("get"), None);
    }
}

backend_tests!(
    the_eleventh_login_evicts_the_least_recently_used,
    concurrent_logins_never_exceed_the_limit,
    logins_upsert_one_device_per_fingerprint,
    devices_belong_to_their_user,
    revoking_all_sessions_can_spare_the_current_one,
    purge_removes_ended_records_and_keeps_live_ones,
    purge_keeps_live_sessions_and_unexpired_entries,
    purge_forgets_used_refresh_tokens_and_stale_revocations,
);
