//! Three server processes on one store, PostgreSQL and then Redis: what one process promises
//! holds across all of them. Every loop is bounded in time and count; traffic stays on
//! loopback.

use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use atoms_auth::clock::{Clock, SystemClock};
use atoms_auth::domain::accounts::{self, NewClient, NewUser};
use atoms_auth::domain::roles::Role;

use crate::helpers::{Answer, Backend, TestClient, TestDb, answer, free_port};
use crate::receiver::Receiver;

const ISSUER: &str = "http://atoms-auth.cluster.test";
pub(crate) const PASSWORD: &str = "cluster test password";
/// How often each instance reads the signing keys again here (the default is 60 s).
const KEY_RELOAD_SECS: u64 = 1;

/// One server process.
pub(crate) struct Instance {
    pub(crate) child: tokio::process::Child,
    pub(crate) base: String,
}

/// Three processes on one database, a user and a client that may introspect every token.
struct Cluster {
    db: TestDb,
    instances: Vec<Instance>,
    http: reqwest::Client,
    client: TestClient,
    env: Vec<(String, String)>,
}

/// The user `carol` (password [`PASSWORD`]) and a client of every grant that may introspect
/// every token, in `db` (migrated first).
pub(crate) async fn seed(db: &TestDb) -> TestClient {
    seed_storage(db.storage().await.as_ref()).await
}

/// [`seed`] on a migrated storage.
pub(crate) async fn seed_storage(storage: &dyn atoms_auth::storage::Storage) -> TestClient {
    let now = SystemClock.now_ms();
    let user = NewUser { username: "carol".into(), password: PASSWORD.into(), role: Role::Member };
    accounts::create_user(storage, user, now).await.expect("user");
    let new = NewClient {
        client_id: None,
        name: "cluster client".into(),
        public: false,
        grant_types: ["password", "refresh_token", "client_credentials"].map(String::from).into(),
        scopes: ["read", "admin"].map(String::from).into(),
        resource_server: true,
        created_by: None,
        redirect_uris: vec![],
        skip_consent: false,
    };
    let (client, secret, _) = accounts::create_client(storage, new, now).await.expect("client");
    TestClient { id: client.client_id, secret: secret.map(|s| s.expose().to_owned()) }
}

/// The settings of a server process on `db`, with `extra` ones.
pub(crate) fn instance_env(db: &TestDb, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let prefix = if db.redis_prefix.is_empty() {
        format!("cluster:{}", uuid::Uuid::new_v4().simple())
    } else {
        db.redis_prefix.clone()
    };
    [
        ("ATOMS_AUTH_DATABASE_URL", db.url.as_str()),
        ("ATOMS_AUTH_REDIS_KEY_PREFIX", prefix.as_str()),
        ("ATOMS_AUTH_ISSUER", ISSUER),
        ("ATOMS_AUTH_MASTER_KEY", "cluster test master key"),
        ("ATOMS_AUTH_DATABASE_POOL_SIZE", "4"),
        ("ATOMS_AUTH_KEY_RELOAD_INTERVAL_SECS", "1"),
        ("ATOMS_AUTH_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true"),
        ("ATOMS_AUTH_WEBHOOK_RETRY_BASE_MS", "100"),
        ("ATOMS_AUTH_WEBHOOK_RETRY_MAX_MS", "400"),
        ("ATOMS_AUTH_WEBHOOK_POLL_INTERVAL_MS", "25"),
        ("ATOMS_AUTH_LOG", "warn"),
        // Every request comes from 127.0.0.1: a per-address limit shared through Redis
        // would refuse the busier tests' traffic. The limits test sets its own.
        ("ATOMS_AUTH_RATE_LIMIT_IP_PER_SEC", "0"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

impl Cluster {
    async fn start(backend: Backend, extra: &[(&str, &str)]) -> Self {
        let db = TestDb::new(backend).await;
        let client = seed(&db).await;
        let env = instance_env(&db, extra);
        let mut instances = Vec::new();
        // One after another: the first creates the signing key the others find.
        for _ in 0..3 {
            instances.push(start_instance(&env).await);
        }
        Cluster { db, instances, http: reqwest::Client::new(), client, env }
    }

    fn base(&self, i: usize) -> &str {
        &self.instances[i % self.instances.len()].base
    }

    async fn form(&self, i: usize, path: &str, form: &[(&str, &str)]) -> Answer {
        let request = self
            .http
            .post(format!("{}{path}", self.base(i)))
            .basic_auth(&self.client.id, self.client.secret.as_deref())
            .form(form);
        answer(request.send().await.expect("request")).await
    }

    async fn login(&self, i: usize, password: &str) -> Answer {
        let form = [("grant_type", "password"), ("username", "carol"), ("password", password)];
        self.form(i, "/auth/token", &form).await
    }

    async fn refresh(&self, i: usize, token: &str) -> Answer {
        self.form(i, "/auth/token", &[("grant_type", "refresh_token"), ("refresh_token", token)])
            .await
    }

    async fn introspect(&self, i: usize, token: &str) -> Value {
        let a = self.form(i, "/auth/introspect", &[("token", token)]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    async fn client_token(&self, i: usize, scope: &str) -> String {
        let form = [("grant_type", "client_credentials"), ("scope", scope)];
        let a = self.form(i, "/auth/token", &form).await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.str("access_token")
    }
}

/// Starts one process with `env` and waits until it is ready (at most 20 s).
pub(crate) async fn start_instance(env: &[(String, String)]) -> Instance {
    let port = free_port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("ATOMS_AUTH_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn atoms-auth");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = http.get(format!("{base}/health/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Instance { child, base };
        }
        assert!(Instant::now() < deadline, "an instance did not get ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `kid` in a JWT's header.
fn kid(jwt: &str) -> String {
    let header = jwt.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64")).expect("json");
    header["kid"].as_str().expect("kid").to_owned()
}

async fn refresh_spread_over_instances_rotates_once(backend: Backend) {
    let cluster = Cluster::start(backend, &[]).await;
    let login = cluster.login(0, PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    let token = login.str("refresh_token");
    let answers = futures::future::join_all((0..50).map(|i| cluster.refresh(i, &token))).await;
    let issued: Vec<String> =
        answers.iter().filter(|a| a.status == 200).map(|a| a.str("refresh_token")).collect();
    // As on one process: one rotation and one grace retry answer; the next use is reuse,
    // which ends the family, so every other answer is invalid_grant.
    assert_eq!(issued.len(), 2, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    let refused = answers.iter().filter(|a| a.status != 200);
    assert!(refused.clone().all(|a| a.str("error") == "invalid_grant"));
    assert_eq!(refused.count(), 48);
    // No live token is left in the family, whichever instance is asked.
    for (i, token) in issued.iter().chain([&token]).enumerate() {
        for asked in 0..3 {
            assert_eq!(cluster.introspect(i + asked, token).await["active"], false);
        }
        assert_eq!(cluster.refresh(i, token).await.status, 400);
    }
}

async fn a_revocation_through_one_instance_holds_on_the_others(backend: Backend) {
    let cluster = Cluster::start(backend, &[]).await;
    let login = cluster.login(0, PASSWORD).await;
    let (access, refresh) = (login.str("access_token"), login.str("refresh_token"));
    for i in 0..3 {
        assert_eq!(cluster.introspect(i, &access).await["active"], true);
    }
    let revoked = cluster.form(1, "/auth/revoke", &[("token", &refresh)]).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    // At once, with no wait: every instance reads the same session.
    for i in [2, 0] {
        assert_eq!(cluster.introspect(i, &access).await["active"], false);
        assert_eq!(cluster.introspect(i, &refresh).await["active"], false);
        assert_eq!(cluster.refresh(i, &refresh).await.str("error"), "invalid_grant");
    }
    // An access token revoked alone, through another instance.
    let other = cluster.login(2, PASSWORD).await.str("access_token");
    assert_eq!(cluster.form(2, "/auth/revoke", &[("token", &other)]).await.status, 200);
    for i in 0..3 {
        assert_eq!(cluster.introspect(i, &other).await["active"], false);
    }
}

async fn lockout_and_rate_limits_count_across_instances(backend: Backend) {
    let shared = crate::helpers::redis_base();
    let limits = [
        ("ATOMS_AUTH_REDIS_URL", shared.as_str()),
        ("ATOMS_AUTH_RATE_LIMIT_CLIENT_PER_SEC", "1"),
        ("ATOMS_AUTH_RATE_LIMIT_CLIENT_BURST", "12"),
    ];
    let cluster = Cluster::start(backend, &limits).await;
    // Five failures, spread over the three instances, lock the account everywhere: the right
    // password then answers like a wrong one.
    for i in 0..5 {
        let failed = cluster.login(i, "not the password").await;
        assert_eq!(failed.str("error"), "invalid_grant", "{}", failed.body);
    }
    for i in 0..3 {
        let locked = cluster.login(i, PASSWORD).await;
        assert_eq!((locked.status, locked.str("error")), (400, "invalid_grant".into()));
    }
    // Another client's burst of 12 is shared by the instances: of 20 requests spread over
    // them, at most 12 pass, and one more for each second they took (the refill).
    let storage = cluster.db.storage().await;
    let new = NewClient {
        client_id: None,
        name: "busy client".into(),
        public: false,
        grant_types: vec!["client_credentials".into()],
        scopes: vec!["read".into()],
        resource_server: false,
        created_by: None,
        redirect_uris: vec![],
        skip_consent: false,
    };
    let (busy, secret, _) =
        accounts::create_client(storage.as_ref(), new, SystemClock.now_ms()).await.expect("client");
    let started = Instant::now();
    let mut passed = 0;
    for i in 0..20 {
        let request = cluster
            .http
            .post(format!("{}/auth/token", cluster.base(i)))
            .basic_auth(&busy.client_id, secret.as_ref().map(|s| s.expose()))
            .form(&[("grant_type", "client_credentials")]);
        if request.send().await.expect("request").status() == 200 {
            passed += 1;
        }
    }
    let refill = started.elapsed().as_secs() + 1;
    assert!(passed <= 12 + refill, "{passed} of 20 passed in {refill} s: the limit is not shared");
}

async fn a_key_rotated_through_one_process_reaches_every_instance(backend: Backend) {
    let cluster = Cluster::start(backend, &[]).await;
    let first = kid(&cluster.client_token(0, "read").await);
    let rotate = || {
        let env = cluster.env.clone();
        async move {
            let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
                .args(["keys", "rotate"])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .status()
                .await
                .expect("keys rotate");
            assert!(status.success());
        }
    };
    // Tokens issued by every instance, each verified by the two others, before, during and
    // after two rotations made by another process: none may fail.
    let mut kids = std::collections::BTreeSet::new();
    let mut checked = 0;
    let started = Instant::now();
    let mut rotations = 0;
    while started.elapsed() < Duration::from_secs(5) {
        if rotations < 2 && started.elapsed() > Duration::from_millis(1000 + 1500 * rotations) {
            tokio::spawn(rotate());
            rotations += 1;
        }
        for i in 0..3 {
            let token = cluster.client_token(i, "read").await;
            kids.insert(kid(&token));
            for other in [i + 1, i + 2] {
                let seen = cluster.introspect(other, &token).await;
                assert_eq!(seen["active"], true, "instance {i}'s token on {other}: {seen}");
                checked += 1;
            }
        }
    }
    assert!(checked >= 60, "only {checked} verifications");
    assert!(kids.len() >= 3, "tokens were signed with {kids:?}: the rotations did not take");
    // Within the reload interval every instance signs with the newest key and publishes it.
    tokio::time::sleep(Duration::from_secs(KEY_RELOAD_SECS) + Duration::from_millis(500)).await;
    let newest = kid(&cluster.client_token(0, "read").await);
    assert_ne!(newest, first);
    for i in 0..3 {
        assert_eq!(kid(&cluster.client_token(i, "read").await), newest, "instance {i} signs");
        let jwks: Value = cluster
            .http
            .get(format!("{}/.well-known/jwks.json", cluster.base(i)))
            .send()
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .filter_map(|k| k["kid"].as_str())
            .collect();
        assert!(published.contains(&newest.as_str()), "instance {i} publishes {published:?}");
        assert!(published.contains(&first.as_str()), "a retired key stays published");
    }
}

async fn webhook_attempts_are_sent_once_by_three_deliverers(backend: Backend) {
    let cluster = Cluster::start(backend, &[]).await;
    let receiver = Receiver::start().await;
    receiver.slow_down(Duration::from_millis(150));
    // The first attempts fail, so deliveries are retried, by whichever instance claims them.
    receiver.answer(&[500; 8]);
    let admin = cluster.client_token(0, "admin").await;
    let created = cluster
        .http
        .post(format!("{}/admin/webhooks", cluster.base(0)))
        .bearer_auth(&admin)
        .json(&json!({ "url": receiver.url, "events": ["session.created"] }))
        .send()
        .await
        .expect("create webhook");
    let created = answer(created).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let events = 12;
    for i in 0..events {
        assert_eq!(cluster.login(i, PASSWORD).await.status, 200);
    }
    let received = receiver
        .wait_until(|r| {
            let delivered: std::collections::BTreeSet<&str> =
                Receiver::delivered(r).iter().map(|r| r.header("webhook-id")).collect();
            delivered.len() == events
        })
        .await;
    assert_eq!(receiver.overlaps(), 0, "an attempt was sent twice at once");
    let mut per_event: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &received {
        *per_event.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    // Each event was delivered once, after as many attempts as the queue recorded.
    let path = format!("/admin/webhooks/{}/deliveries", created.str("id"));
    // The receiver records a request as it arrives: the queue marks it delivered a moment
    // after the answer.
    let deadline = Instant::now() + Duration::from_secs(15);
    let deliveries = loop {
        let listed = cluster.http.get(format!("{}{path}", cluster.base(2))).bearer_auth(&admin);
        let listed = answer(listed.send().await.expect("deliveries")).await;
        let deliveries = listed.body["deliveries"].as_array().expect("deliveries").clone();
        if deliveries.iter().all(|d| d["status"] == "delivered") || Instant::now() > deadline {
            break deliveries;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(deliveries.len(), events);
    for d in &deliveries {
        let id = d["event_id"].as_str().expect("event id");
        assert_eq!(d["status"], "delivered", "{d}");
        assert_eq!(d["attempts"].as_u64(), per_event.get(id).map(|n| *n as u64), "{d}");
    }
    assert_eq!(Receiver::delivered(&received).len(), events, "a delivered event was sent again");
    drop(cluster.db);
}

macro_rules! shared_store_tests {
    ($($name:ident),* $(,)?) => {
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

shared_store_tests!(
    refresh_spread_over_instances_rotates_once,
    a_revocation_through_one_instance_holds_on_the_others,
    lockout_and_rate_limits_count_across_instances,
    a_key_rotated_through_one_process_reaches_every_instance,
    webhook_attempts_are_sent_once_by_three_deliverers,
);
