//! The pages a person sees: the authorization endpoint's login and consent pages, and the
//! account page. Server-rendered (templates compiled into the binary), no JavaScript, one
//! stylesheet served by the binary, under a strict CSP. Every form carries a CSRF token that
//! must equal the browser's CSRF cookie (a `__Host-` cookie, which no other site and no
//! subdomain can set), and a POST whose `Origin` is not this host is refused.

use askama::Template;
use axum::Form;
use axum::extract::{FromRequest, Request};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect as Found, Response};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::ClientIp;
use super::extract::ApiPath;
use crate::AppState;
use crate::domain::ratelimit::Scope;
use crate::domain::secrets::Secret;
use crate::domain::sign_in::{Authorization, AuthorizeError, AuthorizeParams, Redirect};
use crate::domain::tokens::TokenError;
use crate::ids::{DeviceId, SessionId, UserId};
use crate::net::address_key;
use crate::storage::{BrowserSession, revoke_reason};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize_page, authorize_form))
        .routes(routes!(account_page))
        .routes(routes!(account_login))
        .routes(routes!(end_session))
        .routes(routes!(rename_device))
        .routes(routes!(remove_device))
        .routes(routes!(sign_out))
        .routes(routes!(sign_out_everywhere))
        .routes(routes!(stylesheet))
}

/// The rate-limit route of every form that checks a password.
const LOGIN_ROUTE: &str = "/auth/authorize";

/// The cookies, named for whether they can be `Secure` (and so `__Host-`): only an issuer at
/// `http://localhost` (or a loopback address) serves pages over plain HTTP.
struct Cookies {
    secure: bool,
}

impl Cookies {
    fn of(state: &AppState) -> Self {
        let issuer = url::Url::parse(&state.tokens.policy().issuer).ok();
        let local_http =
            issuer.is_some_and(|u| u.scheme() == "http" && crate::net::is_local_host(&u));
        Self { secure: !local_http }
    }

    fn name(&self, name: &'static str) -> &'static str {
        match (self.secure, name) {
            (true, "session") => "__Host-atoms-session",
            (true, _) => "__Host-atoms-csrf",
            (false, "session") => "atoms-session",
            (false, _) => "atoms-csrf",
        }
    }

    fn cookie(&self, name: &'static str, value: String, max_age_secs: i64) -> Cookie<'static> {
        Cookie::build((self.name(name), value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax)
            .max_age(time::Duration::seconds(max_age_secs))
            .build()
    }

    fn removal(&self, name: &'static str) -> Cookie<'static> {
        let mut cookie = self.cookie(name, String::new(), 0);
        cookie.make_removal();
        cookie
    }
}

/// A page: HTML, never cached, under a CSP that allows this binary's stylesheet and forms
/// posted here (and, after a consent or login form, the redirect to `form_target`).
fn page(status: StatusCode, html: String, form_target: Option<&str>) -> Response {
    let mut csp = String::from(
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'self'",
    );
    if let Some(target) = form_target {
        csp.push(' ');
        csp.push_str(target);
    }
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Not `no-referrer` (the default elsewhere): a form post under it carries `Origin: null`,
    // which hides where it came from; `same-origin` still sends nothing to other sites.
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// A template rendered as a [`page`]; a template that fails to render is a server error.
fn render(status: StatusCode, template: &impl Template, form_target: Option<&str>) -> Response {
    match template.render() {
        Ok(html) => page(status, html, form_target),
        Err(e) => {
            tracing::error!(error = %e, "page failed to render");
            (StatusCode::INTERNAL_SERVER_ERROR, "the page failed to render").into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    message: &'a str,
}

fn error_page(status: StatusCode, message: &str) -> Response {
    render(status, &ErrorPage { message }, None)
}

/// The origin a redirect URI's answer goes to, as a CSP source.
fn origin_of(redirect_uri: &str) -> Option<String> {
    let url = url::Url::parse(redirect_uri).ok()?;
    match url.origin() {
        url::Origin::Tuple(..) => Some(url.origin().ascii_serialization()),
        // A private-use scheme of a native app.
        url::Origin::Opaque(_) => Some(format!("{}:", url.scheme())),
    }
}

/// The request's fields as the hidden inputs of a form carry them.
struct RequestFields {
    client_id: String,
    redirect_uri: String,
    scope: String,
    resource: Option<String>,
    state: Option<String>,
    code_challenge: String,
}

impl From<&Authorization> for RequestFields {
    fn from(a: &Authorization) -> Self {
        Self {
            client_id: a.client.client_id.clone(),
            redirect_uri: a.redirect_uri.clone(),
            scope: a.scope.clone(),
            resource: a.resource.clone(),
            state: a.state.clone(),
            code_challenge: a.code_challenge.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    action: &'a str,
    client_name: Option<&'a str>,
    request: Option<RequestFields>,
    csrf: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    client_name: &'a str,
    /// For a client known only by its metadata document: the host that published it, since
    /// nobody checked the name it gives itself.
    unverified_host: Option<String>,
    username: &'a str,
    scopes: Vec<(&'a str, &'static str)>,
    /// The resource the tokens are for, when the request named one.
    resource: Option<&'a str>,
    redirect_host: String,
    request: RequestFields,
    csrf: &'a str,
}

/// What a scope lets a client do, in words.
fn scope_words(scope: &str) -> &'static str {
    match scope {
        "account" => "see and end your sessions and devices",
        "openid" => "know who you are",
        "profile" => "see your username",
        "offline_access" => "stay signed in when you are away",
        _ => "use this permission on your behalf",
    }
}

/// The browser's CSRF token: the cookie's, or a new one (set on the response).
fn csrf_token(jar: CookieJar, cookies: &Cookies) -> (CookieJar, String) {
    if let Some(token) = jar.get(cookies.name("csrf")).map(|c| c.value().to_owned()) {
        return (jar, token);
    }
    let token = Secret::generate().expose().to_owned();
    let jar = jar.add(cookies.cookie("csrf", token.clone(), 24 * 3600));
    (jar, token)
}

/// The refusal of a form post that is not one of this site's own forms: its CSRF field must
/// equal the CSRF cookie, and its `Origin`, when the browser sends one, must be this host.
fn foreign_form(
    jar: &CookieJar,
    cookies: &Cookies,
    headers: &HeaderMap,
    csrf: Option<&str>,
) -> Option<Response> {
    let csrf = csrf.unwrap_or_default();
    let cookie = jar.get(cookies.name("csrf")).map(|c| c.value().to_owned()).unwrap_or_default();
    let token_ok = !cookie.is_empty() && bool::from(cookie.as_bytes().ct_eq(csrf.as_bytes()));
    // A browser sends `Origin: null` where a referrer policy hides the page it posts from:
    // the pages use `same-origin`, so only a browser that overrides it does, and the token
    // still decides.
    let origin_ok = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        None | Some("null") => true,
        Some(origin) => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
            let origin_host = url::Url::parse(origin).ok().map(|u| match u.port() {
                Some(port) => format!("{}:{port}", u.host_str().unwrap_or_default()),
                None => u.host_str().unwrap_or_default().to_owned(),
            });
            host.is_some() && origin_host.as_deref() == host
        }
    };
    let refused = "This form has expired. Go back and reload it.";
    (!(token_ok && origin_ok)).then(|| error_page(StatusCode::FORBIDDEN, refused))
}

fn user_agent(headers: &HeaderMap) -> Option<String> {
    let agent = headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok())?;
    Some(agent.chars().take(512).collect())
}

/// The signed-in browser's session, if its cookie names an active one of an enabled user.
async fn signed_in(
    state: &AppState,
    jar: &CookieJar,
    cookies: &Cookies,
) -> Result<Option<(BrowserSession, crate::storage::User)>, Response> {
    let Some(cookie) = jar.get(cookies.name("session")).map(|c| c.value().to_owned()) else {
        return Ok(None);
    };
    let session = state.sign_in.browser_session(&cookie).await.map_err(internal)?;
    let Some(session) = session else { return Ok(None) };
    let user = state.accounts.user(&session.user_id).await.map_err(internal)?;
    Ok(user.filter(|u| !u.disabled).map(|u| (session, u)))
}

/// A form body whose rejection is an error page: 400 (413 when too large), never a bare
/// 415 or 422.
struct PageForm<T>(T);

impl<T, S> FromRequest<S> for PageForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match Form::<T>::from_request(req, state).await {
            Ok(Form(value)) => Ok(Self(value)),
            Err(rejection) => {
                let status = match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                Err(error_page(status, "The form could not be read. Go back and try again."))
            }
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "page failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side. Try again.")
}

/// A refused authorization request: a page, or the client's redirect URI with the error.
fn refused(state: &AppState, e: AuthorizeError) -> Response {
    match e {
        AuthorizeError::Page(message) => error_page(StatusCode::BAD_REQUEST, message),
        AuthorizeError::Document(message) => error_page(StatusCode::BAD_REQUEST, &message),
        AuthorizeError::Redirect { to, error, description } => {
            redirect(state, &to, &[("error", error), ("error_description", &description)])
        }
        AuthorizeError::Storage(e) => internal(e),
        AuthorizeError::Token(e) => internal(e),
    }
}

/// Sends the browser back to the client (303, so a form post becomes a GET).
fn redirect(state: &AppState, to: &Redirect, params: &[(&str, &str)]) -> Response {
    let mut response = Found::to(&to.url(&state.config.issuer(), params)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The step after the browser is signed in: consent when it is needed, else a code.
async fn continue_signed_in(
    state: &AppState,
    jar: CookieJar,
    cookies: &Cookies,
    user: &crate::storage::User,
    request: &Authorization,
    ip: Option<&str>,
    agent: Option<&str>,
) -> Response {
    let user_id = UserId::new(&user.id);
    let needs = match state.sign_in.needs_consent(user_id, request).await {
        Ok(needs) => needs,
        Err(e) => return internal(e),
    };
    if needs {
        let (jar, csrf) = csrf_token(jar, cookies);
        let target = origin_of(&request.redirect_uri);
        let consent = ConsentPage {
            client_name: &request.client.name,
            unverified_host: request
                .client
                .metadata_document
                .then(|| url::Url::parse(&request.client.client_id).ok())
                .flatten()
                .and_then(|u| u.host_str().map(str::to_owned)),
            username: &user.username,
            scopes: request.scope.split_whitespace().map(|s| (s, scope_words(s))).collect(),
            resource: request.resource.as_deref(),
            redirect_host: target.clone().unwrap_or_default(),
            request: RequestFields::from(request),
            csrf: &csrf,
        };
        return (jar, render(StatusCode::OK, &consent, target.as_deref())).into_response();
    }
    match state.sign_in.issue_code(user_id, request, ip, agent).await {
        Ok(code) => {
            (jar, redirect(state, &request.redirect(), &[("code", code.expose())])).into_response()
        }
        Err(e) => internal(e),
    }
}

/// The login page of an authorization request (or of the account page when `request` is
/// `None`).
fn login_page(
    jar: CookieJar,
    cookies: &Cookies,
    status: StatusCode,
    request: Option<&Authorization>,
    username: &str,
    error: Option<&str>,
) -> Response {
    let (jar, csrf) = csrf_token(jar, cookies);
    let login = LoginPage {
        action: if request.is_some() { "/auth/authorize" } else { "/account/login" },
        client_name: request.map(|r| r.client.name.as_str()),
        request: request.map(RequestFields::from),
        csrf: &csrf,
        username,
        error,
    };
    let target = request.and_then(|r| origin_of(&r.redirect_uri));
    (jar, render(status, &login, target.as_deref())).into_response()
}

#[utoipa::path(get, path = "/auth/authorize", tag = "sign-in", summary = "Authorization endpoint (RFC 6749 §4.1, OAuth 2.1 with PKCE S256): the login page, the consent page, or the redirect back with a code",
    params(("response_type" = String, Query, description = "`code`"), ("client_id" = String, Query), ("redirect_uri" = Option<String>, Query, description = "Exactly as registered; a loopback URI may use any port"), ("scope" = Option<String>, Query), ("state" = Option<String>, Query), ("code_challenge" = String, Query, description = "BASE64URL(SHA-256(code_verifier))"), ("code_challenge_method" = String, Query, description = "`S256`"), ("resource" = Option<String>, Query, description = "The resource (RFC 8707) the tokens are for; registered, without a fragment")),
    responses((status = 200, description = "Login or consent page", content_type = "text/html"), (status = 303, description = "Back to the client with `code` (or `error`), `state` and `iss`"), (status = 400, description = "Unknown client or redirect URI: an error page, never a redirect", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn authorize_page(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    Query(params): Query<AuthorizeParams>,
) -> Response {
    let cookies = Cookies::of(&state);
    let request = match state.sign_in.check(&params).await {
        Ok(request) => request,
        Err(e) => return refused(&state, e),
    };
    match signed_in(&state, &jar, &cookies).await {
        Ok(Some((_, user))) => {
            let agent = user_agent(&headers);
            continue_signed_in(
                &state,
                jar,
                &cookies,
                &user,
                &request,
                ip.as_deref(),
                agent.as_deref(),
            )
            .await
        }
        Ok(None) => login_page(jar, &cookies, StatusCode::OK, Some(&request), "", None),
        Err(response) => response,
    }
}

/// A form of the authorization pages: the request's parameters, and what the person did.
#[derive(Deserialize, utoipa::ToSchema)]
struct AuthorizeForm {
    #[serde(flatten)]
    #[schema(inline)]
    request: AuthorizeFields,
    csrf: Option<String>,
    /// `login`, `allow` or `deny`.
    action: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The authorization request's parameters, as hidden fields.
#[derive(Deserialize, Default, utoipa::ToSchema)]
struct AuthorizeFields {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    scope: Option<String>,
    state: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
    resource: Option<String>,
}

impl From<AuthorizeFields> for AuthorizeParams {
    fn from(f: AuthorizeFields) -> Self {
        Self {
            response_type: f.response_type,
            client_id: f.client_id,
            redirect_uri: f.redirect_uri,
            scope: f.scope,
            state: f.state,
            code_challenge: f.code_challenge,
            code_challenge_method: f.code_challenge_method,
            resource: f.resource,
        }
    }
}

/// The message a refused login shows, and its status.
fn login_refusal(e: &TokenError) -> Option<(StatusCode, &'static str)> {
    match e {
        TokenError::InvalidGrant(why) => Some((StatusCode::UNAUTHORIZED, why)),
        TokenError::Overloaded(_) => {
            Some((StatusCode::SERVICE_UNAVAILABLE, "The server is busy. Try again in a moment."))
        }
        _ => None,
    }
}

/// Charges the address's login limit; the message when it is spent.
async fn login_limited(state: &AppState, ip: Option<&str>) -> Result<(), Response> {
    let Some(address) = ip.map(address_key) else { return Ok(()) };
    match super::oauth::limited(state, LOGIN_ROUTE, Scope::Ip, &address).await {
        Ok(_) => Ok(()),
        Err(crate::error::OAuthError::RateLimited(_)) => Err(error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts from your address. Wait a minute and try again.",
        )),
        Err(e) => Err(internal(e)),
    }
}

/// Signs the browser in with a login form's username and password, under the address's login
/// limit: the jar with the session cookie, and the user; or the page to answer with instead
/// (the login page again with the refusal, of `request` when the form was an authorization
/// request's).
#[allow(clippy::too_many_arguments)]
async fn sign_in_form(
    state: &AppState,
    jar: CookieJar,
    cookies: &Cookies,
    request: Option<&Authorization>,
    username: Option<String>,
    password: Option<String>,
    ip: Option<&str>,
    agent: Option<&str>,
) -> Result<(CookieJar, crate::storage::User), Response> {
    login_limited(state, ip).await?;
    let username = username.unwrap_or_default();
    let client = request.map(|r| &r.client);
    let password = password.unwrap_or_default();
    match state.sign_in.sign_in(client, username.trim(), password, ip, agent).await {
        Ok((secret, user)) => {
            let lifetime = state.sign_in.cookie_lifetime_secs();
            Ok((jar.add(cookies.cookie("session", secret.expose().to_owned(), lifetime)), user))
        }
        Err(e) => Err(match login_refusal(&e) {
            Some((status, message)) => {
                login_page(jar, cookies, status, request, &username, Some(message))
            }
            None => internal(e),
        }),
    }
}

#[utoipa::path(post, path = "/auth/authorize", tag = "sign-in", summary = "The login and consent forms of the authorization endpoint", request_body(content = AuthorizeForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 200, description = "The next page", content_type = "text/html"), (status = 303, description = "Back to the client with `code` or `error=access_denied`, `state` and `iss`"), (status = 400, description = "Unknown client or redirect URI", content_type = "text/html"), (status = 401, description = "Wrong username or password: the login page again", content_type = "text/html"), (status = 403, description = "The form's CSRF token or origin is wrong", content_type = "text/html"), (status = 429, description = "Too many sign-in attempts", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn authorize_form(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<AuthorizeForm>,
) -> Response {
    let cookies = Cookies::of(&state);
    if let Some(refused) = foreign_form(&jar, &cookies, &headers, form.csrf.as_deref()) {
        return refused;
    }
    let params = AuthorizeParams::from(form.request);
    let request = match state.sign_in.check(&params).await {
        Ok(request) => request,
        Err(e) => return refused(&state, e),
    };
    let agent = user_agent(&headers);
    match form.action.as_deref() {
        Some("login") => {
            let (ip, agent) = (ip.as_deref(), agent.as_deref());
            let (username, password) = (form.username, form.password);
            let signed =
                sign_in_form(&state, jar, &cookies, Some(&request), username, password, ip, agent)
                    .await;
            match signed {
                Ok((jar, user)) => {
                    continue_signed_in(&state, jar, &cookies, &user, &request, ip, agent).await
                }
                Err(page) => page,
            }
        }
        Some(choice @ ("allow" | "deny")) => {
            let user = match signed_in(&state, &jar, &cookies).await {
                Ok(Some((_, user))) => user,
                Ok(None) => {
                    let expired = Some("Your sign-in has expired. Sign in again.");
                    return login_page(
                        jar,
                        &cookies,
                        StatusCode::UNAUTHORIZED,
                        Some(&request),
                        "",
                        expired,
                    );
                }
                Err(response) => return response,
            };
            if choice == "deny" {
                let denied = [
                    ("error", "access_denied"),
                    ("error_description", "the user denied the request"),
                ];
                return redirect(&state, &request.redirect(), &denied);
            }
            if let Err(e) = state.sign_in.allow(UserId::new(&user.id), &request).await {
                return internal(e);
            }
            continue_signed_in(
                &state,
                jar,
                &cookies,
                &user,
                &request,
                ip.as_deref(),
                agent.as_deref(),
            )
            .await
        }
        _ => error_page(StatusCode::BAD_REQUEST, "The form was not understood."),
    }
}

/// A session as the account page lists it.
struct SessionRow {
    id: String,
    client_id: String,
    /// The client's registered name, when it is still registered.
    client_name: Option<String>,
    scope: String,
    device: String,
    ip: String,
    last_used_at: String,
    this_device: bool,
}

/// A device as the account page lists it.
struct DeviceRow {
    id: String,
    name: String,
    platform: String,
    last_ip: String,
    last_seen_at: String,
    this_device: bool,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage<'a> {
    username: &'a str,
    sessions: Vec<SessionRow>,
    devices: Vec<DeviceRow>,
    csrf: &'a str,
    notice: Option<&'a str>,
}

#[derive(Deserialize, utoipa::IntoParams)]
struct AccountQuery {
    /// What the last action did, shown once.
    done: Option<String>,
}

/// The notice of an action the account page redirected from.
fn notice(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "ended" => Some("The session has ended."),
        "renamed" => Some("The device was renamed."),
        "removed" => Some("The device was removed and its sessions ended."),
        "signed-in" => Some("You are signed in."),
        _ => None,
    }
}

#[utoipa::path(get, path = "/account", tag = "sign-in", summary = "The account page: the signed-in user's sessions and devices (a login form when the browser is not signed in)", params(AccountQuery),
    responses((status = 200, description = "The account page, or the login page", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn account_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    Query(query): Query<AccountQuery>,
) -> Response {
    let cookies = Cookies::of(&state);
    let user = match signed_in(&state, &jar, &cookies).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return login_page(jar, &cookies, StatusCode::OK, None, "", None),
        Err(response) => return response,
    };
    let user_id = UserId::new(&user.id);
    let (sessions, devices) = match (
        state.sessions.list(user_id, None).await,
        state.sessions.devices(user_id.as_str()).await,
    ) {
        (Ok(sessions), Ok(devices)) => (sessions, devices),
        (Err(e), _) | (_, Err(e)) => return internal(e),
    };
    let agent = user_agent(&headers);
    let here = |ua: &Option<String>| agent.is_some() && *ua == agent;
    // Each session's application by its registered name (clients are cached).
    let mut names = std::collections::HashMap::new();
    for s in &sessions {
        if !names.contains_key(&s.client_id) {
            let client = state.tokens.find_client(&s.client_id).await.ok().flatten();
            names.insert(s.client_id.clone(), client.map(|c| c.name));
        }
    }
    let sessions = sessions
        .into_iter()
        .map(|s| SessionRow {
            client_name: names.get(&s.client_id).cloned().flatten(),
            this_device: s.device.as_ref().is_some_and(|d| here(&d.user_agent)),
            device: s
                .device
                .as_ref()
                .map_or_else(|| "Unknown device".to_owned(), |d| d.name.clone()),
            id: s.id,
            client_id: s.client_id,
            scope: s.scope,
            ip: s.ip.unwrap_or_else(|| "unknown address".to_owned()),
            last_used_at: s.last_used_at,
        })
        .collect();
    let devices = devices
        .into_iter()
        .map(|d| DeviceRow {
            this_device: here(&d.user_agent),
            id: d.id,
            name: d.name,
            platform: d.platform.unwrap_or_else(|| "unknown platform".to_owned()),
            last_ip: d.last_ip.unwrap_or_else(|| "unknown".to_owned()),
            last_seen_at: d.last_seen_at,
        })
        .collect();
    let (jar, csrf) = csrf_token(jar, &cookies);
    let account = AccountPage {
        username: &user.username,
        sessions,
        devices,
        csrf: &csrf,
        notice: notice(query.done.as_deref()),
    };
    (jar, render(StatusCode::OK, &account, None)).into_response()
}

/// A form of the account page.
#[derive(Deserialize, utoipa::ToSchema)]
struct AccountForm {
    csrf: Option<String>,
    username: Option<String>,
    password: Option<String>,
    /// A device's new name.
    name: Option<String>,
}

/// Runs an account-page action for the signed-in user, then shows the page again.
async fn account_action<F, Fut>(
    state: &AppState,
    headers: &HeaderMap,
    jar: &CookieJar,
    form: &AccountForm,
    action: F,
) -> Response
where
    F: FnOnce(crate::storage::User) -> Fut,
    Fut: std::future::Future<Output = Result<&'static str, Response>>,
{
    let cookies = Cookies::of(state);
    if let Some(refused) = foreign_form(jar, &cookies, headers, form.csrf.as_deref()) {
        return refused;
    }
    let user = match signed_in(state, jar, &cookies).await {
        Ok(Some((_, user))) => user,
        Ok(None) => return Found::to("/account").into_response(),
        Err(response) => return response,
    };
    match action(user).await {
        Ok(done) => Found::to(&format!("/account?done={done}")).into_response(),
        Err(response) => response,
    }
}

#[utoipa::path(post, path = "/account/login", tag = "sign-in", summary = "Sign in to the account page", request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 400, description = "The form could not be read", content_type = "text/html"), (status = 303, description = "To the account page, signed in"), (status = 401, description = "Wrong username or password: the login page again", content_type = "text/html"), (status = 403, description = "Bad CSRF token or origin", content_type = "text/html"), (status = 429, description = "Too many sign-in attempts", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn account_login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<AccountForm>,
) -> Response {
    let cookies = Cookies::of(&state);
    if let Some(refused) = foreign_form(&jar, &cookies, &headers, form.csrf.as_deref()) {
        return refused;
    }
    let agent = user_agent(&headers);
    let (ip, agent) = (ip.as_deref(), agent.as_deref());
    match sign_in_form(&state, jar, &cookies, None, form.username, form.password, ip, agent).await {
        Ok((jar, _)) => (jar, Found::to("/account?done=signed-in")).into_response(),
        Err(page) => page,
    }
}

#[utoipa::path(post, path = "/account/sessions/{id}/end", tag = "sign-in", summary = "End one of the signed-in user's sessions", params(("id" = String, Path, description = "Session id")), request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 400, description = "The form could not be read", content_type = "text/html"), (status = 303, description = "Back to the account page"), (status = 403, description = "Bad CSRF token or origin", content_type = "text/html"), (status = 404, description = "No such session of this user", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn end_session(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    ApiPath(id): ApiPath,
    PageForm(form): PageForm<AccountForm>,
) -> Response {
    let sessions = &state.sessions;
    account_action(&state, &headers, &jar, &form, move |user| async move {
        let ended = sessions.end(
            UserId::new(&user.id),
            SessionId::new(&id),
            revoke_reason::REVOKED_BY_USER,
        );
        match ended.await {
            Ok(true) => Ok("ended"),
            Ok(false) => Err(error_page(StatusCode::NOT_FOUND, "You have no such session.")),
            Err(e) => Err(internal(e)),
        }
    })
    .await
}

#[utoipa::path(post, path = "/account/devices/{id}/rename", tag = "sign-in", summary = "Rename one of the signed-in user's devices", params(("id" = String, Path, description = "Device id")), request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 400, description = "The form could not be read", content_type = "text/html"), (status = 303, description = "Back to the account page"), (status = 400, description = "The name is empty or too long", content_type = "text/html"), (status = 403, description = "Bad CSRF token or origin", content_type = "text/html"), (status = 404, description = "No such device of this user", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn rename_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    ApiPath(id): ApiPath,
    PageForm(form): PageForm<AccountForm>,
) -> Response {
    let name = form.name.as_deref().map(str::trim).unwrap_or_default().to_owned();
    let sessions = &state.sessions;
    account_action(&state, &headers, &jar, &form, move |user| async move {
        if name.is_empty() || name.chars().count() > 100 || name.contains('\0') {
            return Err(error_page(
                StatusCode::BAD_REQUEST,
                "A device name has 1 to 100 characters.",
            ));
        }
        let renamed =
            sessions.update_device(UserId::new(&user.id), DeviceId::new(&id), Some(&name), None);
        match renamed.await {
            Ok(Some(_)) => Ok("renamed"),
            Ok(None) => Err(error_page(StatusCode::NOT_FOUND, "You have no such device.")),
            Err(e) => Err(internal(e)),
        }
    })
    .await
}

#[utoipa::path(post, path = "/account/devices/{id}/remove", tag = "sign-in", summary = "Remove one of the signed-in user's devices and end its sessions", params(("id" = String, Path, description = "Device id")), request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 400, description = "The form could not be read", content_type = "text/html"), (status = 303, description = "Back to the account page"), (status = 403, description = "Bad CSRF token or origin", content_type = "text/html"), (status = 404, description = "No such device of this user", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn remove_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    ApiPath(id): ApiPath,
    PageForm(form): PageForm<AccountForm>,
) -> Response {
    let sessions = &state.sessions;
    account_action(&state, &headers, &jar, &form, move |user| async move {
        match sessions.delete_device(UserId::new(&user.id), DeviceId::new(&id)).await {
            Ok(Some(_)) => Ok("removed"),
            Ok(None) => Err(error_page(StatusCode::NOT_FOUND, "You have no such device.")),
            Err(e) => Err(internal(e)),
        }
    })
    .await
}

#[utoipa::path(post, path = "/account/signout", tag = "sign-in", summary = "Sign this browser out", request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 400, description = "The form could not be read", content_type = "text/html"), (status = 303, description = "To the account page's login form"), (status = 403, description = "Bad CSRF token or origin", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn sign_out(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<AccountForm>,
) -> Response {
    let cookies = Cookies::of(&state);
    if let Some(refused) = foreign_form(&jar, &cookies, &headers, form.csrf.as_deref()) {
        return refused;
    }
    if let Some(cookie) = jar.get(cookies.name("session")).map(|c| c.value().to_owned())
        && let Err(e) = state.sign_in.sign_out(&cookie).await
    {
        return internal(e);
    }
    (jar.add(cookies.removal("session")), Found::to("/account")).into_response()
}

#[utoipa::path(post, path = "/account/signout-everywhere", tag = "sign-in", summary = "End every session of the signed-in user and sign out every browser", request_body(content = AccountForm, content_type = "application/x-www-form-urlencoded"),
    responses((status = 400, description = "The form could not be read", content_type = "text/html"), (status = 303, description = "To the account page's login form"), (status = 403, description = "Bad CSRF token or origin", content_type = "text/html")))]
#[tracing::instrument(skip_all)]
async fn sign_out_everywhere(
    State(state): State<AppState>,
    headers: HeaderMap,
    jar: CookieJar,
    PageForm(form): PageForm<AccountForm>,
) -> Response {
    let cookies = Cookies::of(&state);
    let (sessions, sign_in) = (&state.sessions, &state.sign_in);
    let response = account_action(&state, &headers, &jar, &form, move |user| async move {
        let user_id = UserId::new(&user.id);
        let actor = format!("user:{}", user.id);
        let ended = sessions.end_all(user_id, None, revoke_reason::REVOKED_BY_USER, &actor);
        ended.await.map_err(internal)?;
        sign_in.sign_out_everywhere(user_id).await.map_err(internal)?;
        Ok("signed-out")
    })
    .await;
    if response.status() == StatusCode::SEE_OTHER {
        return (jar.add(cookies.removal("session")), Found::to("/account")).into_response();
    }
    response
}

#[utoipa::path(get, path = "/assets/atoms.css", tag = "sign-in", summary = "The pages' stylesheet",
    responses((status = 200, description = "CSS", content_type = "text/css")))]
async fn stylesheet() -> Response {
    let mut response = include_str!("../../assets/atoms.css").into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/css; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    response
}
