//! Regression tests of the security review: each fails without its fix.

use std::time::{Duration, Instant};

use atoms_auth::clock::Clock;
use atoms_auth::domain::audit::events;
use atoms_auth::storage::AuditQuery;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";

/// The `user.login.failed` reasons recorded so far.
async fn failure_reasons(app: &TestApp) -> Vec<String> {
    app.state.audit.flush().await;
    let query = AuditQuery {
        event: Some(events::LOGIN_FAILED.into()),
        limit: 1000,
        ..AuditQuery::default()
    };
    let records = app.storage().query_audit(&query).await.expect("audit");
    records
        .iter()
        .map(|r| {
            let details: Value = serde_json::from_str(&r.details).expect("details");
            details["reason"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// A burst of 100 parallel wrong passwords: at most `threshold` are ever verified, the
/// rest are refused unverified, and afterwards even the right password is refused.
async fn a_burst_of_guesses_verifies_at_most_the_threshold(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        (c.rate_limits.client_per_sec, c.rate_limits.ip_per_sec) = (0, 0);
    })
    .await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let guesses = futures::future::join_all((0..100).map(|i| {
        let guess = format!("wrong guess {i}");
        let client = client.clone();
        let app = &app;
        async move { app.login(&client, "alice", &guess).await }
    }))
    .await;
    assert!(guesses.iter().all(|g| g.str("error") == "invalid_grant"));
    let reasons = failure_reasons(&app).await;
    let verified = reasons.iter().filter(|r| *r == "wrong_password").count();
    assert_eq!(reasons.len(), 100, "{reasons:?}");
    assert!(verified <= 5, "{verified} guesses were verified, threshold 5");
    assert_eq!(verified, 5, "the threshold's worth are verified, then the lock holds");
    let right = app.login(&client, "alice", PASSWORD).await;
    assert_eq!(right.status, 400, "the right password is refused while locked");
}

/// Failures then a success from one address do not lock; a lock from one address leaves
/// another address free.
async fn a_lock_holds_for_one_address_only(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.server.trusted_proxies = "127.0.0.1".parse().expect("networks")
    })
    .await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for _ in 0..5 {
        app.login_with(&client, "alice", "wrong", &[], &from("203.0.113.5")).await;
    }
    let locked = app.login_with(&client, "alice", PASSWORD, &[], &from("203.0.113.5")).await;
    assert_eq!(locked.status, 400);
    let elsewhere = app.login_with(&client, "alice", PASSWORD, &[], &from("198.51.100.7")).await;
    assert_eq!(elsewhere.status, 200, "{}", elsewhere.body);
    // Four failures then a success forget the failures.
    for _ in 0..4 {
        app.login_with(&client, "alice", "wrong", &[], &from("198.51.100.8")).await;
    }
    assert_eq!(
        app.login_with(&client, "alice", PASSWORD, &[], &from("198.51.100.8")).await.status,
        200
    );
    app.login_with(&client, "alice", "wrong", &[], &from("198.51.100.8")).await;
    assert_eq!(
        app.login_with(&client, "alice", PASSWORD, &[], &from("198.51.100.8")).await.status,
        200
    );
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Unknown users, wrong passwords and locked accounts take the same time: each verifies an
/// argon2 hash. Before, a locked account answered without hashing, in a fraction of it.
async fn timing_tells_nothing_of_which_accounts_exist(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        (c.rate_limits.client_per_sec, c.rate_limits.ip_per_sec) = (0, 0);
        c.lockout.threshold = 3;
    })
    .await;
    app.create_user("alice", PASSWORD).await;
    app.create_user("locked", PASSWORD).await;
    let client = app.confidential_client().await;
    for _ in 0..3 {
        app.login(&client, "locked", "wrong").await;
    }
    // Rounds interleave the three kinds, so drifts of a noisy machine hit them alike.
    let (mut unknown, mut wrong, mut locked) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..15 {
        for (user, samples) in
            [("nobody", &mut unknown), ("locked", &mut locked), ("alice", &mut wrong)]
        {
            let started = Instant::now();
            let a = app.login(&client, user, "wrong").await;
            samples.push(started.elapsed());
            assert_eq!(a.status, 400);
        }
        // Alice stays below the threshold.
        if i % 2 == 1 {
            app.login(&client, "alice", PASSWORD).await;
        }
    }
    let (unknown, wrong, locked) = (median(unknown), median(wrong), median(locked));
    let slowest = unknown.max(wrong).max(locked);
    let fastest = unknown.min(wrong).min(locked);
    // A skipped hash would make one kind several times faster than the others.
    assert!(
        fastest.as_secs_f64() > slowest.as_secs_f64() * 0.6,
        "medians differ: unknown {unknown:?}, wrong {wrong:?}, locked {locked:?}"
    );
}

/// A long or odd `x-request-id` is replaced by a generated one; a short plain one is kept.
async fn only_short_plain_request_ids_are_taken(backend: Backend) {
    let app = spawn_app(backend).await;
    for bad in ["x".repeat(65), "has space".into(), "quote\"".into(), "x".repeat(100_000)] {
        let response = app
            .http
            .get(format!("{}/health/live", app.base))
            .header("x-request-id", bad.as_str())
            .send()
            .await
            .expect("request");
        let id = response.headers()["x-request-id"].to_str().expect("id").to_owned();
        assert_ne!(id, bad);
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "a generated id, not {id}");
    }
    let kept = app
        .http
        .get(format!("{}/health/live", app.base))
        .header("x-request-id", "req.42_a-B")
        .send()
        .await
        .expect("request");
    assert_eq!(kept.headers()["x-request-id"], "req.42_a-B");
}

/// Requests that claim a client's id cannot spend its allowance: a confidential client's
/// limit counts only authenticated requests, and a public client's counts per address.
async fn nobody_drains_another_clients_rate_limit(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        (c.rate_limits.client_per_sec, c.rate_limits.client_burst) = (1, 3);
        (c.rate_limits.ip_per_sec, c.rate_limits.ip_burst) = (1000, 1000);
        c.server.trusted_proxies = "127.0.0.1".parse().expect("networks");
    })
    .await;
    let victim = app.confidential_client().await;
    let impostor = TestClient { id: victim.id.clone(), secret: Some("guess".into()) };
    for _ in 0..10 {
        let a =
            app.post_form("/auth/token", &impostor, &[("grant_type", "client_credentials")]).await;
        assert_eq!(a.status, 401, "{}", a.body);
    }
    let real = app.post_form("/auth/token", &victim, &[("grant_type", "client_credentials")]).await;
    assert_eq!(real.status, 200, "{}", real.body);

    let public = app.create_client("client_credentials refresh_token", "read", true).await;
    let from = |ip: &str| {
        app.http
            .post(format!("{}/auth/revoke", app.base))
            .header("x-forwarded-for", ip)
            .form(&[("client_id", public.id.as_str()), ("token", "nothing")])
    };
    for _ in 0..3 {
        assert_eq!(from("203.0.113.9").send().await.expect("send").status(), 200);
    }
    assert_eq!(from("203.0.113.9").send().await.expect("send").status(), 429);
    assert_eq!(from("198.51.100.1").send().await.expect("send").status(), 200, "another address");
    // A client id too long to be real is refused before anything is looked up.
    let long = TestClient { id: "c".repeat(500), secret: Some("s".into()) };
    let a = app.post_form("/auth/token", &long, &[("grant_type", "client_credentials")]).await;
    assert_eq!(a.status, 401);
}

/// A just-rotated token may be retried once: the retry supersedes the pair issued before
/// (its access token goes inactive too), and a second retry is reuse.
async fn the_grace_retry_works_once_and_kills_the_pair_it_supersedes(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let old = login.str("refresh_token");
    let first = app.refresh(&client, &old).await;
    assert_eq!(first.status, 200);
    let retry = app.refresh(&client, &old).await;
    assert_eq!(retry.status, 200, "one retry within the grace period");
    assert_eq!(app.introspect(&client, &first.str("access_token")).await["active"], false);
    assert_eq!(app.introspect(&client, &retry.str("access_token")).await["active"], true);
    let again = app.refresh(&client, &old).await;
    assert_eq!(again.str("error"), "invalid_grant", "a second retry is reuse");
    assert_eq!(app.introspect(&client, &retry.str("access_token")).await["active"], false);
}

/// Only the token's own client or a resource server learns that a token is active.
async fn introspection_answers_only_the_tokens_client_or_a_resource_server(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let other = app.confidential_client().await;
    let resource = app.resource_server().await;
    for token in [login.str("access_token"), login.str("refresh_token")] {
        assert_eq!(app.introspect(&other, &token).await, json!({ "active": false }));
        assert_eq!(app.introspect(&client, &token).await["active"], true);
    }
    assert_eq!(app.introspect(&resource, &login.str("access_token")).await["active"], true);
}

/// NUL in any string of a JSON body is a 400, and nothing is written.
async fn nul_in_json_bodies_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.admin_token().await;
    let bodies = [
        ("/admin/users", json!({ "username": "a\u{0}b", "password": "long enough password" })),
        ("/admin/clients", json!({ "name": "x\u{0}", "grant_types": ["client_credentials"] })),
        ("/admin/webhooks", json!({ "url": "http://127.0.0.1/\u{0}", "events": ["user.locked"] })),
    ];
    for (path, body) in bodies {
        let a = app.bearer("POST", path, &token, Some(body)).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    assert_eq!(app.storage().user_by_username("a\u{0}b").await.ok().flatten(), None);
}

/// The end-user API needs the `account` scope; logout and userinfo do not.
async fn the_account_api_needs_the_account_scope(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.create_client("password", "read", false).await;
    let login = app.login(&client, "alice", PASSWORD).await;
    let token = login.str("access_token");
    for (method, path) in
        [("GET", "/auth/sessions"), ("DELETE", "/auth/sessions"), ("GET", "/auth/devices")]
    {
        let a = app.bearer(method, path, &token, None).await;
        assert_eq!(a.status, 403, "{method} {path}");
    }
    assert_eq!(app.bearer("GET", "/auth/userinfo", &token, None).await.status, 200);
    assert_eq!(app.bearer("POST", "/auth/logout", &token, None).await.status, 204);
}

/// A client can be disabled, re-keyed and deleted; its tokens act for nobody once disabled,
/// and a client registered by an admin acts with that admin's role, read at each request.
async fn clients_can_be_disabled_rekeyed_deleted_and_follow_their_creator(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner_token = app.admin_token().await;
    // An admin user registers a client with the admin scope.
    app.create_user("root", PASSWORD).await;
    let root = app.storage().user_by_username("root").await.expect("get").expect("root");
    app.storage().set_user_role(&root.id, "admin").await.expect("role");
    let root_client = app.create_client("password", "admin", false).await;
    let login = app.login(&root_client, "root", PASSWORD).await;
    let root_token = login.str("access_token");
    let body =
        json!({ "name": "ops bot", "grant_types": ["client_credentials"], "scopes": ["admin"] });
    let created = app.bearer("POST", "/admin/clients", &root_token, Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["created_by"], root.id.as_str());
    let bot =
        TestClient { id: created.str("client_id"), secret: Some(created.str("client_secret")) };
    let bot_token = app
        .post_form("/auth/token", &bot, &[("grant_type", "client_credentials")])
        .await
        .str("access_token");
    assert_eq!(app.bearer("GET", "/admin/audit", &bot_token, None).await.status, 200);
    // Demoting its creator demotes the bot at once.
    let demote = json!({ "role": "member" });
    let path = format!("/admin/users/{}", root.id);
    assert_eq!(app.bearer("PATCH", &path, &owner_token, Some(demote)).await.status, 200);
    assert_eq!(app.bearer("GET", "/admin/audit", &bot_token, None).await.status, 403);
    // Re-keying: the old secret stops working, the new one works.
    let path = format!("/admin/clients/{}", bot.id);
    let rekeyed =
        app.bearer("PATCH", &path, &owner_token, Some(json!({ "rotate_secret": true }))).await;
    assert_eq!(rekeyed.status, 200, "{}", rekeyed.body);
    let grant = [("grant_type", "client_credentials")];
    assert_eq!(app.post_form("/auth/token", &bot, &grant).await.status, 401);
    let bot = TestClient { id: bot.id, secret: Some(rekeyed.str("client_secret")) };
    assert_eq!(app.post_form("/auth/token", &bot, &grant).await.status, 200);
    // Disabling: no authentication, and its tokens no longer act as admin.
    let admin_client = app.create_client("client_credentials", "admin", false).await;
    let admin_token = app.post_form("/auth/token", &admin_client, &grant).await.str("access_token");
    let path = format!("/admin/clients/{}", admin_client.id);
    let disabled =
        app.bearer("PATCH", &path, &owner_token, Some(json!({ "disabled": true }))).await;
    assert_eq!(disabled.body["disabled"], true);
    assert_eq!(app.post_form("/auth/token", &admin_client, &grant).await.status, 401);
    assert_eq!(app.bearer("GET", "/admin/audit", &admin_token, None).await.status, 401);
    assert_eq!(app.bearer("DELETE", &path, &owner_token, None).await.status, 204);
    assert_eq!(app.bearer("GET", &path, &owner_token, None).await.status, 404);
}

/// With a master key set, a signing key stored in clear (planted by someone who can write
/// to the database) is never used to sign nor published; a new key replaces it.
async fn a_plaintext_key_is_refused_when_a_master_key_is_set(backend: Backend) {
    use atoms_auth::storage::StoredKey;
    let app = spawn_app_with(backend, |c| {
        c.keys.master_key = Some("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=".to_owned().into());
    })
    .await;
    let keys = &app.state.keys;
    let active = keys.signer().expect("a key").kid.clone();
    let planted = StoredKey {
        kid: "planted".into(),
        alg: "EdDSA".into(),
        private_key: atoms_auth::domain::keys::generate_pkcs8(
            atoms_auth::config::SigningAlgorithm::EdDSA,
        )
        .expect("key"),
        encrypted: false,
        created_at: app.clock.now_ms(),
        retired_at: None,
        expires_at: None,
    };
    let rotated = app
        .storage()
        .rotate_signing_key(Some(&active), &planted, app.clock.now_ms() + 3_600_000)
        .await
        .expect("plant");
    assert!(rotated);
    keys.rotate_if_due().await.expect("maintenance");
    let signer = keys.signer().expect("a usable key").kid.clone();
    assert_ne!(signer, "planted");
    assert!(!keys.jwks().to_string().contains("planted"));
}

/// Another instance may sign with a key for one reload interval after it was retired
/// elsewhere; such a token verifies on every instance until it expires.
async fn a_token_signed_with_a_just_retired_key_verifies_until_it_expires(backend: Backend) {
    let first = spawn_app(backend).await;
    let second = spawn_on(TestDb::shared(&first.db), first.db.config()).await;
    let (client, _) = first.logged_in().await;
    first.state.keys.rotate().await.expect("rotate");
    // The second instance has not reloaded yet: it signs with the retired key, up to a reload
    // interval later.
    first.clock.advance_secs(59);
    second.clock.advance_secs(59);
    let late = second.login(&client, "alice", PASSWORD).await;
    let token = late.str("access_token");
    // Just before that token expires, the first instance reloads and still verifies it.
    first.clock.advance_secs(899);
    first.state.keys.reload().await.expect("reload");
    assert_eq!(first.introspect(&client, &token).await["active"], true);
}

backend_tests!(
    a_burst_of_guesses_verifies_at_most_the_threshold,
    a_lock_holds_for_one_address_only,
    timing_tells_nothing_of_which_accounts_exist,
    only_short_plain_request_ids_are_taken,
    nobody_drains_another_clients_rate_limit,
    the_grace_retry_works_once_and_kills_the_pair_it_supersedes,
    introspection_answers_only_the_tokens_client_or_a_resource_server,
    nul_in_json_bodies_is_refused,
    the_account_api_needs_the_account_scope,
    clients_can_be_disabled_rekeyed_deleted_and_follow_their_creator,
    a_plaintext_key_is_refused_when_a_master_key_is_set,
    a_token_signed_with_a_just_retired_key_verifies_until_it_expires,
);

/// A client that trickles its headers, or sends nothing, is cut off after the header-read
/// timeout; while the connection limit is reached, a new request waits for a free slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_are_cut_off_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.server.header_read_timeout = Duration::from_secs(1);
        c.server.idle_timeout = Duration::from_secs(2);
        c.server.max_connections = 3;
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    // Slowloris: a byte of header every 200 ms never completes the head.
    let started = Instant::now();
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            let mut byte = [0u8; 512];
            let read = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut byte)).await;
            if matches!(read, Ok(Ok(0))) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), trickle)
        .await
        .expect("the trickling connection must be closed");
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    // Three silent connections take every slot: a request waits until they are cut off.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let a = app.get("/health/live").await;
    assert_eq!(a.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    for mut s in silent {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a silent connection is closed");
    }
}

/// `/metrics` can live on its own address, away from the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_served_on_their_own_address() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let metrics_addr = free.local_addr().expect("addr");
    drop(free);
    let app =
        spawn_app_with(Backend::Sqlite, |c| c.server.metrics_listen = Some(metrics_addr)).await;
    assert_eq!(app.get("/metrics").await.status, 404);
    let mut scraped = None;
    for _ in 0..50 {
        if let Ok(r) = app.http.get(format!("http://{metrics_addr}/metrics")).send().await {
            scraped = Some((r.status().as_u16(), r.text().await.unwrap_or_default()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = scraped.expect("the metrics address answers");
    assert_eq!(status, 200);
    assert!(body.contains("atoms_auth_http_requests_total"));
}
