//! A server process killed with SIGKILL under login and refresh load, then started again on
//! the same database (SQLite, PostgreSQL): every refresh token whose answer reached a client
//! works, no family has two live tokens, and every request that was answered has its audit
//! records.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoms_auth::storage::AuditQuery;

use crate::cluster::{PASSWORD, instance_env, seed, start_instance};
use crate::helpers::{Backend, TestClient, TestDb, answer};

/// One client's chain of answered refresh tokens, and the request ids answered 200.
#[derive(Default)]
struct Chain {
    tokens: Vec<String>,
    answered: Vec<String>,
}

async fn token_request(
    http: &reqwest::Client,
    base: &str,
    client: &TestClient,
    request_id: &str,
    form: &[(&str, &str)],
) -> Option<serde_json::Value> {
    let sent = http
        .post(format!("{base}/auth/token"))
        .basic_auth(&client.id, client.secret.as_deref())
        .header("x-request-id", request_id)
        .form(form)
        .send()
        .await
        .ok()?;
    let a = answer(sent).await;
    (a.status == 200).then_some(a.body)
}

async fn killed_mid_write(backend: Backend) {
    let db = TestDb::new(backend).await;
    let client = seed(&db).await;
    let env = instance_env(&db, &[]);
    let mut first = start_instance(&env).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("http");
    let chains: Vec<Arc<Mutex<Chain>>> = (0..8).map(|_| Arc::default()).collect();
    let mut workers = Vec::new();
    for (w, chain) in chains.iter().enumerate() {
        let (http, base, client, chain) =
            (http.clone(), first.base.clone(), client.clone(), chain.clone());
        workers.push(tokio::spawn(async move {
            let id = format!("crash-{w}-login");
            let login = [("grant_type", "password"), ("username", "carol"), ("password", PASSWORD)];
            let Some(body) = token_request(&http, &base, &client, &id, &login).await else {
                return;
            };
            let mut refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
            {
                let mut chain = chain.lock().expect("lock");
                chain.tokens.push(refresh.clone());
                chain.answered.push(id);
            }
            for n in 0..10_000 {
                let id = format!("crash-{w}-{n}");
                let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str())];
                // The process dies under some request: its answer never comes.
                let Some(body) = token_request(&http, &base, &client, &id, &form).await else {
                    return;
                };
                refresh = body["refresh_token"].as_str().expect("refresh").to_owned();
                let mut chain = chain.lock().expect("lock");
                chain.tokens.push(refresh.clone());
                chain.answered.push(id);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.child.start_kill().expect("SIGKILL");
    let _ = first.child.wait().await;
    for worker in workers {
        let _ = worker.await;
    }

    let second = start_instance(&env).await;
    let introspect = |token: String| {
        let (http, base, client) = (http.clone(), second.base.clone(), client.clone());
        async move {
            let a = http
                .post(format!("{base}/auth/introspect"))
                .basic_auth(&client.id, client.secret.as_deref())
                .form(&[("token", token.as_str())])
                .send()
                .await
                .expect("introspect");
            answer(a).await.body["active"] == true
        }
    };
    let mut answered = Vec::new();
    let mut refreshes = 0;
    for chain in &chains {
        let chain = std::mem::take(&mut *chain.lock().expect("lock"));
        let Some(last) = chain.tokens.last() else { continue };
        refreshes += chain.tokens.len() - 1;
        // Every token answered before the last is spent.
        for spent in &chain.tokens[..chain.tokens.len() - 1] {
            assert!(!introspect(spent.clone()).await, "a spent token is live after the crash");
        }
        // The last one works: it is live, or (when the request the kill cut short had
        // rotated it, unanswered) it is the grace retry's token.
        let form = [("grant_type", "refresh_token"), ("refresh_token", last.as_str())];
        let worked = token_request(&http, &second.base, &client, "after-crash", &form).await;
        let worked = worked.expect("the last token answered does not work after the crash");
        // Then the family has one live token: the one just answered.
        let now_live = worked["refresh_token"].as_str().expect("refresh").to_owned();
        assert!(introspect(now_live).await, "the token answered after the crash is not live");
        assert!(!introspect(last.clone()).await, "two live tokens in one family");
        answered.extend(chain.answered);
    }
    assert!(refreshes >= 8, "only {refreshes} refreshes answered before the kill");

    // Every answered request's records were stored before it was answered.
    let storage = db.storage().await;
    let mut stored = HashSet::new();
    let mut query = AuditQuery { ascending: true, limit: 1000, ..Default::default() };
    loop {
        let page = storage.query_audit(&query).await.expect("audit");
        let Some(last) = page.last() else { break };
        query.cursor = Some(last.id.clone());
        stored.extend(page.into_iter().filter_map(|r| r.request_id));
    }
    let missing: Vec<&String> = answered.iter().filter(|id| !stored.contains(*id)).collect();
    eprintln!(
        "crash: {} answered requests ({refreshes} refreshes) before SIGKILL, {} without records",
        answered.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "answered requests without audit records: {missing:?}");
    drop(second);
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_killed_mid_write() {
    killed_mid_write(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_mid_write() {
    killed_mid_write(Backend::Postgres).await;
}
