//! Bad input on the OAuth endpoints: always a clear 4xx in the RFC 6749 §5.2 format, never a
//! 500 or a panic, and nothing that was valid before is lost.

use crate::backend_tests;
use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";

fn assert_oauth_error(a: &Answer, status: u16, code: &str) {
    assert_eq!((a.status, a.str("error").as_str()), (status, code), "{}", a.body);
    assert!(a.body["error_description"].is_string(), "{}", a.body);
    assert_eq!(a.header("cache-control"), Some("no-store"));
}

async fn token_endpoint_errors_follow_rfc6749(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let token = |form: Vec<(&'static str, String)>| {
        let client = client.clone();
        let app = &app;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post_form("/auth/token", &client, &form).await
        }
    };
    let s = |v: &str| v.to_owned();

    assert_oauth_error(&token(vec![]).await, 400, "invalid_request");
    assert_oauth_error(
        &token(vec![("grant_type", s("implicit"))]).await,
        400,
        "unsupported_grant_type",
    );
    assert_oauth_error(&token(vec![("grant_type", s("password"))]).await, 400, "invalid_request");
    assert_oauth_error(
        &token(vec![("grant_type", s("password")), ("username", s("alice"))]).await,
        400,
        "invalid_request",
    );
    assert_oauth_error(
        &token(vec![("grant_type", s("refresh_token"))]).await,
        400,
        "invalid_request",
    );
    let wrong_password =
        vec![("grant_type", s("password")), ("username", s("alice")), ("password", s("nope"))];
    assert_oauth_error(&token(wrong_password).await, 400, "invalid_grant");
    let unknown_user =
        vec![("grant_type", s("password")), ("username", s("mallory")), ("password", s(PASSWORD))];
    assert_oauth_error(&token(unknown_user).await, 400, "invalid_grant");
    let bad_scope = vec![
        ("grant_type", s("password")),
        ("username", s("alice")),
        ("password", s(PASSWORD)),
        ("scope", s("read admin")),
    ];
    assert_oauth_error(&token(bad_scope).await, 400, "invalid_scope");
    let garbage = vec![("grant_type", s("refresh_token")), ("refresh_token", s("garbage"))];
    assert_oauth_error(&token(garbage).await, 400, "invalid_grant");
    let duplicate = vec![("grant_type", s("password")), ("grant_type", s("client_credentials"))];
    assert_oauth_error(&token(duplicate).await, 400, "invalid_request");

    // Nothing was lost along the way.
    assert_eq!(app.refresh(&client, &login.str("refresh_token")).await.status, 200);
}

async fn client_authentication_failures_are_401_with_challenge(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let form = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)];
    let wrong_secret = TestClient { id: client.id.clone(), secret: Some("wrong".into()) };
    let unknown = TestClient { id: "no-such-client".into(), secret: Some("x".into()) };
    let no_secret = TestClient { id: client.id.clone(), secret: None };
    for c in [&wrong_secret, &unknown] {
        let a = app.post_form("/auth/token", c, &form).await;
        assert_oauth_error(&a, 401, "invalid_client");
        assert!(a.header("www-authenticate").is_some_and(|h| h.starts_with("Basic")));
    }
    let a = app
        .post_raw("/auth/token", &[("grant_type", "password"), ("client_id", &no_secret.id)])
        .await;
    assert_oauth_error(&a, 401, "invalid_client");
    let a = app.post_raw("/auth/token", &form).await;
    assert_oauth_error(&a, 401, "invalid_client");

    // A bearer header where Basic is expected, and a malformed Basic header.
    for value in ["Bearer abc", "Basic !!!notbase64", "Basic"] {
        let a = answer(
            app.http
                .post(format!("{}/auth/token", app.base))
                .header("authorization", value)
                .form(&form)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_oauth_error(&a, 401, "invalid_client");
    }
    // Basic and client_secret_post at once.
    let secret = client.secret.clone().expect("secret");
    let both = [("grant_type", "client_credentials"), ("client_secret", secret.as_str())];
    assert_oauth_error(&app.post_form("/auth/token", &client, &both).await, 400, "invalid_request");
}

async fn grants_the_client_may_not_use_are_unauthorized_client(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let machine = app.create_client("client_credentials", "read", false).await;
    let a = app.login(&machine, "alice", PASSWORD).await;
    assert_oauth_error(&a, 400, "unauthorized_client");
    let public = app.create_client("password client_credentials", "read", true).await;
    let a = app
        .post_raw("/auth/token", &[("grant_type", "client_credentials"), ("client_id", &public.id)])
        .await;
    assert_oauth_error(&a, 400, "unauthorized_client");
    let no_refresh = app.create_client("password", "read", false).await;
    let login = app.login(&no_refresh, "alice", PASSWORD).await;
    assert_eq!(login.status, 200);
    assert!(login.body.get("refresh_token").is_none(), "{}", login.body);
}

async fn refresh_token_of_another_client_is_invalid_grant(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let other = app.confidential_client().await;
    let a = app.refresh(&other, &login.str("refresh_token")).await;
    assert_oauth_error(&a, 400, "invalid_grant");
    // The rightful client's token was not touched.
    assert_eq!(app.refresh(&client, &login.str("refresh_token")).await.status, 200);
}

async fn malformed_bodies_are_invalid_request(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = format!("{}/auth/token", app.base);
    let json =
        app.http.post(&url).json(&serde_json::json!({"grant_type": "password"})).send().await;
    assert_oauth_error(&answer(json.expect("send")).await, 400, "invalid_request");
    let no_type = app.http.post(&url).body("grant_type=password").send().await;
    assert_oauth_error(&answer(no_type.expect("send")).await, 400, "invalid_request");
    let bad_utf8 = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![0x67, 0x3d, 0xff, 0xfe, 0x26])
        .send()
        .await;
    let a = answer(bad_utf8.expect("send")).await;
    assert!(a.status == 400 || a.status == 401, "{} {}", a.status, a.body);
    let garbage = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("%%%&&&===")
        .send()
        .await;
    let a = answer(garbage.expect("send")).await;
    assert!((400..500).contains(&a.status), "{} {}", a.status, a.body);
    for path in ["/auth/revoke", "/auth/introspect"] {
        let a = answer(
            app.http.post(format!("{}{path}", app.base)).body("x").send().await.expect("send"),
        )
        .await;
        assert_oauth_error(&a, 400, "invalid_request");
    }
}

async fn oversized_bodies_are_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    // Just over the limit: a body much larger than the socket buffers could still be in
    // flight when the server answers and closes, and the client would see a reset instead.
    let huge = "x".repeat(atoms_auth::config::Config::default().server.max_body_bytes + 1024);
    let a = app
        .post_form("/auth/token", &client, &[("grant_type", "password"), ("username", &huge)])
        .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.str("error"), "invalid_request");
    assert_eq!(app.refresh(&client, &login.str("refresh_token")).await.status, 200);
}

async fn sql_looking_input_is_just_data(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let nasty =
        ["' OR '1'='1", "alice'; DROP TABLE users; --", "\" OR 1=1 --", "*", "%", "é\u{202e}"];
    for value in nasty {
        let a = app.login(&client, value, value).await;
        assert_oauth_error(&a, 400, "invalid_grant");
        let a = app.refresh(&client, value).await;
        assert_oauth_error(&a, 400, "invalid_grant");
        let a = app
            .post_raw("/auth/token", &[("grant_type", "client_credentials"), ("client_id", value)])
            .await;
        assert_oauth_error(&a, 401, "invalid_client");
        assert_eq!(app.introspect(&client, value).await["active"], false);
        assert_eq!(app.revoke(&client, value).await.status, 200);
    }
    // NUL cannot be stored as text by any backend: refused at the door.
    let a = app.login(&client, "alice\0", PASSWORD).await;
    assert_oauth_error(&a, 400, "invalid_request");
    let nul_client = TestClient { id: "client\0".into(), secret: Some("x".into()) };
    let a =
        app.post_form("/auth/token", &nul_client, &[("grant_type", "client_credentials")]).await;
    assert_oauth_error(&a, 401, "invalid_client");
    // Everything is still there.
    assert_eq!(app.login(&client, "alice", PASSWORD).await.status, 200);
    assert_eq!(app.refresh(&client, &login.str("refresh_token")).await.status, 200);
}

async fn garbage_access_tokens_introspect_inactive(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let access = login.str("access_token");
    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    parts[2] = parts[2].chars().rev().collect();
    let forged_signature = parts.join(".");
    let none_alg = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0.{}.",
        access.split('.').nth(1).unwrap_or_default()
    );
    for token in [forged_signature.as_str(), none_alg.as_str(), "a.b.c", "....", "eyJ.eyJ.x", ""] {
        if token.is_empty() {
            let a = app.post_form("/auth/introspect", &client, &[("token", "")]).await;
            assert_oauth_error(&a, 400, "invalid_request");
            continue;
        }
        assert_eq!(
            app.introspect(&client, token).await,
            serde_json::json!({ "active": false }),
            "{token}"
        );
    }
    let a = app.post_form("/auth/introspect", &client, &[]).await;
    assert_oauth_error(&a, 400, "invalid_request");
}

async fn unknown_routes_are_problem_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = app.get("/no/such/route").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert_eq!(a.body["status"], 404);
    assert!(a.header("x-request-id").is_some());
}

backend_tests!(
    token_endpoint_errors_follow_rfc6749,
    client_authentication_failures_are_401_with_challenge,
    grants_the_client_may_not_use_are_unauthorized_client,
    refresh_token_of_another_client_is_invalid_grant,
    malformed_bodies_are_invalid_request,
    oversized_bodies_are_413,
    sql_looking_input_is_just_data,
    garbage_access_tokens_introspect_inactive,
    unknown_routes_are_problem_json,
);
