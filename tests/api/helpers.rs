//! `spawn_app()` and friends: every test gets its own server on a random port and its own
//! database (a fresh SQLite file, PostgreSQL schema or Redis key prefix), removed on drop.

use std::sync::Arc;
use std::time::Duration;

use atoms_auth::clock::{Clock, ManualClock};
use atoms_auth::config::{Config, SigningAlgorithm, WebhookConfig};
use atoms_auth::domain::secrets::{Secret, hash_password};
use atoms_auth::storage::{Client, ConnectOptions, Storage, User};
use atoms_auth::{App, AppState};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

/// The storage backends every test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Redis,
}

pub fn postgres_base() -> String {
    std::env::var("ATOMS_AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn redis_base() -> String {
    std::env::var("ATOMS_AUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A fresh, isolated database of one backend.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub redis_prefix: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
    /// Whether dropping this handle removes the database.
    owner: bool,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let id = Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/atoms.db?mode=rwc", dir.path().display());
                Self {
                    backend,
                    url,
                    redis_prefix: String::new(),
                    schema: None,
                    _dir: Some(dir),
                    owner: true,
                }
            }
            Backend::Postgres => {
                let schema = format!("t_{id}");
                let pool = sqlx::PgPool::connect(&postgres_base())
                    .await
                    .expect("PostgreSQL must be reachable for the postgres tests");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&pool)
                    .await
                    .expect("create schema");
                pool.close().await;
                let url = format!("{}?options[search_path]={schema}", postgres_base());
                Self {
                    backend,
                    url,
                    redis_prefix: String::new(),
                    schema: Some(schema),
                    _dir: None,
                    owner: true,
                }
            }
            Backend::Redis => {
                let prefix = format!("test:{id}");
                Self {
                    backend,
                    url: redis_base(),
                    redis_prefix: prefix,
                    schema: None,
                    _dir: None,
                    owner: true,
                }
            }
        }
    }

    /// A configuration that points at this database.
    pub fn config(&self) -> Config {
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().expect("addr");
        config.server.issuer = Some("http://atoms-auth.test".into());
        config.storage.database_url = self.url.clone().into();
        config.storage.pool_size = 8;
        config.storage.redis_key_prefix = self.redis_prefix.clone();
        // Tests receive webhooks on loopback, and retry fast.
        config.webhooks = WebhookConfig {
            allow_private_targets: true,
            retry_base: Duration::from_millis(100),
            retry_max: Duration::from_millis(400),
            poll_interval: Duration::from_millis(25),
            timeout: Duration::from_secs(2),
            ..WebhookConfig::default()
        };
        config
    }

    /// A bulk importer on this database (migrate it first, e.g. with [`TestDb::storage`]).
    pub async fn bulk_import(&self) -> Arc<dyn atoms_auth::storage::BulkImport> {
        let options = ConnectOptions {
            pool_size: 8,
            redis_key_prefix: self.redis_prefix.clone(),
            timeout: atoms_auth::storage::DEFAULT_TIMEOUT,
        };
        atoms_auth::storage::connect_bulk_import(&self.url, &options)
            .await
            .unwrap_or_else(|e| panic!("{:?} must be reachable: {e}", self.backend))
    }

    /// A migrated storage handle of its own.
    pub async fn storage(&self) -> Arc<dyn Storage> {
        let storage = atoms_auth::open_storage(&self.config())
            .await
            .unwrap_or_else(|e| panic!("{:?} must be reachable: {e}", self.backend));
        storage.migrate_up().await.expect("migrate");
        storage
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (backend, schema, url, prefix) =
            (self.backend, self.schema.clone(), self.url.clone(), self.redis_prefix.clone());
        if backend == Backend::Sqlite || !self.owner {
            return;
        }
        // Drop runs outside any runtime guarantee: clean up on a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async move {
                if let Some(schema) = schema {
                    if let Ok(pool) = sqlx::PgPool::connect(&postgres_base()).await {
                        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
                        pool.close().await;
                    }
                } else if backend == Backend::Redis {
                    let options = ConnectOptions {
                        pool_size: 1,
                        redis_key_prefix: prefix,
                        timeout: atoms_auth::storage::DEFAULT_TIMEOUT,
                    };
                    if let Ok(storage) = atoms_auth::storage::connect(&url, &options).await {
                        let _ = storage.migrate_down(usize::MAX).await;
                    }
                }
            });
        })
        .join();
    }
}

/// A running server with its own database and a clock the test moves.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub clock: ManualClock,
    pub db: TestDb,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut config = db.config();
    configure(&mut config);
    spawn_on(db, config).await
}

/// Starts a server on `db` with `config`.
pub async fn spawn_on(db: TestDb, config: Config) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    spawn_listening(db, config, listener).await
}

/// Starts a server whose issuer is the URL it is reached at (as clients that discover it
/// need), configured by `configure` with that URL.
pub async fn spawn_at_own_url(
    backend: Backend,
    configure: impl FnOnce(&mut Config, &str),
) -> TestApp {
    let db = TestDb::new(backend).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = db.config();
    config.server.issuer = Some(base.clone());
    config.server.audience = Some(base.clone());
    configure(&mut config, &base);
    spawn_listening(db, config, listener).await
}

async fn spawn_listening(db: TestDb, config: Config, listener: tokio::net::TcpListener) -> TestApp {
    let clock = ManualClock::default();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let state = App::build_with_clock(config, shared).await.expect("build app");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(atoms_auth::run(listener, state.clone(), async move {
        let _ = rx.await;
    }));
    TestApp {
        base,
        http: reqwest::Client::new(),
        state,
        clock,
        db,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// A registered client and its secret.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

/// Answer of a request: status, headers and JSON body (Null when not JSON).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn str(&self, field: &str) -> String {
        self.body[field].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Answer { status, headers, body }
}

impl TestApp {
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.state.storage
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) -> TestDb {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
        std::mem::replace(&mut self.db, TestDb::placeholder())
    }

    pub async fn create_user(&self, username: &str, password: &str) -> String {
        let user = User {
            id: Uuid::now_v7().to_string(),
            username: username.into(),
            password_hash: hash_password(password.into()).await.expect("hash"),
            created_at: self.clock.now_ms(),
            disabled: false,
            role: "member".into(),
        };
        self.storage().create_user(&user).await.expect("create user");
        user.id
    }

    pub async fn create_client(&self, grants: &str, scopes: &str, public: bool) -> TestClient {
        let secret = (!public).then(Secret::generate);
        let client = Client {
            client_id: format!("client-{}", Uuid::new_v4().simple()),
            name: "test client".into(),
            secret_hash: secret.as_ref().map(Secret::sha256_hex),
            grant_types: grants.into(),
            scopes: scopes.into(),
            created_at: self.clock.now_ms(),
            disabled: false,
            created_by: None,
            resource_server: false,
            redirect_uris: String::new(),
            skip_consent: false,
            registered: false,
            last_used_at: None,
            metadata_document: false,
        };
        self.storage().create_client(&client).await.expect("create client");
        TestClient { id: client.client_id, secret: secret.map(|s| s.expose().to_owned()) }
    }

    /// A confidential client that may introspect every client's tokens.
    pub async fn resource_server(&self) -> TestClient {
        let client = self.create_client("client_credentials", "read", false).await;
        let stored = self.storage().client(&client.id).await.expect("get").expect("client");
        let stored = Client { resource_server: true, ..stored };
        self.storage().delete_client(&client.id).await.expect("delete");
        self.storage().create_client(&stored).await.expect("create");
        client
    }

    /// A confidential client with every grant and scopes `read write account`.
    pub async fn confidential_client(&self) -> TestClient {
        self.create_client("password refresh_token client_credentials", "read write account", false)
            .await
    }

    /// POSTs a form with HTTP Basic client authentication.
    pub async fn post_form(
        &self,
        path: &str,
        client: &TestClient,
        form: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        request = request.basic_auth(&client.id, client.secret.as_deref());
        answer(request.send().await.expect("request")).await
    }

    /// POSTs a form with no client authentication header.
    pub async fn post_raw(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self.http.post(format!("{}{path}", self.base)).form(form);
        answer(request.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        answer(self.http.get(format!("{}{path}", self.base)).send().await.expect("request")).await
    }

    pub async fn login(&self, client: &TestClient, username: &str, password: &str) -> Answer {
        self.post_form(
            "/auth/token",
            client,
            &[("grant_type", "password"), ("username", username), ("password", password)],
        )
        .await
    }

    pub async fn refresh(&self, client: &TestClient, refresh_token: &str) -> Answer {
        self.post_form(
            "/auth/token",
            client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        )
        .await
    }

    pub async fn introspect(&self, client: &TestClient, token: &str) -> Value {
        let a = self.post_form("/auth/introspect", client, &[("token", token)]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    pub async fn revoke(&self, client: &TestClient, token: &str) -> Answer {
        self.post_form("/auth/revoke", client, &[("token", token)]).await
    }

    /// An access token with the admin scope.
    pub async fn admin_token(&self) -> String {
        let admin = self.create_client("client_credentials", "admin", false).await;
        let a =
            self.post_form("/auth/token", &admin, &[("grant_type", "client_credentials")]).await;
        a.str("access_token")
    }

    /// A user `alice`, a confidential client, and a login of alice through it.
    pub async fn logged_in(&self) -> (TestClient, Answer) {
        self.create_user("alice", "correct horse battery").await;
        let client = self.confidential_client().await;
        let login = self.login(&client, "alice", "correct horse battery").await;
        assert_eq!(login.status, 200, "{}", login.body);
        (client, login)
    }
}

impl TestDb {
    /// A second handle on the same database that does not clean it up on drop.
    pub fn shared(other: &TestDb) -> Self {
        Self {
            backend: other.backend,
            url: other.url.clone(),
            redis_prefix: other.redis_prefix.clone(),
            schema: None,
            _dir: None,
            owner: false,
        }
    }

    fn placeholder() -> Self {
        Self {
            backend: Backend::Sqlite,
            url: String::new(),
            redis_prefix: String::new(),
            schema: None,
            _dir: None,
            owner: false,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Configures the signing algorithm.
pub fn with_alg(alg: SigningAlgorithm) -> impl FnOnce(&mut Config) {
    move |c| c.keys.algorithm = alg
}

/// Generates one test per backend for each named `async fn name(backend: Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Postgres).await })*
        }
        mod redis {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::helpers::Backend::Redis).await })*
        }
    };
}

impl TestApp {
    /// A request with a bearer token and an optional JSON body.
    pub async fn bearer(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request =
            self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request")).await
    }

    /// Logs `username` in through `client` with extra form fields and headers.
    pub async fn login_with(
        &self,
        client: &TestClient,
        username: &str,
        password: &str,
        extra: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut form =
            vec![("grant_type", "password"), ("username", username), ("password", password)];
        form.extend_from_slice(extra);
        let mut request = self
            .http
            .post(format!("{}/auth/token", self.base))
            .basic_auth(&client.id, client.secret.as_deref())
            .form(&form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect("request")).await
    }
}

/// The test clock's time, in RFC 3339.
pub trait ClockExt {
    fn now_rfc3339(&self) -> String;
}

impl ClockExt for ManualClock {
    fn now_rfc3339(&self) -> String {
        atoms_auth::clock::rfc3339(self.now_ms())
    }
}

/// A free port on loopback (bound, then released for a server to take).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
