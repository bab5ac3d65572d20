//! Creating users and clients: the rules the CLI and the admin API share.

use serde_json::json;
use uuid::Uuid;

use std::sync::Arc;

use super::audit::{Audit, Entry, entry, events};
use super::resources::{NewResource, create_resource, delete_resource};
use super::roles::Role;
use super::secrets::{Secret, hash_password};
use super::sign_in::check_redirect_uri;
use super::tokens::GRANT_TYPES;
use crate::clock::{Clock, Millis};
use crate::ids::UserId;
use crate::storage::{Client, Resource, Storage, StorageError, User, revoke_reason};

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The request breaks a rule; the message says which.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

fn invalid(message: &str) -> AccountError {
    AccountError::Invalid(message.to_owned())
}

/// A user to create.
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub role: Role,
}

/// Creates a user; returns it with its `user.created` audit record (the caller adds the actor
/// and records it).
pub async fn create_user(
    storage: &dyn Storage,
    new: NewUser,
    now: Millis,
) -> Result<(User, Entry), AccountError> {
    let username = new.username.trim();
    if username.is_empty() || username.chars().count() > 200 {
        return Err(invalid("the username must have 1 to 200 characters"));
    }
    if new.password.chars().count() < 8 || new.password.len() > 1024 {
        return Err(invalid("the password must have 8 to 1024 characters"));
    }
    let user = User {
        id: super::id_text(Uuid::now_v7()),
        username: username.to_owned(),
        password_hash: hash_password(new.password).await?,
        created_at: now,
        disabled: false,
        role: new.role.as_str().to_owned(),
    };
    storage.create_user(&user).await?;
    let created = entry(events::USER_CREATED)
        .user(&user.id)
        .detail("username", user.username.as_str())
        .detail("role", user.role.as_str());
    Ok((user, created))
}

/// A client to register.
pub struct NewClient {
    pub client_id: Option<String>,
    pub name: String,
    pub public: bool,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    /// May introspect tokens of every client.
    pub resource_server: bool,
    /// The user who registers it (admin API), whose role its admin tokens act with.
    pub created_by: Option<String>,
    /// Where the authorization endpoint may send the browser back.
    pub redirect_uris: Vec<String>,
    /// A first-party client: its users are not asked for consent.
    pub skip_consent: bool,
}

/// Checks redirect URIs to register: each one valid, at least one for a client that uses
/// the `authorization_code` grant.
fn check_redirect_uris(uris: &[String], grant_types: &str) -> Result<(), AccountError> {
    for uri in uris {
        check_redirect_uri(uri).map_err(AccountError::Invalid)?;
    }
    let browser = grant_types.split_whitespace().any(|g| g == "authorization_code");
    if browser && uris.is_empty() {
        return Err(invalid("the authorization_code grant needs at least one redirect URI"));
    }
    Ok(())
}

/// Registers a client; returns it, its secret (shown this once; none for a public client)
/// and its `client.created` audit record.
pub async fn create_client(
    storage: &dyn Storage,
    new: NewClient,
    now: Millis,
) -> Result<(Client, Option<Secret>, Entry), AccountError> {
    if new.name.trim().is_empty() || new.name.chars().count() > 200 {
        return Err(invalid("the name must have 1 to 200 characters"));
    }
    if new.grant_types.is_empty() {
        return Err(invalid("at least one grant type is required"));
    }
    for grant in &new.grant_types {
        if !GRANT_TYPES.contains(&grant.as_str()) {
            return Err(AccountError::Invalid(format!("unknown grant type {grant}")));
        }
    }
    if new.public && new.grant_types.iter().any(|g| g == "client_credentials") {
        return Err(invalid("a public client cannot use client_credentials"));
    }
    let valid_token =
        |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if !new.scopes.iter().all(|s| valid_token(s)) {
        return Err(invalid("scopes are space-separated printable ASCII tokens"));
    }
    if new.client_id.as_deref().is_some_and(|id| !valid_token(id) || id.len() > 200) {
        return Err(invalid("the client id must be 1 to 200 printable ASCII characters"));
    }
    let grant_types = new.grant_types.join(" ");
    check_redirect_uris(&new.redirect_uris, &grant_types)?;
    let secret = (!new.public).then(Secret::generate);
    let client = Client {
        client_id: new.client_id.unwrap_or_else(|| Uuid::new_v4().simple().to_string()),
        name: new.name.trim().to_owned(),
        secret_hash: secret.as_ref().map(Secret::sha256_hex),
        grant_types,
        scopes: new.scopes.join(" "),
        created_at: now,
        disabled: false,
        created_by: new.created_by,
        resource_server: new.resource_server,
        redirect_uris: new.redirect_uris.join(" "),
        skip_consent: new.skip_consent,
        registered: false,
        last_used_at: None,
        metadata_document: false,
    };
    storage.create_client(&client).await?;
    let created = entry(events::CLIENT_CREATED)
        .client(&client.client_id)
        .detail("name", client.name.as_str())
        .detail("public", client.is_public())
        .detail("grant_types", client.grant_types.as_str())
        .detail("scopes", client.scopes.as_str())
        .detail("resource_server", client.resource_server)
        .detail("redirect_uris", client.redirect_uris.as_str())
        .detail("skip_consent", client.skip_consent)
        .detail("created_by", client.created_by.clone());
    Ok((client, secret, created))
}

/// A change to a client.
#[derive(Debug, Default, Clone)]
pub struct ClientChange {
    /// Disable (true) or enable (false) it.
    pub disabled: Option<bool>,
    /// Give a confidential client a new secret; the old one stops working at once.
    pub rotate_secret: bool,
    /// Replace its redirect URIs.
    pub redirect_uris: Option<Vec<String>>,
    /// Ask (false) or stop asking (true) its users for consent.
    pub skip_consent: Option<bool>,
}

/// Changes a client; returns it, its new secret (shown this once) and its `client.updated`
/// record. `None` when there is no such client.
pub async fn update_client(
    storage: &dyn Storage,
    client_id: &str,
    change: ClientChange,
) -> Result<Option<(Client, Option<Secret>, Entry)>, AccountError> {
    let Some(mut client) = storage.client(client_id).await? else {
        return Ok(None);
    };
    if change.rotate_secret && client.is_public() {
        return Err(invalid("a public client has no secret to rotate"));
    }
    let secret = change.rotate_secret.then(Secret::generate);
    if let Some(secret) = &secret {
        client.secret_hash = Some(secret.sha256_hex());
    }
    if let Some(disabled) = change.disabled {
        client.disabled = disabled;
    }
    if let Some(uris) = &change.redirect_uris {
        check_redirect_uris(uris, &client.grant_types)?;
        client.redirect_uris = uris.join(" ");
    }
    if let Some(skip) = change.skip_consent {
        client.skip_consent = skip;
    }
    if !storage.update_client(&client).await? {
        return Ok(None);
    }
    let updated = entry(events::CLIENT_UPDATED)
        .client(&client.client_id)
        .detail("disabled", client.disabled)
        .detail("secret_rotated", secret.is_some())
        .detail("redirect_uris", client.redirect_uris.as_str())
        .detail("skip_consent", client.skip_consent);
    Ok(Some((client, secret, updated)))
}

/// Deletes a client; returns its `client.deleted` record, or `None` when there was none.
/// Its sessions can no longer refresh, since it can no longer authenticate.
pub async fn delete_client(
    storage: &dyn Storage,
    client_id: &str,
) -> Result<Option<Entry>, AccountError> {
    Ok(storage
        .delete_client(client_id)
        .await?
        .then(|| entry(events::CLIENT_DELETED).client(client_id)))
}

/// Changes a user's role; returns the user as it was and the `user.role_changed` record, or
/// `None` when there is no such user.
pub async fn change_role(
    storage: &dyn Storage,
    user_id: &str,
    role: Role,
) -> Result<Option<(User, Entry)>, AccountError> {
    let Some(user) = storage.user_by_id(user_id).await? else {
        return Ok(None);
    };
    if !storage.set_user_role(user_id, role.as_str()).await? {
        return Ok(None);
    }
    let changed = entry(events::USER_ROLE_CHANGED)
        .user(user_id)
        .detail("from", user.role.as_str())
        .detail("to", role.as_str());
    Ok(Some((user, changed)))
}

/// What erasing a user did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Erasure {
    /// What the user's audit records now name instead of them.
    pub pseudonym: String,
    pub ended_sessions: usize,
    pub audit_records: u64,
}

/// The account rules with their audit records, for the admin API: each change is recorded
/// with the actor that made it.
pub struct Accounts {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    audit: Arc<Audit>,
}

impl Accounts {
    pub fn new(storage: Arc<dyn Storage>, clock: Arc<dyn Clock>, audit: Arc<Audit>) -> Self {
        Self { storage, clock, audit }
    }

    pub async fn user(&self, id: &str) -> Result<Option<User>, AccountError> {
        Ok(self.storage.user_by_id(id).await?)
    }

    pub async fn client(&self, client_id: &str) -> Result<Option<Client>, AccountError> {
        Ok(self.storage.client(client_id).await?)
    }

    pub async fn clients(&self) -> Result<Vec<Client>, AccountError> {
        Ok(self.storage.clients().await?)
    }

    /// Creates a user, recorded as done by `actor`.
    pub async fn register_user(&self, new: NewUser, actor: &str) -> Result<User, AccountError> {
        let (user, created) = create_user(self.storage.as_ref(), new, self.clock.now_ms()).await?;
        self.audit.record(created.actor(actor)).await?;
        Ok(user)
    }

    /// Changes a user's role; returns the user as it was, or `None` when there is none.
    pub async fn set_role(
        &self,
        user_id: &str,
        role: Role,
        actor: &str,
    ) -> Result<Option<User>, AccountError> {
        let Some((before, changed)) = change_role(self.storage.as_ref(), user_id, role).await?
        else {
            return Ok(None);
        };
        self.audit.record(changed.actor(actor)).await?;
        Ok(Some(before))
    }

    /// Erases a user: ends every session (audited and published as usual), deletes the
    /// account with its devices, consents and sessions, and rewrites the user's audit
    /// records under a new random pseudonym, which nothing else stores (see
    /// [`super::audit::pseudonymised`]). `None` when there is no such user.
    pub async fn erase_user(
        &self,
        user_id: &str,
        sessions: &super::sessions::SessionService,
        actor: &str,
    ) -> Result<Option<Erasure>, AccountError> {
        if self.storage.user_by_id(user_id).await?.is_none() {
            return Ok(None);
        }
        let ended =
            sessions.end_all(UserId::new(user_id), None, revoke_reason::USER_ERASED, actor).await?;
        if !self.storage.delete_user(user_id).await? {
            return Ok(None);
        }
        let pseudonym = format!("erased-{}", Uuid::new_v4());
        let audit_records = self.audit.pseudonymise_user(user_id, &pseudonym).await?;
        let erased = entry(events::USER_ERASED)
            .actor(actor)
            .user(&pseudonym)
            .detail("ended_sessions", ended)
            .detail("audit_records", audit_records);
        self.audit.record(erased).await?;
        Ok(Some(Erasure { pseudonym, ended_sessions: ended, audit_records }))
    }

    pub async fn resources(&self) -> Result<Vec<Resource>, AccountError> {
        Ok(self.storage.resources().await?)
    }

    /// The scopes of the registered resources, each once: what the metadata lists as
    /// supported, and what a registering client may ask for.
    pub async fn scopes_supported(&self) -> Result<Vec<String>, AccountError> {
        Ok(super::resources::scopes_supported(self.storage.as_ref()).await?)
    }

    /// Registers a client from its own metadata (RFC 7591); returns the answer's JSON.
    pub async fn register_dynamic(
        &self,
        metadata: &serde_json::Value,
    ) -> Result<serde_json::Value, super::registration::RegistrationError> {
        let scopes = self.scopes_supported().await.map_err(|e| match e {
            AccountError::Storage(e) => super::registration::RegistrationError::Storage(e),
            other => {
                super::registration::RegistrationError::InvalidClientMetadata(other.to_string())
            }
        })?;
        let now = self.clock.now_ms();
        let (_, _, answer, registered) =
            super::registration::register(self.storage.as_ref(), metadata, &scopes, now).await?;
        self.audit.record(registered).await?;
        Ok(answer)
    }

    /// Registers a resource, recorded as done by `actor`.
    pub async fn register_resource(
        &self,
        new: NewResource,
        actor: &str,
    ) -> Result<Resource, AccountError> {
        let now = self.clock.now_ms();
        let (resource, created) = create_resource(self.storage.as_ref(), new, now).await?;
        self.audit.record(created.actor(actor)).await?;
        Ok(resource)
    }

    /// Removes a resource; false when there was none.
    pub async fn remove_resource(&self, uri: &str, actor: &str) -> Result<bool, AccountError> {
        let Some(deleted) = delete_resource(self.storage.as_ref(), uri).await? else {
            return Ok(false);
        };
        self.audit.record(deleted.actor(actor)).await?;
        Ok(true)
    }

    /// Registers a client; returns it with its secret (shown once).
    pub async fn register_client(
        &self,
        new: NewClient,
        actor: &str,
    ) -> Result<(Client, Option<Secret>), AccountError> {
        let now = self.clock.now_ms();
        let (client, secret, created) = create_client(self.storage.as_ref(), new, now).await?;
        self.audit.record(created.actor(actor)).await?;
        Ok((client, secret))
    }

    /// Changes a client; `None` when there is none.
    pub async fn change_client(
        &self,
        client_id: &str,
        change: ClientChange,
        actor: &str,
    ) -> Result<Option<(Client, Option<Secret>)>, AccountError> {
        let Some((client, secret, updated)) =
            update_client(self.storage.as_ref(), client_id, change).await?
        else {
            return Ok(None);
        };
        self.audit.record(updated.actor(actor)).await?;
        Ok(Some((client, secret)))
    }

    /// Deletes a client; false when there was none.
    pub async fn remove_client(&self, client_id: &str, actor: &str) -> Result<bool, AccountError> {
        let Some(deleted) = delete_client(self.storage.as_ref(), client_id).await? else {
            return Ok(false);
        };
        self.audit.record(deleted.actor(actor)).await?;
        Ok(true)
    }
}

/// A client as the CLI and the admin API show it, with its secret when just created.
pub fn client_json(client: &Client, secret: Option<&Secret>) -> serde_json::Value {
    json!({
        "client_id": client.client_id,
        "name": client.name,
        "public": client.is_public(),
        "client_secret": secret.map(Secret::expose),
        "grant_types": client.grant_types.split(' ').collect::<Vec<_>>(),
        "scopes": client.scopes.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>(),
        "created_at": crate::clock::rfc3339(client.created_at),
        "disabled": client.disabled,
        "resource_server": client.resource_server,
        "redirect_uris": client.redirect_uri_list().collect::<Vec<_>>(),
        "skip_consent": client.skip_consent,
        "registered": client.registered,
        "last_used_at": client.last_used_at.map(crate::clock::rfc3339),
        "created_by": client.created_by,
    })
}
