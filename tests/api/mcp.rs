//! The MCP profile end to end: the example MCP server (the official Rust SDK) protects itself
//! with atoms-auth, and the SDK's own OAuth client finds atoms-auth through it, identifies
//! itself with a client ID metadata document (or, in a second run, by registering), sends a
//! real browser through the sign-in, and calls the tool with a token bound to that server.

use std::time::Duration;

use atoms_auth::config::{Config, RegistrationPolicy};
use atoms_mcp_example::Protection;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fantoccini::Locator;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::browser::{Driver, callback_server, click, fill, reached};
use crate::documents::DocumentHost;
use crate::helpers::{Backend, TestApp, TestClient, spawn_at_own_url};
use crate::sign_in::PASSWORD;

const SCOPE: &str = "notes:read";

/// A running example MCP server.
struct McpServer {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Binds a port for an MCP server; its URL is known before the server starts, so atoms-auth
/// can register it as a resource.
async fn mcp_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/mcp", listener.local_addr().expect("addr"));
    (listener, url)
}

fn start_mcp(
    listener: tokio::net::TcpListener,
    url: &str,
    issuer: &str,
    introspection: Option<TestClient>,
) -> McpServer {
    let protection = Protection {
        resource: url.to_owned(),
        issuer: issuer.to_owned(),
        tool_scope: SCOPE.to_owned(),
        leeway: Duration::ZERO,
        introspection: introspection.map(|c| (c.id, c.secret.expect("a confidential client"))),
    };
    let router = atoms_mcp_example::router(protection).expect("router");
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    McpServer { url: url.to_owned(), server }
}

/// atoms-auth at its own URL with the MCP server (and another) registered as resources.
async fn auth_server(backend: Backend, mcp_url: &str, more: impl FnOnce(&mut Config)) -> TestApp {
    let resources = format!("{mcp_url}={SCOPE} notes:write, https://other.example.com/mcp={SCOPE}");
    let app = spawn_at_own_url(backend, |c, _| {
        c.tokens.resources = resources.as_str().into();
        more(c);
    })
    .await;
    app.create_user("alice", PASSWORD).await;
    app
}

fn claims(token: &str) -> Value {
    let part = token.split('.').nth(1).expect("claims");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

/// A tool call posted straight to the MCP endpoint with `token`.
async fn raw_tool_call(mcp_url: &str, token: Option<&str>) -> reqwest::Response {
    let call = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": { "name": "greet" }
    });
    let mut request = reqwest::Client::new()
        .post(mcp_url)
        .header("accept", "application/json, text/event-stream")
        .json(&call);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

fn challenge(response: &reqwest::Response) -> String {
    let value = response.headers().get("www-authenticate").expect("a challenge");
    value.to_str().expect("ascii").to_owned()
}

/// A token of alice for `resource` with `scope`, by the password grant.
async fn password_token(app: &TestApp, client: &TestClient, resource: &str, scope: &str) -> String {
    let form = [
        ("grant_type", "password"),
        ("username", "alice"),
        ("password", PASSWORD),
        ("resource", resource),
        ("scope", scope),
    ];
    let answer = app.post_form("/auth/token", client, &form).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.str("access_token")
}

async fn the_example_server_refuses_what_it_must(backend: Backend) {
    let (listener, mcp_url) = mcp_listener().await;
    let app = auth_server(backend, &mcp_url, |_| {}).await;
    let mcp = start_mcp(listener, &mcp_url, &app.base, None);

    // Its protected resource metadata names atoms-auth.
    let metadata_url = mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp");
    let metadata: Value =
        reqwest::get(&metadata_url).await.expect("get").json().await.expect("json");
    assert_eq!(metadata["resource"], mcp.url.as_str());
    assert_eq!(metadata["authorization_servers"], json!([app.base]));

    // No token: 401 pointing at that metadata.
    let anonymous = raw_tool_call(&mcp_url, None).await;
    assert_eq!(anonymous.status(), 401);
    assert!(challenge(&anonymous).contains(&format!("resource_metadata=\"{metadata_url}\"")));

    let client =
        app.create_client("password refresh_token", &format!("{SCOPE} notes:write"), false).await;
    // A token for another MCP server, or for atoms-auth itself: refused.
    let elsewhere = password_token(&app, &client, "https://other.example.com/mcp", SCOPE).await;
    let refused = raw_tool_call(&mcp_url, Some(&elsewhere)).await;
    assert_eq!(refused.status(), 401);
    assert!(challenge(&refused).contains("invalid_token"));
    let own = app.login(&client, "alice", PASSWORD).await.str("access_token");
    assert_eq!(raw_tool_call(&mcp_url, Some(&own)).await.status(), 401);
    // The other server's token with its audience changed to this one: the signature fails.
    let mut forged_claims = claims(&elsewhere);
    forged_claims["aud"] = json!(mcp_url);
    let parts: Vec<&str> = elsewhere.split('.').collect();
    let body = URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let forged = format!("{}.{body}.{}", parts[0], parts[2]);
    assert_eq!(raw_tool_call(&mcp_url, Some(&forged)).await.status(), 401);

    // A token for this server without the tool's scope: 403 insufficient_scope.
    let narrow = password_token(&app, &client, &mcp_url, "notes:write").await;
    let forbidden = raw_tool_call(&mcp_url, Some(&narrow)).await;
    assert_eq!(forbidden.status(), 403);
    let header = challenge(&forbidden);
    assert!(header.contains("error=\"insufficient_scope\"") && header.contains(SCOPE), "{header}");

    // The right token passes the guard (the MCP session itself starts with `initialize`).
    let good = password_token(&app, &client, &mcp_url, SCOPE).await;
    assert_eq!(claims(&good)["aud"], mcp_url.as_str());
    let through = raw_tool_call(&mcp_url, Some(&good)).await;
    assert!(!matches!(through.status().as_u16(), 401 | 403), "{}", through.status());
}

/// How the MCP client identifies itself.
enum Identity {
    /// A client ID metadata document at this URL.
    Document(String),
    /// Dynamic client registration.
    Registration,
}

/// A client connected to the MCP server.
type Connected = rmcp::service::RunningService<RoleClient, ClientConfig>;

/// The SDK's client connects without a token, gets the challenge, and runs the OAuth flow
/// through a real browser; returns the connected client, its OAuth side and its client id.
async fn sdk_signs_in(
    app: &TestApp,
    driver: &Driver,
    mcp_url: &str,
    redirect: &str,
    identity: Identity,
) -> (Connected, AuthClient<reqwest::Client>, String) {
    let transport = StreamableHttpClientTransport::with_client(
        reqwest::Client::new(),
        StreamableHttpClientTransportConfig::with_uri(mcp_url.to_owned()),
    );
    let Err(refused) = ClientConfig::default().serve(transport).await else {
        panic!("the MCP server let a client in without a token");
    };
    let challenge = refused.auth_challenge().expect("an auth challenge").to_owned();

    let mut oauth = OAuthState::new(mcp_url, None).await.expect("oauth state");
    let mut request = AuthorizationRequest::new(redirect)
        .with_client_name("Example MCP client")
        .with_challenge(challenge);
    if let Identity::Document(url) = &identity {
        request = request.with_client_metadata_url(url.clone());
    }
    oauth.start_authorization(request).await.expect("authorization starts");
    let authorize = oauth.get_authorization_url().await.expect("authorization URL");
    let asked = url::Url::parse(&authorize).expect("url");
    let params: std::collections::HashMap<String, String> =
        asked.query_pairs().into_owned().collect();
    assert!(authorize.starts_with(&format!("{}/auth/authorize", app.base)), "{authorize}");
    assert_eq!(params.get("resource").map(String::as_str), Some(mcp_url));
    assert_eq!(params.get("code_challenge_method").map(String::as_str), Some("S256"));
    let client_id = params.get("client_id").cloned().expect("client_id");

    let browser = driver.browser().await;
    browser.goto(&authorize).await.expect("open");
    browser.find(Locator::Css("input#password")).await.expect("the login page");
    fill(&browser, "#username", "alice").await;
    fill(&browser, "#password", PASSWORD).await;
    click(&browser, "button[type=submit]").await;
    if browser.wait().for_element(Locator::Css("button[value=allow]")).await.is_err() {
        panic!("no consent page: {}", browser.source().await.unwrap_or_default());
    }
    let consent = browser.source().await.expect("source");
    if let Identity::Document(_) = identity {
        assert!(consent.contains("has not verified"), "{consent}");
    }
    click(&browser, "button[value=allow]").await;
    let landed = reached(&browser, redirect).await;
    browser.close().await.expect("close");
    oauth.handle_callback_url(landed.as_str()).await.expect("code exchanged");

    let manager = oauth.into_authorization_manager().expect("authorized");
    let auth = AuthClient::new(reqwest::Client::new(), manager);
    let transport = StreamableHttpClientTransport::with_client(
        auth.clone(),
        StreamableHttpClientTransportConfig::with_uri(mcp_url.to_owned()),
    );
    let client = ClientConfig::default().serve(transport).await.expect("connected");
    (client, auth, client_id)
}

/// Refreshes as the SDK does; returns the new access token's audience.
async fn refreshed_audience(auth: &AuthClient<reqwest::Client>) -> Value {
    auth.auth_manager.lock().await.refresh_token().await.expect("refreshed");
    let token = auth.get_access_token().await.expect("access token");
    claims(&token)["aud"].clone()
}

async fn greet(client: &Connected) -> Result<String, String> {
    let result =
        client.call_tool(CallToolRequestParams::new("greet")).await.map_err(|e| e.to_string())?;
    let text = serde_json::to_value(&result.content).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// The whole flow with a client ID metadata document the test serves over HTTPS; then a
/// refresh keeps the audience, and ending the session on the account page stops the tool
/// at once (the MCP server introspects).
async fn an_mcp_client_with_a_metadata_document_calls_the_tool(backend: Backend) {
    let Some(driver) = Driver::start().await else { return };
    let (host, certificate) = DocumentHost::start_tls().await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("document-host.pem");
    std::fs::write(&ca, certificate).expect("ca");
    let (listener, mcp_url) = mcp_listener().await;
    let app = auth_server(backend, &mcp_url, |c| {
        c.registration.metadata_allow_private = true;
        c.server.outbound_ca_file = Some(ca);
    })
    .await;
    let introspector = app.resource_server().await;
    let _mcp = start_mcp(listener, &mcp_url, &app.base, Some(introspector));
    let callback = callback_server().await;
    let redirect = format!("{callback}/callback");
    let document = json!({
        "client_id": host.url("client.json"),
        "client_name": "Example MCP client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "application_type": "native",
    });
    host.publish("client.json", &document, Some("max-age=300"));

    let identity = Identity::Document(host.url("client.json"));
    let (client, auth, client_id) =
        sdk_signs_in(&app, &driver, &mcp_url, &redirect, identity).await;
    assert_eq!(client_id, host.url("client.json"));
    assert!(host.fetches("client.json") >= 1);
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    let greeting = greet(&client).await.expect("the tool answers");
    assert!(greeting.contains(&user.id), "{greeting}");

    // A refresh (as the SDK does it) keeps the audience, and the tool takes the new token.
    assert_eq!(refreshed_audience(&auth).await, json!(mcp_url));
    assert!(greet(&client).await.is_ok());
    let sessions = app.storage().user_sessions(&user.id, now(&app)).await.expect("list");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].0.resource.as_deref(), Some(mcp_url.as_str()));
    assert_eq!(sessions[0].0.client_id, host.url("client.json"));

    // The user ends the session on the account page; the next call fails.
    let browser = driver.browser().await;
    browser.goto(&format!("{}/account", app.base)).await.expect("account");
    if browser.find(Locator::Css("input#password")).await.is_ok() {
        fill(&browser, "#username", "alice").await;
        fill(&browser, "#password", PASSWORD).await;
        click(&browser, "button[type=submit]").await;
    }
    let page = browser.source().await.expect("source");
    assert!(page.contains("Example MCP client"), "{page}");
    click(&browser, "form[action^='/account/sessions/'] button").await;
    reached(&browser, &format!("{}/account?done=ended", app.base)).await;
    browser.close().await.expect("close");
    assert!(greet(&client).await.is_err(), "the ended session's token no longer works");
}

fn now(app: &TestApp) -> i64 {
    use atoms_auth::clock::Clock;
    app.clock.now_ms()
}

/// The same flow through dynamic registration; the MCP server checks JWTs only, and a refresh
/// gives a token for the same server.
async fn an_mcp_client_that_registers_calls_the_tool(backend: Backend) {
    let Some(driver) = Driver::start().await else { return };
    let (listener, mcp_url) = mcp_listener().await;
    let app = auth_server(backend, &mcp_url, |c| {
        c.registration.policy = RegistrationPolicy::Open;
        c.registration.metadata_documents = false;
    })
    .await;
    let _mcp = start_mcp(listener, &mcp_url, &app.base, None);
    let callback = callback_server().await;
    let redirect = format!("{callback}/callback");
    let (client, auth, client_id) =
        sdk_signs_in(&app, &driver, &mcp_url, &redirect, Identity::Registration).await;
    let registered = app.storage().client(&client_id).await.expect("get").expect("registered");
    assert!(registered.registered);
    let greeting = greet(&client).await.expect("the tool answers");
    assert!(greeting.contains("Hello"), "{greeting}");

    // A refresh of the session: the new access token is for the same server.
    assert_eq!(refreshed_audience(&auth).await, json!(mcp_url));
    assert!(greet(&client).await.expect("the tool answers").contains("Hello"));
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    let sessions = app.storage().user_sessions(&user.id, now(&app)).await.expect("list");
    assert_eq!(sessions[0].0.resource.as_deref(), Some(mcp_url.as_str()));
}

backend_tests!(the_example_server_refuses_what_it_must);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sdk_with_a_metadata_document_on_sqlite() {
    an_mcp_client_with_a_metadata_document_calls_the_tool(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sdk_with_a_metadata_document_on_postgres() {
    an_mcp_client_with_a_metadata_document_calls_the_tool(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_sdk_through_registration_on_redis() {
    an_mcp_client_that_registers_calls_the_tool(Backend::Redis).await;
}
