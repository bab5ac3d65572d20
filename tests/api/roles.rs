//! The admin access matrix, walked cell by cell over HTTP, and the rules around roles.

use serde_json::json;

use atoms_auth::domain::roles::{MATRIX, Permission, Role};

use crate::backend_tests;
use crate::helpers::{Answer, Backend, TestApp, TestClient, spawn_app};

const PASSWORD: &str = "role test password";

/// A user of `role`, logged in with the admin scope: their access token.
async fn admin_of(app: &TestApp, client: &TestClient, role: Role) -> String {
    let name = format!("{role}-{}", uuid::Uuid::new_v4().simple());
    let id = app.create_user(&name, PASSWORD).await;
    assert!(app.storage().set_user_role(&id, role.as_str()).await.expect("set role"));
    let login = app.login_with(client, &name, PASSWORD, &[("scope", "admin")], &[]).await;
    assert_eq!(login.status, 200, "{}", login.body);
    login.str("access_token")
}

/// One request that needs `permission`.
async fn exercise(app: &TestApp, token: &str, permission: Permission, target: &str) -> Answer {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let (method, path, body) = match permission {
        Permission::ReadUsers => ("GET", format!("/admin/users/{target}"), None),
        Permission::ChangeUsers => (
            "POST",
            "/admin/users".to_owned(),
            Some(json!({ "username": unique, "password": PASSWORD, "role": "viewer" })),
        ),
        Permission::EraseUsers => {
            let victim = app.create_user(&unique, PASSWORD).await;
            ("DELETE", format!("/admin/users/{victim}"), None)
        }
        Permission::ReadClients => unreachable!("needs the client id; done by the caller"),
        Permission::ChangeClients => (
            "POST",
            "/admin/clients".to_owned(),
            Some(json!({ "name": unique, "grant_types": ["client_credentials"] })),
        ),
        Permission::ReadSessions => ("GET", format!("/admin/users/{target}/sessions"), None),
        Permission::ChangeSessions => ("POST", format!("/admin/users/{target}/revoke"), None),
        Permission::ReadAudit => ("GET", "/admin/audit".to_owned(), None),
        Permission::ReadWebhooks => ("GET", "/admin/webhooks".to_owned(), None),
        Permission::ChangeWebhooks => (
            "POST",
            "/admin/webhooks".to_owned(),
            Some(json!({ "url": "http://127.0.0.1:9/hook", "events": ["session.created"] })),
        ),
        Permission::ReadKeys => ("GET", "/admin/keys".to_owned(), None),
        Permission::RotateKeys => ("POST", "/admin/keys/rotate".to_owned(), None),
    };
    app.bearer(method, &path, token, body).await
}

async fn every_cell_of_the_matrix(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.create_client("password refresh_token", "admin openid", false).await;
    let target = app.create_user("target", PASSWORD).await;
    for role in Role::ALL {
        let token = admin_of(&app, &client, role).await;
        for (permission, label, roles) in MATRIX {
            let answer = if permission == Permission::ReadClients {
                app.bearer("GET", &format!("/admin/clients/{}", client.id), &token, None).await
            } else {
                exercise(&app, &token, permission, &target).await
            };
            let allowed = roles.contains(&role);
            if allowed {
                assert!(
                    (200..300).contains(&answer.status),
                    "{role} may {label}, got {}: {}",
                    answer.status,
                    answer.body
                );
            } else {
                assert_eq!(answer.status, 403, "{role} may not {label}: {}", answer.body);
                assert_eq!(answer.header("content-type"), Some("application/problem+json"));
            }
        }
    }
}

async fn roles_apply_at_once_and_only_owners_make_owners(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.create_client("password refresh_token", "admin openid", false).await;
    let owner = admin_of(&app, &client, Role::Owner).await;
    let admin = admin_of(&app, &client, Role::Admin).await;
    let target = app.create_user("someone", PASSWORD).await;

    // An admin cannot make an owner, nor create one; an owner can.
    let promote = json!({ "role": "owner" });
    let refused =
        app.bearer("PATCH", &format!("/admin/users/{target}"), &admin, Some(promote.clone())).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    let made = json!({ "username": "new-owner", "password": PASSWORD, "role": "owner" });
    assert_eq!(app.bearer("POST", "/admin/users", &admin, Some(made.clone())).await.status, 403);
    let promoted =
        app.bearer("PATCH", &format!("/admin/users/{target}"), &owner, Some(promote)).await;
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    assert_eq!(promoted.body["role"], "owner");
    assert_eq!(app.bearer("POST", "/admin/users", &owner, Some(made)).await.status, 201);

    // A demoted admin loses the right with their next request, same token.
    let me = app.introspect(&client, &admin).await["sub"].as_str().expect("sub").to_owned();
    let demote = json!({ "role": "viewer" });
    let demoted = app.bearer("PATCH", &format!("/admin/users/{me}"), &owner, Some(demote)).await;
    assert_eq!(demoted.status, 200, "{}", demoted.body);
    let user = json!({ "username": "late", "password": PASSWORD });
    assert_eq!(app.bearer("POST", "/admin/users", &admin, Some(user)).await.status, 403);
    assert_eq!(app.bearer("GET", "/admin/audit", &admin, None).await.status, 200);

    // Bad input is a clear 400 and changes nothing.
    let bad = app
        .bearer("PATCH", &format!("/admin/users/{target}"), &owner, Some(json!({ "role": "root" })))
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(
        bad.body["detail"].as_str().is_some_and(|d| d.contains("owner, admin, member, viewer"))
    );
    let still = app.bearer("GET", &format!("/admin/users/{target}"), &owner, None).await;
    assert_eq!(still.body["role"], "owner");
    let short = json!({ "username": "x", "password": "short" });
    assert_eq!(app.bearer("POST", "/admin/users", &owner, Some(short)).await.status, 400);
    let missing =
        app.bearer("PATCH", "/admin/users/nobody", &owner, Some(json!({ "role": "viewer" }))).await;
    assert_eq!(missing.status, 404);

    // Without the admin scope even an owner's token is refused.
    let name = "scopeless";
    let id = app.create_user(name, PASSWORD).await;
    app.storage().set_user_role(&id, "owner").await.expect("role");
    let plain = app.login_with(&client, name, PASSWORD, &[("scope", "openid")], &[]).await;
    let refused = app.bearer("GET", "/admin/audit", &plain.str("access_token"), None).await;
    assert_eq!(refused.status, 403);

    // A created client shows its secret once; reading it back does not.
    let created = app
        .bearer(
            "POST",
            "/admin/clients",
            &owner,
            Some(
                json!({ "name": "svc", "grant_types": ["client_credentials"], "scopes": ["read"] }),
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert!(created.body["client_secret"].is_string());
    let id = created.str("client_id");
    let read = app.bearer("GET", &format!("/admin/clients/{id}"), &owner, None).await;
    assert!(read.body["client_secret"].is_null());
    let secret = created.str("client_secret");
    let svc = TestClient { id, secret: Some(secret) };
    let token = app.post_form("/auth/token", &svc, &[("grant_type", "client_credentials")]).await;
    assert_eq!(token.status, 200, "the new client works: {}", token.body);
}

backend_tests!(every_cell_of_the_matrix, roles_apply_at_once_and_only_owners_make_owners);
