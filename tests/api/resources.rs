//! Registered resources (RFC 8707): the admin API, the metadata, and bad input.

use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Backend, spawn_app, spawn_app_with};

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

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

backend_tests!(
    admins_register_list_and_remove_resources,
    bad_resources_are_refused_and_nothing_is_stored,
    configured_resources_are_registered_at_start,
);
