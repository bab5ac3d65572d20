//! Erasing a user (`DELETE /admin/users/{id}`): every session ends, the account and what is
//! only theirs go, and the audit trail stays under a pseudonym without their personal data.

use serde_json::{Value, json};

use atoms_auth::ids::UserId;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, spawn_app};

const PASSWORD: &str = "erasure test password";
const AGENT: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) Firefox/133.0";

/// Every audit record whose user is `user_id`, oldest first.
async fn records_of(app: &TestApp, admin: &str, user_id: &str) -> Vec<Value> {
    app.state.audit.flush().await;
    let path = format!("/admin/audit?user_id={user_id}&order=asc&limit=1000");
    let page = app.bearer("GET", &path, admin, None).await;
    assert_eq!(page.status, 200, "{}", page.body);
    page.body["events"].as_array().expect("events").clone()
}

async fn erasing_a_user_keeps_the_trail_and_drops_the_person(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.admin_token().await;
    let created = app
        .bearer(
            "POST",
            "/admin/users",
            &admin,
            Some(json!({ "username": "ann.example", "password": PASSWORD })),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.str("id");
    let client = app.create_client("password refresh_token", "read account", false).await;
    let device =
        [("device_id", "ann-phone"), ("device_name", "Ann's phone"), ("device_platform", "iOS")];
    let phone =
        app.login_with(&client, "ann.example", PASSWORD, &device, &[("user-agent", AGENT)]).await;
    assert_eq!(phone.status, 200, "{}", phone.body);
    let laptop = app.login(&client, "ann.example", PASSWORD).await;
    assert_eq!(laptop.status, 200, "{}", laptop.body);
    let refreshed = app.refresh(&client, &laptop.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let storage = app.storage();
    storage.save_consent(UserId::new(&id), &client.id, "read", 0).await.expect("consent");
    assert_eq!(storage.user_devices(&id).await.expect("devices").len(), 2);
    let before = records_of(&app, &admin, &id).await;
    assert!(before.len() >= 6, "{before:?}");

    let erased = app.bearer("DELETE", &format!("/admin/users/{id}"), &admin, None).await;
    assert_eq!(erased.status, 200, "{}", erased.body);
    assert_eq!(erased.body["ended_sessions"], 2, "{}", erased.body);
    let pseudonym = erased.str("pseudonym");
    assert!(pseudonym.starts_with("erased-"), "{pseudonym}");

    // The account and everything only theirs is gone; their tokens stopped working.
    let gone = app.bearer("GET", &format!("/admin/users/{id}"), &admin, None).await;
    assert_eq!(gone.status, 404, "{}", gone.body);
    let login = app.login(&client, "ann.example", PASSWORD).await;
    assert_eq!((login.status, login.str("error")), (400, "invalid_grant".into()));
    let refused = app.refresh(&client, &refreshed.str("refresh_token")).await;
    assert_eq!((refused.status, refused.str("error")), (400, "invalid_grant".into()));
    let access = app.introspect(&client, &phone.str("access_token")).await;
    assert_eq!(access["active"], false, "{access}");
    let own = app.bearer("GET", "/auth/sessions", &refreshed.str("access_token"), None).await;
    assert_eq!(own.status, 401, "{}", own.body);
    assert!(storage.user_by_id(&id).await.expect("user").is_none());
    assert!(storage.user_by_username("ann.example").await.expect("user").is_none());
    assert!(storage.user_devices(&id).await.expect("devices").is_empty());
    assert_eq!(storage.consent(UserId::new(&id), &client.id).await.expect("consent"), None);
    let sid = phone.body["session_id"].as_str().map(str::to_owned);
    if let Some(sid) = sid {
        assert!(storage.session(&sid).await.expect("session").is_none());
    }

    // The trail: the same records, under the pseudonym, without the person.
    assert!(records_of(&app, &admin, &id).await.is_empty());
    let after = records_of(&app, &admin, &pseudonym).await;
    let ids = |records: &[Value]| records.iter().map(|r| r["id"].clone()).collect::<Vec<_>>();
    let kept: Vec<Value> = after.iter().filter(|r| r["event"] != "user.erased").cloned().collect();
    let kept_ids = ids(&kept);
    assert!(ids(&before).iter().all(|id| kept_ids.contains(id)), "every record is kept");
    let revoked = kept.iter().filter(|r| r["event"] == "session.revoked").count();
    assert_eq!(revoked, 2, "the erasure ended both sessions on the record");
    assert_eq!(erased.body["audit_records"], kept.len(), "{}", erased.body);
    for record in &kept {
        let text = record.to_string();
        for personal in [id.as_str(), "ann.example", "Ann's phone", "Firefox", "127.0.0.1"] {
            assert!(!text.contains(personal), "{personal} left in {text}");
        }
        assert_eq!(record["user_id"], pseudonym.as_str());
    }
    let erasure: Vec<_> = after.iter().filter(|r| r["event"] == "user.erased").collect();
    assert_eq!(erasure.len(), 1, "{after:?}");
    assert!(erasure[0]["actor"].as_str().is_some_and(|a| a.starts_with("client:")));
    app.state.audit.flush().await;
    let everything = app.bearer("GET", "/admin/audit?limit=1000", &admin, None).await;
    assert!(!everything.body.to_string().contains(&id), "the id is nowhere in the log");

    let again = app.bearer("DELETE", &format!("/admin/users/{id}"), &admin, None).await;
    assert_eq!(again.status, 404, "{}", again.body);
}

async fn only_an_owner_erases_an_owner(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.create_user("the-owner", PASSWORD).await;
    assert!(app.storage().set_user_role(&owner, "owner").await.expect("role"));
    let admin = app.admin_token().await;
    let refused = app.bearer("DELETE", &format!("/admin/users/{owner}"), &admin, None).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(app.storage().user_by_id(&owner).await.expect("user").is_some(), "nothing erased");
}

backend_tests!(erasing_a_user_keeps_the_trail_and_drops_the_person, only_an_owner_erases_an_owner);
