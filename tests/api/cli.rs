//! The binary's subcommands, run as a newcomer would run them.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::helpers::{Backend, TestDb, spawn_on};

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
    let app = spawn_on(db, config).await;
    let client = crate::helpers::TestClient { id: client_id, secret: Some(secret) };
    let login = app.login(&client, "carol", "long enough pw").await;
    assert_eq!(login.status, 200, "{}", login.body);
    let db = app.stop().await;
    let (ok, out, err) = atoms_auth(&db, &["migrate", "down"], None);
    assert!(ok && out.contains("pending"), "{out}{err}");
}

crate::backend_tests!(cli_walkthrough);
