//! The load benchmark: starts atoms-auth (the release binary next to this one) on a chosen
//! backend, or targets a running server, seeds users, clients and sessions through the
//! storage layer, then runs each scenario closed-loop (C connections for D seconds after a
//! warm-up) or open-loop (a fixed offered rate), and reports requests per second, errors,
//! latency percentiles and the server's peak RSS, as a table and as JSON. It also measures
//! the storage floor (the bare storage operation behind each hot path, in a loop without HTTP
//! or JWT) and, on request, the cost at 10 thousand and 1 million stored sessions.
//!
//! ```sh
//! cargo build --release --workspace --bins && target/release/bench --backend sqlite
//! ```

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use atoms_auth::clock::{Clock, SystemClock};
use atoms_auth::domain::secrets::{Secret, hash_password};
use atoms_auth::storage::{
    self, BrowserSession, BulkImport, Client, ConnectOptions, Device, ImportedSession, Rotation,
    RotationOutcome, Session, Storage, User,
};
use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use uuid::Uuid;

const PASSWORD: &str = "bench password 1";
const DAY_MS: i64 = 24 * 3600 * 1000;
/// The password hash of users the runs never log in as (a well-formed, unmatchable hash).
const SEEDED_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$x$y";
/// Pause between a bulk seeding and the runs measured on it.
const SETTLE_SECS: u64 = 10;

#[derive(Parser, Clone)]
#[command(about = "Load benchmark for atoms-auth")]
struct Args {
    /// sqlite, postgres or redis: the server is started on a fresh database of it.
    #[arg(long, default_value = "sqlite")]
    backend: String,
    /// Storage URL (default: a fresh SQLite file, PostgreSQL schema or Redis prefix).
    #[arg(long)]
    database_url: Option<String>,
    /// Target a running server instead of starting one (seeding still uses --database-url).
    #[arg(long)]
    url: Option<String>,
    /// Scenarios, comma separated.
    #[arg(
        long,
        default_value = "refresh,client_credentials,introspect,sessions,authorization_code,password,health,metrics"
    )]
    scenarios: String,
    /// Connections of the closed loop.
    #[arg(short, long, default_value_t = 64)]
    connections: usize,
    /// Measured seconds per run.
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Also run each listed scenario open-loop at this many requests per second.
    #[arg(long)]
    rate: Option<u32>,
    /// Scenarios run open-loop at --rate.
    #[arg(long, default_value = "refresh")]
    open_scenarios: String,
    /// Run the open-loop scenarios at once (a mixed load, each at --rate) instead of one
    /// after another.
    #[arg(long)]
    mixed: bool,
    /// Skip the storage floor.
    #[arg(long)]
    no_floor: bool,
    /// Stored-session counts for the scale run (e.g. 10000,1000000); none by default.
    #[arg(long)]
    scale: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Keep the database this run created (it is removed by default).
    #[arg(long)]
    keep: bool,
    /// Measure what the audit log costs: run each --audit-scenarios scenario this many
    /// rounds against the server and against a second one on the same database that writes
    /// no audit records, alternating, and compare the medians.
    #[arg(long)]
    audit_ab: Option<u32>,
    /// Scenarios of the audit comparison.
    #[arg(long, default_value = "client_credentials,refresh")]
    audit_scenarios: String,
}

/// One measured run.
#[derive(Debug, Clone, serde::Serialize)]
struct Report {
    scenario: String,
    mode: String,
    connections: usize,
    offered_rps: Option<u32>,
    requests: u64,
    errors: u64,
    rps: f64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// CPU time per request over the measured seconds, where it could be read.
    cpu_us_per_request: Option<CpuPerRequest>,
}

/// Microseconds of CPU (user and system) per request: the server process, the database's
/// processes (none for SQLite, which runs inside the server) and the whole machine,
/// load generator included.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct CpuPerRequest {
    server: f64,
    database: f64,
    machine: f64,
}

/// Linux reports process and machine CPU time in ticks of 1/100 s (USER_HZ).
const TICK_US: f64 = 10_000.0;

/// Whose CPU time a run reads from /proc.
#[derive(Clone, Default)]
struct Processes {
    server: Option<u32>,
    /// The process name of the database server (`postgres`, `redis-server`).
    database: Option<&'static str>,
}

/// CPU ticks used so far, per process, and the machine's busy ticks.
struct CpuSample {
    server: u64,
    database: HashMap<u32, u64>,
    machine: u64,
}

/// User plus system ticks of one process (fields 14 and 15 of /proc/PID/stat, counted
/// after the parenthesised name, which may itself hold spaces).
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Every tick of the first line of /proc/stat except idle and I/O wait.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> =
        stat.lines().next()?.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    Some(ticks.iter().sum::<u64>() - ticks.get(3)? - ticks.get(4)?)
}

impl Processes {
    fn sample(&self) -> Option<CpuSample> {
        let mut database = HashMap::new();
        if let Some(name) = self.database {
            for entry in std::fs::read_dir("/proc").ok()?.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
                if comm.trim_end() == name {
                    database.extend(process_ticks(pid).map(|t| (pid, t)));
                }
            }
        }
        let server = self.server.map_or(Some(0), process_ticks)?;
        Some(CpuSample { server, database, machine: machine_busy_ticks()? })
    }
}

impl CpuSample {
    /// What was used between `self` and `later`, per request. A database process that
    /// started in between (a new connection) counts from zero.
    fn per_request(&self, later: &CpuSample, requests: u64) -> Option<CpuPerRequest> {
        let per = |ticks: u64| tenths(ticks as f64 * TICK_US / requests as f64);
        let database = later
            .database
            .iter()
            .map(|(pid, t)| t.saturating_sub(self.database.get(pid).copied().unwrap_or(0)))
            .sum();
        (requests > 0).then(|| CpuPerRequest {
            server: per(later.server.saturating_sub(self.server)),
            database: per(database),
            machine: per(later.machine.saturating_sub(self.machine)),
        })
    }
}

fn report(
    scenario: &str,
    mode: &str,
    connections: usize,
    offered: Option<u32>,
    seconds: f64,
    mut lat: Vec<u64>,
    errors: u64,
) -> Report {
    lat.sort_unstable();
    let pct = |p: f64| {
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len().max(1)) - 1;
        lat.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    Report {
        scenario: scenario.to_owned(),
        mode: mode.to_owned(),
        connections,
        offered_rps: offered,
        requests: lat.len() as u64,
        errors,
        rps: (lat.len() as f64 / seconds).round(),
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        cpu_us_per_request: None,
    }
}

/// What the scenarios need, seeded before they run.
#[derive(Clone)]
struct Fixture {
    base: String,
    client_id: String,
    client_secret: String,
    /// Users with the bench password, for the password scenario.
    usernames: Vec<String>,
    /// A user access token, for introspection and the sessions listing.
    access_token: String,
    /// Refresh-token chains, one per worker (a chain is always used by one request at once).
    chains: Arc<Mutex<VecDeque<String>>>,
    /// The browser client of the authorization_code scenario, and the session cookies of
    /// its signed-in browsers, one per password user.
    browser_client_id: String,
    browser_cookies: Vec<String>,
    /// A client that follows no redirect, as an application's browser hands the redirect on.
    no_redirects: reqwest::Client,
    /// The processes that serve the requests, for their CPU time.
    processes: Processes,
}

/// The storage URL of a fresh database for `backend`, and the Redis prefix.
async fn fresh_database(backend: &str) -> anyhow::Result<(String, String)> {
    let id = Uuid::new_v4().simple().to_string();
    Ok(match backend {
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("atoms-bench-{id}"));
            std::fs::create_dir_all(&dir)?;
            (format!("sqlite://{}/bench.db?mode=rwc", dir.display()), String::new())
        }
        "postgres" => {
            let base = std::env::var("ATOMS_AUTH_BENCH_POSTGRES_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
            let pool = sqlx::PgPool::connect(&base).await?;
            let schema = format!("bench_{id}");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                .execute(&pool)
                .await?;
            let join = if base.contains('?') { '&' } else { '?' };
            (format!("{base}{join}options[search_path]={schema}"), String::new())
        }
        "redis" => (
            std::env::var("ATOMS_AUTH_BENCH_REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
            format!("bench:{id}"),
        ),
        other => return Err(anyhow!("unknown backend {other}")),
    })
}

fn new_session(user_id: &str, client_id: &str, now: i64) -> (Session, Device) {
    let session = Session {
        id: Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        client_id: client_id.to_owned(),
        scope: "read".into(),
        created_at: now,
        last_used_at: now,
        idle_expires_at: now + 7 * DAY_MS,
        expires_at: now + 30 * DAY_MS,
        ip: Some("192.0.2.10".into()),
        user_agent: Some("bench/1.0".into()),
        revoked_at: None,
        revoke_reason: None,
        device_id: None,
        access_jti: None,
        resource: None,
    };
    let device = Device {
        id: Uuid::now_v7().to_string(),
        user_id: user_id.to_owned(),
        fingerprint: format!("bench-{}", session.id),
        name: "bench".into(),
        platform: Some("Linux".into()),
        user_agent: Some("bench/1.0".into()),
        last_ip: Some("192.0.2.10".into()),
        first_seen_at: now,
        last_seen_at: now,
        trusted: false,
    };
    (session, device)
}

/// A member user named `username` with the password hash `password_hash`.
fn member(username: String, password_hash: &str, now: i64) -> User {
    User {
        id: Uuid::now_v7().to_string(),
        username,
        password_hash: password_hash.to_owned(),
        created_at: now,
        disabled: false,
        role: "member".into(),
    }
}

/// Stores `count` sessions (ten per user, the per-user limit) through the storage's bulk
/// import, 10,000 at a time; returns one refresh token per session.
async fn seed_sessions(
    import: &Arc<dyn BulkImport>,
    client_id: &str,
    password_hash: &str,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    const CHUNK: usize = 10_000;
    let now = SystemClock.now_ms();
    let mut tokens = Vec::with_capacity(count);
    while tokens.len() < count {
        let n = (count - tokens.len()).min(CHUNK);
        let users: Vec<User> = (0..n.div_ceil(10))
            .map(|_| member(format!("u-{}", Uuid::new_v4().simple()), password_hash, now))
            .collect();
        let sessions: Vec<ImportedSession> = (0..n)
            .map(|i| {
                let (session, device) = new_session(&users[i / 10].id, client_id, now);
                let token = Secret::generate();
                tokens.push(token.expose().to_owned());
                ImportedSession { session, device, refresh_hash: token.sha256().to_vec() }
            })
            .collect();
        import.import_sessions(&users, &sessions).await?;
    }
    Ok(tokens)
}

/// The server process this run started, if any.
struct Server {
    child: tokio::process::Child,
    pid: u32,
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

async fn start_server(
    database_url: &str,
    prefix: &str,
    env: &[(&str, String)],
) -> anyhow::Result<(Server, String)> {
    let exe = std::env::current_exe()?.with_file_name("atoms-auth");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = tokio::process::Command::new(&exe)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("ATOMS_AUTH_DATABASE_URL", database_url)
        .env("ATOMS_AUTH_REDIS_KEY_PREFIX", prefix)
        .env("ATOMS_AUTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATOMS_AUTH_LOG", "warn")
        // The benchmark is one client from one address: limits would measure themselves.
        .env("ATOMS_AUTH_RATE_LIMIT_CLIENT_PER_SEC", "0")
        .env("ATOMS_AUTH_RATE_LIMIT_IP_PER_SEC", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it with cargo build --release --workspace --bins)",
                exe.display()
            )
        })?;
    let pid = child.id().ok_or_else(|| anyhow!("no pid"))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok((Server { child, pid }, base));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow!("the server did not become ready"))
}

async fn seed(
    args: &Args,
    base: String,
    processes: Processes,
    storage: Arc<dyn Storage>,
    import: &Arc<dyn BulkImport>,
) -> anyhow::Result<Fixture> {
    let secret = Secret::generate();
    let client = Client {
        client_id: format!("bench-{}", Uuid::new_v4().simple()),
        name: "bench".into(),
        secret_hash: Some(secret.sha256_hex()),
        grant_types: "password refresh_token client_credentials".into(),
        scopes: "read account".into(),
        created_at: SystemClock.now_ms(),
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: String::new(),
        skip_consent: false,
        registered: false,
        last_used_at: None,
        metadata_document: false,
    };
    storage.create_client(&client).await?;
    let password_hash = hash_password(PASSWORD.into()).await?;
    // One user more than the password scenario logs in: the fixture's access token belongs
    // to it, so logins past the per-user session limit never evict that token's session.
    let now = SystemClock.now_ms();
    let users: Vec<User> = (0..=args.connections.max(1))
        .map(|i| member(format!("bench-{i}-{}", Uuid::new_v4().simple()), &password_hash, now))
        .collect();
    import.import_sessions(&users, &[]).await?;
    let users_by_name: HashMap<String, String> =
        users.iter().map(|u| (u.username.clone(), u.id.clone())).collect();
    let mut usernames: Vec<String> = users.into_iter().map(|u| u.username).collect();
    let chains =
        seed_sessions(import, &client.client_id, &password_hash, args.connections.max(256)).await?;
    let token_user = usernames.pop().ok_or_else(|| anyhow!("no users"))?;
    let (browser_client_id, browser_cookies) =
        seed_browsers(&storage, &users_by_name, &usernames).await?;
    let http = reqwest::Client::new();
    let login: Value = http
        .post(format!("{base}/auth/token"))
        .basic_auth(&client.client_id, Some(secret.expose()))
        .form(&[
            ("grant_type", "password"),
            ("username", token_user.as_str()),
            ("password", PASSWORD),
        ])
        .send()
        .await?
        .json()
        .await?;
    let access_token =
        login["access_token"].as_str().ok_or_else(|| anyhow!("login failed: {login}"))?.to_owned();
    Ok(Fixture {
        base,
        client_id: client.client_id,
        client_secret: secret.expose().to_owned(),
        usernames,
        access_token,
        chains: Arc::new(Mutex::new(chains.into())),
        browser_client_id,
        browser_cookies,
        no_redirects: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(args.connections.max(256))
            .build()?,
        processes,
    })
}

/// The PKCE verifier of every authorization in the authorization_code scenario.
const VERIFIER: &str = "bench-verifier-bench-verifier-bench-verifier-0123";
const REDIRECT_URI: &str = "http://127.0.0.1/callback";

/// A public browser client, and for each password user a browser signed in as them, who
/// allowed the client the scope `read` before: each authorization then skips the password
/// and the consent, as a returning user's does. Returns the client id and the cookies.
async fn seed_browsers(
    storage: &Arc<dyn Storage>,
    ids: &HashMap<String, String>,
    usernames: &[String],
) -> anyhow::Result<(String, Vec<String>)> {
    let client = Client {
        client_id: format!("bench-web-{}", Uuid::new_v4().simple()),
        name: "bench browser client".into(),
        secret_hash: None,
        grant_types: "authorization_code refresh_token".into(),
        scopes: "read".into(),
        created_at: SystemClock.now_ms(),
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: REDIRECT_URI.into(),
        skip_consent: false,
        registered: false,
        last_used_at: None,
        metadata_document: false,
    };
    storage.create_client(&client).await?;
    let now = SystemClock.now_ms();
    let mut cookies = Vec::with_capacity(usernames.len());
    for user in usernames.iter().filter_map(|name| ids.get(name)) {
        let user_id = atoms_auth::ids::UserId::new(user);
        storage.save_consent(user_id, &client.client_id, "read", now).await?;
        let cookie = Secret::generate();
        let session = BrowserSession {
            hash: cookie.sha256().to_vec(),
            user_id: user.clone(),
            created_at: now,
            idle_expires_at: now + DAY_MS,
            expires_at: now + DAY_MS,
            ip: None,
            user_agent: None,
        };
        storage.create_browser_session(&session).await?;
        cookies.push(cookie.expose().to_owned());
    }
    if cookies.is_empty() {
        return Err(anyhow!("no users"));
    }
    Ok((client.client_id, cookies))
}

/// One authorization by a signed-in browser and the exchange of its code.
async fn authorize_and_exchange(f: &Fixture, n: usize) -> anyhow::Result<bool> {
    let challenge = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(VERIFIER.as_bytes()))
    };
    let query = [
        ("response_type", "code"),
        ("client_id", f.browser_client_id.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("scope", "read"),
        ("state", "bench"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    // Both cookie names: the server's depends on whether its issuer is served over https.
    let browser = &f.browser_cookies[n % f.browser_cookies.len()];
    let cookie = format!("atoms-session={browser}; __Host-atoms-session={browser}");
    let url = url::Url::parse_with_params(&format!("{}/auth/authorize", f.base), &query)?;
    let redirect = f.no_redirects.get(url).header(reqwest::header::COOKIE, cookie).send().await?;
    let location = redirect.headers().get(reqwest::header::LOCATION).cloned();
    let _ = redirect.bytes().await?;
    let Some(location) = location.and_then(|l| url::Url::parse(l.to_str().ok()?).ok()) else {
        return Ok(false);
    };
    let Some(code) = location.query_pairs().find(|(k, _)| k == "code").map(|(_, v)| v.into_owned())
    else {
        return Ok(false);
    };
    let response = f
        .no_redirects
        .post(format!("{}/auth/token", f.base))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", f.browser_client_id.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await?;
    let ok = response.status().is_success();
    let _ = response.bytes().await?;
    Ok(ok)
}

/// One request of `scenario`; Ok(false) when the server answered an error.
async fn one(
    http: &reqwest::Client,
    f: &Fixture,
    scenario: &str,
    n: usize,
) -> anyhow::Result<bool> {
    let token_url = format!("{}/auth/token", f.base);
    let basic = |r: reqwest::RequestBuilder| r.basic_auth(&f.client_id, Some(&f.client_secret));
    let response = match scenario {
        "refresh" => {
            let Some(token) = f.chains.lock().await.pop_front() else {
                return Err(anyhow!("no free refresh chain"));
            };
            let response = basic(http.post(&token_url))
                .form(&[("grant_type", "refresh_token"), ("refresh_token", token.as_str())])
                .send()
                .await?;
            let ok = response.status().is_success();
            let body: Value = response.json().await.unwrap_or_default();
            let next = body["refresh_token"].as_str().map(str::to_owned);
            f.chains.lock().await.push_back(next.unwrap_or(token));
            return Ok(ok);
        }
        "client_credentials" => {
            basic(http.post(&token_url))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await?
        }
        "introspect" => {
            basic(http.post(format!("{}/auth/introspect", f.base)))
                .form(&[("token", f.access_token.as_str())])
                .send()
                .await?
        }
        "sessions" => {
            http.get(format!("{}/auth/sessions", f.base))
                .bearer_auth(&f.access_token)
                .send()
                .await?
        }
        "password" => {
            let user = &f.usernames[n % f.usernames.len()];
            basic(http.post(&token_url))
                .form(&[
                    ("grant_type", "password"),
                    ("username", user.as_str()),
                    ("password", PASSWORD),
                ])
                .send()
                .await?
        }
        "authorization_code" => return authorize_and_exchange(f, n).await,
        "health" => http.get(format!("{}/health", f.base)).send().await?,
        "metrics" => http.get(format!("{}/metrics", f.base)).send().await?,
        other => return Err(anyhow!("unknown scenario {other}")),
    };
    let ok = response.status().is_success();
    let _ = response.bytes().await?;
    Ok(ok)
}

async fn closed_loop(
    args: &Args,
    f: &Arc<Fixture>,
    http: &reqwest::Client,
    scenario: &str,
) -> Report {
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let processes = f.processes.clone();
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let first = processes.sample();
        tokio::time::sleep_until(end.into()).await;
        first.zip(processes.sample())
    });
    let workers: Vec<_> = (0..args.connections)
        .map(|w| {
            let (http, f, scenario) = (http.clone(), f.clone(), scenario.to_owned());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut n) = (Vec::new(), 0u64, w);
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let ok = one(&http, &f, &scenario, n).await.unwrap_or(false);
                    n += 1;
                    if sent >= measure_from {
                        lat.push(sent.elapsed().as_micros() as u64);
                        errors += u64::from(!ok);
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        if let Ok((l, e)) = w.await {
            lat.extend(l);
            errors += e;
        }
    }
    let mut row =
        report(scenario, "closed", args.connections, None, args.duration as f64, lat, errors);
    if let Ok(Some((first, last))) = cpu.await {
        row.cpu_us_per_request = first.per_request(&last, row.requests);
    }
    row
}

/// Requests sent at a fixed rate whatever the answers; each latency counts from when its
/// request was due, so a stall shows in the percentiles instead of slowing the sender.
async fn open_loop(
    args: &Args,
    f: &Arc<Fixture>,
    http: &reqwest::Client,
    scenario: &str,
    rate: u32,
) -> Report {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = u64::from(rate) * (args.duration + args.warmup);
    let warm = u64::from(rate) * args.warmup;
    let start = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..total {
        let due = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (http, f, scenario, tx) = (http.clone(), f.clone(), scenario.to_owned(), tx.clone());
        tokio::spawn(async move {
            let ok = one(&http, &f, &scenario, i as usize).await.unwrap_or(false);
            let _ = tx.send((i, due.elapsed().as_micros() as u64, ok));
        });
    }
    drop(tx);
    let (mut lat, mut errors) = (Vec::new(), 0);
    while let Some((i, micros, ok)) = rx.recv().await {
        if i >= warm {
            lat.push(micros);
            errors += u64::from(!ok);
        }
    }
    report(scenario, "open", 0, Some(rate), args.duration as f64, lat, errors)
}

/// The storage floor: the bare operation behind a hot path, `parallel` at a time.
async fn floor(
    storage: &Arc<dyn Storage>,
    client_id: &str,
    chains: Vec<String>,
    seconds: u64,
) -> anyhow::Result<f64> {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut rotations = tokio::task::JoinSet::new();
    for token in chains {
        let (storage, client_id) = (storage.clone(), client_id.to_owned());
        rotations.spawn(async move {
            let mut hash = Secret::from_client(token).sha256();
            // The imported token is of the format before: its session is looked up once, and
            // every later rotation names it, as the server's do.
            let found = storage.session_by_refresh(&hash, None).await?;
            let session_id = found.ok_or_else(|| anyhow!("an imported token is unknown"))?.0.id;
            let mut generation: Option<i64> = None;
            let mut done = 0u64;
            while Instant::now() < end {
                let next = Secret::generate().sha256();
                let new_generation = generation.unwrap_or(0) + 1;
                let rotation = Rotation {
                    session_id: &session_id,
                    presented_generation: generation,
                    presented_hash: &hash,
                    new_hash: &next,
                    new_generation,
                    client_id: &client_id,
                    now: SystemClock.now_ms(),
                    grace_ms: 300_000,
                    idle_timeout_ms: 7 * DAY_MS,
                    ip: Some("192.0.2.10"),
                    reuse_window_ms: 7 * DAY_MS,
                    new_jti: "bench",
                    superseded_until: 0,
                };
                match storage.rotate_refresh(&rotation).await? {
                    RotationOutcome::Rotated(_) => {
                        hash = next;
                        generation = Some(new_generation);
                    }
                    other => return Err(anyhow!("floor rotation: {other:?}")),
                }
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        });
    }
    per_second(rotations, seconds).await
}

/// The introspection lookup floor: one token state read per call.
async fn lookup_floor(
    storage: &Arc<dyn Storage>,
    session_id: &str,
    parallel: usize,
    seconds: u64,
) -> anyhow::Result<f64> {
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let (storage, sid) = (storage.clone(), session_id.to_owned());
        tasks.spawn(async move {
            let mut done = 0u64;
            let jti = Uuid::new_v4().to_string();
            while Instant::now() < end {
                storage.access_token_state(&jti, Some(&sid)).await?;
                done += 1;
            }
            Ok::<_, anyhow::Error>(done)
        });
    }
    per_second(tasks, seconds).await
}

/// A floor's operations per second, with the CPU time each cost (the bench process does the
/// server's part, so only the database's and the machine's columns say something).
async fn with_cpu(
    processes: &Processes,
    seconds: u64,
    floor: impl std::future::Future<Output = anyhow::Result<f64>>,
) -> anyhow::Result<(f64, Option<CpuPerRequest>)> {
    let first = processes.sample();
    let rate = floor.await?;
    let cpu = first
        .zip(processes.sample())
        .and_then(|(first, last)| first.per_request(&last, (rate * seconds as f64).round() as u64));
    Ok((rate, cpu))
}

/// Operations per second of loops that each return how many operations they did. The loops
/// are aborted if this is dropped.
async fn per_second(
    mut loops: tokio::task::JoinSet<anyhow::Result<u64>>,
    seconds: u64,
) -> anyhow::Result<f64> {
    let mut total = 0;
    while let Some(done) = loops.join_next().await {
        total += done??;
    }
    Ok(total as f64 / seconds as f64)
}

fn print_table(rows: &[Report]) {
    println!(
        "| scenario | mode | conns / offered | req/s | errors | p50 ms | p95 ms | p99 ms | max ms \
         | CPU µs/req: server / db / machine |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let load = r.offered_rps.map_or(r.connections.to_string(), |o| format!("{o}/s"));
        let cpu = r.cpu_us_per_request.map_or("-".into(), |c| {
            format!("{:.0} / {:.0} / {:.0}", c.server, c.database, c.machine)
        });
        println!(
            "| {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {cpu} |",
            r.scenario, r.mode, load, r.rps, r.errors, r.p50_ms, r.p95_ms, r.p99_ms, r.max_ms
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (database_url, prefix) = match &args.database_url {
        Some(url) => (url.clone(), format!("bench:{}", Uuid::new_v4().simple())),
        None => fresh_database(&args.backend).await?,
    };
    let options = ConnectOptions {
        pool_size: 16,
        redis_key_prefix: prefix.clone(),
        timeout: atoms_auth::storage::DEFAULT_TIMEOUT,
    };
    let storage = storage::connect(&database_url, &options).await?;
    let import = storage::connect_bulk_import(&database_url, &options).await?;
    // Dropping the run on Ctrl-C or SIGTERM stops its server (killed on drop) and aborts its
    // storage loops (held in join sets), so nothing writes while the database is removed.
    let result = tokio::select! {
        result = run(&args, &storage, &import, &database_url, &prefix) => result,
        () = atoms_auth::shutdown_signal() => Err(anyhow!("interrupted")),
    };
    // The importer's storage loops stop before the database goes.
    drop(import);
    // The run's database goes even when the run failed or was interrupted.
    if args.database_url.is_none() && !args.keep {
        eprintln!("removing the run's database");
        remove_database(&args.backend, &database_url, storage).await?;
    }
    result
}

/// Everything but creating and removing the database.
async fn run(
    args: &Args,
    storage: &Arc<dyn Storage>,
    import: &Arc<dyn BulkImport>,
    database_url: &str,
    prefix: &str,
) -> anyhow::Result<()> {
    storage.migrate_up().await?;
    let mut server = None;
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let (s, base) = start_server(database_url, prefix, &[]).await?;
            server = Some(s);
            base
        }
    };
    let idle_rss = server.as_ref().and_then(|s| rss_kib(s.pid, "VmRSS:"));
    eprintln!("seeding {} ...", args.backend);
    // Only a database on this machine shows its CPU time.
    let local =
        ["localhost", "127.0.0.1", "[::1]", "host=/"].iter().any(|h| database_url.contains(h));
    let processes = Processes {
        server: server.as_ref().map(|s| s.pid),
        database: match args.backend.as_str() {
            "postgres" if local => Some("postgres"),
            "redis" if local => Some("redis-server"),
            _ => None,
        },
    };
    let fixture = Arc::new(seed(args, base, processes, storage.clone(), import).await?);
    let http =
        reqwest::Client::builder().pool_max_idle_per_host(args.connections.max(256)).build()?;
    let mut rows = Vec::new();
    let mut peak_rss_by_scenario = serde_json::Map::new();
    for scenario in args.scenarios.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        eprintln!("{scenario}: closed loop, {} connections, {} s", args.connections, args.duration);
        let row = closed_loop(args, &fixture, &http, scenario).await;
        if let Some(s) = &server {
            peak_rss_by_scenario.insert(scenario.to_owned(), json!(rss_kib(s.pid, "VmHWM:")));
        }
        rows.push(row);
    }
    if let Some(rate) = args.rate {
        let open: Vec<&str> =
            args.open_scenarios.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
        if args.mixed {
            eprintln!(
                "{}: open loop at {rate}/s each, at once, {} s",
                open.join(", "),
                args.duration
            );
            let runs = open.iter().map(|scenario| open_loop(args, &fixture, &http, scenario, rate));
            rows.extend(futures::future::join_all(runs).await);
        } else {
            for scenario in open {
                eprintln!("{scenario}: open loop at {rate}/s, {} s", args.duration);
                rows.push(open_loop(args, &fixture, &http, scenario, rate).await);
            }
        }
    }
    let metrics_render_ms = render_time(&http, &fixture.base).await;

    let mut floors = json!(null);
    if !args.no_floor {
        eprintln!("storage floor: rotation and introspection lookup, {} s each", args.duration);
        let chains =
            seed_sessions(import, &fixture.client_id, SEEDED_HASH, args.connections).await?;
        let (seconds, processes) = (args.duration, &fixture.processes);
        let (rotations, rotation_cpu) =
            with_cpu(processes, seconds, floor(storage, &fixture.client_id, chains, seconds))
                .await?;
        let sid = introspected_session(&http, &fixture).await?;
        let (lookups, lookup_cpu) =
            with_cpu(processes, seconds, lookup_floor(storage, &sid, args.connections, seconds))
                .await?;
        floors = json!({
            "rotate_refresh_per_sec": rotations.round(),
            "access_token_state_per_sec": lookups.round(),
            "cpu_us_per_rotation": rotation_cpu,
            "cpu_us_per_lookup": lookup_cpu,
        });
    }

    let mut scale = Vec::new();
    if let Some(counts) = &args.scale {
        for count in counts.split(',').filter_map(|c| c.trim().parse::<usize>().ok()) {
            scale.push(scale_run(args, &fixture, storage, import, &http, count).await?);
        }
    }

    let peak_rss = server.as_ref().and_then(|s| rss_kib(s.pid, "VmHWM:"));
    let audit_ab = match args.audit_ab {
        Some(rounds) if server.is_some() => {
            Some(audit_comparison(args, &fixture, &http, database_url, prefix, rounds).await?)
        }
        Some(_) => return Err(anyhow!("--audit-ab starts its own servers: drop --url")),
        None => None,
    };
    println!(
        "\n## {} ({} cores)\n",
        args.backend,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_table(&rows);
    if !floors.is_null() {
        println!("\nstorage floor: {floors}");
        let refresh = rows.iter().find(|r| r.scenario == "refresh" && r.mode == "closed");
        if let (Some(r), Some(f)) = (refresh, floors["rotate_refresh_per_sec"].as_f64()) {
            println!("refresh over HTTP is {:.0}% of the rotation floor", 100.0 * r.rps / f);
            let http_cpu = r.cpu_us_per_request.map(|c| c.machine);
            if let (Some(h), Some(f)) =
                (http_cpu, floors["cpu_us_per_rotation"]["machine"].as_f64())
            {
                println!(
                    "machine CPU per refresh {h:.0} µs, per floor rotation {f:.0} µs: the HTTP \
                     part costs {:.0} µs",
                    h - f
                );
            }
        }
        let introspect = rows.iter().find(|r| r.scenario == "introspect");
        if let (Some(r), Some(f)) = (introspect, floors["access_token_state_per_sec"].as_f64()) {
            println!("introspection over HTTP is {:.0}% of the lookup floor", 100.0 * r.rps / f);
        }
    }
    for s in &scale {
        println!("scale: {s}");
    }
    if let Some(ab) = &audit_ab {
        println!("audit cost: {ab}");
    }
    println!("metrics render: {metrics_render_ms:?} ms (server-side mean)");
    println!("server RSS: idle {:?} KiB, peak {:?} KiB", idle_rss, peak_rss);
    let out = json!({
        "backend": args.backend,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "runs": rows,
        "storage_floor": floors,
        "scale": scale,
        "metrics_render_ms": metrics_render_ms,
        "audit_cost": audit_ab,
        "rss_kib": { "idle": idle_rss, "peak": peak_rss, "peak_after": peak_rss_by_scenario },
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)?;
    }
    if let Some(mut s) = server {
        let _ = s.child.kill().await;
    }
    Ok(())
}

/// Drops what [`fresh_database`] made: the SQLite folder, the PostgreSQL schema, or every
/// key of the Redis prefix.
async fn remove_database(
    backend: &str,
    url: &str,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<()> {
    match backend {
        "sqlite" => {
            let file = url.trim_start_matches("sqlite://").split('?').next().unwrap_or_default();
            if let Some(dir) = std::path::Path::new(file).parent() {
                std::fs::remove_dir_all(dir)?;
            }
        }
        "postgres" => {
            let (base, schema) = url
                .rsplit_once("options[search_path]=")
                .ok_or_else(|| anyhow!("no schema in {url}"))?;
            let pool = sqlx::PgPool::connect(base.trim_end_matches(['?', '&'])).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
                .execute(&pool)
                .await?;
        }
        _ => storage.migrate_down(usize::MAX).await?,
    }
    Ok(())
}

/// Measurements of one side of the audit comparison.
#[derive(Default)]
struct AuditRuns {
    rps: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    cpu: Vec<CpuPerRequest>,
}

impl AuditRuns {
    /// The median CPU per request of each kind of process.
    fn cpu(&self) -> Option<CpuPerRequest> {
        let of =
            |f: fn(&CpuPerRequest) -> f64| median(&mut self.cpu.iter().map(f).collect::<Vec<_>>());
        (!self.cpu.is_empty()).then(|| CpuPerRequest {
            server: of(|c| c.server),
            database: of(|c| c.database),
            machine: of(|c| c.machine),
        })
    }
}

/// Throughput with and without the audit log: `rounds` closed-loop runs of each scenario
/// against the fixture's server and against a second server on the same database that
/// excludes every event type, alternating which goes first so that drift cancels out. With
/// `--rate`, each round also runs open-loop at that rate, to compare the latency a request
/// sees below saturation.
async fn audit_comparison(
    args: &Args,
    f: &Arc<Fixture>,
    http: &reqwest::Client,
    database_url: &str,
    prefix: &str,
    rounds: u32,
) -> anyhow::Result<Value> {
    let all = atoms_auth::domain::audit::events::ALL.join(",");
    let (mut quiet, base) =
        start_server(database_url, prefix, &[("ATOMS_AUTH_AUDIT_EXCLUDE", all)]).await?;
    let processes = Processes { server: Some(quiet.pid), ..f.processes.clone() };
    let without = Arc::new(Fixture { base, processes, ..Fixture::clone(f) });
    let mut out = serde_json::Map::new();
    for scenario in args.audit_scenarios.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (mut on, mut off) = (AuditRuns::default(), AuditRuns::default());
        for round in 0..rounds {
            eprintln!("audit cost: {scenario}, round {} of {rounds}", round + 1);
            for audited in if round % 2 == 0 { [true, false] } else { [false, true] } {
                let (target, runs) = if audited { (f, &mut on) } else { (&without, &mut off) };
                let closed = closed_loop(args, target, http, scenario).await;
                runs.rps.push(closed.rps);
                runs.cpu.extend(closed.cpu_us_per_request);
                if let Some(rate) = args.rate {
                    let open = open_loop(args, target, http, scenario, rate).await;
                    runs.p50.push(open.p50_ms);
                    runs.p99.push(open.p99_ms);
                }
                // Lets the audited server's writer empty its queue before the next run.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let (rps_on, rps_off) = (median(&mut on.rps), median(&mut off.rps));
        let mut entry = json!({
            "rounds": rounds,
            "audited_rps": rps_on,
            "unaudited_rps": rps_off,
            "cost_percent": tenths((1.0 - rps_on / rps_off) * 100.0),
        });
        if let (Some(cpu_on), Some(cpu_off)) = (on.cpu(), off.cpu()) {
            // CPU per request is steadier than saturated throughput on a shared machine:
            // what one record costs the machine, whichever process pays it.
            entry["cpu_us_per_request"] = json!({
                "audited": cpu_on,
                "unaudited": cpu_off,
                "machine_cost_percent": tenths((cpu_on.machine / cpu_off.machine - 1.0) * 100.0),
            });
        }
        if let Some(rate) = args.rate {
            entry["open_loop"] = json!({
                "offered_rps": rate,
                "audited_p50_ms": median(&mut on.p50),
                "unaudited_p50_ms": median(&mut off.p50),
                "audited_p99_ms": median(&mut on.p99),
                "unaudited_p99_ms": median(&mut off.p99),
            });
        }
        out.insert(scenario.to_owned(), entry);
    }
    let _ = quiet.child.kill().await;
    Ok(Value::Object(out))
}

/// `x` rounded to one decimal.
fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The session id of the fixture's access token.
async fn introspected_session(http: &reqwest::Client, f: &Fixture) -> anyhow::Result<String> {
    let answer: Value = http
        .post(format!("{}/auth/introspect", f.base))
        .basic_auth(&f.client_id, Some(&f.client_secret))
        .form(&[("token", f.access_token.as_str())])
        .send()
        .await?
        .json()
        .await?;
    answer["sid"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no sid in {answer}"))
}

/// The server's mean time to render `/metrics`, from its own histogram.
async fn render_time(http: &reqwest::Client, base: &str) -> Option<f64> {
    let text = http.get(format!("{base}/metrics")).send().await.ok()?.text().await.ok()?;
    let value =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok());
    let (sum, count) = (
        value("atoms_auth_metrics_render_duration_seconds_sum")?,
        value("atoms_auth_metrics_render_duration_seconds_count")?,
    );
    (count > 0.0).then(|| (sum / count * 1e6).round() / 1e3)
}

/// Refresh and introspection with `count` sessions stored (seeded in parallel through the
/// storage layer), each run briefly closed-loop.
async fn scale_run(
    args: &Args,
    f: &Arc<Fixture>,
    storage: &Arc<dyn Storage>,
    import: &Arc<dyn BulkImport>,
    http: &reqwest::Client,
    count: usize,
) -> anyhow::Result<Value> {
    let stored = storage.count_active_sessions(SystemClock.now_ms()).await? as usize;
    if count > stored {
        eprintln!("scale: seeding {} sessions ...", count - stored);
        let started = Instant::now();
        seed_sessions(import, &f.client_id, SEEDED_HASH, count - stored).await?;
        eprintln!("scale: seeded in {:.0} s", started.elapsed().as_secs_f64());
        // Steady state, not the load's aftermath: Redis rehashes its grown key space and
        // SQLite checkpoints its write-ahead log in the background for a while.
        tokio::time::sleep(Duration::from_secs(SETTLE_SECS)).await;
    }
    let refresh = closed_loop(args, f, http, "refresh").await;
    let introspect = closed_loop(args, f, http, "introspect").await;
    Ok(json!({ "sessions": count, "refresh": refresh, "introspect": introspect }))
}
