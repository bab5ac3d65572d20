//! Registered resources (RFC 8707): the admin API, the metadata, and bad input.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app, spawn_app_with};
use crate::sign_in::*;

const MCP: &str = "https://mcp.example.com/mcp";

async fn admins_register_list_and_remove_resources(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.admin_token().await;
    let body = json!({ "uri": MCP, "name": "Notes MCP", "scopes": ["notes:read", "notes:write"] });
    let created = app.bearer("POST", "/admin/resources", &token, Some(body.clone())).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["scopes"], json!(["notes:read", "notes:write"]));
    assert_eq!(app.bearer("POST", "/admin/resources", &token, Some(body)).await.status, 409);
    let other = json!({ "uri": "http://127.0.0.1:9000/mcp", "scopes": ["notes:read", "tasks"] });
    assert_eq!(app.bearer("POST", "/admin/resources", &token, Some(other)).await.status, 201);

    let listed = app.bearer("GET", "/admin/resources", &token, None).await;
    let uris: Vec<&str> = listed.body["resources"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(uris, ["http://127.0.0.1:9000/mcp", MCP]);
    assert_eq!(listed.body["resources"][1]["name"], "Notes MCP");
    assert_eq!(listed.body["resources"][0]["name"], "http://127.0.0.1:9000/mcp");
    let metadata = app.get("/.well-known/oauth-authorization-server").await;
    let mut scopes: Vec<&str> = metadata.body["scopes_supported"]
        .as_array()
        .expect("scopes")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["notes:read", "notes:write", "tasks"]);

    let path = format!("/admin/resources?uri={}", urlencode(MCP));
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 204);
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 404);
    let listed = app.bearer("GET", "/admin/resources", &token, None).await;
    assert_eq!(listed.body["resources"].as_array().map(Vec::len), Some(1));
}

async fn bad_resources_are_refused_and_nothing_is_stored(backend: Backend) {
    let app = spawn_app(backend).await;
    let token = app.admin_token().await;
    for body in [
        json!({ "uri": "https://mcp.example.com/mcp#tools", "scopes": ["a"] }),
        json!({ "uri": "http://mcp.example.com/mcp", "scopes": ["a"] }),
        json!({ "uri": "/mcp", "scopes": ["a"] }),
        json!({ "uri": MCP, "scopes": [] }),
        json!({ "uri": MCP, "scopes": ["two words"] }),
        json!({ "uri": MCP, "scopes": ["a"], "unknown": true }),
        json!({ "uri": 42, "scopes": ["a"] }),
    ] {
        let refused = app.bearer("POST", "/admin/resources", &token, Some(body.clone())).await;
        assert_eq!(refused.status, 400, "{body}: {}", refused.body);
        assert_eq!(refused.header("content-type"), Some("application/problem+json"));
    }
    let listed = app.bearer("GET", "/admin/resources", &token, None).await;
    assert_eq!(listed.body["resources"], json!([]));
    // Reading needs an admin token; changing needs a role that may change clients.
    assert_eq!(app.get("/admin/resources").await.status, 401);
}

async fn configured_resources_are_registered_at_start(backend: Backend) {
    let listed =
        "https://mcp.example.com/mcp=notes:read notes:write, http://127.0.0.1:9000/mcp=tasks";
    let app = spawn_app_with(backend, |c| c.tokens.resources = listed.into()).await;
    let token = app.admin_token().await;
    let found = app.bearer("GET", "/admin/resources", &token, None).await;
    let resources = found.body["resources"].as_array().expect("list").clone();
    assert_eq!(resources.len(), 2, "{}", found.body);
    assert_eq!(resources[1]["scopes"], json!(["notes:read", "notes:write"]));
    app.state.audit.flush().await;
    let audit = app.bearer("GET", "/admin/audit?event=resource.created", &token, None).await;
    let events = audit.body["events"].as_array().expect("events");
    assert_eq!(events.len(), 2, "{}", audit.body);
    assert!(events.iter().all(|e| e["actor"] == "config"));

    // A malformed entry stops the server from starting.
    let mut config = app.db.config();
    config.tokens.resources = "https://mcp.example.com/mcp".into();
    let clock: std::sync::Arc<dyn atoms_auth::clock::Clock> =
        std::sync::Arc::new(atoms_auth::clock::SystemClock);
    let refused = atoms_auth::App::build_with_clock(config, clock).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("URI=scope")));
}

/// The claims of a JWT, unverified (the signature is the JWKS tests' business).
fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

const OTHER: &str = "http://127.0.0.1:9000/mcp";

/// Registers `MCP` (scopes `read notes:write`) and `OTHER` (scope `tasks`).
async fn two_resources(app: &TestApp) {
    let token = app.admin_token().await;
    for (uri, scopes) in [(MCP, json!(["read", "notes:write"])), (OTHER, json!(["tasks"]))] {
        let body = json!({ "uri": uri, "scopes": scopes });
        let created = app.bearer("POST", "/admin/resources", &token, Some(body)).await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
}

async fn a_code_flow_for_a_resource_binds_every_token_to_it(backend: Backend) {
    let app = spawn_app(backend).await;
    two_resources(&app).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, false).await;
    let mut browser = Browser::new(&app);
    let query = authorize_query(&client.id, REDIRECT, &[("resource", MCP)]);
    let login = browser.get(&query).await;
    assert_eq!(login.status, 200, "{}", login.html);
    let consent = post_fields(&mut browser, "/auth/authorize", &alice_signs_in(&login)).await;
    assert!(consent.html.contains(MCP), "the consent page names the resource: {}", consent.html);
    let back = post_fields(
        &mut browser,
        "/auth/authorize",
        &form_fields(&consent, &[("action", "allow")]),
    )
    .await;
    let code = back.redirect_params()["code"].clone();

    // Exchanging it for another resource is refused (and uses the code up).
    let form = |code: &str, resource: &str| {
        vec![
            ("grant_type", "authorization_code".to_owned()),
            ("client_id", client.id.clone()),
            ("code", code.to_owned()),
            ("redirect_uri", REDIRECT.to_owned()),
            ("code_verifier", VERIFIER.to_owned()),
            ("resource", resource.to_owned()),
        ]
    };
    let pairs = |f: &[(&'static str, String)]| -> Vec<(&'static str, String)> { f.to_vec() };
    let post = |f: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let f: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post_raw("/auth/token", &f).await
        }
    };
    let tokens = post(pairs(&form(&code, MCP))).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let access = claims(&tokens.str("access_token"));
    assert_eq!(access["aud"], MCP);
    assert_eq!(access["scope"], "read");

    // A resource server sees the audience; this server's own APIs refuse the token.
    let rs = app.resource_server().await;
    let seen = app.introspect(&rs, &tokens.str("access_token")).await;
    assert_eq!((seen["active"].clone(), seen["aud"].clone()), (json!(true), json!(MCP)));
    let own = app.bearer("GET", "/auth/sessions", &tokens.str("access_token"), None).await;
    assert_eq!(own.status, 401, "a token for an MCP server is not one for this server");
    let refresh_seen = app.introspect(&rs, &tokens.str("refresh_token")).await;
    assert_eq!(refresh_seen["aud"], MCP);

    // A refresh keeps the audience, with or without naming it again...
    let refreshed = refresh_public(&app, &client, &tokens.str("refresh_token")).await;
    assert_eq!(claims(&refreshed.str("access_token"))["aud"], MCP);
    let named = post(vec![
        ("grant_type", "refresh_token".to_owned()),
        ("client_id", client.id.clone()),
        ("refresh_token", refreshed.str("refresh_token")),
        ("resource", MCP.to_owned()),
    ])
    .await;
    assert_eq!(named.status, 200, "{}", named.body);
    assert_eq!(claims(&named.str("access_token"))["aud"], MCP);
    // ...and never widens to another.
    let widened = post(vec![
        ("grant_type", "refresh_token".to_owned()),
        ("client_id", client.id.clone()),
        ("refresh_token", named.str("refresh_token")),
        ("resource", OTHER.to_owned()),
    ])
    .await;
    assert_eq!((widened.status, widened.str("error").as_str()), (400, "invalid_target"));

    // A second code, exchanged for another resource: refused.
    let again = browser.get(&query).await;
    assert_eq!(again.status, 303, "consent for this resource is remembered: {}", again.html);
    let code = again.redirect_params()["code"].clone();
    let other = post(pairs(&form(&code, OTHER))).await;
    assert_eq!((other.status, other.str("error").as_str()), (400, "invalid_target"));

    // Consent is per resource: the same scope on another resource asks again.
    app.bearer(
        "POST",
        "/admin/resources",
        &app.admin_token().await,
        Some(json!({ "uri": "https://other.example.com/mcp", "scopes": ["read"] })),
    )
    .await;
    let elsewhere =
        authorize_query(&client.id, REDIRECT, &[("resource", "https://other.example.com/mcp")]);
    let asked = browser.get(&elsewhere).await;
    assert_eq!(asked.status, 200, "{}", asked.html);
    assert!(asked.html.contains("https://other.example.com/mcp"));

    // The resource removed: the session's refresh is refused.
    let token = app.admin_token().await;
    let path = format!("/admin/resources?uri={}", urlencode(MCP));
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 204);
    let gone = refresh_public(&app, &client, &named.str("refresh_token")).await;
    assert_eq!((gone.status, gone.str("error").as_str()), (400, "invalid_target"));
}

async fn every_grant_takes_a_resource_and_refuses_a_wrong_one(backend: Backend) {
    let app = spawn_app(backend).await;
    two_resources(&app).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await; // scopes read write account
    let login = |extra: &'static [(&'static str, &'static str)]| {
        let (app, client) = (&app, &client);
        async move {
            let mut form =
                vec![("grant_type", "password"), ("username", "alice"), ("password", PASSWORD)];
            form.extend_from_slice(extra);
            app.post_form("/auth/token", client, &form).await
        }
    };
    // Without a resource: this server's audience, as ever.
    let plain = login(&[]).await;
    assert_eq!(claims(&plain.str("access_token"))["aud"], "http://atoms-auth.test");
    assert_eq!(plain.body["scope"], "read write account");

    let bound = login(&[("resource", MCP)]).await;
    assert_eq!(bound.status, 200, "{}", bound.body);
    assert_eq!(claims(&bound.str("access_token"))["aud"], MCP);
    assert_eq!(bound.body["scope"], "read", "the scopes both the client and resource have");
    let too_much = login(&[("resource", MCP), ("scope", "read write")]).await;
    assert_eq!(too_much.str("error"), "invalid_scope");

    let credentials = app.create_client("client_credentials", "tasks", false).await;
    let cc = app
        .post_form(
            "/auth/token",
            &credentials,
            &[("grant_type", "client_credentials"), ("resource", OTHER)],
        )
        .await;
    assert_eq!(cc.status, 200, "{}", cc.body);
    assert_eq!(claims(&cc.str("access_token"))["aud"], OTHER);
    assert_eq!(cc.body["scope"], "tasks");

    let sessions_before =
        app.bearer("GET", "/auth/sessions", &plain.str("access_token"), None).await;
    for (extra, why) in [
        (&[("resource", "https://unknown.example.com/mcp")][..], "not registered"),
        (&[("resource", OTHER)][..], "no scope shared with the client"),
        (&[("resource", "https://mcp.example.com/mcp#frag")][..], "a fragment"),
        (&[("resource", "mcp")][..], "not an absolute URI"),
        (&[("resource", MCP), ("resource", OTHER)][..], "two resources"),
    ] {
        let refused = login(extra).await;
        assert_eq!(refused.status, 400, "{why}: {}", refused.body);
        assert_eq!(refused.str("error"), "invalid_target", "{why}");
    }
    // Nothing was opened by the refusals.
    let sessions = app.bearer("GET", "/auth/sessions", &plain.str("access_token"), None).await;
    assert_eq!(
        sessions.body["sessions"].as_array().map(Vec::len),
        sessions_before.body["sessions"].as_array().map(Vec::len)
    );

    // At the authorization endpoint, an unknown resource goes back to the client.
    let web = browser_client(&app, REDIRECT, false).await;
    let mut browser = Browser::new(&app);
    let query =
        authorize_query(&web.id, REDIRECT, &[("resource", "https://unknown.example.com/x")]);
    let back = browser.get(&query).await;
    assert_eq!(back.status, 303, "{}", back.html);
    assert_eq!(back.redirect_params()["error"], "invalid_target");
    assert_eq!(back.redirect_params()["state"], "st-123");
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

backend_tests!(
    a_code_flow_for_a_resource_binds_every_token_to_it,
    every_grant_takes_a_resource_and_refuses_a_wrong_one,
    admins_register_list_and_remove_resources,
    bad_resources_are_refused_and_nothing_is_stored,
    configured_resources_are_registered_at_start,
);
