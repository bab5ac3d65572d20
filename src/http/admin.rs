//! The admin API, authenticated by an access token with the admin scope: user revocation,
//! the audit log and webhook subscriptions.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use axum::Json;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Admin;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::clock::{Millis, rfc3339};
use crate::domain::accounts::{self, NewClient, NewUser, client_json};
use crate::domain::audit::record_json;
use crate::domain::resources::{NewResource, resource_json};
use crate::domain::roles::{Permission, Role};
use crate::domain::webhooks::WebhookError;
use crate::error::ApiError;
use crate::ids::UserId;
use crate::storage::{AuditQuery, User, WebhookAttempt, WebhookDelivery, WebhookSubscription};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(get_user, update_user, erase_user))
        .routes(routes!(user_sessions))
        .routes(routes!(revoke_user))
        .routes(routes!(create_client, list_clients))
        .routes(routes!(get_client, change_client, remove_client))
        .routes(routes!(list_resources, create_resource, delete_resource))
        .routes(routes!(keys))
        .routes(routes!(rotate_keys))
        .routes(routes!(audit))
        .routes(routes!(create_webhook, list_webhooks))
        .routes(routes!(get_webhook, delete_webhook))
        .routes(routes!(test_webhook))
        .routes(routes!(deliveries))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    username: String,
    password: String,
    role: Option<String>,
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse().map_err(ApiError::BadRequest)
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "role": user.role,
        "disabled": user.disabled,
        "created_at": rfc3339(user.created_at),
    })
}

/// Only an owner makes or unmakes an owner.
fn check_owner_change(admin: &Admin, from: Option<Role>, to: Role) -> Result<(), ApiError> {
    let touches_owner = to == Role::Owner || from == Some(Role::Owner);
    if touches_owner && admin.role != Role::Owner {
        return Err(ApiError::Forbidden("only an owner can make or unmake an owner"));
    }
    Ok(())
}

/// Creates a user (a member unless a role is given).
#[utoipa::path(post, path = "/admin/users", tag = "admin", summary = "Create a user", request_body = NewUserBody, security(("bearer" = [])),
    responses((status = 201, description = "The user", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub))]
async fn create_user(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<NewUserBody>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeUsers)?;
    let role = parse_role(body.role.as_deref().unwrap_or("member"))?;
    check_owner_change(&admin, None, role)?;
    let new = NewUser { username: body.username, password: body.password, role };
    let user = state.accounts.register_user(new, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

#[utoipa::path(get, path = "/admin/users/{id}", tag = "admin", summary = "Read a user", params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "The user", body = Object), crate::http::openapi::AdminErrors))]
async fn get_user(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadUsers)?;
    let user = state.accounts.user(&id).await?.ok_or(ApiError::NotFound("no such user"))?;
    Ok(Json(user_json(&user)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UserChange {
    role: String,
}

/// Changes a user's role; it applies to their next admin request.
#[utoipa::path(patch, path = "/admin/users/{id}", tag = "admin", summary = "Change a user's role", params(("id" = String, Path, description = "User id")), request_body = UserChange, security(("bearer" = [])),
    responses((status = 200, description = "The user", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub, user_id = %id))]
async fn update_user(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
    ApiJson(change): ApiJson<UserChange>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeUsers)?;
    let role = parse_role(&change.role)?;
    let user = state.accounts.user(&id).await?.ok_or(ApiError::NotFound("no such user"))?;
    check_owner_change(&admin, user.role.parse().ok(), role)?;
    let changed = state.accounts.set_role(&id, role, &admin.actor()).await?;
    let user = changed.ok_or(ApiError::NotFound("no such user"))?;
    tracing::info!(from = %user.role, to = %role, "role changed");
    let user = User { role: role.as_str().to_owned(), ..user };
    Ok(Json(user_json(&user)).into_response())
}

/// Erases a user: their sessions end, their account, devices and consents are deleted, and
/// their audit records are kept under a pseudonym without their personal data.
#[utoipa::path(delete, path = "/admin/users/{id}", tag = "admin", summary = "Erase a user", params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "`{user_id, pseudonym, ended_sessions, audit_records}`", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub, user_id = %id))]
async fn erase_user(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::EraseUsers)?;
    let user = state.accounts.user(&id).await?.ok_or(ApiError::NotFound("no such user"))?;
    if user.role.parse() == Ok(Role::Owner) && admin.role != Role::Owner {
        return Err(ApiError::Forbidden("only an owner can erase an owner"));
    }
    let erased = state.accounts.erase_user(&id, &state.sessions, &admin.actor()).await?;
    let erased = erased.ok_or(ApiError::NotFound("no such user"))?;
    tracing::info!(pseudonym = %erased.pseudonym, "user erased");
    Ok(Json(json!({
        "user_id": id,
        "pseudonym": erased.pseudonym,
        "ended_sessions": erased.ended_sessions,
        "audit_records": erased.audit_records,
    }))
    .into_response())
}

/// Another user's active sessions.
#[utoipa::path(get, path = "/admin/users/{id}/sessions", tag = "admin", summary = "A user's active sessions", params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "`{user_id, sessions}`", body = Object), crate::http::openapi::AdminErrors))]
async fn user_sessions(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadSessions)?;
    state.accounts.user(&id).await?.ok_or(ApiError::NotFound("no such user"))?;
    let sessions = state.sessions.list(UserId::new(&id), None).await?;
    Ok(Json(json!({ "user_id": id, "sessions": sessions })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewClientBody {
    name: String,
    client_id: Option<String>,
    #[serde(default)]
    public: bool,
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    /// May introspect the tokens of every client.
    #[serde(default)]
    resource_server: bool,
    /// Where the authorization endpoint may send the browser back (required with the
    /// `authorization_code` grant): https, loopback http, or a native app's private-use scheme.
    #[serde(default)]
    redirect_uris: Vec<String>,
    /// A first-party client: its users are not asked for consent.
    #[serde(default)]
    skip_consent: bool,
}

/// Registers a client; the answer shows its secret this once.
#[utoipa::path(post, path = "/admin/clients", tag = "admin", summary = "Register a client (the secret is shown once)", request_body = NewClientBody, security(("bearer" = [])),
    responses((status = 201, description = "The client with its secret", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub))]
async fn create_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<NewClientBody>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeClients)?;
    let new = NewClient {
        client_id: body.client_id,
        name: body.name,
        public: body.public,
        grant_types: body.grant_types,
        scopes: body.scopes,
        resource_server: body.resource_server,
        created_by: admin.user_id.clone(),
        redirect_uris: body.redirect_uris,
        skip_consent: body.skip_consent,
    };
    let (client, secret) = state.accounts.register_client(new, &admin.actor()).await?;
    let mut response =
        (StatusCode::CREATED, Json(client_json(&client, secret.as_ref()))).into_response();
    crate::error::no_store(&mut response);
    Ok(response)
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ClientsParams {
    /// Only clients that registered themselves (true) or that an operator registered (false).
    registered: Option<bool>,
}

/// Every client, without secrets.
#[utoipa::path(get, path = "/admin/clients", tag = "admin", summary = "List the clients (those that registered themselves with ?registered=true)", params(ClientsParams), security(("bearer" = [])),
    responses((status = 200, description = "`{clients: [...]}`", body = Object), crate::http::openapi::AdminErrors))]
async fn list_clients(
    State(state): State<AppState>,
    admin: Admin,
    ApiQuery(p): ApiQuery<ClientsParams>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadClients)?;
    let clients = state.accounts.clients().await?;
    let listed: Vec<_> = clients
        .iter()
        .filter(|c| p.registered.is_none_or(|registered| c.registered == registered))
        .map(|c| client_json(c, None))
        .collect();
    Ok(Json(json!({ "clients": listed })).into_response())
}

#[utoipa::path(get, path = "/admin/clients/{id}", tag = "admin", summary = "Read a client", params(("id" = String, Path, description = "Client id")), security(("bearer" = [])),
    responses((status = 200, description = "The client, without secret", body = Object), crate::http::openapi::AdminErrors))]
async fn get_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadClients)?;
    let client = state.accounts.client(&id).await?.ok_or(ApiError::NotFound("no such client"))?;
    Ok(Json(client_json(&client, None)).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ClientChangeBody {
    /// Disable (true) or enable (false) the client.
    disabled: Option<bool>,
    /// Issue a new secret; the old one stops working at once.
    #[serde(default)]
    rotate_secret: bool,
    /// Replace the redirect URIs.
    redirect_uris: Option<Vec<String>>,
    /// Ask (false) or stop asking (true) the client's users for consent.
    skip_consent: Option<bool>,
}

/// Disables or enables a client, or rotates its secret (shown once).
#[utoipa::path(patch, path = "/admin/clients/{id}", tag = "admin", summary = "Disable, enable or re-key a client; change its redirect URIs or consent setting", params(("id" = String, Path, description = "Client id")), request_body = ClientChangeBody, security(("bearer" = [])),
    responses((status = 200, description = "The client, with its new secret when rotated", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub, client_id = %id))]
async fn change_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
    ApiJson(body): ApiJson<ClientChangeBody>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeClients)?;
    let change = accounts::ClientChange {
        disabled: body.disabled,
        rotate_secret: body.rotate_secret,
        redirect_uris: body.redirect_uris,
        skip_consent: body.skip_consent,
    };
    let changed = state.accounts.change_client(&id, change, &admin.actor()).await?;
    let (client, secret) = changed.ok_or(ApiError::NotFound("no such client"))?;
    state.tokens.forget_client(&id).await;
    let mut response = Json(client_json(&client, secret.as_ref())).into_response();
    crate::error::no_store(&mut response);
    Ok(response)
}

/// Deletes a client: it authenticates no more and its tokens act for nobody.
#[utoipa::path(delete, path = "/admin/clients/{id}", tag = "admin", summary = "Delete a client", params(("id" = String, Path, description = "Client id")), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub, client_id = %id))]
async fn remove_client(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeClients)?;
    if !state.accounts.remove_client(&id, &admin.actor()).await? {
        return Err(ApiError::NotFound("no such client"));
    }
    state.tokens.forget_client(&id).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewResourceBody {
    /// The resource's URI (RFC 8707): absolute, no fragment; https, or http on localhost.
    uri: String,
    /// A name people see; the URI when absent.
    name: Option<String>,
    /// The scopes it understands.
    scopes: Vec<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ResourceParams {
    /// The resource's URI.
    uri: String,
}

/// The registered resources.
#[utoipa::path(get, path = "/admin/resources", tag = "admin", summary = "The resources (RFC 8707) tokens may be issued for", security(("bearer" = [])),
    responses((status = 200, description = "`{resources: [...]}`", body = Object), crate::http::openapi::AdminErrors))]
async fn list_resources(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    admin.require(Permission::ReadClients)?;
    let resources = state.accounts.resources().await?;
    let resources: Vec<_> = resources.iter().map(resource_json).collect();
    Ok(Json(json!({ "resources": resources })).into_response())
}

/// Registers a resource.
#[utoipa::path(post, path = "/admin/resources", tag = "admin", summary = "Register a resource (an MCP server) with its scopes", request_body = NewResourceBody, security(("bearer" = [])),
    responses((status = 201, description = "The resource", body = Object), (status = 409, description = "The URI is registered already", body = crate::http::openapi::Problem, content_type = "application/problem+json"), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub))]
async fn create_resource(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<NewResourceBody>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeClients)?;
    let new = NewResource { uri: body.uri, name: body.name, scopes: body.scopes };
    let resource = state.accounts.register_resource(new, &admin.actor()).await?;
    Ok((StatusCode::CREATED, Json(resource_json(&resource))).into_response())
}

/// Removes a resource.
#[utoipa::path(delete, path = "/admin/resources", tag = "admin", summary = "Remove a resource", params(ResourceParams), security(("bearer" = [])),
    responses((status = 204, description = "Removed"), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub))]
async fn delete_resource(
    State(state): State<AppState>,
    admin: Admin,
    ApiQuery(p): ApiQuery<ResourceParams>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeClients)?;
    if !state.accounts.remove_resource(&p.uri, &admin.actor()).await? {
        return Err(ApiError::NotFound("no such resource"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The published keys and which one signs.
#[utoipa::path(get, path = "/admin/keys", tag = "admin", summary = "The signing keys", security(("bearer" = [])),
    responses((status = 200, description = "`{active_kid, algorithm, active_since, jwks}`", body = Object), crate::http::openapi::AdminErrors))]
async fn keys(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    admin.require(Permission::ReadKeys)?;
    let signer = state.keys.signer();
    Ok(Json(json!({
        "active_kid": signer.as_ref().map(|s| s.kid.clone()),
        "algorithm": signer.as_ref().map(|s| s.alg.as_str()),
        "active_since": signer.as_ref().map(|s| rfc3339(s.created_at)),
        "jwks": state.keys.jwks(),
    }))
    .into_response())
}

/// Rotates the signing key now (audited as `key.rotated`).
#[utoipa::path(post, path = "/admin/keys/rotate", tag = "admin", summary = "Rotate the signing key now", security(("bearer" = [])),
    responses((status = 200, description = "`{active_kid}`", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub))]
async fn rotate_keys(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    admin.require(Permission::RotateKeys)?;
    let kid = state.keys.rotate().await.map_err(ApiError::Internal)?;
    Ok(Json(json!({ "active_kid": kid })).into_response())
}

/// Ends every session of the user: their refresh families and access tokens stop working.
#[utoipa::path(post, path = "/admin/users/{id}/revoke", tag = "admin", summary = "End every session of a user", params(("id" = String, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, description = "`{user_id, revoked_sessions}`", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all, fields(admin = %admin.claims.sub, user_id = %id))]
async fn revoke_user(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeSessions)?;
    let ended = state.sessions.revoke_user(&id, &admin.actor()).await?;
    let ended = ended.ok_or(ApiError::NotFound("no such user"))?;
    Ok(Json(json!({ "user_id": id, "revoked_sessions": ended })).into_response())
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditParams {
    user_id: Option<String>,
    event: Option<String>,
    /// RFC 3339, inclusive.
    since: Option<String>,
    /// RFC 3339, exclusive.
    until: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
    /// `desc` (newest first, the default) or `asc`.
    order: Option<String>,
}

/// Parses an RFC 3339 time to milliseconds.
pub fn parse_time(name: &str, value: &str) -> Result<Millis, ApiError> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| ApiError::BadRequest(format!("{name} must be an RFC 3339 time")))?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis)
}

#[utoipa::path(get, path = "/admin/audit", tag = "admin", summary = "Read the audit log", params(AuditParams), security(("bearer" = [])),
    responses((status = 200, description = "`{events, next_cursor}`", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn audit(
    State(state): State<AppState>,
    admin: Admin,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadAudit)?;
    let query = audit_query(p)?;
    let limit = query.limit;
    let records = state.audit.query(&query).await?;
    let next_cursor =
        (records.len() == limit as usize).then(|| records.last().map(|r| r.id.clone()));
    let events: Vec<Value> = records.iter().map(record_json).collect();
    Ok(Json(json!({ "events": events, "next_cursor": next_cursor.flatten() })).into_response())
}

/// Whether `cursor` has the form of a record id (a UUID's text), as every cursor handed out
/// has.
fn is_record_id(cursor: &str) -> bool {
    cursor.len() == 36
        && cursor.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The audit query that listing parameters ask for, or why they are refused.
pub(crate) fn audit_query(p: AuditParams) -> Result<AuditQuery, ApiError> {
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let ascending = match p.order.as_deref() {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return Err(ApiError::BadRequest("order must be asc or desc".into())),
    };
    if [&p.user_id, &p.event, &p.cursor]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.contains('\0')))
    {
        return Err(ApiError::BadRequest("parameters must not contain NUL".into()));
    }
    if p.cursor.as_deref().is_some_and(|c| !is_record_id(c)) {
        return Err(ApiError::BadRequest("cursor must be a next_cursor this API gave".into()));
    }
    Ok(AuditQuery {
        user_id: p.user_id,
        event: p.event,
        since: p.since.as_deref().map(|v| parse_time("since", v)).transpose()?,
        until: p.until.as_deref().map(|v| parse_time("until", v)).transpose()?,
        cursor: p.cursor,
        ascending,
        limit,
    })
}

fn subscription_json(s: &WebhookSubscription) -> Value {
    json!({
        "id": s.id,
        "url": s.url,
        "events": s.events.split_whitespace().collect::<Vec<_>>(),
        "created_at": rfc3339(s.created_at),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewWebhook {
    url: String,
    events: Vec<String>,
}

#[utoipa::path(post, path = "/admin/webhooks", tag = "admin", summary = "Subscribe a URL to events (the secret is shown once)", request_body = NewWebhook, security(("bearer" = [])),
    responses((status = 201, description = "The subscription with its signing secret", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn create_webhook(
    State(state): State<AppState>,
    admin: Admin,
    ApiJson(body): ApiJson<NewWebhook>,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeWebhooks)?;
    let created = state.webhooks.create(&body.url, &body.events, state.clock.now_ms()).await;
    let subscription = created.map_err(|e| match e {
        WebhookError::Invalid(why) => ApiError::BadRequest(why),
        WebhookError::Storage(e) => ApiError::Storage(e),
        WebhookError::Internal(e) => ApiError::Internal(e),
    })?;
    let mut answer = subscription_json(&subscription);
    // The only time the secret is shown.
    answer["secret"] = json!(subscription.secret);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

#[utoipa::path(get, path = "/admin/webhooks", tag = "admin", summary = "The webhook subscriptions", security(("bearer" = [])),
    responses((status = 200, description = "`{webhooks: [...]}`", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn list_webhooks(State(state): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    admin.require(Permission::ReadWebhooks)?;
    let list: Vec<Value> = state.webhooks.list().await?.iter().map(subscription_json).collect();
    Ok(Json(json!({ "webhooks": list })).into_response())
}

const NO_WEBHOOK: ApiError = ApiError::NotFound("no such webhook");

#[utoipa::path(get, path = "/admin/webhooks/{id}", tag = "admin", summary = "One subscription", params(("id" = String, Path, description = "Subscription id")), security(("bearer" = [])),
    responses((status = 200, description = "The subscription", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn get_webhook(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadWebhooks)?;
    let found = state.webhooks.get(&id).await?.ok_or(NO_WEBHOOK)?;
    Ok(Json(subscription_json(&found)).into_response())
}

#[utoipa::path(delete, path = "/admin/webhooks/{id}", tag = "admin", summary = "Delete a subscription and its deliveries", params(("id" = String, Path, description = "Subscription id")), security(("bearer" = [])),
    responses((status = 204, description = "Deleted"), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn delete_webhook(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<StatusCode, ApiError> {
    admin.require(Permission::ChangeWebhooks)?;
    if state.webhooks.delete(&id).await? { Ok(StatusCode::NO_CONTENT) } else { Err(NO_WEBHOOK) }
}

#[utoipa::path(post, path = "/admin/webhooks/{id}/test", tag = "admin", summary = "Queue a test event for a subscription", params(("id" = String, Path, description = "Subscription id")), security(("bearer" = [])),
    responses((status = 202, description = "Queued", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn test_webhook(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ChangeWebhooks)?;
    let event_id = state.webhooks.send_test(&id).await?.ok_or(NO_WEBHOOK)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "event_id": event_id }))).into_response())
}

fn delivery_json(d: &WebhookDelivery, attempts: &[WebhookAttempt]) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event": d.event,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at.filter(|_| d.status == "pending").map(rfc3339),
        "created_at": rfc3339(d.created_at),
        "finished_at": d.finished_at.map(rfc3339),
        "log": attempts.iter().map(|a| json!({
            "attempt": a.attempt,
            "at": rfc3339(a.at),
            "status_code": a.status_code,
            "error": a.error,
            "duration_ms": a.duration_ms,
        })).collect::<Vec<_>>(),
    })
}

#[utoipa::path(get, path = "/admin/webhooks/{id}/deliveries", tag = "admin", summary = "A subscription's newest 100 deliveries and their attempts", params(("id" = String, Path, description = "Subscription id")), security(("bearer" = [])),
    responses((status = 200, description = "`{deliveries: [...]}`", body = Object), crate::http::openapi::AdminErrors))]
#[tracing::instrument(skip_all)]
async fn deliveries(
    State(state): State<AppState>,
    admin: Admin,
    ApiPath(id): ApiPath,
) -> Result<Response, ApiError> {
    admin.require(Permission::ReadWebhooks)?;
    let list = state.webhooks.deliveries(&id, 100).await?.ok_or(NO_WEBHOOK)?;
    let list: Vec<Value> = list.iter().map(|(d, a)| delivery_json(d, a)).collect();
    Ok(Json(json!({ "deliveries": list })).into_response())
}
