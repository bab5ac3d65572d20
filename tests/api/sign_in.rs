//! Browser sign-in: the authorization endpoint's pages, the code exchange with PKCE, and the
//! account page, driven as a browser drives them (cookies kept, redirects not followed).

use std::collections::HashMap;

use atoms_auth::clock::Clock;
use atoms_auth::storage::Client;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestClient, spawn_app, spawn_app_with};

pub const PASSWORD: &str = "correct horse battery";
pub const REDIRECT: &str = "http://127.0.0.1/callback";
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A page or redirect as a browser receives it.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub html: String,
}

impl Page {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query parameters of the redirect this answer is.
    pub fn redirect_params(&self) -> HashMap<String, String> {
        let location = self.header(LOCATION.as_str()).expect("a redirect");
        let url = url::Url::parse(location).expect("absolute location");
        url.query_pairs().into_owned().collect()
    }

    /// The value of the hidden field `name` of the page's form.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.html.find(&marker).map(|i| i + marker.len()).expect(name);
        self.html[start..].split('"').next().unwrap_or_default().to_owned()
    }
}

/// A browser: keeps the cookies the server sets, follows no redirect.
pub struct Browser {
    base: String,
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36",
            )
            .build()
            .expect("client");
        Self { base: app.base.clone(), http, cookies: HashMap::new() }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookies: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let request =
            if cookies.is_empty() { request } else { request.header(COOKIE, cookies.join("; ")) };
        let response = request.send().await.expect("request");
        for set in response.headers().get_all(SET_COOKIE) {
            let set = set.to_str().expect("ascii cookie");
            let (pair, attributes) = set.split_once(';').unwrap_or((set, ""));
            let (name, value) = pair.split_once('=').expect("name=value");
            if value.is_empty() || attributes.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Page { status, headers, html: response.text().await.unwrap_or_default() }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        self.send(request).await
    }
}

/// An authorization request of `client` as a query string.
pub fn authorize_query(client: &str, redirect_uri: &str, extra: &[(&str, &str)]) -> String {
    let challenge = challenge(VERIFIER);
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client),
        ("redirect_uri", redirect_uri),
        ("scope", "read"),
        ("state", "st-123"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (name, value) in extra {
        pairs.retain(|(n, _)| n != name);
        if !value.is_empty() {
            pairs.push((name, value));
        }
    }
    format!("/auth/authorize?{}", serde_urlencoded::to_string(&pairs).expect("query"))
}

/// The hidden fields of an authorization form, and `more`.
pub fn form_fields<'a>(page: &Page, more: &[(&'a str, &'a str)]) -> Vec<(String, String)> {
    let mut fields: Vec<(String, String)> = [
        "csrf",
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "code_challenge",
        "code_challenge_method",
    ]
    .iter()
    .map(|name| (name.to_string(), unescape(&page.hidden(name))))
    .collect();
    if page.html.contains("name=\"resource\"") {
        fields.push(("resource".into(), unescape(&page.hidden("resource"))));
    }
    fields.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    fields
}

fn unescape(html: &str) -> String {
    html.replace("&#x2f;", "/")
        .replace("&#47;", "/")
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The login form of `page` filled in as `alice`.
pub fn alice_signs_in(page: &Page) -> Vec<(String, String)> {
    form_fields(page, &[("action", "login"), ("username", "alice"), ("password", PASSWORD)])
}

pub async fn post_fields(browser: &mut Browser, path: &str, fields: &[(String, String)]) -> Page {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    browser.post(path, &pairs).await
}

/// A browser client: public unless `confidential`, with the code and refresh grants.
pub async fn browser_client(app: &TestApp, redirect_uris: &str, skip_consent: bool) -> TestClient {
    let client = Client {
        client_id: format!("web-{}", Uuid::new_v4().simple()),
        name: "Notes for Desktop".into(),
        secret_hash: None,
        grant_types: "authorization_code refresh_token".into(),
        scopes: "read write".into(),
        created_at: 0,
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: redirect_uris.into(),
        skip_consent,
        registered: false,
        last_used_at: None,
        metadata_document: false,
    };
    app.storage().create_client(&client).await.expect("client");
    TestClient { id: client.client_id, secret: None }
}

/// Signs a user in through the login page and allows the consent; returns the redirect.
pub async fn sign_in_and_allow(
    browser: &mut Browser,
    client: &TestClient,
    username: &str,
    password: &str,
) -> Page {
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    assert_eq!(login.status, 200, "{}", login.html);
    let fields =
        form_fields(&login, &[("action", "login"), ("username", username), ("password", password)]);
    let consent = post_fields(browser, "/auth/authorize", &fields).await;
    assert_eq!(consent.status, 200, "{}", consent.html);
    assert!(consent.html.contains("Notes for Desktop"), "{}", consent.html);
    let fields = form_fields(&consent, &[("action", "allow")]);
    post_fields(browser, "/auth/authorize", &fields).await
}

/// Exchanges a code at the token endpoint as a public client.
pub async fn exchange(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    verifier: &str,
) -> crate::helpers::Answer {
    exchange_at(app, client, code, REDIRECT, verifier).await
}

/// Exchanges a code sent to `redirect_uri`, as a public client.
pub async fn exchange_at(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> crate::helpers::Answer {
    app.post_raw(
        "/auth/token",
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client.id),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Refreshes as a public client.
pub async fn refresh_public(
    app: &TestApp,
    client: &TestClient,
    refresh_token: &str,
) -> crate::helpers::Answer {
    let form = [
        ("grant_type", "refresh_token"),
        ("client_id", &client.id),
        ("refresh_token", refresh_token),
    ];
    app.post_raw("/auth/token", &form).await
}

async fn the_whole_flow_signs_in_once_and_then_skips_the_password(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, false).await;
    let mut browser = Browser::new(&app);

    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    assert_eq!(login.status, 200);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    let csp = login.header("content-security-policy").expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("form-action 'self'"), "{csp}");
    assert!(login.html.contains("Sign in") && login.html.contains("Notes for Desktop"));

    let back = sign_in_and_allow(&mut browser, &client, "alice", PASSWORD).await;
    assert_eq!(back.status, 303, "{}", back.html);
    assert!(back.header("location").expect("location").starts_with(REDIRECT));
    let params = back.redirect_params();
    assert_eq!(params["state"], "st-123");
    assert_eq!(params["iss"], "http://atoms-auth.test");
    let session_cookie = browser.cookies.keys().find(|k| k.ends_with("atoms-session")).cloned();
    assert!(session_cookie.is_some(), "{:?}", browser.cookies);

    let tokens = exchange(&app, &client, &params["code"], VERIFIER).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.body["scope"], "read");
    assert_eq!(tokens.header("cache-control"), Some("no-store"));
    let refreshed = refresh_public(&app, &client, &tokens.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);

    // The same browser again: no password, no consent, straight back with a new code.
    let again = browser.get(&authorize_query(&client.id, REDIRECT, &[("state", "second")])).await;
    assert_eq!(again.status, 303, "{}", again.html);
    let params = again.redirect_params();
    assert_eq!(params["state"], "second");
    assert_eq!(exchange(&app, &client, &params["code"], VERIFIER).await.status, 200);

    // Two sessions of alice now, each on the browser's device, each audited.
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    let sessions = app.storage().user_sessions(&user.id, app.clock.now_ms()).await.expect("list");
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|(s, d)| s.client_id == client.id && d.is_some()));
}

async fn a_replayed_code_is_refused_and_ends_what_it_opened(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, true).await;
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    let fields = alice_signs_in(&login);
    // A first-party client: no consent page.
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    assert_eq!(back.status, 303, "{}", back.html);
    let code = back.redirect_params()["code"].clone();

    let first = exchange(&app, &client, &code, VERIFIER).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = exchange(&app, &client, &code, VERIFIER).await;
    assert_eq!(again.status, 400);
    assert_eq!(again.str("error"), "invalid_grant");

    let refresh = refresh_public(&app, &client, &first.str("refresh_token")).await;
    assert_eq!(refresh.str("error"), "invalid_grant", "the first exchange's tokens are dead");
    let rs = app.resource_server().await;
    assert_eq!(app.introspect(&rs, &first.str("access_token")).await["active"], false);
}

async fn codes_are_bound_to_verifier_redirect_client_and_time(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, true).await;
    let other = browser_client(&app, REDIRECT, true).await;
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    let fields = alice_signs_in(&login);
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    let code = |page: &Page| page.redirect_params()["code"].clone();

    // A wrong verifier uses the code up.
    let wrong = exchange(&app, &client, &code(&back), "x".repeat(43).as_str()).await;
    assert_eq!((wrong.status, wrong.str("error").as_str()), (400, "invalid_grant"));

    let next = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    let redirect_mismatch =
        exchange_at(&app, &client, &code(&next), "http://127.0.0.1/other", VERIFIER).await;
    assert_eq!(redirect_mismatch.str("error"), "invalid_grant");

    let next = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    let stolen = exchange(&app, &other, &code(&next), VERIFIER).await;
    assert_eq!(stolen.str("error"), "invalid_grant", "a code works only for its client");

    let next = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    app.clock.advance_secs(61);
    let late = exchange(&app, &client, &code(&next), VERIFIER).await;
    assert_eq!(late.str("error"), "invalid_grant", "a code lives 60 seconds");

    let missing = app
        .post_raw(
            "/auth/token",
            &[("grant_type", "authorization_code"), ("client_id", &client.id), ("code", "abc")],
        )
        .await;
    assert_eq!((missing.status, missing.str("error").as_str()), (400, "invalid_request"));
}

async fn untrusted_clients_and_redirects_get_a_page_never_a_redirect(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = browser_client(&app, REDIRECT, false).await;
    let mut browser = Browser::new(&app);
    for query in [
        authorize_query("no-such-client", REDIRECT, &[]),
        authorize_query(&client.id, "https://evil.example/steal", &[]),
        authorize_query(&client.id, "http://127.0.0.1/callback/../steal", &[]),
        authorize_query(&client.id, "", &[("client_id", "")]),
    ] {
        let page = browser.get(&query).await;
        assert_eq!(page.status, 400, "{query}");
        assert!(page.header("location").is_none(), "{query}");
        assert!(page.html.contains("Cannot continue"), "{}", page.html);
    }
}

async fn request_errors_go_back_to_the_client_with_state_and_issuer(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = browser_client(&app, REDIRECT, false).await;
    let no_code_grant = app.create_client("password", "read", true).await;
    let stored = app.storage().client(&no_code_grant.id).await.expect("get").expect("client");
    app.storage()
        .update_client(&Client { redirect_uris: REDIRECT.into(), ..stored })
        .await
        .expect("update");
    let mut browser = Browser::new(&app);
    for (query, error) in [
        (authorize_query(&client.id, REDIRECT, &[("code_challenge", "")]), "invalid_request"),
        (
            authorize_query(&client.id, REDIRECT, &[("code_challenge_method", "plain")]),
            "invalid_request",
        ),
        (
            authorize_query(&client.id, REDIRECT, &[("code_challenge_method", "")]),
            "invalid_request",
        ),
        (
            authorize_query(&client.id, REDIRECT, &[("response_type", "token")]),
            "unsupported_response_type",
        ),
        (authorize_query(&client.id, REDIRECT, &[("scope", "admin")]), "invalid_scope"),
        (authorize_query(&no_code_grant.id, REDIRECT, &[]), "unauthorized_client"),
    ] {
        let page = browser.get(&query).await;
        assert_eq!(page.status, 303, "{query}: {}", page.html);
        let params = page.redirect_params();
        assert_eq!(params["error"], error, "{query}");
        assert_eq!(params["state"], "st-123");
        assert_eq!(params["iss"], "http://atoms-auth.test");
        assert!(params.contains_key("error_description"));
    }
}

async fn a_loopback_redirect_may_use_any_port(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, true).await;
    let mut browser = Browser::new(&app);
    let asked = "http://127.0.0.1:49152/callback";
    let login = browser.get(&authorize_query(&client.id, asked, &[])).await;
    assert_eq!(login.status, 200, "{}", login.html);
    let fields = alice_signs_in(&login);
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    assert!(back.header("location").expect("redirect").starts_with(asked));
    // The exchange names the URI the code was sent to.
    let code = &back.redirect_params()["code"];
    let tokens = exchange_at(&app, &client, code, asked, VERIFIER).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
}

async fn forms_without_the_csrf_token_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, true).await;
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    for csrf in ["", "forged-token"] {
        let mut fields = alice_signs_in(&login);
        fields[0].1 = csrf.to_owned();
        let refused = post_fields(&mut browser, "/auth/authorize", &fields).await;
        assert_eq!(refused.status, 403, "{}", refused.html);
        assert!(!browser.cookies.keys().any(|k| k.ends_with("atoms-session")));
    }
    // A post from another site's page.
    let fields = alice_signs_in(&login);
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cookies: Vec<String> = browser.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cross = reqwest::Client::new()
        .post(format!("{}/auth/authorize", app.base))
        .header("origin", "https://evil.example")
        .header(COOKIE, cookies.join("; "))
        .form(&pairs)
        .send()
        .await
        .expect("post");
    assert_eq!(cross.status(), 403);
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    assert!(
        app.storage().user_sessions(&user.id, app.clock.now_ms()).await.expect("list").is_empty()
    );
}

async fn denying_consent_sends_access_denied(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, false).await;
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    let fields = alice_signs_in(&login);
    let consent = post_fields(&mut browser, "/auth/authorize", &fields).await;
    let denied =
        post_fields(&mut browser, "/auth/authorize", &form_fields(&consent, &[("action", "deny")]))
            .await;
    assert_eq!(denied.status, 303);
    let params = denied.redirect_params();
    assert_eq!(params["error"], "access_denied");
    assert_eq!(params["state"], "st-123");
    assert!(!params.contains_key("code"));
    // Nothing was remembered: the next request asks again.
    let again = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    assert_eq!(again.status, 200);
    assert!(again.html.contains("Allow"));
}

async fn the_login_form_locks_like_the_password_grant(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.lockout.threshold = 2).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, true).await;
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    for _ in 0..2 {
        let fields = form_fields(
            &login,
            &[("action", "login"), ("username", "alice"), ("password", "wrong")],
        );
        let refused = post_fields(&mut browser, "/auth/authorize", &fields).await;
        assert_eq!(refused.status, 401);
        assert!(refused.html.contains("invalid username or password"), "{}", refused.html);
    }
    let fields = alice_signs_in(&login);
    let locked = post_fields(&mut browser, "/auth/authorize", &fields).await;
    assert_eq!(locked.status, 401, "a locked account refuses even the right password");
    app.state.audit.flush().await;
    let failed = app
        .storage()
        .query_audit(&atoms_auth::storage::AuditQuery {
            event: Some("user.login.failed".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert_eq!(failed.len(), 3);
    assert!(failed.iter().all(|r| r.client_id.as_deref() == Some(client.id.as_str())));
}

async fn the_account_page_lists_and_ends_sessions(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = browser_client(&app, REDIRECT, true).await;
    let mut browser = Browser::new(&app);
    let login = browser.get(&authorize_query(&client.id, REDIRECT, &[])).await;
    let fields = alice_signs_in(&login);
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    let tokens = exchange(&app, &client, &back.redirect_params()["code"], VERIFIER).await;
    assert_eq!(tokens.status, 200);

    let account = browser.get("/account").await;
    assert_eq!(account.status, 200);
    assert!(
        account.html.contains("alice") && account.html.contains(&client.id),
        "{}",
        account.html
    );
    assert!(account.html.contains("this device"), "{}", account.html);
    let csrf = account.hidden("csrf");
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    let sessions = app.storage().user_sessions(&user.id, app.clock.now_ms()).await.expect("list");
    let session_id = sessions[0].0.id.clone();
    let ended =
        browser.post(&format!("/account/sessions/{session_id}/end"), &[("csrf", &csrf)]).await;
    assert_eq!(ended.status, 303);
    let refresh = refresh_public(&app, &client, &tokens.str("refresh_token")).await;
    assert_eq!(refresh.str("error"), "invalid_grant");

    // Signing out ends the browser session: the account page asks for a password again.
    let out = browser.post("/account/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    let page = browser.get("/account").await;
    assert!(page.html.contains("name=\"password\""), "{}", page.html);
}

async fn the_metadata_announces_the_code_flow(backend: Backend) {
    let app = spawn_app(backend).await;
    let m = app.get("/.well-known/oauth-authorization-server").await.body;
    assert_eq!(m["authorization_endpoint"], "http://atoms-auth.test/auth/authorize");
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(m["response_modes_supported"], serde_json::json!(["query"]));
    assert_eq!(m["code_challenge_methods_supported"], serde_json::json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    let grants = m["grant_types_supported"].as_array().expect("grants");
    assert!(grants.iter().any(|g| g == "authorization_code"));
}

/// A standard OAuth client library (the `oauth2` crate) runs the flow with its own PKCE and
/// state, with the browser part done by [`Browser`], then refreshes.
async fn a_standard_oauth_client_runs_the_code_flow(backend: Backend) {
    use oauth2::basic::BasicClient;
    use oauth2::{
        AuthUrl, AuthorizationCode, ClientId, CsrfToken, PkceCodeChallenge, RedirectUrl, Scope,
        TokenResponse, TokenUrl,
    };

    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let registered = browser_client(&app, REDIRECT, true).await;
    let client = BasicClient::new(ClientId::new(registered.id.clone()))
        .set_auth_uri(AuthUrl::new(format!("{}/auth/authorize", app.base)).expect("auth url"))
        .set_token_uri(TokenUrl::new(format!("{}/auth/token", app.base)).expect("token url"))
        .set_redirect_uri(RedirectUrl::new("http://127.0.0.1:8765/callback".into()).expect("uri"));
    // The library's requests go through reqwest as this suite builds it.
    let http = reqwest::Client::new();
    let send = |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move {
            let (parts, body) = request.into_parts();
            let response = http
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut answer = oauth2::http::Response::builder().status(response.status());
            for (name, value) in response.headers() {
                answer = answer.header(name, value);
            }
            let body = response.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(answer.body(body).expect("response"))
        }
    };

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("read".into()))
        .set_pkce_challenge(challenge)
        .url();
    let mut browser = Browser::new(&app);
    let path = &url.as_str()[app.base.len()..];
    let login = browser.get(path).await;
    assert_eq!(login.status, 200, "{}", login.html);
    let fields = alice_signs_in(&login);
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    let params = back.redirect_params();
    assert_eq!(&params["state"], state.secret(), "the library's state comes back");

    let tokens = client
        .exchange_code(AuthorizationCode::new(params["code"].clone()))
        .set_pkce_verifier(verifier)
        .request_async(&send)
        .await
        .expect("the library accepts the token response");
    assert_eq!(tokens.scopes().map(|s| s.len()), Some(1));
    let refresh = tokens.refresh_token().expect("a refresh token");
    let refreshed =
        client.exchange_refresh_token(refresh).request_async(&send).await.expect("refresh");
    assert_ne!(refreshed.access_token().secret(), tokens.access_token().secret());
}

/// The admin API registers browser clients and changes their redirect URIs and consent
/// setting; the authorization endpoint follows the change at once on this instance.
async fn admins_manage_redirect_uris_and_consent(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let token = app.admin_token().await;
    let new = |uris: serde_json::Value| {
        serde_json::json!({
            "name": "Notes", "public": true, "scopes": ["read"],
            "grant_types": ["authorization_code", "refresh_token"], "redirect_uris": uris,
        })
    };
    for bad in [
        serde_json::json!([]),
        serde_json::json!(["http://notes.example/cb"]),
        serde_json::json!(["/cb"]),
    ] {
        let refused = app.bearer("POST", "/admin/clients", &token, Some(new(bad.clone()))).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    let created = app
        .bearer("POST", "/admin/clients", &token, Some(new(serde_json::json!([REDIRECT]))))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["redirect_uris"], serde_json::json!([REDIRECT]));
    assert_eq!(created.body["skip_consent"], false);
    let id = created.str("client_id");
    let path = format!("/admin/clients/{id}");

    let other = "https://notes.example/callback";
    let patch = serde_json::json!({ "redirect_uris": [other], "skip_consent": true });
    let changed = app.bearer("PATCH", &path, &token, Some(patch)).await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let read = app.bearer("GET", &path, &token, None).await;
    assert_eq!(read.body["redirect_uris"], serde_json::json!([other]));
    assert_eq!(read.body["skip_consent"], true);

    let mut browser = Browser::new(&app);
    let old = browser.get(&authorize_query(&id, REDIRECT, &[])).await;
    assert_eq!(old.status, 400, "the old redirect URI is no longer registered");
    let login = browser.get(&authorize_query(&id, other, &[])).await;
    assert_eq!(login.status, 200);
    assert!(
        login
            .header("content-security-policy")
            .is_some_and(|c| c.contains("https://notes.example"))
    );
    let fields = alice_signs_in(&login);
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    assert_eq!(back.status, 303, "no consent for a first-party client");
    assert!(back.header("location").is_some_and(|l| l.starts_with(other)));
}

backend_tests!(
    the_whole_flow_signs_in_once_and_then_skips_the_password,
    a_replayed_code_is_refused_and_ends_what_it_opened,
    codes_are_bound_to_verifier_redirect_client_and_time,
    untrusted_clients_and_redirects_get_a_page_never_a_redirect,
    request_errors_go_back_to_the_client_with_state_and_issuer,
    a_loopback_redirect_may_use_any_port,
    forms_without_the_csrf_token_change_nothing,
    denying_consent_sends_access_denied,
    the_login_form_locks_like_the_password_grant,
    the_account_page_lists_and_ends_sessions,
    the_metadata_announces_the_code_flow,
    a_standard_oauth_client_runs_the_code_flow,
    admins_manage_redirect_uris_and_consent,
);

/// A sign-in or account form that is not a form body gets the error page with 400, never a
/// bare 415 or 422.
#[tokio::test]
async fn a_body_that_is_not_a_form_gets_an_error_page() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    for path in
        ["/account/login", "/auth/authorize", "/account/signout", "/account/devices/x/rename"]
    {
        let answer = app
            .http
            .post(format!("{}{path}", app.base))
            .header("content-type", "application/json")
            .body("{\"username\":1}")
            .send()
            .await
            .expect("request");
        assert_eq!(answer.status(), 400, "{path}");
        let content_type = answer.headers()["content-type"].to_str().unwrap_or_default().to_owned();
        assert!(content_type.starts_with("text/html"), "{path}: {content_type}");
        let wrong_field = app
            .http
            .post(format!("{}{path}", app.base))
            .form(&[("csrf", "x")])
            .send()
            .await
            .expect("request");
        assert!(wrong_field.status().is_client_error(), "{path}: {}", wrong_field.status());
    }
}
