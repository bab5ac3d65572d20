//! The audit log over HTTP and the CLI, against every backend.

use atoms_auth::domain::roles::Role;
use std::collections::HashSet;
use std::time::Duration;

use atoms_auth::clock::Clock;
use atoms_auth::commands::{self, AuditExport, NewClient};
use atoms_auth::domain::audit::events;
use futures::StreamExt;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";

async fn audit_page(app: &TestApp, token: &str, query: &str) -> Answer {
    app.state.audit.flush().await;
    let a = app.bearer("GET", &format!("/admin/audit?{query}"), token, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a
}

fn event_names(page: &Answer) -> Vec<String> {
    page.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn every_event_type_is_recorded_with_its_context(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.lockout.threshold = 2;
        c.registration.policy = atoms_auth::config::RegistrationPolicy::Open;
    })
    .await;
    let config = app.db.config();
    let user_id =
        commands::create_user(&config, "alice", PASSWORD.into(), Role::Member).await.expect("user");
    commands::create_user(&config, "bob", PASSWORD.into(), Role::Member).await.expect("bob");
    let created = commands::create_client(
        &config,
        NewClient {
            client_id: None,
            name: "audited".into(),
            public: false,
            grant_types: vec![
                "password".into(),
                "refresh_token".into(),
                "client_credentials".into(),
            ],
            scopes: vec!["read".into()],
            resource_server: false,
            redirect_uris: Vec::new(),
            skip_consent: false,
            created_by: None,
        },
    )
    .await
    .expect("client");
    let client = TestClient {
        id: created["client_id"].as_str().expect("id").into(),
        secret: created["client_secret"].as_str().map(str::to_owned),
    };
    let login = app
        .login_with(
            &client,
            "alice",
            PASSWORD,
            &[],
            &[("x-request-id", "req-login-1"), ("user-agent", "audit-test/1.0")],
        )
        .await;
    assert_eq!(login.status, 200);
    app.login(&client, "alice", "wrong password").await;
    for _ in 0..2 {
        app.login(&client, "bob", "wrong password").await;
    }
    app.post_form("/auth/token", &client, &[("grant_type", "client_credentials")]).await;
    let refreshed = app.refresh(&client, &login.str("refresh_token")).await;
    app.revoke(&client, &refreshed.str("access_token")).await;
    app.clock.advance_secs(301);
    app.refresh(&client, &login.str("refresh_token")).await; // reuse
    let second = app.login(&client, "alice", PASSWORD).await;
    app.bearer("POST", "/auth/logout", &second.str("access_token"), None).await;
    app.state.keys.rotate().await.expect("rotate");
    app.login(&client, "alice", PASSWORD).await;
    let web = crate::sign_in::browser_client(&app, crate::sign_in::REDIRECT, false).await;
    let mut browser = crate::sign_in::Browser::new(&app);
    let allowed = crate::sign_in::sign_in_and_allow(&mut browser, &web, "alice", PASSWORD).await;
    assert_eq!(allowed.status, 303, "{}", allowed.html);
    app.clock.advance_secs(8 * 24 * 3600 + 24 * 3600 + 1);
    app.state.sessions.purge().await.expect("purge");

    let token = app.admin_token().await;
    let spare = app.confidential_client().await;
    let path = format!("/admin/clients/{}", spare.id);
    let change = serde_json::json!({ "rotate_secret": true });
    assert_eq!(app.bearer("PATCH", &path, &token, Some(change)).await.status, 200);
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 204);
    let metadata = serde_json::json!({ "redirect_uris": ["https://app.example/cb"] });
    let registered = app.http.post(format!("{}/auth/register", app.base)).json(&metadata).send();
    assert_eq!(registered.await.expect("register").status(), 201);
    let resource = serde_json::json!({ "uri": "https://mcp.example.com/mcp", "scopes": ["a"] });
    assert_eq!(app.bearer("POST", "/admin/resources", &token, Some(resource)).await.status, 201);
    let path = "/admin/resources?uri=https%3A%2F%2Fmcp.example.com%2Fmcp";
    assert_eq!(app.bearer("DELETE", path, &token, None).await.status, 204);
    let role = serde_json::json!({ "role": "viewer" });
    let path = format!("/admin/users/{user_id}");
    assert_eq!(app.bearer("PATCH", &path, &token, Some(role)).await.status, 200);
    let leaving = app.create_user("leaving", PASSWORD).await;
    let path = format!("/admin/users/{leaving}");
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 200);
    let page = audit_page(&app, &token, "limit=1000").await;
    let seen: HashSet<String> = event_names(&page).into_iter().collect();
    for event in events::ALL {
        assert!(seen.contains(event), "{event} missing from {seen:?}");
    }
    let records = page.body["events"].as_array().expect("events");
    let login_ok = records
        .iter()
        .find(|e| e["event"] == events::LOGIN_SUCCEEDED && e["request_id"] == "req-login-1")
        .expect("the first login, by its request id");
    assert_eq!(login_ok["user_id"], user_id.as_str());
    assert_eq!(login_ok["client_id"], client.id.as_str());
    assert_eq!(login_ok["ip"], "127.0.0.1");
    assert_eq!(login_ok["user_agent"], "audit-test/1.0");
    assert_eq!(login_ok["actor"], format!("user:{user_id}"));
    assert!(login_ok["session_id"].is_string() && login_ok["at"].is_string());
    assert_eq!(login_ok["id"].as_str().map(|id| &id[14..15]), Some("7"), "UUIDv7 ids");
    let revoked: Vec<&Value> =
        records.iter().filter(|e| e["event"] == events::SESSION_REVOKED).collect();
    let reasons: HashSet<&str> =
        revoked.iter().filter_map(|e| e["details"]["reason"].as_str()).collect();
    assert!(reasons.contains("refresh_token_reuse") && reasons.contains("logout"), "{reasons:?}");
    let failed = records.iter().find(|e| e["event"] == events::LOGIN_FAILED).expect("failure");
    assert!(failed["details"]["username"].is_string());
    // No secret of any kind reaches the log.
    let text = page.body.to_string();
    for secret in [
        PASSWORD,
        client.secret.as_deref().unwrap_or("-"),
        &login.str("refresh_token"),
        &login.str("access_token"),
    ] {
        assert!(!text.contains(secret));
    }
}

async fn audit_filters_and_pagination_stay_stable(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice = app.create_user("alice", PASSWORD).await;
    app.create_user("bob", PASSWORD).await;
    let client = app.confidential_client().await;
    let start = app.clock.now_rfc3339();
    let mut refresh = app.login(&client, "alice", PASSWORD).await.str("refresh_token");
    for _ in 0..6 {
        app.clock.advance_secs(1);
        refresh = app.refresh(&client, &refresh).await.str("refresh_token");
    }
    app.login(&client, "bob", PASSWORD).await;
    let middle = app.clock.now_rfc3339();
    app.clock.advance_secs(10);
    app.login(&client, "alice", "wrong").await;
    let token = app.admin_token().await;

    let by_event = audit_page(&app, &token, "event=token.refreshed&limit=100").await;
    assert_eq!(event_names(&by_event), vec!["token.refreshed"; 6]);
    // An event the SQL index holds, and one it leaves out, both filter exactly.
    let failures = audit_page(&app, &token, "event=user.login.failed&limit=100").await;
    assert_eq!(event_names(&failures), vec!["user.login.failed"]);
    let issued = audit_page(&app, &token, &format!("event=token.issued&user_id={alice}")).await;
    assert!(event_names(&issued).iter().all(|e| e == "token.issued"));
    assert!(!event_names(&issued).is_empty());
    let by_user = audit_page(&app, &token, &format!("user_id={alice}&limit=100")).await;
    let records = by_user.body["events"].as_array().expect("events");
    assert!(records.iter().all(|e| e["user_id"] == alice.as_str()));
    assert!(records.iter().any(|e| e["event"] == events::LOGIN_FAILED));
    let window = audit_page(
        &app,
        &token,
        &format!("since={start}&until={middle}&user_id={alice}&limit=100"),
    )
    .await;
    assert!(
        !event_names(&window).contains(&events::LOGIN_FAILED.to_owned()),
        "the failure is after the window"
    );
    assert!(event_names(&window).contains(&events::SESSION_CREATED.to_owned()));

    // Page through alice's records three at a time while new events keep arriving.
    let expected: Vec<String> =
        records.iter().map(|e| e["id"].as_str().unwrap_or_default().to_owned()).collect();
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("user_id={alice}&limit=3&cursor={c}"),
            None => format!("user_id={alice}&limit=3"),
        };
        let page = audit_page(&app, &token, &query).await;
        paged.extend(
            page.body["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].as_str().unwrap_or_default().to_owned()),
        );
        app.clock.advance_secs(1);
        app.login(&client, "alice", PASSWORD).await; // newer records, which must not shift the pages
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, expected, "newest first, no gaps, no repeats");
    let mut sorted = paged.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(paged, sorted);

    for bad in ["since=yesterday", "limit=0", "limit=5000", "order=sideways", "colour=red"] {
        let a = app.bearer("GET", &format!("/admin/audit?{bad}"), &token, None).await;
        assert_eq!(a.status, 400, "{bad}");
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    let user_token = app.login(&client, "bob", PASSWORD).await.str("access_token");
    assert_eq!(app.bearer("GET", "/admin/audit", &user_token, None).await.status, 403);
}

async fn audit_export_writes_json_lines_for_a_time_range(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.confidential_client().await;
    app.create_user("alice", PASSWORD).await;
    app.login(&client, "alice", PASSWORD).await;
    app.clock.advance_secs(60);
    let since = app.clock.now_ms();
    for _ in 0..3 {
        app.login(&client, "alice", "wrong").await;
    }
    app.clock.advance_secs(60);
    let until = app.clock.now_ms();
    app.login(&client, "alice", PASSWORD).await;
    app.state.audit.flush().await;

    let mut out = Vec::new();
    let export = AuditExport { since: Some(since), until: Some(until), event: None, user_id: None };
    let written = commands::export_audit(&app.db.config(), export, &mut out).await.expect("export");
    let lines: Vec<Value> = String::from_utf8(out)
        .expect("utf8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(written, 3);
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["event"] == events::LOGIN_FAILED));
    let ids: Vec<&str> = lines.iter().filter_map(|l| l["id"].as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "oldest first");
}

async fn audit_retention_purges_old_records_in_batches(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.audit.retention = Duration::from_secs(3600);
        c.purge.batch = 2;
    })
    .await;
    let client = app.confidential_client().await;
    app.create_user("alice", PASSWORD).await;
    for _ in 0..3 {
        app.login(&client, "alice", "wrong").await;
    }
    app.clock.advance_secs(3601);
    app.login(&client, "alice", PASSWORD).await;
    app.state.audit.flush().await;
    let report = app.state.sessions.purge().await.expect("purge");
    assert_eq!(report.audit_events, 3);
    let token = app.admin_token().await;
    let names = event_names(&audit_page(&app, &token, "limit=1000").await);
    assert!(!names.contains(&events::LOGIN_FAILED.to_owned()), "{names:?}");
    assert!(names.contains(&events::LOGIN_SUCCEEDED.to_owned()), "recent records stay");
}

async fn a_clean_shutdown_loses_no_audit_record(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        (c.rate_limits.client_per_sec, c.rate_limits.ip_per_sec) = (0, 0)
    })
    .await;
    let client = app.confidential_client().await;
    // More records than one batch holds, so that batches are written side by side and the
    // shutdown's flush has to wait for each of them.
    const RECORDS: usize = 1_200;
    let statuses: Vec<u16> = futures::stream::iter(0..RECORDS)
        .map(|_| async {
            app.post_form("/auth/token", &client, &[("grant_type", "client_credentials")])
                .await
                .status
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 200));
    let db = app.stop().await;
    let storage = db.storage().await;
    let query = atoms_auth::storage::AuditQuery {
        event: Some(events::TOKEN_ISSUED.into()),
        limit: 2 * RECORDS as u32,
        ..Default::default()
    };
    assert_eq!(storage.query_audit(&query).await.expect("query").len(), RECORDS);
}

async fn repeated_failures_lock_the_account(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    for _ in 0..5 {
        assert_eq!(app.login(&client, "alice", "guess").await.str("error"), "invalid_grant");
    }
    // Locked: even the right password is refused, with the same answer.
    let locked = app.login(&client, "alice", PASSWORD).await;
    assert_eq!(
        (locked.status, locked.str("error_description").as_str()),
        (400, "invalid username or password")
    );
    let token = app.admin_token().await;
    let page = audit_page(&app, &token, "event=user.locked").await;
    assert_eq!(event_names(&page).len(), 1);
    assert_eq!(page.body["events"][0]["details"]["failures"], 5);
    app.clock.advance_secs(15 * 60 + 1);
    assert_eq!(app.login(&client, "alice", PASSWORD).await.status, 200, "the lock ends");
    // A success clears the count.
    for _ in 0..4 {
        app.login(&client, "alice", "guess").await;
    }
    assert_eq!(app.login(&client, "alice", PASSWORD).await.status, 200);
}

backend_tests!(
    every_event_type_is_recorded_with_its_context,
    audit_filters_and_pagination_stay_stable,
    audit_export_writes_json_lines_for_a_time_range,
    audit_retention_purges_old_records_in_batches,
    a_clean_shutdown_loses_no_audit_record,
    repeated_failures_lock_the_account,
);
