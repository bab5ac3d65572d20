//! The storage contract: the same checks against every backend, below HTTP.

use atoms_auth::clock::{Clock, SystemClock};
use atoms_auth::storage::*;
use uuid::Uuid;

use crate::backend_tests;
use crate::fixtures::*;
use crate::helpers::{Backend, TestDb};

/// Realistic times: Redis expires records by wall-clock TTLs.
fn t(offset: i64) -> i64 {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *BASE.get_or_init(|| SystemClock.now_ms()) + offset
}

/// A refresh of session `sid` presenting a token of generation 0 (the generation matters only
/// when it is from the future).
fn rotation<'a>(sid: &'a str, presented: &'a [u8], new: &'a [u8], at: i64) -> Rotation<'a> {
    Rotation {
        session_id: sid,
        presented_generation: Some(0),
        presented_hash: presented,
        new_hash: new,
        new_generation: 1,
        client_id: "app",
        now: t(at),
        grace_ms: 300_000,
        idle_timeout_ms: 7 * DAY,
        ip: Some("198.51.100.2"),
        reuse_window_ms: DAY,
        new_jti: "jti-next",
        superseded_until: t(at) + 900_000,
    }
}

/// A session with live refresh token `[1; 32]`.
async fn seeded(storage: &dyn Storage, now: i64) -> Session {
    let u = user(&format!("user-{}", Uuid::new_v4()));
    storage.create_user(&u).await.expect("user");
    let s = session(&u.id, t(now));
    login(storage, &s, &[1; 32], "fp", 10).await.session
}

async fn users_and_clients_round_trip_and_conflict(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let u = user("bob");
    storage.create_user(&u).await.expect("create");
    assert_eq!(storage.user_by_username("bob").await.expect("get"), Some(u.clone()));
    assert_eq!(storage.user_by_id(&u.id).await.expect("get"), Some(u.clone()));
    assert_eq!(storage.user_by_username("nobody").await.expect("get"), None);
    let again = User { id: Uuid::now_v7().to_string(), ..u };
    assert!(matches!(storage.create_user(&again).await, Err(StorageError::Conflict(_))));

    let client = Client {
        client_id: "app".into(),
        name: "App".into(),
        secret_hash: None,
        grant_types: "password".into(),
        scopes: "read".into(),
        created_at: 5,
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: String::new(),
        skip_consent: false,
        registered: false,
        last_used_at: None,
        metadata_document: false,
    };
    storage.create_client(&client).await.expect("client");
    assert_eq!(storage.client("app").await.expect("get"), Some(client.clone()));
    assert!(matches!(storage.create_client(&client).await, Err(StorageError::Conflict(_))));
    assert_eq!(storage.client("' OR 1=1 --").await.expect("get"), None);
}

async fn session_is_found_by_its_refresh_token(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    assert_eq!(storage.session(&s.id).await.expect("get"), Some(s.clone()));
    let by = |hash: [u8; 32], sid: Option<&str>| {
        let storage = storage.clone();
        let sid = sid.map(str::to_owned);
        async move { storage.session_by_refresh(&hash, sid.as_deref()).await.expect("get") }
    };
    assert_eq!(by([1; 32], Some(&s.id)).await, Some((s.clone(), true)));
    // Another token of the session (its MAC vouched for it) is known but not live.
    assert_eq!(by([9; 32], Some(&s.id)).await, Some((s.clone(), false)));
    assert_eq!(by([1; 32], Some(&Uuid::now_v7().to_string())).await, None, "no such session");
    assert_eq!(by([1; 32], None).await, None, "the token names its session: not indexed");
}

async fn rotation_follows_the_refresh_rule(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    let sid = s.id.as_str();

    let out =
        storage.rotate_refresh(&rotation(sid, &[1; 32], &[2; 32], 2_000)).await.expect("rotate");
    let RotationOutcome::Rotated(rotated) = out else { panic!("expected rotation, got {out:?}") };
    assert_eq!(rotated.last_used_at, t(2_000));
    assert_eq!(rotated.idle_expires_at, t(2_000) + 7 * DAY);
    assert_eq!(
        storage.session_by_refresh(&[1; 32], Some(sid)).await.expect("get").map(|x| x.1),
        Some(false)
    );
    assert_eq!(
        storage.session_by_refresh(&[2; 32], Some(sid)).await.expect("get").map(|x| x.1),
        Some(true)
    );

    // The token just rotated, within the grace period: a fresh token replaces the successor.
    let out =
        storage.rotate_refresh(&rotation(sid, &[1; 32], &[3; 32], 3_000)).await.expect("grace");
    assert!(matches!(out, RotationOutcome::Grace(_)), "{out:?}");
    assert_eq!(
        storage.session_by_refresh(&[3; 32], Some(sid)).await.expect("get").map(|x| x.1),
        Some(true)
    );
    assert_eq!(
        storage.session_by_refresh(&[2; 32], Some(sid)).await.expect("get").map(|x| x.1),
        Some(false)
    );

    // Another client presenting the live token changes nothing.
    let mut other = rotation(sid, &[3; 32], &[4; 32], 3_500);
    other.client_id = "other";
    assert_eq!(storage.rotate_refresh(&other).await.expect("other"), RotationOutcome::Invalid);
    assert_eq!(
        storage.session_by_refresh(&[3; 32], Some(sid)).await.expect("get").map(|x| x.1),
        Some(true)
    );

    // The replaced successor is an older token: reuse, the family is revoked.
    let out =
        storage.rotate_refresh(&rotation(sid, &[2; 32], &[5; 32], 4_000)).await.expect("reuse");
    let RotationOutcome::Reused(revoked) = out else { panic!("expected reuse, got {out:?}") };
    assert_eq!(revoked.revoked_at, Some(t(4_000)));
    assert_eq!(revoked.revoke_reason.as_deref(), Some(revoke_reason::REFRESH_TOKEN_REUSE));

    // Even the live token is dead now.
    let out =
        storage.rotate_refresh(&rotation(sid, &[3; 32], &[6; 32], 5_000)).await.expect("ended");
    assert!(matches!(out, RotationOutcome::Ended(_)), "{out:?}");
    let found = storage.session_by_refresh(&[6; 32], Some(sid)).await.expect("get");
    assert!(found.is_some_and(|(s, live)| !live && s.revoked_at.is_some()), "never live");
    // Any other token of the ended family finds it ended (unknown sessions: see below).
    let out =
        storage.rotate_refresh(&rotation(sid, &[8; 32], &[7; 32], 5_000)).await.expect("other");
    assert!(matches!(out, RotationOutcome::Ended(_)), "{out:?}");
}

/// Tokens no session could have issued change nothing: an unknown session, and a generation
/// the session never reached (a bad MAC never gets this far: the token service refuses it).
async fn forged_tokens_change_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    let unknown = Uuid::now_v7().to_string();
    let out = storage.rotate_refresh(&rotation(&unknown, &[1; 32], &[2; 32], 2_000)).await;
    assert_eq!(out.expect("unknown session"), RotationOutcome::Invalid);
    let mut future = rotation(&s.id, &[7; 32], &[2; 32], 2_000);
    future.presented_generation = Some(99);
    future.new_generation = 100;
    assert_eq!(storage.rotate_refresh(&future).await.expect("future"), RotationOutcome::Invalid);
    assert_eq!(storage.session(&s.id).await.expect("get"), Some(s.clone()), "nothing changed");
    let live = storage.session_by_refresh(&[1; 32], Some(&s.id)).await.expect("get");
    assert_eq!(live, Some((s.clone(), true)));
    // The live token still rotates.
    let out = storage.rotate_refresh(&rotation(&s.id, &[1; 32], &[2; 32], 3_000)).await;
    assert!(matches!(out, Ok(RotationOutcome::Rotated(_))), "{out:?}");
}

/// A token issued before tokens named their session keeps working until it rotates once; the
/// new token is then the family's, and the old one presented again is reuse.
async fn a_token_of_the_format_before_rotates_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let u = user(&format!("user-{}", Uuid::new_v4()));
    storage.create_user(&u).await.expect("user");
    let s = session(&u.id, t(1_000));
    login_indexed(storage.as_ref(), &s, &[1; 32], "fp", 10, true).await;
    let found = storage.session_by_refresh(&[1; 32], None).await.expect("get");
    assert_eq!(found.map(|(found, live)| (found.id, live)), Some((s.id.clone(), true)));
    let mut legacy = rotation(&s.id, &[1; 32], &[2; 32], 2_000);
    legacy.presented_generation = None;
    let out = storage.rotate_refresh(&legacy).await.expect("rotate");
    assert!(matches!(out, RotationOutcome::Rotated(_)), "{out:?}");
    let live = storage.session_by_refresh(&[2; 32], Some(&s.id)).await.expect("get");
    assert!(live.is_some_and(|(_, live)| live));
    // Presented again past the grace period: still found by its hash, and reuse.
    let (found, live) =
        storage.session_by_refresh(&[1; 32], None).await.expect("get").expect("still known");
    assert!(!live);
    let mut again = rotation(&found.id, &[1; 32], &[3; 32], 2_000 + 300_001);
    again.presented_generation = None;
    let out = storage.rotate_refresh(&again).await.expect("again");
    assert!(matches!(out, RotationOutcome::Reused(_)), "{out:?}");
}

async fn just_rotated_token_outside_grace_revokes_family(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    let sid = s.id.as_str();
    storage.rotate_refresh(&rotation(sid, &[1; 32], &[2; 32], 2_000)).await.expect("rotate");
    let out = storage
        .rotate_refresh(&rotation(sid, &[1; 32], &[3; 32], 2_000 + 300_001))
        .await
        .expect("late");
    assert!(matches!(out, RotationOutcome::Reused(_)), "{out:?}");
}

async fn expired_session_is_not_rotated(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    let sid = s.id.as_str();
    let out = storage
        .rotate_refresh(&rotation(sid, &[1; 32], &[2; 32], s.idle_expires_at - t(0)))
        .await
        .expect("idle");
    assert!(matches!(out, RotationOutcome::Ended(_)), "{out:?}");
    let found = storage.session_by_refresh(&[2; 32], Some(sid)).await.expect("get");
    assert!(found.is_some_and(|(_, live)| !live), "the token never became live");
}

async fn concurrent_rotations_rotate_once_retry_once_then_end_the_family(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    let sid = s.id.as_str();
    let tasks: Vec<_> = (0..50u8)
        .map(|i| {
            let storage = storage.clone();
            let sid = s.id.clone();
            tokio::spawn(async move {
                let new = [100 + i; 32];
                storage
                    .rotate_refresh(&rotation(&sid, &[1; 32], &new, 2_000))
                    .await
                    .expect("rotate")
            })
        })
        .collect();
    let (mut rotated, mut grace, mut reused, mut ended) = (0, 0, 0, 0);
    for task in tasks {
        match task.await.expect("join") {
            RotationOutcome::Rotated(_) => rotated += 1,
            RotationOutcome::Grace(_) => grace += 1,
            RotationOutcome::Reused(_) => reused += 1,
            RotationOutcome::Ended(_) => ended += 1,
            RotationOutcome::Invalid => panic!("the token is known"),
        }
    }
    // One rotation, one grace retry of the token it spent, then reuse: the family ends, and
    // every later request finds it ended.
    assert_eq!((rotated, grace, reused, ended), (1, 1, 1, 47));
    for i in 0..50u8 {
        let found = storage.session_by_refresh(&[100 + i; 32], Some(sid)).await.expect("get");
        assert!(found.is_none_or(|(s, _)| s.revoked_at.is_some()), "no token stays live");
    }
}

/// Rotations of many sessions at once (committed together where the backend groups them):
/// each gets its own outcome, a bad token among them spoils nothing, and every new token is
/// the live one of its session afterwards.
async fn simultaneous_rotations_of_many_sessions_each_get_their_own_outcome(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let u = user("many");
    storage.create_user(&u).await.expect("user");
    let mut ids = Vec::new();
    for i in 0..40u8 {
        let s = session(&u.id, t(1_000));
        login(storage.as_ref(), &s, &[i; 32], &format!("fp-{i}"), 100).await;
        ids.push(s.id);
    }
    // Eight more: a session that does not exist.
    ids.extend((40..48).map(|_| Uuid::now_v7().to_string()));
    let tasks: Vec<_> = (0..48u8)
        .map(|i| {
            let storage = storage.clone();
            let sid = ids[usize::from(i)].clone();
            tokio::spawn(async move {
                let new = [100 + i; 32];
                storage
                    .rotate_refresh(&rotation(&sid, &[i; 32], &new, 2_000))
                    .await
                    .expect("rotate")
            })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        let outcome = task.await.expect("join");
        if i < 40 {
            assert!(matches!(outcome, RotationOutcome::Rotated(_)), "{i}: {outcome:?}");
            let live =
                storage.session_by_refresh(&[100 + i as u8; 32], Some(&ids[i])).await.expect("get");
            assert!(matches!(live, Some((_, true))), "{i}: {live:?}");
        } else {
            assert_eq!(outcome, RotationOutcome::Invalid, "{i}: no such session");
        }
    }
}

/// A bulk import stores every user and session whole: past the per-user limit, with the
/// session's device, and with a refresh token that rotates like one a login issued.
async fn imported_sessions_are_stored_whole(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let users: Vec<User> = (0..3).map(|i| user(&format!("imported-{i}"))).collect();
    let imported: Vec<ImportedSession> = (0..36u8)
        .map(|i| {
            let owner = &users[usize::from(i) % 3].id;
            let device = device(owner, &format!("fp-{i}"), t(1_000));
            let session =
                Session { device_id: Some(device.id.clone()), ..session(owner, t(1_000)) };
            ImportedSession { session, device, refresh_hash: vec![i; 32] }
        })
        .collect();
    let import = db.bulk_import().await;
    import.import_sessions(&users, &imported).await.expect("import");
    for u in &users {
        assert_eq!(storage.user_by_username(&u.username).await.expect("get"), Some(u.clone()));
        let listed = storage.user_sessions(&u.id, t(2_000)).await.expect("list");
        assert_eq!(listed.len(), 12, "no session limit on import");
        for (session, device) in &listed {
            let stored = imported.iter().find(|i| i.session.id == session.id).expect("imported");
            assert_eq!(device.as_ref(), Some(&stored.device), "each session with its device");
        }
        assert_eq!(storage.user_devices(&u.id).await.expect("devices").len(), 12);
    }
    let first = &imported[0];
    // Imported tokens are of the format before: found by their hash.
    let (stored, live) =
        storage.session_by_refresh(&[0; 32], None).await.expect("get").expect("imported token");
    assert!(live);
    assert_eq!(stored, first.session);
    let mut legacy = rotation(&stored.id, &[0; 32], &[200; 32], 3_000);
    legacy.presented_generation = None;
    let out = storage.rotate_refresh(&legacy).await.expect("rotate");
    assert!(matches!(out, RotationOutcome::Rotated(_)), "{out:?}");
    let again = import.import_sessions(&users[..1], &[]).await;
    assert!(matches!(again, Err(StorageError::Conflict(_))), "{again:?}");
}

async fn revoking_a_session_happens_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let s = seeded(storage.as_ref(), 1_000).await;
    let revoked = storage.revoke_session(&s.id, t(2_000), "test").await.expect("revoke");
    assert_eq!(revoked.map(|r| r.id), Some(s.id.clone()));
    assert_eq!(storage.revoke_session(&s.id, t(3_000), "again").await.expect("again"), None);
    assert_eq!(storage.revoke_session("missing", t(3_000), "x").await.expect("missing"), None);
    let stored = storage.session(&s.id).await.expect("get").expect("exists");
    assert_eq!(
        (stored.revoked_at, stored.revoke_reason.as_deref()),
        (Some(t(2_000)), Some("test"))
    );
}

async fn access_token_state_reports_revocation_and_session(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let now = t(0);
    let s = seeded(storage.as_ref(), 0).await;
    let state = storage.access_token_state("jti-1", Some(&s.id)).await.expect("state");
    assert!(!state.revoked);
    assert!(state.is_active(true, now));
    storage.revoke_access_token("jti-1", now + 60_000).await.expect("revoke");
    storage.revoke_access_token("jti-1", now + 60_000).await.expect("revoke twice");
    let state = storage.access_token_state("jti-1", None).await.expect("state");
    assert!(state.revoked && !state.is_active(false, now));
    storage.revoke_session(&s.id, now, "test").await.expect("end");
    let state = storage.access_token_state("jti-2", Some(&s.id)).await.expect("state");
    assert!(!state.revoked && !state.is_active(true, now));
    let state = storage.access_token_state("jti-3", Some("no-such")).await.expect("state");
    assert_eq!(state.session, None);
}

/// Lookups of many requests at once (read in shared statements where the backend batches
/// them) each get their own token's state, whatever the ids hold.
async fn concurrent_token_lookups_each_get_their_own_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let now = t(0);
    let live = seeded(storage.as_ref(), 0).await;
    let other = user(&format!("user-{}", Uuid::new_v4()));
    storage.create_user(&other).await.expect("user");
    let ended = login(storage.as_ref(), &session(&other.id, now), &[2; 32], "fp", 10).await.session;
    storage.revoke_session(&ended.id, now, "test").await.expect("end");
    let odd = ["plain", "quote\"'", "back\\slash", "ünï\u{1F511}", "{\"n\":0}", "' OR 1=1 --"];
    let sessions = [Some(live.id.as_str()), Some(ended.id.as_str()), Some("no-such"), None];
    let mut lookups = Vec::new();
    for (i, name) in odd.iter().enumerate() {
        for (j, sid) in sessions.iter().enumerate() {
            for revoked in [false, true] {
                let jti = format!("{name}-{i}-{j}-{revoked}");
                if revoked {
                    storage.revoke_access_token(&jti, now + 60_000).await.expect("revoke");
                }
                lookups.push((jti, *sid, revoked));
            }
        }
    }
    // Every lookup several times over, all at once.
    let asked = lookups.iter().cycle().take(lookups.len() * 8);
    let states = futures::future::join_all(
        asked.clone().map(|(jti, sid, _)| storage.access_token_state(jti, *sid)),
    )
    .await;
    for ((jti, sid, revoked), state) in asked.zip(states) {
        let state = state.expect("state");
        assert_eq!(state.revoked, *revoked, "{jti}");
        let expected = match *sid {
            Some(id) if id == live.id => Some(false),
            Some(id) if id == ended.id => Some(true),
            _ => None,
        };
        assert_eq!(state.session.map(|s| s.revoked), expected, "{jti} in {sid:?}");
    }
}

/// Session listings of many requests at once each get their own user's live sessions,
/// newest use first, each with its device.
async fn concurrent_session_listings_each_get_their_own_user(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let now = t(0);
    let mut users = Vec::new();
    let mut hash = 0u8;
    for count in [0usize, 1, 3] {
        let u = user(&format!("user-{}", Uuid::new_v4()));
        storage.create_user(&u).await.expect("user");
        let mut live = Vec::new();
        for k in 0..count {
            hash += 1;
            let s = Session { last_used_at: now + k as i64, ..session(&u.id, now) };
            let fp = format!("fp-{k}");
            let made = login(storage.as_ref(), &s, &[hash; 32], &fp, 10).await;
            live.push((made.session.id, made.device.id));
        }
        // An ended session is not listed.
        hash += 1;
        let ended = login(storage.as_ref(), &session(&u.id, now), &[hash; 32], "fp-0", 10).await;
        storage.revoke_session(&ended.session.id, now, "test").await.expect("end");
        live.reverse();
        users.push((u.id, live));
    }
    let asked = users.iter().cycle().take(users.len() * 50);
    let lists =
        futures::future::join_all(asked.clone().map(|(id, _)| storage.user_sessions(id, now)))
            .await;
    for ((user_id, live), list) in asked.zip(lists) {
        let got: Vec<_> = list
            .expect("list")
            .into_iter()
            .map(|(s, d)| {
                assert_eq!(&s.user_id, user_id);
                (s.id, d.expect("device").id)
            })
            .collect();
        assert_eq!(&got, live, "{user_id}");
    }
}

fn key(kid: &str, at: i64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: "EdDSA".into(),
        private_key: vec![0, 1, 2, 255],
        encrypted: false,
        created_at: at,
        retired_at: None,
        expires_at: None,
    }
}

async fn key_rotation_is_compare_and_set(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    assert!(storage.signing_keys(t(0)).await.expect("keys").is_empty());
    assert!(storage.rotate_signing_key(None, &key("k1", t(10)), t(1_000)).await.expect("first"));
    // A second instance that also saw no key loses the race.
    assert!(!storage.rotate_signing_key(None, &key("k1b", t(11)), t(1_000)).await.expect("race"));
    assert!(
        storage.rotate_signing_key(Some("k1"), &key("k2", t(20)), t(500)).await.expect("second")
    );
    let keys = storage.signing_keys(t(100)).await.expect("keys");
    let kids: Vec<_> = keys.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k2", "k1"]);
    assert_eq!(keys[0].private_key, vec![0, 1, 2, 255]);
    assert_eq!((keys[1].retired_at, keys[1].expires_at), (Some(t(20)), Some(t(500))));
    // Once every token of the retired key has expired, it is no longer listed.
    let kids: Vec<_> =
        storage.signing_keys(t(500)).await.expect("keys").into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, ["k2"]);
}

async fn migrations_report_status_and_revert(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let applied = |status: Vec<MigrationStatus>| -> Vec<bool> {
        assert!(status.iter().all(|m| m.checksum_ok), "{status:?}");
        status.iter().map(|m| m.applied).collect()
    };
    let all = applied(storage.migration_status().await.expect("status"));
    let n = all.len();
    assert!(n >= 3 && all.iter().all(|a| *a), "{all:?}");
    let upto = |k: usize| (0..n).map(|i| i < k).collect::<Vec<_>>();
    storage.migrate_down(1).await.expect("down one");
    assert_eq!(applied(storage.migration_status().await.expect("status")), upto(n - 1));
    storage.migrate_down(n + 2).await.expect("down all");
    assert_eq!(applied(storage.migration_status().await.expect("status")), upto(0));
    storage.migrate_up().await.expect("up again");
    assert_eq!(applied(storage.migration_status().await.expect("status")), upto(n));
    storage.create_user(&user("after")).await.expect("works after re-migration");
}

/// `n` records of every event type, two users and none, a millisecond apart.
fn mixed_audit_records(n: usize) -> Vec<AuditRecord> {
    use atoms_auth::domain::audit::{entry, events};
    (0..n)
        .map(|i| {
            let e = entry(events::ALL[i % events::ALL.len()]);
            let e = match i % 3 {
                0 => e.user("audit-user-a"),
                1 => e.user("audit-user-b"),
                _ => e,
            };
            e.at(t(i as i64))
        })
        .collect()
}

/// Records with every field set, in text that JSON must escape, and details with nested
/// values of every JSON type.
fn full_audit_records(n: usize) -> Vec<AuditRecord> {
    use atoms_auth::domain::audit::{entry, events};
    (0..n)
        .map(|i| {
            let record = entry(events::ALL[i % events::ALL.len()])
                .actor(format!("admin \"{i}\""))
                .user(format!("user-{}", i % 4))
                .session(format!("session/{i}"))
                .client("client\\one")
                .detail("reason", "line\nbreak\ttab \u{1}\u{1F600} é \"quoted\" \\")
                .detail("nested", serde_json::json!({"a": [1, -2.5, 1e100, null, true], "b": {}}))
                .detail("count", i)
                .at(t(i as i64));
            AuditRecord {
                ip: Some(format!("2001:db8::{i}")),
                user_agent: Some("Mozilla/5.0 (\"x\"; \\) \u{7f}".into()),
                request_id: Some(format!("request-{i}")),
                ..record
            }
        })
        .collect()
}

/// Pages of `limit` through `query`, following the cursor; the ids in page order.
async fn audit_ids(storage: &dyn Storage, mut query: AuditQuery) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let page = storage.query_audit(&query).await.expect("query");
        ids.extend(page.iter().map(|r| r.id.clone()));
        match page.last() {
            Some(last) if page.len() == query.limit as usize => {
                query.cursor = Some(last.id.clone())
            }
            _ => return ids,
        }
    }
}

async fn audit_listing_pages_every_event_in_id_order(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let records = mixed_audit_records(30);
    storage.append_audit(records.clone().into()).await.expect("append");
    let mut expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    expected.sort_unstable();
    for limit in [1, 7, 30, 100] {
        let ascending = AuditQuery { ascending: true, limit, ..Default::default() };
        assert_eq!(audit_ids(&*storage, ascending).await, expected, "ascending by {limit}");
        let newest_first = AuditQuery { limit, ..Default::default() };
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(audit_ids(&*storage, newest_first).await, reversed, "descending by {limit}");
    }
    let window =
        AuditQuery { since: Some(t(10)), until: Some(t(20)), limit: 4, ..Default::default() };
    assert_eq!(audit_ids(&*storage, window).await.len(), 10);
    let user = AuditQuery { user_id: Some("audit-user-b".into()), limit: 3, ..Default::default() };
    assert_eq!(audit_ids(&*storage, user).await.len(), 10);
}

/// Text the bulk writers give a meaning to (separators, escapes, the null marker) comes
/// back as it went in, an empty text stays empty rather than none, and a batch written again
/// (a retry whose first answer was lost) is stored once.
async fn audit_records_come_back_whole_and_a_repeated_batch_once(backend: Backend) {
    use atoms_auth::domain::audit::{entry, events};
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let awkward =
        ["tab\there", "line\nbreak\r\n", "back\\slash \\N \\t", "\\N", "", "naïve ☃ '\"%_"];
    let records: Vec<AuditRecord> = awkward
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut r = entry(events::ALL[i]).detail("note", *text).at(t(i as i64));
            r.actor = Some(text.to_string());
            r.user_id = Some(format!("user {text}"));
            r.user_agent = Some(text.to_string());
            r.request_id = (i % 2 == 0).then(|| text.to_string());
            r.ip = None;
            r
        })
        .collect();
    storage.append_audit(records.clone().into()).await.expect("append");
    storage.append_audit(records.clone().into()).await.expect("append the same batch again");
    let every = AuditQuery { ascending: true, limit: 100, ..Default::default() };
    assert_eq!(storage.query_audit(&every).await.expect("query"), records);
}

/// Layout 5 keeps each record inside its event's index; reverting to layout 4 gives every
/// record its key back and the indexes bare ids, reverting on to layout 3 rebuilds the index
/// of every record, a page of a thousand at a time (several pages per event here), and
/// upgrading again converts it all back.
#[tokio::test]
async fn redis_audit_layout_reverts_and_upgrades_whole() {
    use ::redis::AsyncCommands;
    const RECORDS: usize = 15_000;
    let db = TestDb::new(Backend::Redis).await;
    let storage = db.storage().await;
    let records = mixed_audit_records(RECORDS);
    storage.append_audit(records.clone().into()).await.expect("append");
    let client = ::redis::Client::open(db.url.as_str()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let p = &db.redis_prefix;
    let all = format!("{p}:audit_all:ids");
    let first = &records[0];
    let record_key = format!("{p}:audit:{}", first.id);
    let event_index = format!("{p}:audit_event:{}", first.event);
    let user_index = format!("{p}:audit_user:{}", first.user_id.as_deref().expect("a user"));
    let firsts = {
        let conn = conn.clone();
        move |key: String| {
            let mut conn = conn.clone();
            async move { conn.zrange::<_, Vec<String>>(key, 0, 0).await.expect("zrange") }
        }
    };
    assert!(!conn.exists::<_, bool>(&record_key).await.expect("exists"));
    assert!(firsts(event_index.clone()).await[0].starts_with(&format!("{}\t{{", first.id)));
    assert_eq!(firsts(user_index.clone()).await, [format!("{}\t{}", first.id, first.event)]);

    migrate_down_before(storage.as_ref(), 5).await; // down to layout 4
    let stored: String = conn.get(&record_key).await.expect("the record's own key");
    assert_eq!(serde_json::from_str::<AuditRecord>(&stored).expect("json"), *first);
    assert_eq!(firsts(event_index.clone()).await, std::slice::from_ref(&first.id));
    assert_eq!(firsts(user_index.clone()).await, std::slice::from_ref(&first.id));
    assert!(!conn.exists::<_, bool>(&all).await.expect("exists"));

    storage.migrate_down(1).await.expect("down to layout 3");
    assert_eq!(conn.zcard::<_, usize>(&all).await.expect("zcard"), RECORDS);

    storage.migrate_up().await.expect("up");
    assert!(!conn.exists::<_, bool>(&all).await.expect("exists"));
    assert!(!conn.exists::<_, bool>(&record_key).await.expect("exists"));
    let every = AuditQuery { ascending: true, limit: 1000, ..Default::default() };
    let mut expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    expected.sort_unstable();
    assert_eq!(audit_ids(&*storage, every).await, expected);
    let user = AuditQuery { user_id: first.user_id.clone(), limit: 1000, ..Default::default() };
    let theirs = storage.query_audit(&user).await.expect("query");
    assert_eq!(theirs.len(), 1000);
    assert!(theirs.iter().all(|r| r.user_id == first.user_id));
}

/// A conversion to layout 5 that stopped part way (some records converted, the rest not)
/// finishes when it runs again.
#[tokio::test]
async fn redis_audit_conversion_resumes_after_an_interruption() {
    use ::redis::AsyncCommands;
    let db = TestDb::new(Backend::Redis).await;
    let storage = db.storage().await;
    let records = mixed_audit_records(60);
    storage.append_audit(records.clone().into()).await.expect("append");
    migrate_down_before(storage.as_ref(), 5).await; // down to layout 4
    // Convert the first record by hand, as an interrupted upgrade would have, and leave the
    // layout at 4.
    let client = ::redis::Client::open(db.url.as_str()).expect("redis url");
    let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
    let p = &db.redis_prefix;
    let first = &records[0];
    let user = first.user_id.as_deref().expect("a user");
    let record_key = format!("{p}:audit:{}", first.id);
    let raw: String = conn.get(&record_key).await.expect("record");
    let event_index = format!("{p}:audit_event:{}", first.event);
    let user_index = format!("{p}:audit_user:{user}");
    let _: () = ::redis::pipe()
        .zrem(&event_index, &first.id)
        .zadd(&event_index, format!("{}\t{raw}", first.id), 0)
        .zrem(&user_index, &first.id)
        .zadd(&user_index, format!("{}\t{}", first.id, first.event), 0)
        .del(&record_key)
        .query_async(&mut conn)
        .await
        .expect("convert one");

    storage.migrate_up().await.expect("up");
    let every = AuditQuery { ascending: true, limit: 7, ..Default::default() };
    let mut expected: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
    expected.sort_unstable();
    assert_eq!(audit_ids(&*storage, every).await, expected);
    let by_user = AuditQuery { user_id: Some(user.into()), limit: 100, ..Default::default() };
    let theirs = storage.query_audit(&by_user).await.expect("query");
    assert_eq!(theirs.len(), records.iter().filter(|r| r.user_id == first.user_id).count());
    assert!(theirs.contains(first));
    let keys: Vec<String> = conn.keys(format!("{p}:audit:*")).await.expect("keys");
    assert!(keys.is_empty(), "{keys:?}");
}

/// Upgrading gives the `account` scope, which the end-user API now needs, to the clients that
/// could use the `password` grant and to their live sessions; other clients keep theirs.
async fn upgrading_gives_password_clients_the_account_scope(backend: Backend) {
    let db = TestDb::new(backend).await;
    let storage = db.storage().await;
    let app = Client {
        client_id: "app".into(),
        name: "App".into(),
        secret_hash: None,
        grant_types: "password refresh_token".into(),
        scopes: "read".into(),
        created_at: 5,
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: String::new(),
        skip_consent: false,
        registered: false,
        last_used_at: None,
        metadata_document: false,
    };
    let machine = Client {
        client_id: "machine".into(),
        grant_types: "client_credentials".into(),
        ..app.clone()
    };
    storage.create_client(&app).await.expect("client");
    storage.create_client(&machine).await.expect("client");
    let live = seeded(storage.as_ref(), 1_000).await;
    let first = match backend {
        Backend::Redis => 6,
        Backend::Sqlite | Backend::Postgres => 12,
    };
    migrate_down_before(storage.as_ref(), first).await;
    storage.migrate_up().await.expect("up");
    let scopes = |c: Option<Client>| c.map(|c| c.scopes).unwrap_or_default();
    assert_eq!(scopes(storage.client("app").await.expect("get")), "read account");
    assert_eq!(scopes(storage.client("machine").await.expect("get")), "read");
    let session = storage.session(&live.id).await.expect("get").expect("session");
    assert_eq!(session.scope, "read account");
    // Running it again changes nothing.
    migrate_down_before(storage.as_ref(), first).await;
    storage.migrate_up().await.expect("up again");
    assert_eq!(scopes(storage.client("app").await.expect("get")), "read account");
}

backend_tests!(
    forged_tokens_change_nothing,
    a_token_of_the_format_before_rotates_once,
    upgrading_gives_password_clients_the_account_scope,
    audit_listing_pages_every_event_in_id_order,
    audit_records_come_back_whole_and_a_repeated_batch_once,
    users_and_clients_round_trip_and_conflict,
    session_is_found_by_its_refresh_token,
    rotation_follows_the_refresh_rule,
    just_rotated_token_outside_grace_revokes_family,
    expired_session_is_not_rotated,
    concurrent_rotations_rotate_once_retry_once_then_end_the_family,
    simultaneous_rotations_of_many_sessions_each_get_their_own_outcome,
    imported_sessions_are_stored_whole,
    revoking_a_session_happens_once,
    access_token_state_reports_revocation_and_session,
    concurrent_token_lookups_each_get_their_own_state,
    concurrent_session_listings_each_get_their_own_user,
    key_rotation_is_compare_and_set,
    migrations_report_status_and_revert,
);

#[tokio::test]
async fn tampered_sql_migration_is_flagged_by_status() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let db = TestDb::new(backend).await;
        let storage = db.storage().await;
        let sql = "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = 1";
        if backend == Backend::Sqlite {
            let pool = sqlx::SqlitePool::connect(&db.url).await.expect("pool");
            sqlx::query(sql).bind(vec![0u8; 48]).execute(&pool).await.expect("tamper");
        } else {
            let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
            sqlx::query(sql).bind(vec![0u8; 48]).execute(&pool).await.expect("tamper");
        }
        let status = storage.migration_status().await.expect("status");
        assert!(status[0].applied && !status[0].checksum_ok, "{backend:?}: {status:?}");
        assert!(storage.migrate_up().await.is_err(), "{backend:?}: up refuses a changed history");
    }
}

/// Reverts every applied migration from `version` on, whatever the newest is.
async fn migrate_down_before(storage: &dyn Storage, version: i64) {
    let status = storage.migration_status().await.expect("status");
    let since = status.iter().filter(|m| m.applied && m.version >= version).count();
    storage.migrate_down(since).await.expect("down");
}

/// PostgreSQL keeps one refresh-rotation function; reverting the migration that dropped the
/// old one brings it back.
#[tokio::test]
async fn postgres_has_one_rotation_function() {
    let db = TestDb::new(Backend::Postgres).await;
    let storage = db.storage().await;
    let pool = sqlx::PgPool::connect(&db.url).await.expect("pool");
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_proc WHERE proname = 'atoms_rotate_refresh' \
             AND pronamespace = current_schema()::regnamespace",
        )
        .fetch_one(&pool)
        .await
        .expect("count")
    };
    assert_eq!(count().await, 1);
    // Down to the version before migration 8, the one that dropped it.
    migrate_down_before(storage.as_ref(), 8).await;
    assert_eq!(count().await, 2);
    storage.migrate_up().await.expect("up");
    assert_eq!(count().await, 1);
    let s = seeded(storage.as_ref(), 0).await;
    let outcome = storage.rotate_refresh(&rotation(&s.id, &[1; 32], &[2; 32], 1_000)).await;
    assert!(matches!(outcome, Ok(RotationOutcome::Rotated(r)) if r.id == s.id));
}

/// Commits do not checkpoint SQLite's write-ahead log (a commit that did would keep its whole
/// group waiting); a background checkpointer copies it into the database file instead.
#[tokio::test]
async fn sqlite_log_reaches_the_database_file_in_the_background() {
    use sqlx::Connection;
    use std::str::FromStr;
    let db = TestDb::new(Backend::Sqlite).await;
    let storage = db.storage().await;
    let u = user(&format!("user-{}", Uuid::new_v4()));
    storage.create_user(&u).await.expect("user");
    // `immutable` reads the database file alone, without the log.
    let file = sqlx::sqlite::SqliteConnectOptions::from_str(&db.url)
        .expect("url")
        .read_only(true)
        .immutable(true);
    let in_file = || async {
        let mut conn = sqlx::SqliteConnection::connect_with(&file).await.expect("open");
        // Until the first checkpoint the file may not even hold the tables.
        let found: Result<i64, _> = sqlx::query_scalar("SELECT count(*) FROM users WHERE id = ?")
            .bind(&u.id)
            .fetch_one(&mut conn)
            .await;
        found.is_ok_and(|n| n == 1)
    };
    let deadline = std::time::Instant::now() + 10 * atoms_auth::storage::sqlite::CHECKPOINT_EVERY;
    while !in_file().await {
        assert!(std::time::Instant::now() < deadline, "the log was never checkpointed");
        tokio::time::sleep(atoms_auth::storage::sqlite::CHECKPOINT_EVERY / 5).await;
    }
}

/// The main and the audit log's database files of a SQLite test database.
fn sqlite_files(db: &TestDb) -> (std::path::PathBuf, std::path::PathBuf) {
    let path = db.url.trim_start_matches("sqlite://").split('?').next().expect("path");
    let path = std::path::PathBuf::from(path);
    let audit = atoms_auth::storage::sqlite::audit_file(&path);
    (path, audit)
}

/// A connection to one SQLite file, without the other attached.
async fn alone(file: &std::path::Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", file.display());
    sqlx::SqliteConnection::connect(&url).await.expect("open")
}

/// SQLite keeps the audit log in a file of its own. Records written while it was in the main
/// file are moved over by the migrations, new ones go to the audit file alone, and migrating
/// down brings every record back into the main file.
#[tokio::test]
async fn sqlite_audit_log_moves_into_a_file_of_its_own_and_back() {
    let db = TestDb::new(Backend::Sqlite).await;
    let storage = db.storage().await;
    let (path, audit) = sqlite_files(&db);
    let count = |file: std::path::PathBuf| async move {
        let mut conn = alone(&file).await;
        let table: i64 =
            sqlx::query_scalar("SELECT count(*) FROM sqlite_master WHERE name = 'audit_events'")
                .fetch_one(&mut conn)
                .await
                .expect("schema");
        if table == 0 {
            return None;
        }
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_events")
            .fetch_one(&mut conn)
            .await
            .expect("count");
        Some(rows)
    };
    let every = AuditQuery { limit: 1000, ascending: true, ..Default::default() };
    let listed = || async { storage.query_audit(&every).await.expect("query") };

    // As the version before left it: the audit log in the main file (which migrating down
    // makes of records written now).
    let old = mixed_audit_records(40);
    storage.append_audit(old.clone().into()).await.expect("append");
    migrate_down_before(storage.as_ref(), 9).await;
    assert_eq!((count(path.clone()).await, count(audit.clone()).await), (Some(40), None));

    storage.migrate_up().await.expect("up");
    assert_eq!((count(path.clone()).await, count(audit.clone()).await), (None, Some(40)));
    assert_eq!(listed().await, old, "moved whole");
    let new: Vec<AuditRecord> = mixed_audit_records(10)
        .into_iter()
        .map(|r| AuditRecord { id: Uuid::now_v7().to_string(), ..r })
        .collect();
    storage.append_audit(new.clone().into()).await.expect("append");
    assert_eq!((count(path.clone()).await, count(audit.clone()).await), (None, Some(50)));
    let all = [old, new].concat();
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed().await, sorted);
    let user = AuditQuery { user_id: Some("audit-user-a".into()), ..every.clone() };
    let theirs = storage.query_audit(&user).await.expect("by user");
    assert_eq!(theirs, sorted.iter().filter(|r| user.matches(r)).cloned().collect::<Vec<_>>());

    migrate_down_before(storage.as_ref(), 9).await;
    assert_eq!((count(path.clone()).await, count(audit.clone()).await), (Some(50), None));
    assert_eq!(listed().await, sorted, "moved back whole");
    storage.migrate_up().await.expect("up again");
    assert_eq!((count(path).await, count(audit).await), (None, Some(50)));
    assert_eq!(listed().await, sorted);
}

/// SQLite keeps each audit record as one row of eleven columns (migration 14); migration 11
/// had packed it into its id, event, user and one JSON object of the rest, under a view.
/// Every field comes back as written, whether the record was written in columns, packed by
/// migrating down or unpacked by migrating up; the filters and the purge work on the table.
#[tokio::test]
async fn sqlite_audit_records_keep_every_field_packed_and_unpacked() {
    let db = TestDb::new(Backend::Sqlite).await;
    let storage = db.storage().await;
    let (_, audit) = sqlite_files(&db);
    // What the audit file has under each name.
    let kinds = || async {
        let mut conn = alone(&audit).await;
        sqlx::query_as::<_, (String, String)>(
            "SELECT name, type FROM sqlite_master WHERE name IN ('audit_events', 'audit_log') \
             ORDER BY name",
        )
        .fetch_all(&mut conn)
        .await
        .expect("schema")
    };
    let named = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs.iter().map(|(n, k)| (n.to_string(), k.to_string())).collect()
    };
    let columns = named(&[("audit_events", "table")]);
    let every = AuditQuery { limit: 1000, ascending: true, ..Default::default() };
    let listed = || async { storage.query_audit(&every).await.expect("query") };

    let mut records = [full_audit_records(20), mixed_audit_records(12)].concat();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    storage.append_audit(records.clone().into()).await.expect("append");
    assert_eq!(kinds().await, columns);
    assert_eq!(listed().await, records, "written in columns");

    migrate_down_before(storage.as_ref(), 14).await;
    assert_eq!(kinds().await, named(&[("audit_events", "view"), ("audit_log", "table")]));
    assert_eq!(listed().await, records, "packed by migrating down");

    storage.migrate_up().await.expect("up");
    assert_eq!(kinds().await, columns);
    assert_eq!(listed().await, records, "unpacked by the migration");
    for query in [
        AuditQuery { user_id: Some("user-1".into()), ..every.clone() },
        AuditQuery { event: Some(records[3].event.clone()), ..every.clone() },
        AuditQuery { since: Some(t(5)), until: Some(t(9)), limit: 3, ..Default::default() },
    ] {
        let expected: Vec<AuditRecord> = if query.ascending {
            records.iter().filter(|r| query.matches(r)).cloned().collect()
        } else {
            records.iter().rev().filter(|r| query.matches(r)).cloned().collect()
        };
        let expected = expected.into_iter().take(query.limit as usize).collect::<Vec<_>>();
        assert!(!expected.is_empty(), "{query:?}");
        assert_eq!(storage.query_audit(&query).await.expect("query"), expected, "{query:?}");
    }

    let policy = PurgePolicy {
        now: t(0),
        ended_before: 0,
        used_before: 0,
        audit_before: t(10),
        batch: 1000,
    };
    let report = storage.purge(&policy).await.expect("purge");
    let kept: Vec<AuditRecord> = records.iter().filter(|r| r.at >= t(10)).cloned().collect();
    assert_eq!(report.audit_events as usize, records.len() - kept.len());
    assert_eq!(listed().await, kept);
}
