//! Secrets at rest: a dump of the store (SQLite's files byte for byte, every row of the
//! PostgreSQL schema, every key of the Redis prefix) holds none of the secrets the server
//! handed out (refresh tokens, an authorization code, a browser session cookie, client
//! secrets, a webhook signing secret), and passwords are argon2id hashes. Someone with a copy
//! of the database gets no usable token.

use atoms_auth::config::RegistrationPolicy;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestClient, postgres_base, spawn_app_with};
use crate::receiver::Receiver;
use crate::sign_in::*;

const MASTER: &str = "a master key, long enough to be a passphrase";
const INITIAL_ACCESS_TOKEN: &str = "initial-access-token-7f3a9c";

/// Everything the store holds, as text (binary parts as they are, lossily).
async fn dump(app: &TestApp) -> String {
    app.state.audit.flush().await;
    let mut out = String::new();
    match app.db.backend {
        Backend::Sqlite => {
            // The database, its audit file and their write-ahead logs, byte for byte.
            let path = app.db.url.trim_start_matches("sqlite://");
            let path = path.split('?').next().unwrap_or_default();
            let dir = std::path::Path::new(path).parent().expect("folder");
            for file in std::fs::read_dir(dir).expect("read folder") {
                let bytes = std::fs::read(file.expect("entry").path()).expect("read file");
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        Backend::Postgres => {
            let schema = app.db.url.rsplit("search_path]=").next().expect("schema").to_owned();
            let pool = sqlx::PgPool::connect(&postgres_base()).await.expect("connect");
            let tables: Vec<(String,)> = sqlx::query_as(
                "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1",
            )
            .bind(&schema)
            .fetch_all(&pool)
            .await
            .expect("tables");
            assert!(tables.len() > 10, "{tables:?}");
            for (table,) in tables {
                let sql = format!("SELECT row_to_json(t)::TEXT FROM \"{schema}\".\"{table}\" t");
                let rows: Vec<(String,)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(&pool).await.expect("rows");
                for (row,) in rows {
                    out.push_str(&row);
                    out.push('\n');
                }
            }
            pool.close().await;
        }
        Backend::Redis => {
            let client = ::redis::Client::open(app.db.url.as_str()).expect("redis url");
            let mut conn = client.get_multiplexed_async_connection().await.expect("connect");
            let pattern = format!("{}*", app.db.redis_prefix);
            let mut keys: Vec<String> = Vec::new();
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut conn)
                    .await
                    .expect("scan");
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            assert!(keys.len() > 10, "{keys:?}");
            for key in keys {
                let kind: String =
                    ::redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.expect("type");
                let command = match kind.as_str() {
                    "string" => ::redis::cmd("GET").arg(&key).clone(),
                    "hash" => ::redis::cmd("HGETALL").arg(&key).clone(),
                    "zset" => ::redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).clone(),
                    "set" => ::redis::cmd("SMEMBERS").arg(&key).clone(),
                    "list" => ::redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                    _ => continue,
                };
                let value: ::redis::Value = command.query_async(&mut conn).await.expect("read");
                out.push_str(&key);
                out.push_str(&format!("{value:?}\n"));
            }
        }
    }
    out
}

async fn a_copy_of_the_store_holds_no_usable_secret(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.keys.master_key = Some(MASTER.into());
        c.registration.policy = RegistrationPolicy::Token;
        c.registration.initial_access_token = Some(INITIAL_ACCESS_TOKEN.into());
    })
    .await;
    let admin = app.admin_token().await;
    let mut secrets: Vec<(&str, String)> = vec![("password", PASSWORD.to_owned())];

    // A confidential client registered by an admin, and alice's login and refresh through it.
    let body = json!({ "name": "notes", "grant_types": ["password", "refresh_token"], "scopes": ["read"] });
    let created = app.bearer("POST", "/admin/clients", &admin, Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let client =
        TestClient { id: created.str("client_id"), secret: Some(created.str("client_secret")) };
    secrets.push(("client secret", created.str("client_secret")));
    app.create_user("alice", PASSWORD).await;
    let login = app.login(&client, "alice", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let refreshed = app.refresh(&client, &login.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    secrets.push(("refresh token", login.str("refresh_token")));
    secrets.push(("next refresh token", refreshed.str("refresh_token")));
    secrets.push(("access token", refreshed.str("access_token")));

    // A browser signs in: its session cookie, the code it carried, the tokens for it.
    let web = browser_client(&app, REDIRECT, false).await;
    let mut browser = Browser::new(&app);
    let back = sign_in_and_allow(&mut browser, &web, "alice", PASSWORD).await;
    let code = back.redirect_params()["code"].clone();
    let cookie = browser.cookies.iter().find(|(name, _)| name.ends_with("atoms-session"));
    secrets.push(("session cookie", cookie.expect("a session cookie").1.clone()));
    let tokens = exchange(&app, &web, &code, VERIFIER).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    secrets.push(("authorization code", code));
    secrets.push(("code's refresh token", tokens.str("refresh_token")));

    // A webhook subscription's signing secret (sealed with the master key).
    let receiver = Receiver::start().await;
    let body = json!({ "url": receiver.url, "events": ["session.created"] });
    let webhook = app.bearer("POST", "/admin/webhooks", &admin, Some(body)).await;
    assert_eq!(webhook.status, 201, "{}", webhook.body);
    secrets.push(("webhook secret", webhook.str("secret")));

    // A client that registered itself, confidential, with the initial access token.
    let registered = app
        .http
        .post(format!("{}/auth/register", app.base))
        .bearer_auth(INITIAL_ACCESS_TOKEN)
        .json(&json!({ "redirect_uris": ["https://app.example/cb"] }))
        .send()
        .await
        .expect("register");
    let registered: serde_json::Value = registered.json().await.expect("json");
    let registered_secret = registered["client_secret"].as_str().expect("a secret").to_owned();
    secrets.push(("registered client secret", registered_secret));
    secrets.push(("initial access token", INITIAL_ACCESS_TOKEN.to_owned()));
    secrets.push(("master key", MASTER.to_owned()));

    // The webhook still signs with its secret: the sealed one opens.
    app.login(&client, "alice", PASSWORD).await;
    let delivered = receiver.wait_until(|r| !r.is_empty()).await;
    let verifier = standardwebhooks::Webhook::new(&webhook.str("secret")).expect("secret");
    verifier.verify(delivered[0].body.as_bytes(), &delivered[0].headers).expect("signed");

    let stored = dump(&app).await;
    assert!(stored.contains("alice"), "the dump reads the store");
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16 || *what == "password", "{what} is a real secret");
        assert!(!stored.contains(secret.as_str()), "the {what} is stored in clear");
    }
    assert!(!stored.contains("whsec_"), "no webhook secret in clear");
    let user = app.storage().user_by_username("alice").await.expect("get").expect("alice");
    assert!(user.password_hash.starts_with("$argon2id$"), "{}", user.password_hash);
}

backend_tests!(a_copy_of_the_store_holds_no_usable_secret);
