//! Operations: metrics, health, request ids, security headers, CORS, timeouts and rate
//! limits, on every backend where the backend matters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestDb, answer, spawn_app, spawn_app_with, spawn_on};

/// Scrapes `/metrics` as text.
async fn scrape(app: &TestApp) -> String {
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.expect("scrape");
    assert_eq!(response.status(), 200);
    let kind = response.headers()["content-type"].to_str().expect("type").to_owned();
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    response.text().await.expect("text")
}

/// The value of one sample, by its full name with labels as exported.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics_export_every_family(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let access = login.str("access_token");
    let refreshed = app.refresh(&client, &login.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200);
    // Not a token this server made: refused before storage is asked.
    let stale = app.refresh(&client, "not-a-token").await;
    assert_eq!(stale.status, 400);
    app.introspect(&client, &refreshed.str("access_token")).await;
    let sid = app.introspect(&client, &access).await["sid"].as_str().unwrap_or_default().to_owned();
    let session = app.bearer("GET", "/auth/sessions/x", &access, None).await;
    assert_eq!(session.status, 404);
    assert_eq!(app.get("/no/such/path").await.status, 404);

    let text = scrape(&app).await;
    for family in atoms_auth::metrics::FAMILIES {
        if backend == Backend::Redis && *family == "atoms_auth_storage_pool_connections" {
            continue; // one multiplexed connection, no pool
        }
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing:\n{text}");
    }
    let counter = |series: &str| sample(&text, series).unwrap_or(-1.0);
    assert_eq!(counter(r#"atoms_auth_tokens_issued_total{grant="password"}"#), 1.0);
    assert_eq!(counter(r#"atoms_auth_tokens_issued_total{grant="refresh_token"}"#), 1.0);
    assert_eq!(counter(r#"atoms_auth_refresh_total{outcome="rotated"}"#), 1.0);
    assert_eq!(counter(r#"atoms_auth_refresh_total{outcome="invalid"}"#), 1.0);
    assert_eq!(counter(r#"atoms_auth_cache_requests_total{cache="clients",result="miss"}"#), 1.0);
    assert!(counter(r#"atoms_auth_cache_requests_total{cache="clients",result="hit"}"#) >= 3.0);
    assert_eq!(counter(r#"atoms_auth_audit_events_total{event="user.login.succeeded"}"#), 1.0);
    assert_eq!(
        counter(
            r#"atoms_auth_http_requests_total{method="POST",route="/auth/token",status="200"}"#
        ),
        2.0
    );
    assert_eq!(
        counter(
            r#"atoms_auth_http_requests_total{method="GET",route="/auth/sessions/{id}",status="404"}"#
        ),
        1.0
    );
    assert_eq!(
        counter(r#"atoms_auth_http_requests_total{method="GET",route="unmatched",status="404"}"#),
        1.0
    );
    assert!(
        counter(
            r#"atoms_auth_storage_operation_duration_seconds_count{operation="rotate_refresh"}"#
        ) >= 1.0
    );
    // Labels name route templates, never raw paths or ids.
    assert!(!text.contains("/no/such/path") && !text.contains("/auth/sessions/x\""));
    assert!(sid.is_empty() || !text.contains(&sid));
    if backend != Backend::Redis {
        assert!(text.contains("atoms_auth_storage_pool_connections{state=\"idle\"}"));
    }
    promtool_accepts(&text);
}

/// `promtool check metrics` on an exposition, when promtool is installed; CI installs it and
/// sets ATOMS_AUTH_REQUIRE_PROMTOOL so it cannot be skipped there.
fn promtool_accepts(text: &str) {
    use std::io::Write;
    let spawned = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            assert!(
                std::env::var_os("ATOMS_AUTH_REQUIRE_PROMTOOL").is_none(),
                "promtool is required here: {e}"
            );
            eprintln!("promtool not installed; exposition not linted");
            return;
        }
    };
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool");
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}");
}

async fn health_reports_every_check(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.body);
    let body = &health.body;
    assert_eq!(body["status"], "healthy", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["uptime_seconds"].is_u64());
    let checks = &body["checks"];
    assert_eq!(checks["storage"]["status"], "healthy");
    assert!(checks["storage"]["latency_ms"].as_f64().is_some_and(|l| l >= 0.0));
    let cache = if backend == Backend::Redis { "healthy" } else { "unknown" };
    assert_eq!(checks["cache"]["status"], cache, "{body}");
    assert_eq!(checks["signing_keys"]["status"], "healthy");
    assert!(checks["signing_keys"]["active_kid"].is_string());
    assert_eq!(checks["webhooks"]["status"], "healthy");
    assert_eq!(checks["webhooks"]["pending"], 0);
    assert_eq!(app.get("/health/ready").await.status, 200);
    assert_eq!(app.get("/health/live").await.body["status"], "healthy");
}

/// A TCP forwarder between the server and its database that a test can cut and restore,
/// or stall (accept and never answer).
struct Proxy {
    addr: std::net::SocketAddr,
    mode: Arc<AtomicU8>,
    cut: watch::Sender<u64>,
}

const UP: u8 = 0;
const DOWN: u8 = 1;
const STALLED: u8 = 2;

impl Proxy {
    async fn start(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(AtomicU8::new(UP));
        let (cut, _) = watch::channel(0u64);
        let (target, accept_mode, cuts) = (target.to_owned(), mode.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let mode = accept_mode.load(Ordering::SeqCst);
                if mode == DOWN {
                    drop(inbound);
                    continue;
                }
                let (target, mut cut) = (target.clone(), cuts.subscribe());
                tokio::spawn(async move {
                    if mode == STALLED {
                        let _ = cut.changed().await;
                        drop(inbound);
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(&target).await else { return };
                    let (mut a, mut b) = (inbound, outbound);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self { addr, mode, cut }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
        // Every open connection ends, so the server must reconnect through the new mode.
        self.cut.send_modify(|n| *n += 1);
    }
}

/// The storage URL of `db`, through a proxy.
async fn proxied(db: &TestDb) -> (Proxy, String) {
    let target = match db.backend {
        Backend::Postgres => "127.0.0.1:5432",
        _ => "127.0.0.1:6379",
    };
    let proxy = Proxy::start(target).await;
    let url = db.url.replace(target, &proxy.addr.to_string());
    assert_ne!(url, db.url, "the test database must be at {target}");
    (proxy, url)
}

/// Polls `/health` until both the verdict and the storage check read `verdict`. The cut can
/// land between two checks of one round (one still on an open connection, the next failing
/// mid-handshake), so the overall verdict alone does not say the storage check has seen it.
async fn wait_for_health(app: &TestApp, status: u16, verdict: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let health = app.get("/health").await;
        let body = &health.body;
        if health.status == status
            && body["status"] == verdict
            && body["checks"]["storage"]["status"] == verdict
        {
            return health.body;
        }
        last = health.body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("health never became {verdict} ({status}); last: {last}");
}

async fn health_follows_the_database_down_and_back(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (proxy, url) = proxied(&db).await;
    let mut config = db.config();
    config.storage.database_url = url.into();
    let app = spawn_on(db, config).await;
    wait_for_health(&app, 200, "healthy").await;

    proxy.set(DOWN);
    let down = wait_for_health(&app, 503, "unhealthy").await;
    assert_eq!(down["checks"]["storage"]["status"], "unhealthy", "{down}");
    assert!(down["checks"]["storage"]["error"].is_string());
    assert_eq!(app.get("/health/ready").await.status, 503);
    assert_eq!(app.get("/health/live").await.status, 200, "the process itself is alive");
    let text = scrape(&app).await;
    assert_eq!(sample(&text, r#"atoms_auth_health_status{check="storage"}"#), Some(3.0));
    assert_eq!(sample(&text, r#"atoms_auth_health_status{check="overall"}"#), Some(3.0));

    proxy.set(UP);
    let up = wait_for_health(&app, 200, "healthy").await;
    assert_eq!(up["checks"]["storage"]["status"], "healthy");
    assert_eq!(app.get("/health/ready").await.status, 200);
}

/// A request stuck on a database that accepts and never answers is cut at the timeout, as a
/// problem with the request id.
async fn stuck_request_times_out(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (proxy, url) = proxied(&db).await;
    let mut config = db.config();
    config.storage.database_url = url.into();
    config.server.request_timeout = Duration::from_secs(1);
    config.tokens.client_cache_ttl = Duration::from_secs(0);
    let app = spawn_on(db, config).await;
    let client = app.confidential_client().await;
    proxy.set(STALLED);
    let started = std::time::Instant::now();
    let response = app
        .http
        .post(format!("{}/auth/token", app.base))
        .basic_auth(&client.id, client.secret.as_deref())
        .header("x-request-id", "stuck-1")
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    let stuck = answer(response).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(stuck.status, 503, "{}", stuck.body);
    assert_eq!(stuck.header("content-type"), Some("application/problem+json"));
    assert_eq!(stuck.body["request_id"], "stuck-1");
    proxy.set(UP);
}

async fn security_headers_request_ids_and_problems() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app
        .http
        .get(format!("{}/no/such/thing", app.base))
        .header("x-request-id", "req-123")
        .send()
        .await
        .expect("request");
    let missing = answer(response).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/problem+json"));
    assert_eq!(missing.body["request_id"], "req-123");
    assert_eq!(missing.header("x-request-id"), Some("req-123"));
    let client = app.confidential_client().await;
    let token =
        app.post_form("/auth/token", &client, &[("grant_type", "client_credentials")]).await;
    let generated = token.header("x-request-id").expect("a generated request id");
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    for answer in
        [&missing, &token, &app.get("/health").await, &app.get("/.well-known/jwks.json").await]
    {
        assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(answer.header("x-frame-options"), Some("DENY"));
        assert_eq!(answer.header("referrer-policy"), Some("no-referrer"));
        assert!(answer.header("content-security-policy").is_some_and(|c| c.contains("'none'")));
        assert!(answer.header("strict-transport-security").is_some());
        assert!(answer.header("cache-control").is_some());
    }
    // A bad admin call is a problem with its request id too.
    let admin = app.http.get(format!("{}/admin/audit", app.base)).send().await.expect("request");
    let admin = answer(admin).await;
    assert_eq!(admin.status, 401);
    assert!(admin.body["request_id"].is_string(), "{}", admin.body);
}

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, format!("{}/auth/token", app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight")
}

async fn cors_is_closed_by_default_and_opens_per_origin() {
    let closed = spawn_app(Backend::Sqlite).await;
    let answer = preflight(&closed, "https://app.example").await;
    assert!(answer.headers().get("access-control-allow-origin").is_none());
    let open =
        spawn_app_with(Backend::Sqlite, |c| c.server.cors_origins = "https://app.example".into())
            .await;
    let allowed = preflight(&open, "https://app.example").await;
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example");
    let other = preflight(&open, "https://evil.example").await;
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

async fn client_credentials(
    app: &TestApp,
    client: &crate::helpers::TestClient,
) -> crate::helpers::Answer {
    app.post_form("/auth/token", client, &[("grant_type", "client_credentials")]).await
}

async fn rate_limits_refuse_with_429_and_headers() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        (c.rate_limits.client_per_sec, c.rate_limits.client_burst) = (1, 3);
        c.rate_limits.ip_per_sec = 0;
    })
    .await;
    let client = app.confidential_client().await;
    for left in ["2", "1", "0"] {
        let ok = client_credentials(&app, &client).await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.header("ratelimit-limit"), Some("3"));
        assert_eq!(ok.header("ratelimit-remaining"), Some(left));
        assert!(ok.header("ratelimit-reset").is_some());
    }
    let refused = client_credentials(&app, &client).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"], "temporarily_unavailable");
    let retry: u64 = refused.header("retry-after").expect("retry-after").parse().expect("secs");
    assert!((1..=2).contains(&retry));
    assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
    // Introspection and revocation count separately; another client has its own allowance.
    let other = app.confidential_client().await;
    assert_eq!(client_credentials(&app, &other).await.status, 200);
    let text = scrape(&app).await;
    let limited = r#"atoms_auth_rate_limited_total{route="/auth/token",scope="client"}"#;
    assert_eq!(sample(&text, limited), Some(1.0));
    // After the wait, the client passes again.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(client_credentials(&app, &client).await.status, 200);

    let by_ip = spawn_app_with(Backend::Sqlite, |c| {
        c.rate_limits.client_per_sec = 0;
        (c.rate_limits.ip_per_sec, c.rate_limits.ip_burst) = (1, 2);
    })
    .await;
    let (a, b, c) = (
        by_ip.confidential_client().await,
        by_ip.confidential_client().await,
        by_ip.confidential_client().await,
    );
    assert_eq!(client_credentials(&by_ip, &a).await.status, 200);
    assert_eq!(client_credentials(&by_ip, &b).await.status, 200);
    let refused = client_credentials(&by_ip, &c).await;
    assert_eq!(refused.status, 429, "one address, whatever the client");
}

/// Two instances on one database and one Redis enforce one limit between them.
async fn two_instances_share_one_limit_through_redis() {
    let db = TestDb::new(Backend::Postgres).await;
    let prefix = format!("rl:{}", uuid::Uuid::new_v4().simple());
    let configure = |config: &mut atoms_auth::config::Config| {
        config.storage.redis_url = Some(
            std::env::var("ATOMS_AUTH_TEST_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
                .into(),
        );
        config.storage.redis_key_prefix = prefix.clone();
        (config.rate_limits.client_per_sec, config.rate_limits.client_burst) = (1, 4);
        config.rate_limits.ip_per_sec = 0;
    };
    let mut config = db.config();
    configure(&mut config);
    let shared = TestDb::shared(&db);
    let first = spawn_on(db, config).await;
    let mut config = shared.config();
    configure(&mut config);
    let second = spawn_on(shared, config).await;
    let client = first.confidential_client().await;
    for app in [&first, &second, &first, &second] {
        assert_eq!(client_credentials(app, &client).await.status, 200);
    }
    assert_eq!(client_credentials(&first, &client).await.status, 429);
    assert_eq!(client_credentials(&second, &client).await.status, 429);
    let health = second.get("/health").await;
    assert_eq!(health.body["checks"]["cache"]["status"], "healthy", "{}", health.body);
}

backend_tests!(metrics_export_every_family, health_reports_every_check);

mod proxied {
    use super::*;

    #[tokio::test]
    async fn postgres_health_follows_the_database() {
        health_follows_the_database_down_and_back(Backend::Postgres).await;
    }

    #[tokio::test]
    async fn redis_health_follows_the_database() {
        health_follows_the_database_down_and_back(Backend::Redis).await;
    }

    #[tokio::test]
    async fn postgres_stuck_request_times_out() {
        stuck_request_times_out(Backend::Postgres).await;
    }
}

#[tokio::test]
async fn security_headers_and_request_ids() {
    security_headers_request_ids_and_problems().await;
}

#[tokio::test]
async fn cors_closed_by_default() {
    cors_is_closed_by_default_and_opens_per_origin().await;
}

#[tokio::test]
async fn rate_limits() {
    rate_limits_refuse_with_429_and_headers().await;
}

#[tokio::test]
async fn rate_limits_shared_by_instances() {
    two_instances_share_one_limit_through_redis().await;
}

/// Every route of the router is in `/openapi.json` and every documented operation is routed:
/// routes are only registered through the documented router (no bare `.route(` in the
/// source), and each documented operation answers something other than "no such route".
#[tokio::test]
async fn openapi_describes_every_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc = app.get("/openapi.json").await;
    assert_eq!(doc.status, 200);
    assert!(doc.body["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc.body);
    let paths = doc.body["paths"].as_object().expect("paths");
    let mut operations = Vec::new();
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("path item") {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                operations.push((method.to_uppercase(), path.clone(), operation.clone()));
            }
        }
    }
    for (method, path, operation) in &operations {
        let url = format!("{}{}", app.base, path.replace("{id}", "x"));
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let response = app.http.request(method.clone(), url).send().await.expect("request");
        let status = response.status().as_u16();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert!(
            !(status == 404 && body["detail"] == "no such resource"),
            "{method} {path} is documented but not routed"
        );
        let responses = operation["responses"].as_object().expect("responses");
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        // Every `{name}` of the path is a declared path parameter.
        let declared: Vec<&str> = operation["parameters"]
            .as_array()
            .map(|ps| {
                ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect()
            })
            .unwrap_or_default();
        for name in path.split('{').skip(1).filter_map(|rest| rest.split('}').next()) {
            assert!(declared.contains(&name), "{method} {path} does not declare {{{name}}}");
        }
        if path.starts_with("/admin")
            || path.starts_with("/auth/") && !path.starts_with("/auth/token")
        {
            let errors = responses.keys().filter(|code| code.starts_with('4')).count();
            assert!(errors >= 1, "{method} {path} documents no error body");
        }
    }
    assert!(operations.len() >= 35, "{} operations", operations.len());
    let schemas = &doc.body["components"]["schemas"];
    for schema in ["Problem", "OAuthErrorBody", "TokenResponse", "SessionView", "DeviceView"] {
        assert!(schemas[schema].is_object(), "{schema} missing");
    }
    assert!(paths.contains_key("/openapi.json") && paths.contains_key("/metrics"));

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    for file in std::fs::read_dir(dir).expect("src/http") {
        let file = file.expect("entry").path();
        let source = std::fs::read_to_string(&file).expect("read");
        assert!(
            !source.contains(".route(") && !source.contains(".nest("),
            "{} registers a route outside the documented router",
            file.display()
        );
    }
}

/// The series of the exporters the compose stack runs (postgres-exporter 0.15 with its
/// default collectors, redis_exporter 1.62) that the dashboards and rules use, as those
/// exporters name them.
const EXPORTER_METRICS: &[&str] = &[
    "pg_up",
    "pg_stat_activity_count",
    "pg_settings_max_connections",
    "pg_stat_database_xact_commit",
    "pg_stat_database_xact_rollback",
    "pg_stat_database_deadlocks",
    "pg_database_size_bytes",
    "pg_locks_count",
    "redis_up",
    "redis_memory_used_bytes",
    "redis_memory_max_bytes",
    "redis_commands_processed_total",
    "redis_connected_clients",
    "redis_rejected_connections_total",
    "redis_keyspace_hits_total",
    "redis_keyspace_misses_total",
    "redis_db_keys",
    "redis_evicted_keys_total",
];

/// Every metric the dashboards and the alerting and recording rules query is one the running
/// server exports (or a recording rule defined next to them, or an exporter's series), and
/// every dashboard has the `backend` and `instance` variables.
#[tokio::test]
async fn dashboards_and_rules_query_only_exported_metrics() {
    let app = spawn_app(Backend::Sqlite).await;
    let (client, login) = app.logged_in().await;
    app.refresh(&client, &login.str("refresh_token")).await;
    let text = scrape(&app).await;
    let mut exported: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .flat_map(|name| ["", "_bucket", "_sum", "_count"].map(|suffix| format!("{name}{suffix}")))
        .collect();
    exported.insert("up".into());

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("monitoring");
    let mut expressions = Vec::new();
    let mut recorded = std::collections::BTreeSet::new();
    for file in std::fs::read_dir(root.join("rules")).expect("rules") {
        let source = std::fs::read_to_string(file.expect("entry").path()).expect("read");
        // Expressions: `expr: ...` on one line, or `expr: |` and the more-indented lines after.
        let mut block: Option<(usize, String)> = None;
        for line in source.lines() {
            let indent = line.len() - line.trim_start().len();
            if let Some((depth, text)) = block.take() {
                if indent > depth && !line.trim().is_empty() {
                    block = Some((depth, text + " " + line.trim()));
                    continue;
                }
                expressions.push(text);
            }
            let trimmed = line.trim();
            if let Some(name) = trimmed.strip_prefix("- record: ") {
                recorded.insert(name.trim().to_owned());
            } else if let Some(expr) = trimmed.strip_prefix("expr:") {
                match expr.trim() {
                    "|" | ">" => block = Some((indent, String::new())),
                    one => expressions.push(one.to_owned()),
                }
            }
        }
        if let Some((_, text)) = block {
            expressions.push(text);
        }
    }
    let mut dashboards = 0;
    for file in std::fs::read_dir(root.join("dashboards")).expect("dashboards") {
        let board: Value = serde_json::from_str(
            &std::fs::read_to_string(file.expect("entry").path()).expect("read"),
        )
        .expect("dashboard json");
        dashboards += 1;
        let variables: Vec<&str> = board["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(variables, ["backend", "instance"], "{}", board["title"]);
        for panel in board["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                expressions.push(target["expr"].as_str().expect("expr").to_owned());
            }
        }
    }
    assert_eq!(dashboards, 5);
    let mut checked = 0;
    for expr in &expressions {
        let mut token = String::new();
        for c in expr.chars().chain([' ']) {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                token.push(c);
                continue;
            }
            let name = std::mem::take(&mut token);
            if name.contains(':') && !name.starts_with(':') {
                assert!(recorded.contains(&name), "{name} is not a recording rule");
                checked += 1;
            } else if name.starts_with("atoms_auth_") || name.starts_with("process_") {
                assert!(exported.contains(&name), "{name} is queried but not exported");
                checked += 1;
            } else if name.starts_with("pg_") || name.starts_with("redis_") {
                assert!(EXPORTER_METRICS.contains(&name.as_str()), "{name}: not an exporter's");
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} metric references found");
}
