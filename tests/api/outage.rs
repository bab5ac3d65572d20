//! The database goes away under load: a PostgreSQL and a Redis of the test's own (own port,
//! own data folder) are stopped for 10 s and started again while clients refresh and
//! introspect through a server process. Requests answer 503 in time, health says so, the
//! server recovers on its own within 5 s of the database's return, and nothing that was
//! answered 200 is lost.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cluster::PASSWORD;
use crate::helpers::{TestClient, free_port};

/// How long the database stays away.
const OUTAGE: Duration = Duration::from_secs(10);
/// The server's storage timeout and request timeout here.
const STORAGE_TIMEOUT_SECS: u64 = 2;
const REQUEST_TIMEOUT_SECS: u64 = 5;

/// A database server the test starts, stops and starts again.
trait Database: Send + Sync {
    fn url(&self) -> String;
    fn start(&self);
    fn stop(&self);
}

/// A PostgreSQL cluster in a folder of its own, run as the `postgres` user when the test runs
/// as root (PostgreSQL refuses root).
struct OwnPostgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
    _folder: tempfile::TempDir,
}

fn as_postgres(bin: &Path, program: &str) -> Command {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    let path = bin.join(program);
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    }
}

impl OwnPostgres {
    fn create() -> Self {
        let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL is installed");
        let mut bins: Vec<PathBuf> =
            versions.filter_map(|v| v.ok()).map(|v| v.path().join("bin")).collect();
        bins.sort();
        let bin = bins.pop().expect("a PostgreSQL version");
        let folder = tempfile::tempdir().expect("dir");
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o777);
        std::fs::set_permissions(folder.path(), mode).expect("chmod");
        let dir = folder.path().join("data");
        let status = as_postgres(&bin, "initdb")
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&dir)
            .stdout(Stdio::null())
            .status()
            .expect("initdb");
        assert!(status.success(), "initdb failed");
        let db = Self { dir, port: free_port(), bin, _folder: folder };
        db.start();
        db
    }
}

impl Database for OwnPostgres {
    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=50",
            self.port,
            self.dir.display()
        );
        let status = as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .arg("-D")
            .arg(&self.dir)
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl start");
        assert!(status.success(), "pg_ctl start failed");
    }

    /// As a crash would: no shutdown checkpoint, recovery from the write-ahead log at start.
    fn stop(&self) {
        let status = as_postgres(&self.bin, "pg_ctl")
            .args(["-w", "-m", "immediate", "-D"])
            .arg(&self.dir)
            .arg("stop")
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl stop");
        assert!(status.success(), "pg_ctl stop failed");
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(&self.dir)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A Redis of its own that writes every change to its append-only file before answering
/// (`appendfsync always`), so a stop loses nothing it acknowledged.
struct OwnRedis {
    port: u16,
    folder: tempfile::TempDir,
    child: Mutex<Option<std::process::Child>>,
}

impl OwnRedis {
    fn create() -> Self {
        let db = Self {
            port: free_port(),
            folder: tempfile::tempdir().expect("dir"),
            child: Mutex::new(None),
        };
        db.start();
        db
    }
}

impl Database for OwnRedis {
    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn start(&self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(self.folder.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        *self.child.lock().expect("lock") = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One answer the clients got.
#[derive(Debug, Clone)]
struct Seen {
    status: u16,
    took: Duration,
    error: String,
    content_type: String,
}

/// What the clients saw, and the tokens they hold (each answered 200).
#[derive(Default)]
struct Log {
    seen: Vec<(Instant, Seen)>,
}

async fn post(
    http: &reqwest::Client,
    base: &str,
    client: &TestClient,
    path: &str,
    form: &[(&str, &str)],
) -> (Seen, serde_json::Value) {
    let started = Instant::now();
    let sent = http
        .post(format!("{base}{path}"))
        .basic_auth(&client.id, client.secret.as_deref())
        .form(form)
        .send()
        .await;
    let Ok(response) = sent else {
        let seen = Seen {
            status: 0,
            took: started.elapsed(),
            error: "no answer".into(),
            content_type: String::new(),
        };
        return (seen, serde_json::Value::Null);
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let error = body["error"].as_str().unwrap_or_default().to_owned();
    (Seen { status, took: started.elapsed(), error, content_type }, body)
}

async fn the_database_goes_away_and_comes_back(db: Arc<dyn Database>) {
    // The schema, a user and a client, before the server starts.
    let mut config = atoms_auth::config::Config::default();
    config.storage.database_url = db.url().into();
    config.storage.redis_key_prefix = "outage".into();
    let storage = atoms_auth::open_storage(&config).await.expect("storage");
    storage.migrate_up().await.expect("migrate");
    let client = crate::cluster::seed_storage(storage.as_ref()).await;
    drop(storage);

    let port = free_port();
    let _server = tokio::process::Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
        .env("ATOMS_AUTH_DATABASE_URL", db.url())
        .env("ATOMS_AUTH_REDIS_KEY_PREFIX", "outage")
        .env("ATOMS_AUTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATOMS_AUTH_STORAGE_TIMEOUT_SECS", STORAGE_TIMEOUT_SECS.to_string())
        .env("ATOMS_AUTH_REQUEST_TIMEOUT_SECS", REQUEST_TIMEOUT_SECS.to_string())
        .env("ATOMS_AUTH_DATABASE_POOL_SIZE", "8")
        .env("ATOMS_AUTH_LOG", "error")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn atoms-auth");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("http");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(Instant::now() < deadline, "the server did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Four clients, each refreshing its own session and introspecting its access token in
    // a loop, keeping every token answered 200.
    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let login = [("grant_type", "password"), ("username", "carol"), ("password", PASSWORD)];
        let (seen, body) = post(&http, &base, &client, "/auth/token", &login).await;
        assert_eq!(seen.status, 200, "{body}");
        let (http, base, client, log, stop) =
            (http.clone(), base.clone(), client.clone(), log.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
            let mut answered: Vec<String> =
                vec![body["access_token"].as_str().expect("access").to_owned()];
            let mut requests = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && requests < 5_000 {
                requests += 1;
                let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
                let (seen, body) = post(&http, &base, &client, "/auth/token", &form).await;
                if seen.status == 200 {
                    refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
                    answered.push(body["access_token"].as_str().expect("access").to_owned());
                }
                log.lock().expect("lock").seen.push((Instant::now(), seen));
                let access = answered.last().expect("a token").clone();
                let (seen, _) =
                    post(&http, &base, &client, "/auth/introspect", &[("token", access.as_str())])
                        .await;
                log.lock().expect("lock").seen.push((Instant::now(), seen));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (refresh, answered)
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    let down = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.stop()).await.expect("stop");
        Instant::now()
    };
    // During the outage, health says so.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let health = http.get(format!("{base}/health")).send().await.expect("health");
    assert_eq!(health.status(), 503);
    let health: serde_json::Value = health.json().await.expect("json");
    assert_eq!(health["checks"]["storage"]["status"], "unhealthy", "{health}");
    let ready = http.get(format!("{base}/health/ready")).send().await.expect("ready");
    assert_eq!(ready.status(), 503);
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    let up = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || db.start()).await.expect("start");
        Instant::now()
    };
    // Back within 5 s, without a restart.
    let recovered = loop {
        let ready = http.get(format!("{base}/health/ready")).send().await;
        let ok = ready.is_ok_and(|r| r.status() == 200)
            && log.lock().expect("lock").seen.iter().any(|(at, s)| *at > up && s.status == 200);
        if ok {
            break up.elapsed();
        }
        assert!(
            up.elapsed() < Duration::from_secs(15),
            "no recovery 15 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut chains = Vec::new();
    for worker in workers {
        chains.push(worker.await.expect("worker"));
    }

    let seen = std::mem::take(&mut log.lock().expect("lock").seen);
    let during: Vec<&Seen> =
        seen.iter().filter(|(at, _)| *at > down && *at < up).map(|(_, s)| s).collect();
    let refused = during.iter().filter(|s| s.status != 200).count();
    let slowest = during.iter().map(|s| s.took).max().unwrap_or_default();
    eprintln!(
        "outage: {} requests, {} during the outage ({} refused, the slowest in {:?}), \
         recovered {:?} after the database came back",
        seen.len(),
        during.len(),
        refused,
        slowest,
        recovered
    );
    assert!(recovered <= Duration::from_secs(5), "recovered only after {recovered:?}");
    assert!(refused > 0, "the outage was not seen");
    for (_, s) in &seen {
        assert!(s.status != 0, "a request got no answer: {s:?}");
        assert!(s.status != 500, "a 500 during the outage: {s:?}");
        // The storage timeout bounds each wait for the database (a request makes a few), and
        // the request timeout bounds the whole answer, however busy the machine is.
        assert!(s.took <= Duration::from_secs(REQUEST_TIMEOUT_SECS + 1), "too slow: {s:?}");
        if s.status == 503 {
            let oauth = s.error == "temporarily_unavailable"
                && s.content_type.starts_with("application/json");
            let problem = s.content_type.starts_with("application/problem+json");
            assert!(oauth || problem, "a 503 that says neither: {s:?}");
        } else {
            assert!(s.status == 200, "unexpected answer: {s:?}");
        }
    }
    // Nothing answered 200 is lost: each chain's last refresh token works, and every access
    // token answered is still active.
    for (refresh, answered) in chains {
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
        let (seen, body) = post(&http, &base, &client, "/auth/token", &form).await;
        assert_eq!(seen.status, 200, "the last token answered no longer works: {body}");
        for access in answered.iter().rev().take(20) {
            let (_, seen) =
                post(&http, &base, &client, "/auth/introspect", &[("token", access)]).await;
            assert_eq!(seen["active"], true, "an access token answered 200 was lost");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_goes_away_for_ten_seconds() {
    the_database_goes_away_and_comes_back(Arc::new(OwnPostgres::create())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_goes_away_for_ten_seconds() {
    the_database_goes_away_and_comes_back(Arc::new(OwnRedis::create())).await;
}
