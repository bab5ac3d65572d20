//! An MCP server (Streamable HTTP, the official Rust SDK) that protects itself with atoms-auth,
//! as every MCP server of the platform does:
//!
//! - it publishes its protected resource metadata (RFC 9728), naming atoms-auth as its
//!   authorization server;
//! - a request without a valid token is answered 401 with
//!   `WWW-Authenticate: Bearer resource_metadata="…"`, which is how an MCP client finds
//!   atoms-auth;
//! - a token is valid when atoms-auth signed it (checked against its JWKS), its issuer is
//!   atoms-auth, it has not expired, and its audience (`aud`) is this server's own URL, so a
//!   token issued for another MCP server is refused;
//! - calling the tool needs its scope: without it the answer is 403 `insufficient_scope`;
//! - optionally, each token is also introspected (RFC 7662), so that a session ended at
//!   atoms-auth stops working here at once rather than when its access token expires.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rmcp::model::{CallToolResult, ContentBlock, ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::StreamableHttpServerConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::tower::StreamableHttpService;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::RwLock;

/// How this server protects itself.
#[derive(Debug, Clone)]
pub struct Protection {
    /// This server's MCP endpoint: the resource tokens must be issued for (their `aud`).
    pub resource: String,
    /// atoms-auth's issuer URL.
    pub issuer: String,
    /// The scope the tool needs.
    pub tool_scope: String,
    /// Clock skew tolerated on `exp`.
    pub leeway: Duration,
    /// Introspect each token with these client credentials (a client atoms-auth lets
    /// introspect any token), so an ended session is refused at once.
    pub introspection: Option<(String, String)>,
}

/// The claims this server reads from an atoms-auth access token.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub aud: String,
    pub scope: String,
    pub client_id: String,
}

/// Why a request is refused.
enum Refusal {
    /// No token, or one that is not valid here: 401.
    Unauthorized(Option<&'static str>),
    /// A valid token without the tool's scope: 403.
    InsufficientScope,
}

/// atoms-auth's keys, fetched from its JWKS and fetched again when a token names an unknown
/// key (after a rotation), at most once per `REFETCH`.
struct Keys {
    set: JwkSet,
    fetched: Option<Instant>,
}

const REFETCH: Duration = Duration::from_secs(10);

struct Guard {
    protection: Protection,
    http: reqwest::Client,
    keys: RwLock<Keys>,
    metadata_url: String,
    /// atoms-auth's server metadata, fetched once (its endpoints do not move).
    server: tokio::sync::OnceCell<serde_json::Value>,
}

impl Guard {
    /// atoms-auth's server metadata (RFC 8414), fetched at the first need and kept; a failed
    /// fetch is tried again at the next.
    async fn server_metadata(&self) -> anyhow::Result<&serde_json::Value> {
        self.server
            .get_or_try_init(|| async {
                let url = format!(
                    "{}/.well-known/oauth-authorization-server",
                    self.protection.issuer.trim_end_matches('/')
                );
                Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
            })
            .await
    }

    /// The key a token names: from the cached set, or from a fresh one.
    async fn key(&self, kid: &str) -> Option<jsonwebtoken::jwk::Jwk> {
        if let Some(jwk) = self.keys.read().await.set.find(kid) {
            return Some(jwk.clone());
        }
        let mut keys = self.keys.write().await;
        if keys.fetched.is_some_and(|at| at.elapsed() < REFETCH) {
            return keys.set.find(kid).cloned();
        }
        keys.fetched = Some(Instant::now());
        match self.fetch_keys().await {
            Ok(set) => keys.set = set,
            Err(e) => tracing::warn!(error = %e, "could not fetch the JWKS"),
        }
        keys.set.find(kid).cloned()
    }

    async fn fetch_keys(&self) -> anyhow::Result<JwkSet> {
        let metadata = self.server_metadata().await?;
        let jwks_uri =
            metadata["jwks_uri"].as_str().ok_or_else(|| anyhow::anyhow!("no jwks_uri"))?;
        Ok(self.http.get(jwks_uri).send().await?.error_for_status()?.json().await?)
    }

    /// Checks an access token: signature, type, issuer, expiry and audience; and, when
    /// configured, that atoms-auth still calls it active.
    async fn verify(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some("at+jwt")
            || !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256 | Algorithm::RS256)
        {
            return None;
        }
        let jwk = self.key(header.kid.as_deref()?).await?;
        let key = DecodingKey::from_jwk(&jwk).ok()?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.protection.issuer]);
        validation.set_audience(&[&self.protection.resource]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.protection.leeway.as_secs();
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation).ok()?.claims;
        if let Some((id, secret)) = &self.protection.introspection {
            let metadata = self.server_metadata().await.ok()?;
            let endpoint = metadata["introspection_endpoint"].as_str()?;
            let answer: serde_json::Value = self
                .http
                .post(endpoint)
                .basic_auth(id, Some(secret))
                .form(&[("token", token)])
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            if answer["active"] != true {
                return None;
            }
        }
        Some(claims)
    }

    /// The `WWW-Authenticate` challenge of a refusal (RFC 6750 §3, RFC 9728 §5.1).
    fn challenge(&self, refusal: &Refusal) -> Response {
        let (status, error) = match refusal {
            Refusal::Unauthorized(error) => (StatusCode::UNAUTHORIZED, *error),
            Refusal::InsufficientScope => (StatusCode::FORBIDDEN, Some("insufficient_scope")),
        };
        let mut value = format!(
            r#"Bearer resource_metadata="{}", scope="{}""#,
            self.metadata_url, self.protection.tool_scope
        );
        if let Some(error) = error {
            value.push_str(&format!(r#", error="{error}""#));
        }
        let mut response = (status, error.unwrap_or("authorization required")).into_response();
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// Whether a JSON-RPC message (or batch) calls a tool.
fn calls_a_tool(body: &[u8]) -> bool {
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let is_call = |m: &serde_json::Value| m["method"] == "tools/call";
    match &message {
        serde_json::Value::Array(batch) => batch.iter().any(is_call),
        single => is_call(single),
    }
}

/// Lets a request through only with a valid token, and a tool call only with the tool's
/// scope; the token's claims go with the request to the tool.
async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let Some(token) = token else {
        return guard.challenge(&Refusal::Unauthorized(None));
    };
    let Some(claims) = guard.verify(&token).await else {
        return guard.challenge(&Refusal::Unauthorized(Some("invalid_token")));
    };
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 4 * 1024 * 1024).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let scoped = claims.scope.split_whitespace().any(|s| s == guard.protection.tool_scope);
    if calls_a_tool(&body) && !scoped {
        return guard.challenge(&Refusal::InsufficientScope);
    }
    let mut request = Request::from_parts(parts, Body::from(body));
    request.extensions_mut().insert(claims);
    next.run(request).await
}

/// The MCP server itself: one tool.
#[derive(Clone, Default)]
pub struct Greeter;

#[tool_router]
impl Greeter {
    #[tool(description = "Greets the signed-in user by their atoms-auth user id")]
    async fn greet(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let claims = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Claims>())
            .ok_or_else(|| ErrorData::internal_error("no verified token", None))?;
        let text = format!("Hello, {} (through {})", claims.sub, claims.client_id);
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

#[tool_handler]
impl ServerHandler for Greeter {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

/// Where RFC 9728 puts the metadata of `resource`: `/.well-known/oauth-protected-resource`
/// followed by the resource's path.
pub fn metadata_path(resource: &url::Url) -> String {
    let path = resource.path().trim_end_matches('/');
    format!("/.well-known/oauth-protected-resource{path}")
}

/// The server's routes: the MCP endpoint at the resource URL's path, behind the guard, and
/// the protected resource metadata.
pub fn router(protection: Protection) -> anyhow::Result<Router> {
    let resource = url::Url::parse(&protection.resource)?;
    let origin = resource.origin().ascii_serialization();
    let metadata_path = metadata_path(&resource);
    let metadata = json!({
        "resource": protection.resource,
        "authorization_servers": [protection.issuer],
        "scopes_supported": [protection.tool_scope],
        "bearer_methods_supported": ["header"],
        "resource_name": "atoms-auth example MCP server",
    });
    let host = resource.host_str().unwrap_or("localhost").to_owned();
    let authority = match resource.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let config = StreamableHttpServerConfig::default().with_allowed_hosts([host, authority]);
    let mcp: StreamableHttpService<Greeter, LocalSessionManager> =
        StreamableHttpService::new(|| Ok(Greeter), LocalSessionManager::default().into(), config);
    let guard = Arc::new(Guard {
        metadata_url: format!("{origin}{metadata_path}"),
        server: tokio::sync::OnceCell::new(),
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
        keys: RwLock::new(Keys { set: JwkSet { keys: Vec::new() }, fetched: None }),
        protection,
    });
    let document = move || {
        let metadata = metadata.clone();
        async move { axum::Json(metadata) }
    };
    let protected = Router::new()
        .nest_service(resource.path(), mcp)
        .layer(middleware::from_fn_with_state(guard, self::guard));
    Ok(Router::new()
        .route(&metadata_path, get(document.clone()))
        .route("/.well-known/oauth-protected-resource", get(document))
        .merge(protected))
}
