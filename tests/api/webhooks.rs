//! Webhooks over HTTP with a real receiver, against every backend.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::*;
use crate::receiver::Receiver;

const PASSWORD: &str = "correct horse battery";

/// Subscribes `url` to `events`; returns (id, secret).
async fn subscribe(app: &TestApp, token: &str, url: &str, events: &[&str]) -> (String, String) {
    let a = app
        .bearer("POST", "/admin/webhooks", token, Some(json!({ "url": url, "events": events })))
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    (a.str("id"), a.str("secret"))
}

async fn deliveries(app: &TestApp, token: &str, id: &str) -> Vec<Value> {
    let a = app.bearer("GET", &format!("/admin/webhooks/{id}/deliveries"), token, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body["deliveries"].as_array().expect("deliveries").clone()
}

/// Polls the delivery log until `done` holds for the newest delivery.
async fn wait_for_delivery(
    app: &TestApp,
    token: &str,
    id: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(d) = deliveries(app, token, id).await.first()
            && done(d)
        {
            return d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "delivery never got there: {:?}",
            deliveries(app, token, id).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn signed_deliveries_verify_with_an_independent_verifier(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let token = app.admin_token().await;
    let (_, secret) =
        subscribe(&app, &token, &receiver.url, &["session.created", "device.registered"]).await;
    assert!(secret.starts_with("whsec_"));
    let user_id = app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let login = app.login(&client, "alice", PASSWORD).await;

    let received = receiver.wait_until(|r| r.len() >= 2).await;
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    for r in &received {
        verifier
            .verify(r.body.as_bytes(), &r.headers)
            .expect("a valid Standard Webhooks signature");
        assert!(r.header("webhook-signature").starts_with("v1,"));
        assert_eq!(r.header("content-type"), "application/json");
        // A tampered body fails the same verifier.
        assert!(verifier.verify(format!("{} ", r.body).as_bytes(), &r.headers).is_err());
    }
    let by_type: HashMap<String, Value> = received
        .iter()
        .map(|r| (r.json()["type"].as_str().unwrap_or_default().to_owned(), r.json()))
        .collect();
    let created = &by_type["session.created"];
    assert_eq!(created["data"]["user_id"], user_id.as_str());
    assert_eq!(created["data"]["client_id"], client.id.as_str());
    let sid = app.bearer("GET", "/auth/sessions", &login.str("access_token"), None).await.body["sessions"][0]["id"].clone();
    assert_eq!(created["data"]["session_id"], sid);
    assert!(created["timestamp"].is_string() && created["data"]["expires_at"].is_string());
    let device = &by_type["device.registered"];
    assert!(device["data"]["device_id"].is_string() && device["data"]["name"].is_string());
    let other = Receiver::start().await;
    let (_, other_secret) = subscribe(&app, &token, &other.url, &["user.locked"]).await;
    let wrong = standardwebhooks::Webhook::new(&other_secret).expect("secret");
    assert!(wrong.verify(received[0].body.as_bytes(), &received[0].headers).is_err());
}

async fn failing_receivers_are_retried_with_growing_delays(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500, 500, 503]);
    let token = app.admin_token().await;
    let (id, _) = subscribe(&app, &token, &receiver.url, &["session.created"]).await;
    let a = app.bearer("POST", &format!("/admin/webhooks/{id}/test"), &token, None).await;
    assert_eq!(a.status, 202, "{}", a.body);

    let delivery = wait_for_delivery(&app, &token, &id, |d| d["status"] == "delivered").await;
    assert_eq!(delivery["attempts"], 4);
    let log = delivery["log"].as_array().expect("log");
    let codes: Vec<i64> = log.iter().filter_map(|a| a["status_code"].as_i64()).collect();
    assert_eq!(codes, [500, 500, 503, 200]);
    // Attempt k waits between base*2^(k-1)/2 and base*2^(k-1): 50-100, 100-200, 200-400 ms.
    let ats: Vec<i64> =
        log.iter().map(|a| parse_ms(a["at"].as_str().unwrap_or_default())).collect();
    let gaps: Vec<i64> = ats.windows(2).map(|w| w[1] - w[0]).collect();
    for (k, gap) in gaps.iter().enumerate() {
        assert!(*gap >= 50 << k, "gap {k} was {gap} ms: {gaps:?}");
    }
    assert!(gaps[2] > gaps[0], "{gaps:?}");
    let bodies: Vec<String> =
        receiver.received().iter().map(|r| r.header("webhook-id").to_owned()).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "every retry carries the same webhook-id");
    assert_eq!(receiver.received()[0].json()["type"], "webhook.test");
}

fn parse_ms(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("time");
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

async fn a_receiver_that_is_down_gets_the_delivery_when_it_comes_back(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.webhooks.max_attempts = 30).await;
    let addr = Receiver::unused_addr().await;
    let token = app.admin_token().await;
    let (id, secret) =
        subscribe(&app, &token, &format!("http://{addr}/hook"), &["session.created"]).await;
    app.bearer("POST", &format!("/admin/webhooks/{id}/test"), &token, None).await;
    let failing = wait_for_delivery(&app, &token, &id, |d| d["attempts"].as_i64() >= Some(2)).await;
    assert_eq!(failing["status"], "pending");
    assert!(failing["next_attempt_at"].is_string());
    assert!(failing["log"][0]["error"].is_string() && failing["log"][0]["status_code"].is_null());

    let receiver = Receiver::start_on(addr).await;
    let received = receiver.wait_until(|r| !Receiver::delivered(r).is_empty()).await;
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(received[0].body.as_bytes(), &received[0].headers)
        .expect("signed");
    wait_for_delivery(&app, &token, &id, |d| d["status"] == "delivered").await;
}

async fn deliveries_give_up_after_the_last_attempt(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.webhooks.max_attempts = 3).await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500; 10]);
    let token = app.admin_token().await;
    let (id, _) = subscribe(&app, &token, &receiver.url, &["session.created"]).await;
    app.bearer("POST", &format!("/admin/webhooks/{id}/test"), &token, None).await;
    let failed = wait_for_delivery(&app, &token, &id, |d| d["status"] == "failed").await;
    assert_eq!(
        (failed["attempts"].as_i64(), failed["log"].as_array().map(Vec::len)),
        (Some(3), Some(3))
    );
    assert!(failed["next_attempt_at"].is_null() && failed["finished_at"].is_string());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 3, "no attempt after giving up");
}

async fn queued_deliveries_survive_a_restart(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.webhooks.max_attempts = 30;
        c.webhooks.retry_base = Duration::from_millis(300);
        c.webhooks.retry_max = Duration::from_millis(300);
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.answer(&[500; 1000]);
    let token = app.admin_token().await;
    let (id, secret) = subscribe(&app, &token, &receiver.url, &["session.created"]).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    app.login(&client, "alice", PASSWORD).await;
    receiver.wait_until(|r| !r.is_empty()).await;

    // Stopped mid-retry; the receiver recovers while the server is down.
    let db = app.stop().await;
    let attempts_before = receiver.received().len();
    receiver.answer(&[]);
    let mut config = db.config();
    config.webhooks.retry_base = Duration::from_millis(300);
    let app = spawn_on(db, config).await;
    let received = receiver.wait_until(|r| !Receiver::delivered(r).is_empty()).await;
    let delivered = Receiver::delivered(&received);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].json()["type"], "session.created");
    standardwebhooks::Webhook::new(&secret)
        .expect("secret")
        .verify(delivered[0].body.as_bytes(), &delivered[0].headers)
        .expect("signed");
    let token = app.admin_token().await;
    let d = wait_for_delivery(&app, &token, &id, |d| d["status"] == "delivered").await;
    assert!(d["attempts"].as_i64().unwrap_or_default() as usize > attempts_before.min(1));
}

async fn the_webhook_admin_api_checks_what_it_is_given(backend: Backend) {
    let app = spawn_app(backend).await;
    let receiver = Receiver::start().await;
    let token = app.admin_token().await;
    let bad = [
        json!({ "url": "ftp://example.com/x", "events": ["session.created"] }),
        json!({ "url": "not a url", "events": ["session.created"] }),
        json!({ "url": receiver.url, "events": [] }),
        json!({ "url": receiver.url, "events": ["session.exploded"] }),
        json!({ "url": receiver.url }),
        json!({ "url": receiver.url, "events": ["session.created"], "extra": 1 }),
    ];
    for body in bad {
        let a = app.bearer("POST", "/admin/webhooks", &token, Some(body.clone())).await;
        assert_eq!(a.status, 400, "{body} -> {}", a.body);
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    let (id, secret) =
        subscribe(&app, &token, &receiver.url, &["session.revoked", "session.revoked"]).await;
    let list = app.bearer("GET", "/admin/webhooks", &token, None).await;
    let listed = &list.body["webhooks"][0];
    assert_eq!(
        (listed["id"].as_str(), listed["events"].clone()),
        (Some(id.as_str()), json!(["session.revoked"]))
    );
    assert!(!list.body.to_string().contains(&secret), "the secret is shown only once");
    assert_eq!(app.bearer("GET", &format!("/admin/webhooks/{id}"), &token, None).await.status, 200);

    let user = app.logged_in().await.1.str("access_token");
    assert_eq!(app.bearer("GET", "/admin/webhooks", &user, None).await.status, 403);
    assert_eq!(app.bearer("GET", "/admin/webhooks", "garbage", None).await.status, 401);

    assert_eq!(
        app.bearer("DELETE", &format!("/admin/webhooks/{id}"), &token, None).await.status,
        204
    );
    for (method, path) in [
        ("DELETE", format!("/admin/webhooks/{id}")),
        ("POST", format!("/admin/webhooks/{id}/test")),
        ("GET", format!("/admin/webhooks/{id}/deliveries")),
    ] {
        assert_eq!(app.bearer(method, &path, &token, None).await.status, 404, "{method} {path}");
    }
}

async fn private_targets_are_refused_unless_allowed(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.webhooks.allow_private_targets = false).await;
    let token = app.admin_token().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://10.1.2.3/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]/x",
        "http://0.0.0.0/x",
    ] {
        let a = app
            .bearer(
                "POST",
                "/admin/webhooks",
                &token,
                Some(json!({ "url": url, "events": ["user.locked"] })),
            )
            .await;
        assert_eq!(a.status, 400, "{url}: {}", a.body);
        assert!(
            a.str("detail").contains("address") || a.str("detail").contains("resolve"),
            "{}",
            a.body
        );
    }
}

async fn two_instances_never_deliver_one_attempt_twice(backend: Backend) {
    let first = spawn_app(backend).await;
    let config = first.db.config();
    let second_db = TestDb::shared(&first.db);
    let second = spawn_on(second_db, config).await;
    let receiver = Receiver::start().await;
    let token = first.admin_token().await;
    subscribe(&first, &token, &receiver.url, &["session.created"]).await;
    first.create_user("alice", PASSWORD).await;
    let client = first.confidential_client().await;
    // One after another: concurrent logins may be shed (503) while passwords are hashed,
    // and the events, not the logins, are what this is about.
    for i in 0..24 {
        let app = if i % 2 == 0 { &first } else { &second };
        let login = app.login(&client, "alice", PASSWORD).await;
        assert_eq!(login.status, 200, "{}", login.body);
    }
    let received = receiver.wait_until(|r| r.len() >= 24).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = receiver.received().len().max(received.len());
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for r in receiver.received() {
        *per_id.entry(r.header("webhook-id").to_owned()).or_default() += 1;
    }
    assert_eq!(per_id.len(), 24);
    assert!(per_id.values().all(|n| *n == 1), "{per_id:?}");
    assert_eq!(received, 24);
}

/// An operator's audit exclusions keep events out of the log, not away from their webhooks.
async fn excluded_events_stay_out_of_the_log_but_reach_their_webhooks(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.audit.exclude = "session.created, token.issued".into();
    })
    .await;
    let receiver = Receiver::start().await;
    let token = app.admin_token().await;
    subscribe(&app, &token, &receiver.url, &["session.created"]).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    assert_eq!(app.login(&client, "alice", PASSWORD).await.status, 200);

    let received = receiver.wait_until(|r| !r.is_empty()).await;
    assert_eq!(received[0].json()["type"], "session.created");
    app.state.audit.flush().await;
    let page = app.bearer("GET", "/admin/audit?limit=1000", &token, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let names: Vec<&str> = page.body["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    assert!(names.contains(&"user.login.succeeded"), "{names:?}");
    assert!(!names.iter().any(|n| ["session.created", "token.issued"].contains(n)), "{names:?}");
}

/// A receiver that refuses connections, then times out, then answers 500, with the server
/// restarted while deliveries wait for their next attempt: every event arrives, signed, and
/// the delivery log tells each attempt's story.
async fn a_flapping_receiver_gets_every_event_across_a_restart(backend: Backend) {
    let configure = |c: &mut atoms_auth::config::Config| {
        c.webhooks.max_attempts = 40;
        c.webhooks.timeout = Duration::from_secs(1);
    };
    let app = spawn_app_with(backend, configure).await;
    let addr = Receiver::unused_addr().await;
    let url = format!("http://{addr}/hook");
    let token = app.admin_token().await;
    let (id, secret) = subscribe(&app, &token, &url, &["session.created"]).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let events = 5;
    for _ in 0..events {
        assert_eq!(app.login(&client, "alice", PASSWORD).await.status, 200);
    }
    // Refused: nothing listens yet.
    let refused = |d: &Value| d["attempts"].as_i64().unwrap_or_default() >= 2;
    wait_for_delivery(&app, &token, &id, refused).await;
    // Then it listens but answers too late, then with errors.
    let receiver = Receiver::start_on(addr).await;
    receiver.slow_down(Duration::from_millis(1500));
    receiver.wait_until(|r| r.len() >= 3).await;
    receiver.slow_down(Duration::ZERO);
    receiver.answer(&[500; 6]);
    receiver.wait_until(|r| r.iter().filter(|r| r.status == 500).count() >= 6).await;
    // Restarted while every delivery is still pending.
    let db = app.stop().await;
    let mut config = db.config();
    configure(&mut config);
    let app = spawn_on(db, config).await;
    let received = receiver
        .wait_until(|r| {
            let ids: std::collections::HashSet<&str> =
                Receiver::delivered(r).iter().map(|r| r.header("webhook-id")).collect();
            ids.len() == events
        })
        .await;
    let verifier = standardwebhooks::Webhook::new(&secret).expect("secret");
    for r in Receiver::delivered(&received) {
        verifier.verify(r.body.as_bytes(), &r.headers).expect("signed");
    }
    let token = app.admin_token().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let listed = loop {
        let listed = deliveries(&app, &token, &id).await;
        if listed.iter().all(|d| d["status"] == "delivered") || Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(listed.len(), events);
    let mut told = std::collections::HashSet::new();
    for d in &listed {
        assert_eq!(d["status"], "delivered", "{d}");
        let log = d["log"].as_array().expect("log");
        assert_eq!(log.len() as i64, d["attempts"].as_i64().expect("attempts"), "{d}");
        let last = log.iter().max_by_key(|a| a["attempt"].as_i64()).expect("an attempt");
        assert_eq!(last["status_code"], 200, "{d}");
        for attempt in log {
            let story = match (attempt["status_code"].as_i64(), attempt["error"].as_str()) {
                (Some(code), _) => format!("status {code}"),
                (None, Some(error)) if error.contains("timed out") || error.contains("timeout") => {
                    "timeout".to_owned()
                }
                (None, Some(_)) => "no connection".to_owned(),
                (None, None) => panic!("an attempt with neither status nor error: {d}"),
            };
            told.insert(story);
        }
    }
    for story in ["no connection", "timeout", "status 500", "status 200"] {
        assert!(told.contains(story), "no attempt says {story}: {told:?}");
    }
}

backend_tests!(
    a_flapping_receiver_gets_every_event_across_a_restart,
    signed_deliveries_verify_with_an_independent_verifier,
    failing_receivers_are_retried_with_growing_delays,
    a_receiver_that_is_down_gets_the_delivery_when_it_comes_back,
    deliveries_give_up_after_the_last_attempt,
    queued_deliveries_survive_a_restart,
    the_webhook_admin_api_checks_what_it_is_given,
    private_targets_are_refused_unless_allowed,
    two_instances_never_deliver_one_attempt_twice,
    excluded_events_stay_out_of_the_log_but_reach_their_webhooks,
);
