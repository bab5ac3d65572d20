//! Client ID metadata documents over HTTP: a real host publishes them, and the server fetches,
//! checks and caches them; a client known only by its document signs a user in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use atoms_auth::clock::Clock;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::sign_in::*;

/// What the host answers for one path.
#[derive(Clone)]
pub struct Published {
    pub status: u16,
    pub cache_control: Option<&'static str>,
    pub location: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct Shelf {
    documents: HashMap<String, Published>,
    fetches: HashMap<String, usize>,
}

/// A web host publishing documents at `http://127.0.0.1:port/{name}`.
pub struct DocumentHost {
    pub base: String,
    shelf: Arc<Mutex<Shelf>>,
    server: tokio::task::JoinHandle<()>,
}

async fn serve(State(shelf): State<Arc<Mutex<Shelf>>>, Path(name): Path<String>) -> Response {
    let mut shelf = shelf.lock().expect("lock");
    *shelf.fetches.entry(name.clone()).or_default() += 1;
    let Some(p) = shelf.documents.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let status = StatusCode::from_u16(p.status).expect("status");
    let mut response = (status, p.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(cc) = p.cache_control {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    if let Some(to) = p.location {
        headers.insert(header::LOCATION, HeaderValue::from_str(&to).expect("location"));
    }
    response
}

/// An empty shelf and the routes that serve it.
fn shelf_and_app() -> (Arc<Mutex<Shelf>>, Router) {
    let shelf = Arc::new(Mutex::new(Shelf::default()));
    let app = Router::new().route("/{name}", get(serve)).with_state(shelf.clone());
    (shelf, app)
}

impl DocumentHost {
    pub async fn start() -> Self {
        let (shelf, app) = shelf_and_app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self { base, shelf, server }
    }

    /// The same host over HTTPS, with a self-signed certificate for 127.0.0.1; returns the
    /// host and the certificate's PEM (to trust it).
    pub async fn start_tls() -> (Self, String) {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let generated = rcgen::generate_simple_self_signed(names).expect("certificate");
        let pem = generated.cert.pem();
        let chain = vec![CertificateDer::from_pem_slice(pem.as_bytes()).expect("cert")];
        let key = PrivateKeyDer::from_pem_slice(generated.signing_key.serialize_pem().as_bytes())
            .expect("key");
        let mut tls = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("tls config");
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let (shelf, app) = shelf_and_app();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("https://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let builder = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = builder.serve_connection(io, service).await;
                });
            }
        });
        (Self { base, shelf, server }, pem)
    }

    /// The URL of `name`.
    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Publishes `body` at `name` with 200 and `cache_control`.
    pub fn publish(&self, name: &str, body: &Value, cache_control: Option<&'static str>) {
        let p = Published { status: 200, cache_control, location: None, body: body.to_string() };
        self.put(name, p);
    }

    pub fn put(&self, name: &str, published: Published) {
        self.shelf.lock().expect("lock").documents.insert(name.to_owned(), published);
    }

    /// How often `name` was fetched.
    pub fn fetches(&self, name: &str) -> usize {
        self.shelf.lock().expect("lock").fetches.get(name).copied().unwrap_or(0)
    }

    /// A valid document for `name`, redirecting to [`REDIRECT`].
    pub fn document(&self, name: &str) -> Value {
        json!({
            "client_id": self.url(name),
            "client_name": "Example Assistant",
            "redirect_uris": [REDIRECT],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        })
    }
}

impl Drop for DocumentHost {
    fn drop(&mut self) {
        self.server.abort();
    }
}

const MCP: &str = "https://mcp.example.com/mcp";

/// An app that fetches documents from loopback addresses (the development switch), with
/// `read` on a registered resource.
async fn app_fetching_locally(backend: Backend) -> TestApp {
    let app = spawn_app_with(backend, |c| {
        c.registration.metadata_allow_private = true;
        c.tokens.resources = format!("{MCP}=read").as_str().into();
    })
    .await;
    app.create_user("alice", PASSWORD).await;
    app
}

async fn a_client_known_by_its_document_signs_a_user_in(backend: Backend) {
    let app = app_fetching_locally(backend).await;
    let host = DocumentHost::start().await;
    let client_id = host.url("assistant.json");
    host.publish("assistant.json", &host.document("assistant.json"), Some("max-age=600"));
    let metadata = app.get("/.well-known/oauth-authorization-server").await;
    assert_eq!(metadata.body["client_id_metadata_document_supported"], true);

    let mut browser = Browser::new(&app);
    let query = authorize_query(&client_id, REDIRECT, &[("resource", MCP)]);
    let login = browser.get(&query).await;
    assert_eq!(login.status, 200, "{}", login.html);
    assert!(login.html.contains("Example Assistant"));
    let consent = post_fields(&mut browser, "/auth/authorize", &alice_signs_in(&login)).await;
    assert_eq!(consent.status, 200, "{}", consent.html);
    assert!(consent.html.contains("Example Assistant") && consent.html.contains("127.0.0.1"));
    assert!(consent.html.contains("has not verified"), "{}", consent.html);
    let fields = form_fields(&consent, &[("action", "allow")]);
    let back = post_fields(&mut browser, "/auth/authorize", &fields).await;
    assert_eq!(back.status, 303, "{}", back.html);
    let code = back.redirect_params()["code"].clone();

    let client = crate::helpers::TestClient { id: client_id.clone(), secret: None };
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", client_id.as_str()),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("code_verifier", VERIFIER),
        ("resource", MCP),
    ];
    let tokens = app.post_raw("/auth/token", &form).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    assert_eq!(tokens.body["scope"], "read");
    let refreshed = refresh_public(&app, &client, &tokens.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    // One fetch served the authorization, the exchange and the refresh: the document may be
    // kept for ten minutes.
    assert_eq!(host.fetches("assistant.json"), 1);

    // The session is named by the document's client on the account page.
    let account = browser.get("/account").await;
    assert!(account.html.contains("Example Assistant"), "{}", account.html);
}

async fn a_document_that_may_not_be_stored_is_fetched_again(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.registration.metadata_allow_private = true;
        c.registration.metadata_cache_min = std::time::Duration::ZERO;
    })
    .await;
    let host = DocumentHost::start().await;
    host.publish("fresh.json", &host.document("fresh.json"), Some("no-store"));
    let mut browser = Browser::new(&app);
    let query = authorize_query(&host.url("fresh.json"), REDIRECT, &[("scope", "")]);
    assert_eq!(browser.get(&query).await.status, 200);
    assert_eq!(browser.get(&query).await.status, 200);
    assert_eq!(host.fetches("fresh.json"), 2);
}

async fn documents_that_fail_a_check_show_an_error_page_and_never_redirect(backend: Backend) {
    let app = app_fetching_locally(backend).await;
    let host = DocumentHost::start().await;
    let with = |name: &str, change: &dyn Fn(&mut Value)| {
        let mut d = host.document(name);
        change(&mut d);
        host.publish(name, &d, None);
    };
    with("other-id.json", &|d| d["client_id"] = json!("https://elsewhere.example/c.json"));
    with("no-redirects.json", &|d| {
        d.as_object_mut().expect("object").remove("redirect_uris");
    });
    with("secret.json", &|d| d["token_endpoint_auth_method"] = json!("client_secret_basic"));
    with("fragment.json", &|d| d["redirect_uris"] = json!(["http://127.0.0.1/cb#x"]));
    with("wrong-type.json", &|d| d["redirect_uris"] = json!(REDIRECT));
    let big = json!({ "padding": "x".repeat(20 * 1024) });
    host.publish("huge.json", &big, None);
    let malformed =
        Published { status: 200, cache_control: None, location: None, body: "{ not json".into() };
    host.put("malformed.json", malformed);
    let moved = Published {
        status: 302,
        cache_control: None,
        location: Some(host.url("assistant.json")),
        body: String::new(),
    };
    host.put("moved.json", moved);
    host.publish("assistant.json", &host.document("assistant.json"), None);

    let mut browser = Browser::new(&app);
    for name in [
        "other-id.json",
        "no-redirects.json",
        "secret.json",
        "fragment.json",
        "wrong-type.json",
        "huge.json",
        "malformed.json",
        "moved.json",
        "missing.json",
    ] {
        let page = browser.get(&authorize_query(&host.url(name), REDIRECT, &[])).await;
        assert_eq!(page.status, 400, "{name}: {}", page.html);
        assert!(page.header("location").is_none(), "{name}: never a redirect");
        assert!(page.html.contains("metadata document"), "{name}: {}", page.html);
    }
    assert_eq!(host.fetches("assistant.json"), 0, "the redirect was not followed");
    // A valid document, but a redirect URI it does not list: a page too.
    let elsewhere = authorize_query(&host.url("assistant.json"), "http://127.0.0.1/other", &[]);
    let page = browser.get(&elsewhere).await;
    assert_eq!(page.status, 400);
    assert!(page.header("location").is_none());
    // Nothing was written: no session, no consent, nobody signed in.
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    let sessions = app.storage().user_sessions(&user.id, app.clock.now_ms()).await.expect("list");
    assert!(sessions.is_empty());
    // At the token endpoint, such a client does not authenticate.
    let form = [("grant_type", "refresh_token"), ("refresh_token", "x")];
    let mut with_id = form.to_vec();
    let id = host.url("other-id.json");
    with_id.push(("client_id", id.as_str()));
    let refused = app.post_raw("/auth/token", &with_id).await;
    assert_eq!((refused.status, refused.str("error").as_str()), (401, "invalid_client"));
}

async fn documents_on_private_addresses_are_not_fetched_by_default(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let host = DocumentHost::start().await;
    host.publish("assistant.json", &host.document("assistant.json"), None);
    let mut browser = Browser::new(&app);
    // http is no document URL without the development switch: an unknown client.
    let page = browser.get(&authorize_query(&host.url("assistant.json"), REDIRECT, &[])).await;
    assert_eq!(page.status, 400);
    // An https URL on a loopback address is refused before anything is sent.
    let loopback = "https://127.0.0.1:9/assistant.json";
    let page = browser.get(&authorize_query(loopback, REDIRECT, &[])).await;
    assert_eq!(page.status, 400);
    assert!(page.html.contains("could not be fetched"), "{}", page.html);
    assert_eq!(host.fetches("assistant.json"), 0);
}

backend_tests!(
    a_client_known_by_its_document_signs_a_user_in,
    a_document_that_may_not_be_stored_is_fetched_again,
    documents_that_fail_a_check_show_an_error_page_and_never_redirect,
    documents_on_private_addresses_are_not_fetched_by_default,
);
