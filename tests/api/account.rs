//! The end-user API and the admin revocation over HTTP, against every backend.

use serde_json::{Value, json};
use std::time::Duration;

use crate::backend_tests;
use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";
const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn session_id(app: &TestApp, token: &str) -> String {
    app.bearer("GET", "/auth/sessions", token, None).await.body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["current"] == true)
        .and_then(|s| s["id"].as_str())
        .expect("current session")
        .to_owned()
}

async fn sessions_list_marks_the_current_one_with_its_device(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let chrome = app.login_with(&client, "alice", PASSWORD, &[], &[("user-agent", CHROME)]).await;
    app.login_with(
        &client,
        "alice",
        PASSWORD,
        &[("device_id", "phone-123"), ("device_name", "Alice's phone"), ("device_platform", "iOS")],
        &[("user-agent", FIREFOX)],
    )
    .await;
    let list = app.bearer("GET", "/auth/sessions", &chrome.str("access_token"), None).await;
    assert_eq!(list.status, 200, "{}", list.body);
    let sessions = list.body["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2);
    let current: Vec<_> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["device"]["name"], "Chrome on Mac OSX");
    assert_eq!(current[0]["user_agent"], CHROME);
    assert_eq!(current[0]["ip"], "127.0.0.1");
    assert_eq!(current[0]["active"], true);
    let other = sessions.iter().find(|s| s["current"] == false).expect("other");
    assert_eq!(other["device"]["name"], "Alice's phone");
    assert_eq!(other["device"]["platform"], "iOS");

    let one = app
        .bearer(
            "GET",
            &format!("/auth/sessions/{}", other["id"].as_str().unwrap_or_default()),
            &chrome.str("access_token"),
            None,
        )
        .await;
    assert_eq!((one.status, one.body["current"].as_bool()), (200, Some(false)));

    let devices = app.bearer("GET", "/auth/devices", &chrome.str("access_token"), None).await;
    let list = devices.body["devices"].as_array().expect("devices");
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|d| d["trusted"] == false && d["first_seen_at"].is_string()));
}

async fn a_client_device_id_is_one_device_across_user_agents(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let mut token = String::new();
    for ua in [CHROME, FIREFOX] {
        let a = app
            .login_with(
                &client,
                "alice",
                PASSWORD,
                &[("device_id", "tablet-9")],
                &[("user-agent", ua)],
            )
            .await;
        token = a.str("access_token");
    }
    let devices = app.bearer("GET", "/auth/devices", &token, None).await.body;
    assert_eq!(devices["devices"].as_array().map(Vec::len), Some(1));
    assert_eq!(devices["devices"][0]["user_agent"], FIREFOX, "updated on every login");
}

async fn ending_sessions_kills_their_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let logins =
        futures::future::join_all((0..4).map(|_| app.login(&client, "alice", PASSWORD))).await;
    let main = logins[0].str("access_token");
    let victim = &logins[1];
    let victim_id = session_id(&app, &victim.str("access_token")).await;

    let a = app.bearer("DELETE", &format!("/auth/sessions/{victim_id}"), &main, None).await;
    assert_eq!(a.status, 204);
    assert_eq!(app.introspect(&client, &victim.str("access_token")).await["active"], false);
    assert_eq!(
        app.refresh(&client, &victim.str("refresh_token")).await.str("error"),
        "invalid_grant"
    );
    let again = app.bearer("DELETE", &format!("/auth/sessions/{victim_id}"), &main, None).await;
    assert_eq!(again.status, 204, "ending an ended session of one's own is idempotent");

    let a = app.bearer("DELETE", "/auth/sessions?except_current=true", &main, None).await;
    assert_eq!((a.status, a.body["revoked"].as_u64()), (200, Some(2)));
    let list = app.bearer("GET", "/auth/sessions", &main, None).await;
    assert_eq!(list.body["sessions"].as_array().map(Vec::len), Some(1));
    for login in &logins[2..] {
        assert_eq!(app.introspect(&client, &login.str("access_token")).await["active"], false);
    }

    let a = app.bearer("POST", "/auth/logout", &main, None).await;
    assert_eq!(a.status, 204);
    assert_eq!(app.introspect(&client, &main).await["active"], false);
    assert_eq!(app.bearer("GET", "/auth/sessions", &main, None).await.status, 401);
    assert_eq!(
        app.refresh(&client, &logins[0].str("refresh_token")).await.str("error"),
        "invalid_grant"
    );
}

async fn ending_every_session_includes_the_current_one_by_default(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let a = app.bearer("DELETE", "/auth/sessions", &login.str("access_token"), None).await;
    assert_eq!((a.status, a.body["revoked"].as_u64()), (200, Some(1)));
    assert_eq!(app.introspect(&client, &login.str("access_token")).await["active"], false);
}

async fn devices_can_be_renamed_trusted_and_removed(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let laptop = app.login_with(&client, "alice", PASSWORD, &[], &[("user-agent", CHROME)]).await;
    let tablet = app.login_with(&client, "alice", PASSWORD, &[("device_id", "tab")], &[]).await;
    let token = laptop.str("access_token");
    let devices = app.bearer("GET", "/auth/devices", &token, None).await.body["devices"].clone();
    let tablet_device = devices
        .as_array()
        .expect("devices")
        .iter()
        .find(|d| d["name"] != "Chrome on Mac OSX")
        .and_then(|d| d["id"].as_str())
        .expect("tablet")
        .to_owned();
    let path = format!("/auth/devices/{tablet_device}");
    let a = app
        .bearer("PATCH", &path, &token, Some(json!({ "name": "Kitchen tablet", "trusted": true })))
        .await;
    assert_eq!(
        (a.status, a.str("name").as_str(), a.body["trusted"].as_bool()),
        (200, "Kitchen tablet", Some(true))
    );
    for bad in [
        json!({}),
        json!({ "name": "" }),
        json!({ "name": "x".repeat(101) }),
        json!({ "colour": "red" }),
        json!({ "trusted": "yes" }),
    ] {
        let a = app.bearer("PATCH", &path, &token, Some(bad.clone())).await;
        assert_eq!(a.status, 400, "{bad} -> {}", a.body);
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
    }
    let raw = app
        .http
        .patch(format!("{}{path}", app.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(answer(raw).await.status, 400);

    let a = app.bearer("DELETE", &path, &token, None).await;
    assert_eq!((a.status, a.body["revoked_sessions"].as_u64()), (200, Some(1)));
    assert_eq!(app.introspect(&client, &tablet.str("access_token")).await["active"], false);
    assert_eq!(app.bearer("DELETE", &path, &token, None).await.status, 404);
    let devices = app.bearer("GET", "/auth/devices", &token, None).await.body["devices"].clone();
    assert_eq!(ids(&devices).len(), 1);
}

async fn another_users_sessions_and_devices_are_404_on_every_route(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    app.create_user("bob", PASSWORD).await;
    let client = app.confidential_client().await;
    let alice = app.login(&client, "alice", PASSWORD).await;
    let bob = app.login(&client, "bob", PASSWORD).await;
    let alice_token = alice.str("access_token");
    let bob_token = bob.str("access_token");
    let alice_session = session_id(&app, &alice_token).await;
    let alice_device =
        ids(&app.bearer("GET", "/auth/devices", &alice_token, None).await.body["devices"])[0]
            .clone();

    let attempts = [
        ("GET", format!("/auth/sessions/{alice_session}"), None),
        ("DELETE", format!("/auth/sessions/{alice_session}"), None),
        (
            "PATCH",
            format!("/auth/devices/{alice_device}"),
            Some(json!({ "name": "pwned", "trusted": true })),
        ),
        ("DELETE", format!("/auth/devices/{alice_device}"), None),
    ];
    for (method, path, body) in attempts {
        let a = app.bearer(method, &path, &bob_token, body).await;
        assert_eq!(a.status, 404, "{method} {path}: {}", a.body);
        assert_eq!(a.header("content-type"), Some("application/problem+json"));
        // An unknown id answers exactly the same.
        let unknown = path
            .replace(&alice_session, "00000000-0000-0000-0000-000000000000")
            .replace(&alice_device, "nope");
        let body = (method == "PATCH").then(|| json!({ "name": "x" }));
        assert_eq!(app.bearer(method, &unknown, &bob_token, body).await.status, 404);
    }
    // Bob's lists and mass revocation do not reach Alice either.
    let bobs = app.bearer("GET", "/auth/sessions", &bob_token, None).await.body["sessions"].clone();
    assert!(!ids(&bobs).contains(&alice_session));
    let bobs = app.bearer("GET", "/auth/devices", &bob_token, None).await.body["devices"].clone();
    assert!(!ids(&bobs).contains(&alice_device));
    app.bearer("DELETE", "/auth/sessions?except_current=true", &bob_token, None).await;

    // Nothing of Alice's changed.
    assert_eq!(app.introspect(&client, &alice_token).await["active"], true);
    let device =
        app.bearer("GET", "/auth/devices", &alice_token, None).await.body["devices"][0].clone();
    assert_eq!((device["trusted"].as_bool(), device["name"] == "pwned"), (Some(false), false));
}

async fn the_user_api_needs_a_live_user_token(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let machine =
        app.post_form("/auth/token", &client, &[("grant_type", "client_credentials")]).await;
    for path in ["/auth/sessions", "/auth/devices", "/auth/userinfo"] {
        let none =
            answer(app.http.get(format!("{}{path}", app.base)).send().await.expect("send")).await;
        assert_eq!(none.status, 401);
        assert!(none.header("www-authenticate").is_some_and(|h| h.starts_with("Bearer")));
        assert_eq!(app.bearer("GET", path, "garbage", None).await.status, 401);
        assert_eq!(app.bearer("GET", path, &machine.str("access_token"), None).await.status, 403);
    }
    let info = app.bearer("GET", "/auth/userinfo", &login.str("access_token"), None).await;
    assert_eq!((info.status, info.str("preferred_username").as_str()), (200, "alice"));
    assert_eq!(
        app.bearer("GET", "/auth/sessions/%00", &login.str("access_token"), None).await.status,
        400
    );
}

async fn the_eleventh_login_evicts_the_least_recently_used_session(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let mut logins = Vec::new();
    for _ in 0..10 {
        logins.push(app.login(&client, "alice", PASSWORD).await);
        app.clock.advance_secs(1);
    }
    // Using the first session makes the second the least recently used.
    let first = app.refresh(&client, &logins[0].str("refresh_token")).await;
    assert_eq!(first.status, 200);
    app.clock.advance_secs(1);
    let eleventh = app.login(&client, "alice", PASSWORD).await;
    assert_eq!(eleventh.status, 200);
    let list = app.bearer("GET", "/auth/sessions", &eleventh.str("access_token"), None).await;
    assert_eq!(list.body["sessions"].as_array().map(Vec::len), Some(10));
    assert_eq!(
        app.refresh(&client, &logins[1].str("refresh_token")).await.str("error"),
        "invalid_grant"
    );
    assert_eq!(app.introspect(&client, &logins[1].str("access_token")).await["active"], false);
    assert_eq!(app.refresh(&client, &first.str("refresh_token")).await.status, 200);
}

async fn the_idle_timeout_ends_a_session_on_refresh_and_introspection(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.sessions.idle_timeout = Duration::from_secs(600);
        c.tokens.access_ttl = Duration::from_secs(3600);
    })
    .await;
    let (client, login) = app.logged_in().await;
    app.clock.advance_secs(599);
    let refreshed = app.refresh(&client, &login.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "used within the idle timeout");
    app.clock.advance_secs(599);
    assert_eq!(app.introspect(&client, &refreshed.str("access_token")).await["active"], true);
    app.clock.advance_secs(2);
    assert_eq!(app.introspect(&client, &refreshed.str("access_token")).await["active"], false);
    let late = app.refresh(&client, &refreshed.str("refresh_token")).await;
    assert_eq!(late.str("error"), "invalid_grant");
}

async fn the_absolute_lifetime_ends_a_session_however_it_is_used(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.sessions.idle_timeout = Duration::from_secs(600);
        c.sessions.max_lifetime = Duration::from_secs(1000);
        c.tokens.access_ttl = Duration::from_secs(3600);
    })
    .await;
    let (client, login) = app.logged_in().await;
    let mut refresh = login.str("refresh_token");
    let mut access = String::new();
    for _ in 0..3 {
        app.clock.advance_secs(300);
        let a = app.refresh(&client, &refresh).await;
        assert_eq!(a.status, 200);
        (refresh, access) = (a.str("refresh_token"), a.str("access_token"));
    }
    assert_eq!(app.introspect(&client, &access).await["active"], true);
    app.clock.advance_secs(101);
    assert_eq!(app.introspect(&client, &access).await["active"], false);
    assert_eq!(app.refresh(&client, &refresh).await.str("error"), "invalid_grant");
}

async fn revoking_a_user_ends_every_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let alice_id = app.create_user("alice", PASSWORD).await;
    app.create_user("bob", PASSWORD).await;
    let client = app.confidential_client().await;
    let alices =
        futures::future::join_all((0..3).map(|_| app.login(&client, "alice", PASSWORD))).await;
    let bob = app.login(&client, "bob", PASSWORD).await;
    let admin_client = app.create_client("client_credentials", "admin", false).await;
    let admin =
        app.post_form("/auth/token", &admin_client, &[("grant_type", "client_credentials")]).await;
    let path = format!("/admin/users/{alice_id}/revoke");

    assert_eq!(app.bearer("POST", &path, &bob.str("access_token"), None).await.status, 403);
    let reader = app.create_client("client_credentials", "read", false).await;
    let reader =
        app.post_form("/auth/token", &reader, &[("grant_type", "client_credentials")]).await;
    assert_eq!(app.bearer("POST", &path, &reader.str("access_token"), None).await.status, 403);
    assert_eq!(
        app.bearer("POST", "/admin/users/nobody/revoke", &admin.str("access_token"), None)
            .await
            .status,
        404
    );

    let a = app.bearer("POST", &path, &admin.str("access_token"), None).await;
    assert_eq!((a.status, a.body["revoked_sessions"].as_u64()), (200, Some(3)), "{}", a.body);
    for login in &alices {
        assert_eq!(app.introspect(&client, &login.str("access_token")).await["active"], false);
        assert_eq!(
            app.refresh(&client, &login.str("refresh_token")).await.str("error"),
            "invalid_grant"
        );
    }
    assert_eq!(app.introspect(&client, &bob.str("access_token")).await["active"], true);
    // Alice may log in again afterwards.
    assert_eq!(app.login(&client, "alice", PASSWORD).await.status, 200);
}

async fn forwarded_for_is_believed_only_from_trusted_proxies(backend: Backend) {
    let header = [("x-forwarded-for", "6.6.6.6, 203.0.113.5")];
    for (trusted, expected) in [("", "127.0.0.1"), ("127.0.0.1/32, 10.0.0.0/8", "203.0.113.5")] {
        let app = spawn_app_with(backend, |c| {
            c.server.trusted_proxies = trusted.parse().expect("networks")
        })
        .await;
        app.create_user("alice", PASSWORD).await;
        let client = app.confidential_client().await;
        let login = app.login_with(&client, "alice", PASSWORD, &[], &header).await;
        let list = app.bearer("GET", "/auth/sessions", &login.str("access_token"), None).await;
        assert_eq!(list.body["sessions"][0]["ip"], expected);
        assert_eq!(list.body["sessions"][0]["device"]["last_ip"], expected);
    }
}

backend_tests!(
    sessions_list_marks_the_current_one_with_its_device,
    a_client_device_id_is_one_device_across_user_agents,
    ending_sessions_kills_their_tokens,
    ending_every_session_includes_the_current_one_by_default,
    devices_can_be_renamed_trusted_and_removed,
    another_users_sessions_and_devices_are_404_on_every_route,
    the_user_api_needs_a_live_user_token,
    the_eleventh_login_evicts_the_least_recently_used_session,
    the_idle_timeout_ends_a_session_on_refresh_and_introspection,
    the_absolute_lifetime_ends_a_session_however_it_is_used,
    revoking_a_user_ends_every_session,
    forwarded_for_is_believed_only_from_trusted_proxies,
);
