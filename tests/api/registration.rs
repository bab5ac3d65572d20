//! Dynamic client registration (RFC 7591) at `/auth/register`.

use atoms_auth::config::RegistrationPolicy;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Answer, Backend, TestApp, answer, spawn_app, spawn_app_with};
use crate::sign_in::{Browser, authorize_query};

async fn post(app: &TestApp, body: &str, token: Option<&str>) -> Answer {
    let mut request = app
        .http
        .post(format!("{}/auth/register", app.base))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer(request.send().await.expect("request")).await
}

async fn open(backend: Backend) -> TestApp {
    spawn_app_with(backend, |c| c.registration.policy = RegistrationPolicy::Open).await
}

async fn registration_is_off_unless_configured(backend: Backend) {
    let app = spawn_app(backend).await;
    let refused = post(&app, r#"{"redirect_uris":["http://127.0.0.1/cb"]}"#, None).await;
    assert_eq!(refused.status, 404);
    let metadata = app.get("/.well-known/oauth-authorization-server").await;
    assert!(metadata.body.get("registration_endpoint").is_none(), "{}", metadata.body);
}

async fn a_native_client_registers_and_signs_a_user_in(backend: Backend) {
    let app = open(backend).await;
    let metadata = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata.body["registration_endpoint"], "http://atoms-auth.test/auth/register");
    let body = json!({
        "client_name": "Desktop Assistant",
        "application_type": "native",
        "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"],
        "redirect_uris": ["http://127.0.0.1/callback"],
        "software_id": "ignored-unknown-field",
    });
    let created = post(&app, &body.to_string(), None).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body["client_secret"].is_null());
    assert!(created.body["client_id_issued_at"].as_i64().is_some_and(|t| t > 1_600_000_000));
    assert_eq!(created.body["token_endpoint_auth_method"], "none");
    assert_eq!(created.header("cache-control"), Some("no-store"));
    let client_id = created.str("client_id");
    let mut browser = Browser::new(&app);
    let login = browser
        .get(&authorize_query(&client_id, "http://127.0.0.1:5000/callback", &[("scope", "")]))
        .await;
    assert_eq!(login.status, 200, "{}", login.html);
    assert!(login.html.contains("Desktop Assistant"));

    let web = json!({ "client_name": "Web", "redirect_uris": ["https://app.example/cb"] });
    let confidential = post(&app, &web.to_string(), None).await;
    assert_eq!(confidential.status, 201, "{}", confidential.body);
    assert!(confidential.body["client_secret"].as_str().is_some_and(|s| s.len() >= 43));
    assert_eq!(confidential.body["application_type"], "web");

    app.state.audit.flush().await;
    let token = app.admin_token().await;
    let audit = app.bearer("GET", "/admin/audit?event=client.registered", &token, None).await;
    assert_eq!(audit.body["events"].as_array().map(Vec::len), Some(2), "{}", audit.body);

    // Admins list the clients that registered themselves, and delete one.
    let listed = app.bearer("GET", "/admin/clients?registered=true", &token, None).await;
    let mut ids: Vec<&str> = listed.body["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    ids.sort_unstable();
    let mut expected = [client_id.as_str(), confidential.body["client_id"].as_str().expect("id")];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    assert!(listed.body["clients"][0].get("client_secret").is_none_or(Value::is_null));
    let all = app.bearer("GET", "/admin/clients", &token, None).await;
    assert!(all.body["clients"].as_array().is_some_and(|c| c.len() > 2), "the admin's client too");
    let operators = app.bearer("GET", "/admin/clients?registered=false", &token, None).await;
    assert!(
        operators.body["clients"]
            .as_array()
            .expect("list")
            .iter()
            .all(|c| c["registered"] == false)
    );
    let path = format!("/admin/clients/{client_id}");
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 204);
    let listed = app.bearer("GET", "/admin/clients?registered=true", &token, None).await;
    assert_eq!(listed.body["clients"].as_array().map(Vec::len), Some(1));
}

async fn bad_metadata_is_refused_with_its_error(backend: Backend) {
    let app = open(backend).await;
    let cases: [(Value, &str); 11] = [
        (json!({}), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ["http://app.example/cb"] }), "invalid_redirect_uri"),
        (json!({ "redirect_uris": ["https://app.example/cb#x"] }), "invalid_redirect_uri"),
        (
            json!({ "application_type": "native", "redirect_uris": ["https://app.example/cb"] }),
            "invalid_redirect_uri",
        ),
        (json!({ "redirect_uris": "https://app.example/cb" }), "invalid_client_metadata"),
        (
            json!({ "redirect_uris": ["https://app.example/cb"], "client_name": 42 }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "private_key_jwt" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": ["https://app.example/cb"], "grant_types": ["client_credentials"] }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": ["https://app.example/cb"], "scope": "admin" }),
            "invalid_client_metadata",
        ),
        (
            json!({ "redirect_uris": ["https://app.example/cb"], "application_type": "desktop" }),
            "invalid_client_metadata",
        ),
        (json!(["not", "an", "object"]), "invalid_client_metadata"),
    ];
    for (body, error) in cases {
        let refused = post(&app, &body.to_string(), None).await;
        assert_eq!(
            (refused.status, refused.str("error").as_str()),
            (400, error),
            "{body}: {}",
            refused.body
        );
    }
    let garbage = post(&app, "{not json", None).await;
    assert_eq!(garbage.str("error"), "invalid_client_metadata");
    app.state.audit.flush().await;
    let token = app.admin_token().await;
    let audit = app.bearer("GET", "/admin/audit?event=client.registered", &token, None).await;
    assert_eq!(audit.body["events"], json!([]), "nothing was registered");
}

async fn the_token_policy_needs_the_initial_access_token(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.registration.policy = RegistrationPolicy::Token;
        c.registration.initial_access_token = Some("initial-token-0123456789".to_owned().into());
    })
    .await;
    let body = json!({ "redirect_uris": ["https://app.example/cb"] }).to_string();
    let missing = post(&app, &body, None).await;
    assert_eq!((missing.status, missing.str("error").as_str()), (401, "invalid_token"));
    assert!(missing.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
    assert_eq!(post(&app, &body, Some("wrong")).await.status, 401);
    assert_eq!(post(&app, &body, Some("initial-token-0123456789")).await.status, 201);
}

async fn registration_is_rate_limited_per_address(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.registration.policy = RegistrationPolicy::Open;
        (c.rate_limits.ip_per_sec, c.rate_limits.ip_burst) = (1, 2);
    })
    .await;
    let body = json!({ "redirect_uris": ["https://app.example/cb"] }).to_string();
    let statuses: Vec<u16> = futures::future::join_all((0..4).map(|_| post(&app, &body, None)))
        .await
        .iter()
        .map(|a| a.status)
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 2, "{statuses:?}");
}

async fn registered_clients_unused_for_long_expire(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.registration.policy = RegistrationPolicy::Open;
        c.registration.unused_client_ttl = std::time::Duration::from_secs(24 * 3600);
    })
    .await;
    let body = r#"{"redirect_uris":["http://127.0.0.1/cb"],"token_endpoint_auth_method":"none"}"#;
    let used = post(&app, body, None).await.str("client_id");
    let unused = post(&app, body, None).await.str("client_id");
    let operators = app.create_client("client_credentials", "read", false).await;

    // Half a day later one of them starts a sign-in.
    app.clock.advance_secs(12 * 3600);
    let mut browser = Browser::new(&app);
    let page = browser.get(&authorize_query(&used, "http://127.0.0.1/cb", &[("scope", "")])).await;
    assert_eq!(page.status, 200, "{}", page.html);

    // A day and an hour after registration: only the unused one is past the limit.
    app.clock.advance_secs(13 * 3600);
    let report = app.state.sessions.purge().await.expect("purge");
    assert_eq!(report.clients, 1);
    let token = app.admin_token().await;
    let listed = app.bearer("GET", "/admin/clients?registered=true", &token, None).await;
    let ids: Vec<&str> = listed.body["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|c| c["client_id"].as_str())
        .collect();
    assert_eq!(ids, vec![used.as_str()], "{}", listed.body);
    let last_used = listed.body["clients"][0]["last_used_at"].as_str().unwrap_or_default();
    assert!(!last_used.is_empty(), "the last use is shown: {}", listed.body);
    let path = format!("/admin/clients/{}", operators.id);
    assert_eq!(app.bearer("GET", &path, &token, None).await.status, 200, "operators' stay");
    app.state.audit.flush().await;
    let audit = app.bearer("GET", "/admin/audit?event=client.deleted", &token, None).await;
    let events = audit.body["events"].as_array().expect("events");
    assert_eq!(events.len(), 1, "{}", audit.body);
    assert_eq!(events[0]["client_id"], unused.as_str());
    assert_eq!(events[0]["actor"], "system");
    assert_eq!(events[0]["details"]["reason"], "unused");
}

backend_tests!(
    registered_clients_unused_for_long_expire,
    registration_is_off_unless_configured,
    a_native_client_registers_and_signs_a_user_in,
    bad_metadata_is_refused_with_its_error,
    the_token_policy_needs_the_initial_access_token,
    registration_is_rate_limited_per_address,
);
