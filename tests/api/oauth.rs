//! The OAuth endpoints over HTTP, against every backend.

use atoms_auth::config::SigningAlgorithm;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::*;

const PASSWORD: &str = "correct horse battery";

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("jwt part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64")).expect("json")
}

/// Verifies `token` with the server's published JWKS, as a resource server would.
async fn verify_with_jwks(app: &TestApp, token: &str) -> Value {
    let jwks: JwkSet =
        serde_json::from_value(app.get("/.well-known/jwks.json").await.body).expect("jwks");
    let header = jsonwebtoken::decode_header(token).expect("header");
    let jwk = jwks.find(header.kid.as_deref().expect("kid")).expect("kid is published");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["http://atoms-auth.test"]);
    validation.set_issuer(&["http://atoms-auth.test"]);
    let key = DecodingKey::from_jwk(jwk).expect("key");
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("valid signature").claims
}

async fn password_grant_issues_rfc9068_token_and_session(backend: Backend) {
    let app = spawn_app(backend).await;
    let user_id = app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let login = app.login(&client, "alice", PASSWORD).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(login.header("cache-control"), Some("no-store"));
    assert_eq!(login.str("token_type"), "Bearer");
    assert_eq!(login.body["expires_in"], 900);
    assert_eq!(login.str("scope"), "read write account");
    // A version byte, the session id, the generation, 32 random bytes and a 16-byte MAC.
    assert_eq!(URL_SAFE_NO_PAD.decode(login.str("refresh_token")).map(|b| b.len()).ok(), Some(73));

    let token = login.str("access_token");
    let header = jwt_part(&token, 0);
    assert_eq!((header["typ"].as_str(), header["alg"].as_str()), (Some("at+jwt"), Some("EdDSA")));
    let claims = verify_with_jwks(&app, &token).await;
    for claim in ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope", "sid"] {
        assert!(!claims[claim].is_null(), "claim {claim} missing: {claims}");
    }
    assert_eq!(claims["sub"], user_id.as_str());
    assert_eq!(claims["client_id"], client.id.as_str());
    assert_eq!(claims["exp"].as_i64().zip(claims["iat"].as_i64()).map(|(e, i)| e - i), Some(900));

    let session_id = claims["sid"].as_str().expect("sid");
    let session = app.storage().session(session_id).await.expect("get").expect("session stored");
    assert_eq!(
        (session.user_id.as_str(), session.client_id.as_str()),
        (user_id.as_str(), client.id.as_str())
    );
    assert_eq!(session.ip.as_deref(), Some("127.0.0.1"));
    assert!(session.expires_at > session.created_at);
}

async fn client_credentials_grant_issues_token_without_refresh(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.confidential_client().await;
    let a = app
        .post_form(
            "/auth/token",
            &client,
            &[("grant_type", "client_credentials"), ("scope", "read")],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.get("refresh_token").is_none());
    assert_eq!(a.str("scope"), "read");
    let claims = verify_with_jwks(&app, &a.str("access_token")).await;
    assert_eq!(claims["sub"], client.id.as_str());
    assert!(claims.get("sid").is_none());
    let info = app.introspect(&client, &a.str("access_token")).await;
    assert_eq!(info["active"], true);
}

async fn client_secret_post_and_public_clients_authenticate(backend: Backend) {
    let app = spawn_app(backend).await;
    app.create_user("alice", PASSWORD).await;
    let client = app.confidential_client().await;
    let secret = client.secret.clone().expect("secret");
    let a = app
        .post_raw(
            "/auth/token",
            &[
                ("grant_type", "password"),
                ("client_id", &client.id),
                ("client_secret", &secret),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);

    let public = app.create_client("password refresh_token", "read", true).await;
    let login = app
        .post_raw(
            "/auth/token",
            &[
                ("grant_type", "password"),
                ("client_id", &public.id),
                ("username", "alice"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(login.status, 200, "{}", login.body);
    let refreshed = app
        .post_raw(
            "/auth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &public.id),
                ("refresh_token", &login.str("refresh_token")),
            ],
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
}

async fn refresh_rotates_and_grace_retry_revokes_successor(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let first = login.str("refresh_token");
    let second = app.refresh(&client, &first).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.header("cache-control"), Some("no-store"));
    let second_token = second.str("refresh_token");
    assert_ne!(second_token, first);

    // A client that lost the answer retries with the token it still has.
    app.clock.advance_secs(299);
    let retry = app.refresh(&client, &first).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    let third = retry.str("refresh_token");
    assert_eq!(app.introspect(&client, &second_token).await["active"], false);
    assert_eq!(app.introspect(&client, &third).await["active"], true);
    let next = app.refresh(&client, &third).await;
    assert_eq!(next.status, 200, "{}", next.body);
}

async fn reused_refresh_token_outside_grace_revokes_family(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let first = login.str("refresh_token");
    let second = app.refresh(&client, &first).await;
    let access = second.str("access_token");
    app.clock.advance_secs(301);
    let reuse = app.refresh(&client, &first).await;
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.str("error"), "invalid_grant");
    // The whole family is gone: the live token and the access tokens of the session.
    let live = app.refresh(&client, &second.str("refresh_token")).await;
    assert_eq!((live.status, live.str("error").as_str()), (400, "invalid_grant"));
    assert_eq!(app.introspect(&client, &access).await["active"], false);
    let sid = jwt_part(&access, 1)["sid"].as_str().expect("sid").to_owned();
    let session = app.storage().session(&sid).await.expect("get").expect("session");
    assert_eq!(session.revoke_reason.as_deref(), Some("refresh_token_reuse"));
}

async fn older_refresh_token_reuse_revokes_family_within_grace(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let first = login.str("refresh_token");
    let second = app.refresh(&client, &first).await.str("refresh_token");
    let third = app.refresh(&client, &second).await.str("refresh_token");
    let reuse = app.refresh(&client, &first).await;
    assert_eq!(reuse.str("error"), "invalid_grant");
    assert_eq!(app.introspect(&client, &third).await["active"], false);
}

/// A refresh token changed in any byte (its session id, its generation, its MAC), or one of
/// the format before that was never issued, is invalid_grant, and nothing changes: the real
/// token still rotates.
async fn forged_refresh_tokens_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let token = login.str("refresh_token");
    let bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64");
    for at in [1, 17, 24, 40, 60, 72] {
        let mut forged = bytes.clone();
        forged[at] ^= 0x01;
        let refused = app.refresh(&client, &URL_SAFE_NO_PAD.encode(&forged)).await;
        assert_eq!((refused.status, refused.str("error").as_str()), (400, "invalid_grant"), "{at}");
        let seen = app.introspect(&client, &URL_SAFE_NO_PAD.encode(&forged)).await;
        assert_eq!(seen["active"], false);
    }
    let never_issued = URL_SAFE_NO_PAD.encode([7u8; 32]);
    assert_eq!(app.refresh(&client, &never_issued).await.str("error"), "invalid_grant");
    assert_eq!(app.introspect(&client, &token).await["active"], true);
    let rotated = app.refresh(&client, &token).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    assert!(rotated.body["grace_retry"].is_null());
}

async fn concurrent_refreshes_answer_twice_then_end_the_family(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let token = login.str("refresh_token");
    let answers = futures::future::join_all((0..50).map(|_| app.refresh(&client, &token))).await;
    let issued: Vec<String> =
        answers.iter().filter(|a| a.status == 200).map(|a| a.str("refresh_token")).collect();
    // One rotation and one grace retry answer; the third use of the token is reuse and ends
    // the family, so every other answer is invalid_grant.
    assert_eq!(issued.len(), 2, "one rotation and one grace retry");
    assert!(answers.iter().filter(|a| a.status != 200).all(|a| a.str("error") == "invalid_grant"));
    for token in &issued {
        assert_eq!(app.introspect(&client, token).await["active"], false);
        assert_eq!(app.refresh(&client, token).await.status, 400);
    }
}

async fn revoking_refresh_token_ends_session_and_its_access_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let a = app.revoke(&client, &login.str("refresh_token")).await;
    assert_eq!(a.status, 200);
    assert_eq!(app.introspect(&client, &login.str("access_token")).await["active"], false);
    assert_eq!(app.introspect(&client, &login.str("refresh_token")).await["active"], false);
    let refresh = app.refresh(&client, &login.str("refresh_token")).await;
    assert_eq!(refresh.str("error"), "invalid_grant");
}

async fn revoking_access_token_makes_only_it_inactive(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let access = login.str("access_token");
    assert_eq!(app.revoke(&client, &access).await.status, 200);
    assert_eq!(app.introspect(&client, &access).await["active"], false);
    // The session lives on: its refresh token still works.
    let refreshed = app.refresh(&client, &login.str("refresh_token")).await;
    assert_eq!(refreshed.status, 200);
    assert_eq!(app.introspect(&client, &refreshed.str("access_token")).await["active"], true);
    // Unknown tokens answer 200 (RFC 7009 §2.2).
    assert_eq!(app.revoke(&client, "not-a-token").await.status, 200);
    assert_eq!(app.revoke(&client, "a.b.c").await.status, 200);
}

/// Another client's revocation changes nothing, and its answer is the one a dead or unknown
/// token gets (RFC 7009 §2.2), so it cannot tell whether a token is live.
async fn a_client_cannot_revoke_another_clients_tokens(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let other = app.confidential_client().await;
    let dead = app.login(&client, "alice", "correct horse battery").await;
    app.revoke(&client, &dead.str("refresh_token")).await;
    for token in [login.str("access_token"), login.str("refresh_token")] {
        let live = app.revoke(&other, &token).await;
        assert_eq!(app.introspect(&client, &token).await["active"], true);
        let gone = app.revoke(&other, &dead.str("refresh_token")).await;
        let unknown = app.revoke(&other, "no-such-token").await;
        for a in [&live, &gone, &unknown] {
            assert_eq!((a.status, &a.body), (200, &serde_json::Value::Null));
        }
    }
}

async fn introspection_reports_claims_and_expiry(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let resource_server = app.resource_server().await;
    let info = app.introspect(&resource_server, &login.str("access_token")).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["client_id"], client.id.as_str());
    assert_eq!(info["token_type"], "Bearer");
    assert!(info["sid"].is_string() && info["sub"].is_string() && info["exp"].is_i64());
    let refresh = app.introspect(&client, &login.str("refresh_token")).await;
    assert_eq!(
        (refresh["active"].as_bool(), refresh["token_type"].as_str()),
        (Some(true), Some("refresh_token"))
    );

    app.clock.advance_secs(901);
    let info = app.introspect(&client, &login.str("access_token")).await;
    assert_eq!(info, serde_json::json!({ "active": false }));
}

async fn introspection_requires_a_confidential_client(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, login) = app.logged_in().await;
    let public = app.create_client("password", "read", true).await;
    let a = app
        .post_raw(
            "/auth/introspect",
            &[("client_id", &public.id), ("token", &login.str("access_token"))],
        )
        .await;
    assert_eq!((a.status, a.str("error").as_str()), (401, "invalid_client"));
    let a = app.post_raw("/auth/introspect", &[("token", &login.str("access_token"))]).await;
    assert_eq!(a.status, 401);
}

async fn discovery_documents_describe_the_server(backend: Backend) {
    let app = spawn_app(backend).await;
    for path in ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"] {
        let meta = app.get(path).await;
        assert_eq!(meta.status, 200);
        assert_eq!(meta.str("issuer"), "http://atoms-auth.test");
        assert_eq!(meta.str("token_endpoint"), "http://atoms-auth.test/auth/token");
        assert_eq!(meta.str("jwks_uri"), "http://atoms-auth.test/.well-known/jwks.json");
        assert_eq!(meta.body["grant_types_supported"].as_array().map(Vec::len), Some(4));
    }
    let jwks = app.get("/.well-known/jwks.json").await;
    let keys = jwks.body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0]["kty"].as_str(), keys[0]["crv"].as_str()), (Some("OKP"), Some("Ed25519")));
    assert!(keys[0].get("d").is_none(), "no private part is published");
    let live = app.get("/health/live").await;
    assert_eq!((live.status, live.str("status").as_str()), (200, "healthy"));
}

async fn rotated_key_stays_published_until_its_tokens_expire(backend: Backend) {
    let app = spawn_app(backend).await;
    let (client, login) = app.logged_in().await;
    let old_token = login.str("access_token");
    let old_kid = jwt_part(&old_token, 0)["kid"].as_str().expect("kid").to_owned();
    let new_kid = app.state.keys.rotate().await.expect("rotate");
    assert_ne!(old_kid, new_kid);
    let kids = |jwks: Value| -> Vec<String> {
        jwks["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let published = kids(app.get("/.well-known/jwks.json").await.body);
    assert!(published.contains(&old_kid) && published.contains(&new_kid), "{published:?}");
    assert_eq!(app.introspect(&client, &old_token).await["active"], true);
    let fresh = app.refresh(&client, &login.str("refresh_token")).await.str("access_token");
    assert_eq!(jwt_part(&fresh, 0)["kid"], new_kid.as_str());
    verify_with_jwks(&app, &fresh).await;

    // Every token of the old key has expired, and so has the time another instance may have
    // kept signing with it before reloading: it leaves the key set.
    app.clock.advance_secs(901);
    app.state.keys.reload().await.expect("reload");
    assert!(kids(app.get("/.well-known/jwks.json").await.body).contains(&old_kid));
    app.clock.advance_secs(120);
    app.state.keys.reload().await.expect("reload");
    assert_eq!(kids(app.get("/.well-known/jwks.json").await.body), vec![new_kid]);
}

async fn es256_and_rs256_keys_are_selectable(backend: Backend) {
    for (alg, kty) in [(SigningAlgorithm::ES256, "EC"), (SigningAlgorithm::RS256, "RSA")] {
        let app = spawn_app_with(backend, with_alg(alg)).await;
        let (client, login) = app.logged_in().await;
        let token = login.str("access_token");
        assert_eq!(jwt_part(&token, 0)["alg"], alg.as_str());
        assert_eq!(app.get("/.well-known/jwks.json").await.body["keys"][0]["kty"], kty);
        verify_with_jwks(&app, &token).await;
        assert_eq!(app.introspect(&client, &token).await["active"], true);
    }
}

async fn signing_keys_are_encrypted_at_rest_with_the_master_key(backend: Backend) {
    const MASTER: &str = "m4ster-key, long enough to be a passphrase";
    let app = spawn_app_with(backend, |c| c.keys.master_key = Some(MASTER.into())).await;
    let (client, login) = app.logged_in().await;
    let stored = app.storage().signing_keys(0).await.expect("keys");
    assert!(stored.iter().all(|k| k.encrypted));
    let db = app.stop().await;

    // A restart with the same master key reads the key back and honours old tokens.
    let mut config = db.config();
    config.keys.master_key = Some(MASTER.into());
    let app = spawn_on(db, config).await;
    assert_eq!(app.introspect(&client, &login.str("access_token")).await["active"], true);
    let db = app.stop().await;

    // Without it (or with another one) the server refuses to start.
    let mut config = db.config();
    config.keys.master_key = Some("another passphrase, just as long".into());
    let clock: std::sync::Arc<dyn atoms_auth::clock::Clock> =
        std::sync::Arc::new(atoms_auth::clock::SystemClock);
    assert!(atoms_auth::App::build_with_clock(config, clock.clone()).await.is_err());
    assert!(atoms_auth::App::build_with_clock(db.config(), clock).await.is_err());
}

backend_tests!(
    forged_refresh_tokens_change_nothing,
    password_grant_issues_rfc9068_token_and_session,
    client_credentials_grant_issues_token_without_refresh,
    client_secret_post_and_public_clients_authenticate,
    refresh_rotates_and_grace_retry_revokes_successor,
    reused_refresh_token_outside_grace_revokes_family,
    older_refresh_token_reuse_revokes_family_within_grace,
    concurrent_refreshes_answer_twice_then_end_the_family,
    revoking_refresh_token_ends_session_and_its_access_tokens,
    revoking_access_token_makes_only_it_inactive,
    a_client_cannot_revoke_another_clients_tokens,
    introspection_reports_claims_and_expiry,
    introspection_requires_a_confidential_client,
    discovery_documents_describe_the_server,
    rotated_key_stays_published_until_its_tokens_expire,
    es256_and_rs256_keys_are_selectable,
    signing_keys_are_encrypted_at_rest_with_the_master_key,
);
