//! The binary's subcommands, run as a newcomer would run them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::{Backend, TestDb, free_port, spawn_on};

fn atoms_auth(db: &TestDb, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
        .args(args)
        .env("ATOMS_AUTH_DATABASE_URL", &db.url)
        .env("ATOMS_AUTH_REDIS_KEY_PREFIX", &db.redis_prefix)
        .env("ATOMS_AUTH_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

async fn cli_walkthrough(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (ok, out, err) = atoms_auth(&db, &["migrate", "status"], None);
    assert!(ok && out.contains("pending"), "{out}{err}");
    let (ok, out, err) = atoms_auth(&db, &["migrate", "up"], None);
    assert!(ok && out.contains("applied") && !out.contains("pending"), "{out}{err}");
    let (ok, _, err) =
        atoms_auth(&db, &["users", "create", "--username", "carol"], Some("long enough pw\n"));
    assert!(ok, "{err}");
    let (ok, _, _) =
        atoms_auth(&db, &["users", "create", "--username", "carol"], Some("long enough pw\n"));
    assert!(!ok, "a second carol is refused");
    let (ok, out, err) = atoms_auth(
        &db,
        &[
            "clients",
            "create",
            "--name",
            "cli",
            "--grant-types",
            "password,refresh_token",
            "--scopes",
            "read",
        ],
        None,
    );
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let secret = created["client_secret"].as_str().expect("secret shown once").to_owned();
    let client_id = created["client_id"].as_str().expect("id").to_owned();
    let (ok, out, err) = atoms_auth(&db, &["keys", "rotate"], None);
    assert!(ok && out.contains("active_kid"), "{out}{err}");

    let config = db.config();
    let app = spawn_on(db, config.clone()).await;
    let client = crate::helpers::TestClient { id: client_id, secret: Some(secret) };
    let login = app.login(&client, "carol", "long enough pw").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let db = app.stop().await;

    // The client's lifecycle: disabled, enabled, re-keyed, deleted.
    let id = client.id.as_str();
    let (ok, out, err) = atoms_auth(&db, &["clients", "disable", id], None);
    assert!(ok && out.contains("\"disabled\":true"), "{out}{err}");
    let app = spawn_on(db, config.clone()).await;
    assert_eq!(app.login(&client, "carol", "long enough pw").await.status, 401);
    let db = app.stop().await;
    let (ok, _, err) = atoms_auth(&db, &["clients", "enable", id], None);
    assert!(ok, "{err}");
    let (ok, out, err) = atoms_auth(&db, &["clients", "rotate-secret", id], None);
    assert!(ok, "{err}");
    let rotated: serde_json::Value = serde_json::from_str(&out).expect("json");
    let new_secret = rotated["client_secret"].as_str().expect("new secret").to_owned();
    let app = spawn_on(db, config.clone()).await;
    assert_eq!(app.login(&client, "carol", "long enough pw").await.status, 401, "old secret");
    let renewed = crate::helpers::TestClient { id: client.id.clone(), secret: Some(new_secret) };
    assert_eq!(app.login(&renewed, "carol", "long enough pw").await.status, 200);
    let db = app.stop().await;
    let (ok, _, err) = atoms_auth(&db, &["clients", "delete", id], None);
    assert!(ok, "{err}");
    let (ok, _, _) = atoms_auth(&db, &["clients", "delete", id], None);
    assert!(!ok, "deleting it twice fails");

    // A browser client: redirect URIs and the first-party switch.
    let browser = |uris: &str| {
        let args = [
            "clients",
            "create",
            "--name",
            "desktop",
            "--public",
            "--grant-types",
            "authorization_code,refresh_token",
            "--redirect-uris",
            uris,
            "--skip-consent",
        ];
        atoms_auth(&db, &args, None)
    };
    let (ok, out, err) = browser("http://127.0.0.1/callback,com.example.notes:/cb");
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let uris = serde_json::json!(["http://127.0.0.1/callback", "com.example.notes:/cb"]);
    assert_eq!(created["redirect_uris"], uris);
    assert_eq!(created["skip_consent"], true);
    let (ok, _, err) = browser("http://notes.example/callback");
    assert!(!ok && err.contains("http is only for localhost"), "{err}");
    let (ok, _, err) = browser("");
    assert!(!ok && err.contains("at least one redirect URI"), "{err}");

    // Resources (MCP servers) tokens may be issued for.
    let mcp = "https://mcp.example.com/mcp";
    let create = ["resources", "create", "--uri", mcp, "--scopes", "notes:read,notes:write"];
    let (ok, out, err) = atoms_auth(&db, &create, None);
    assert!(ok && out.contains("notes:write"), "{out}{err}");
    let (ok, _, _) = atoms_auth(&db, &create, None);
    assert!(!ok, "a URI registers once");
    let fragment =
        ["resources", "create", "--uri", "https://mcp.example.com/mcp#x", "--scopes", "a"];
    let (ok, _, err) = atoms_auth(&db, &fragment, None);
    assert!(!ok && err.contains("fragment"), "{err}");
    let (ok, out, err) = atoms_auth(&db, &["resources", "list"], None);
    assert!(ok && out.contains(mcp), "{out}{err}");
    let (ok, _, err) = atoms_auth(&db, &["resources", "delete", "--uri", mcp], None);
    assert!(ok, "{err}");
    let (ok, _, _) = atoms_auth(&db, &["resources", "delete", "--uri", mcp], None);
    assert!(!ok, "deleting it twice fails");

    // Erasure: carol's sessions end, her account goes, her audit trail stays pseudonymous.
    let erase = ["users", "delete", "--username", "carol"];
    let (ok, out, err) = atoms_auth(&db, &erase, None);
    assert!(ok, "{err}");
    let erased: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(erased["pseudonym"].as_str().is_some_and(|p| p.starts_with("erased-")), "{out}");
    assert!(erased["ended_sessions"].as_u64().is_some_and(|n| n >= 1), "{out}");
    let (ok, _, err) = atoms_auth(&db, &erase, None);
    assert!(!ok && err.contains("no such user"), "{err}");

    let (ok, out, err) = atoms_auth(&db, &["migrate", "down"], None);
    assert!(ok && out.contains("pending"), "{out}{err}");
}

crate::backend_tests!(cli_walkthrough);

/// The server's JSON logs of a full login, refresh, introspection and revocation run (with
/// failures) hold none of the passwords, secrets or tokens, and every line of a request
/// carries its request id.
#[tokio::test]
async fn logs_hold_no_secret_and_carry_request_ids() {
    let db = TestDb::new(Backend::Sqlite).await;
    let password = "log-test password 81f3";
    let (ok, _, err) =
        atoms_auth(&db, &["users", "create", "--username", "dora"], Some(&format!("{password}\n")));
    assert!(ok, "{err}");
    let (ok, out, err) = atoms_auth(
        &db,
        &["clients", "create", "--name", "logs", "--grant-types", "password,refresh_token"],
        None,
    );
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let client_id = created["client_id"].as_str().expect("id").to_owned();
    let secret = created["client_secret"].as_str().expect("secret").to_owned();

    let served = serve_with(
        &db,
        &[
            ("ATOMS_AUTH_LOG", "debug"),
            ("ATOMS_AUTH_LOG_FORMAT", "json"),
            // No grace retry: presenting a used token is reuse at once.
            ("ATOMS_AUTH_REFRESH_GRACE_SECS", "0"),
        ],
        Stdio::piped(),
    )
    .await;
    let (mut server, base) = (served.child, served.base);
    let http = reqwest::Client::new();
    let post = |form: Vec<(&'static str, String)>, path: &'static str, id: &'static str| {
        http.post(format!("{base}{path}"))
            .basic_auth(&client_id, Some(&secret))
            .header("x-request-id", id)
            .form(&form)
            .send()
    };
    let json =
        |r: reqwest::Response| async move { r.json::<serde_json::Value>().await.expect("json") };
    let login = json(
        post(
            vec![
                ("grant_type", "password".into()),
                ("username", "dora".into()),
                ("password", password.into()),
            ],
            "/auth/token",
            "req-login",
        )
        .await
        .expect("login"),
    )
    .await;
    let access = login["access_token"].as_str().expect("access").to_owned();
    let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
    let wrong = post(
        vec![
            ("grant_type", "password".into()),
            ("username", "dora".into()),
            ("password", "wrong pw 1234".into()),
        ],
        "/auth/token",
        "req-wrong",
    )
    .await
    .expect("wrong");
    assert_eq!(wrong.status(), 400);
    let refreshed = json(
        post(
            vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh.clone())],
            "/auth/token",
            "req-refresh",
        )
        .await
        .expect("refresh"),
    )
    .await;
    let access2 = refreshed["access_token"].as_str().expect("access").to_owned();
    let refresh2 = refreshed["refresh_token"].as_str().expect("refresh").to_owned();
    // Presenting the used token again is reuse: logged as a warning, without the token.
    let reused = post(
        vec![("grant_type", "refresh_token".into()), ("refresh_token", refresh.clone())],
        "/auth/token",
        "req-reuse",
    )
    .await
    .expect("reuse");
    assert_eq!(reused.status(), 400);
    let introspected = post(vec![("token", access2.clone())], "/auth/introspect", "req-introspect")
        .await
        .expect("introspect");
    assert_eq!(introspected.status(), 200);
    let revoked =
        post(vec![("token", access.clone())], "/auth/revoke", "req-revoke").await.expect("revoke");
    assert_eq!(revoked.status(), 200);
    let bad_secret = http
        .post(format!("{base}/auth/token"))
        .basic_auth(&client_id, Some("not-the-secret-5521"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh2.as_str())])
        .send()
        .await
        .expect("bad secret");
    assert_eq!(bad_secret.status(), 401);

    #[cfg(unix)]
    {
        let pid = server.id().expect("pid");
        let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    }
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        let mut stderr = server.stderr.take().expect("stderr");
        let mut logs = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut logs).await.expect("read logs");
        let _ = server.wait().await;
        logs
    })
    .await
    .expect("the server stops on SIGTERM");

    let lines: Vec<serde_json::Value> = output
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    assert!(lines.len() > 10, "{output}");
    let secrets = [
        password,
        "wrong pw 1234",
        &secret,
        "not-the-secret-5521",
        &access,
        &access2,
        &refresh,
        &refresh2,
    ];
    for s in secrets {
        assert!(!output.contains(s), "a secret reached the logs: {s}");
        // Nor any part of it long enough to matter (a JWT's signature, say).
        for part in s.split('.').filter(|p| p.len() >= 16) {
            assert!(!output.contains(part), "part of a secret reached the logs: {part}");
        }
    }
    for id in ["req-login", "req-wrong", "req-refresh", "req-reuse", "req-introspect", "req-revoke"]
    {
        let of_request: Vec<_> = lines
            .iter()
            .filter(|l| l["span"]["request_id"] == id || l["spans"][0]["request_id"] == id)
            .collect();
        assert!(!of_request.is_empty(), "no log line carries {id}");
    }
    // Every line logged inside a request's span carries that request's id.
    for line in &lines {
        if let Some(spans) = line["spans"].as_array().filter(|s| !s.is_empty()) {
            assert!(spans[0]["request_id"].is_string(), "a request line without its id: {line}");
        }
    }
    assert!(output.contains("refresh token reuse detected"), "the reuse warning is logged");
}

/// The binary serving a test database.
struct Served {
    child: tokio::process::Child,
    base: String,
}

async fn serve(db: &TestDb) -> Served {
    serve_with(db, &[], Stdio::null()).await
}

/// The binary serving `db` on a free port, with extra settings, once it is ready.
async fn serve_with(db: &TestDb, env: &[(&str, &str)], stderr: Stdio) -> Served {
    let port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
        .env("ATOMS_AUTH_DATABASE_URL", &db.url)
        .env("ATOMS_AUTH_REDIS_KEY_PREFIX", &db.redis_prefix)
        .env("ATOMS_AUTH_LISTEN", format!("127.0.0.1:{port}"))
        .env("ATOMS_AUTH_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("spawn server");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
            return Served { child, base };
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the server did not become ready");
}

/// A user and a confidential password client made with the CLI: (client id, secret).
fn user_and_client(db: &TestDb, username: &str, password: &str) -> (String, String) {
    let (ok, _, err) = atoms_auth(
        db,
        &["users", "create", "--username", username],
        Some(&format!("{password}\n")),
    );
    assert!(ok, "{err}");
    let (ok, out, err) = atoms_auth(
        db,
        &[
            "clients",
            "create",
            "--name",
            "smoke",
            "--grant-types",
            "password,refresh_token",
            "--scopes",
            "openid profile account",
        ],
        None,
    );
    assert!(ok, "{err}");
    let created: serde_json::Value = serde_json::from_str(&out).expect("json");
    let id = created["client_id"].as_str().expect("id").to_owned();
    (id, created["client_secret"].as_str().expect("secret").to_owned())
}

fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("bash")
        .arg(format!("{root}/scripts/{name}"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run script");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// `scripts/smoke_test.sh` walks login, refresh, introspection, sessions, revocation, health
/// and metrics against a live server.
#[tokio::test]
async fn smoke_test_script_passes_against_a_live_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let (id, secret) = user_and_client(&db, "smoke", "smoke test password");
    let server = serve(&db).await;
    let env = [
        ("SMOKE_CLIENT_ID", id.as_str()),
        ("SMOKE_CLIENT_SECRET", secret.as_str()),
        ("SMOKE_USERNAME", "smoke"),
        ("SMOKE_PASSWORD", "smoke test password"),
    ];
    let (ok, out) = script("smoke_test.sh", &[&server.base], &env);
    assert!(ok && out.contains("smoke: OK"), "{out}");
    let (ok, out) = script("health_check.sh", &[&server.base], &[]);
    assert!(ok && out.contains("\"status\""), "{out}");
    let (ok, _) = script("health_check.sh", &["http://127.0.0.1:9"], &[]);
    assert!(!ok, "an unreachable server is not healthy");
    // The container health check: the binary asks /health/ready itself.
    let (ok, out, err) = atoms_auth(&db, &["health", "--url", &server.base], None);
    assert!(ok && out.trim() == "ready", "{out}{err}");
    let (ok, out, _) = atoms_auth(&db, &["health", "--url", "http://127.0.0.1:9"], None);
    assert!(!ok && out.trim() == "not ready", "{out}");
    drop(server.child);
}

/// Back up, wipe, restore: a refresh token issued before the backup still works after it, and
/// the audit log (on SQLite, a file of its own) still holds the login.
async fn backup_restore_round_trip(backend: Backend) {
    let db = TestDb::new(backend).await;
    let (id, secret) = user_and_client(&db, "keeper", "backup test password");
    let server = serve(&db).await;
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .post(format!("{}/auth/token", server.base))
        .basic_auth(&id, Some(&secret))
        .form(&[
            ("grant_type", "password"),
            ("username", "keeper"),
            ("password", "backup test password"),
        ])
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let refresh = login["refresh_token"].as_str().expect("refresh").to_owned();
    let logins = atoms_auth::storage::AuditQuery {
        event: Some("user.login.succeeded".into()),
        limit: 10,
        ..Default::default()
    };
    let logged = || async { db.storage().await.query_audit(&logins).await.expect("audit") };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut before = logged().await;
    while before.is_empty() {
        assert!(std::time::Instant::now() < deadline, "the login was never audited");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        before = logged().await;
    }
    let mut child = server.child;
    let _ = child.kill().await;

    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("backup.bin");
    let file = file.to_str().expect("path");
    let (ok, out) = script("backup.sh", &[&db.url, file], &[]);
    assert!(ok, "{out}");
    // Wipe: a fresh, empty database where the old one was.
    match backend {
        Backend::Sqlite => {
            let path = db.url.trim_start_matches("sqlite://").split('?').next().expect("path");
            let audit = atoms_auth::storage::sqlite::audit_file(std::path::Path::new(path));
            std::fs::remove_file(path).expect("wipe");
            std::fs::remove_file(audit).expect("wipe the audit log");
        }
        _ => {
            let storage = db.storage().await;
            storage.migrate_down(usize::MAX).await.expect("wipe");
        }
    }
    let (ok, out) = script("restore.sh", &[&db.url, file], &[]);
    assert!(ok, "{out}");

    let server = serve(&db).await;
    let refreshed = http
        .post(format!("{}/auth/token", server.base))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())])
        .send()
        .await
        .expect("refresh");
    assert_eq!(refreshed.status(), 200, "{}", refreshed.text().await.unwrap_or_default());
    assert_eq!(logged().await, before, "the audit log came back");
    drop(server.child);
}

#[tokio::test]
async fn backup_restore_round_trip_sqlite() {
    backup_restore_round_trip(Backend::Sqlite).await;
}

#[tokio::test]
async fn backup_restore_round_trip_postgres() {
    backup_restore_round_trip(Backend::Postgres).await;
}

/// `scripts/setup_monitoring.sh` starts Prometheus with the repository's rules against a live
/// server, and it scrapes the server's metrics.
#[tokio::test]
async fn setup_monitoring_script_scrapes_a_live_server() {
    let db = TestDb::new(Backend::Sqlite).await;
    let server = serve(&db).await;
    let dir = tempfile::tempdir().expect("dir");
    let dir = dir.path().to_string_lossy().into_owned();
    let port = free_port().to_string();
    let args = [server.base.as_str(), "--dir", &dir, "--port", &port];
    let (ok, out) = script("setup_monitoring.sh", &args, &[("SCRAPE_INTERVAL", "1s")]);
    let stop = || script("setup_monitoring.sh", &["--stop", "--dir", &dir], &[]);
    if !ok {
        stop();
        panic!("{out}");
    }
    assert!(out.contains("(18 alerts loaded)"), "{out}");
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=atoms_auth_build_info");
    let answer: serde_json::Value =
        reqwest::get(&query).await.expect("query").json().await.expect("json");
    stop();
    let series = answer["data"]["result"].as_array().cloned().unwrap_or_default();
    assert_eq!(series.len(), 1, "{answer}");
    assert_eq!(series[0]["metric"]["backend"], "sqlite", "{answer}");
    drop(server.child);
}

/// `scripts/scale.sh` refuses a count that is not a number, and on ECS one outside the
/// autoscaling bounds; within them it sets the desired count and waits for the service. The
/// `aws` it calls is a recorder on PATH that answers like the AWS CLI.
#[test]
fn scale_script_checks_the_count_and_scales_within_the_bounds() {
    let dir = tempfile::tempdir().expect("dir");
    let calls = dir.path().join("calls");
    let aws = dir.path().join("aws");
    let recorder = format!(
        "#!/bin/sh\necho \"$*\" >> {}\ncase \"$1 $2\" in\n\
         'application-autoscaling describe-scalable-targets') echo '2\t6' ;;\n\
         'ecs update-service') echo \"$8\" ;;\nesac\n",
        calls.display()
    );
    std::fs::write(&aws, recorder).expect("aws");
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&aws, mode).expect("chmod");
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let env = [("PATH", path.as_str())];

    let (ok, out) = script("scale.sh", &["many"], &env);
    assert!(!ok && out.contains("whole number"), "{out}");
    let (ok, out) = script("scale.sh", &["--ecs", "c1", "s1", "9"], &env);
    assert!(!ok && out.contains("outside the autoscaling bounds 2..6"), "{out}");
    let (ok, out) = script("scale.sh", &["--ecs", "c1", "s1", "4"], &env);
    assert!(ok && out.contains("s1 runs 4 tasks"), "{out}");
    let recorded = std::fs::read_to_string(&calls).expect("calls");
    assert!(
        recorded.contains("ecs update-service --cluster c1 --service s1 --desired-count 4"),
        "{recorded}"
    );
    assert!(recorded.contains("ecs wait services-stable --cluster c1 --services s1"), "{recorded}");
    assert!(!recorded.contains("--desired-count 9"), "a refused count is never sent");
}
