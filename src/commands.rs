//! What the CLI subcommands do, apart from parsing their arguments.

use std::sync::Arc;

use serde_json::json;
use uuid::Uuid;

use crate::clock::{Clock, Millis, SystemClock};
use crate::config::Config;
use crate::domain::audit::{entry, events, record_json};
use crate::domain::keys::key_rotated;
use crate::domain::secrets::{Secret, hash_password};
use crate::domain::tokens::GRANT_TYPES;
use crate::storage::{AuditQuery, Client, MigrationStatus, User};
use crate::{App, key_manager, open_storage};

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = App::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, backend = state.storage.backend(), "listening");
    crate::run(listener, state, crate::shutdown_signal()).await?;
    Ok(())
}

/// `migrate up|down|status`.
pub enum MigrateAction {
    Up,
    Down { steps: usize },
    Status,
}

/// Applies, reverts or lists migrations; returns the status afterwards.
pub async fn migrate(
    config: &Config,
    action: MigrateAction,
) -> anyhow::Result<Vec<MigrationStatus>> {
    let storage = open_storage(config).await?;
    match action {
        MigrateAction::Up => storage.migrate_up().await?,
        MigrateAction::Down { steps } => storage.migrate_down(steps).await?,
        MigrateAction::Status => {}
    }
    Ok(storage.migration_status().await?)
}

/// Creates a user; returns its id.
pub async fn create_user(
    config: &Config,
    username: &str,
    password: String,
) -> anyhow::Result<String> {
    anyhow::ensure!(!username.trim().is_empty(), "the username must not be empty");
    anyhow::ensure!(password.len() >= 8, "the password must have at least 8 characters");
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let user = User {
        id: Uuid::now_v7().to_string(),
        username: username.to_owned(),
        password_hash: hash_password(password).await?,
        created_at: SystemClock.now_ms(),
        disabled: false,
    };
    storage.create_user(&user).await?;
    let created = entry(events::USER_CREATED)
        .actor("cli")
        .user(&user.id)
        .detail("username", user.username.as_str());
    storage.append_audit(&[created.at(user.created_at)]).await?;
    Ok(user.id)
}

/// What to register as a client.
pub struct NewClient {
    pub client_id: Option<String>,
    pub name: String,
    pub public: bool,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
}

/// Registers a client; the answer holds the secret, which is shown this once.
pub async fn create_client(config: &Config, new: NewClient) -> anyhow::Result<serde_json::Value> {
    for grant in &new.grant_types {
        anyhow::ensure!(GRANT_TYPES.contains(&grant.as_str()), "unknown grant type {grant}");
    }
    anyhow::ensure!(
        !(new.public && new.grant_types.iter().any(|g| g == "client_credentials")),
        "a public client cannot use client_credentials"
    );
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let secret = (!new.public).then(Secret::generate);
    let client = Client {
        client_id: new.client_id.unwrap_or_else(|| Uuid::new_v4().simple().to_string()),
        name: new.name,
        secret_hash: secret.as_ref().map(Secret::sha256_hex),
        grant_types: new.grant_types.join(" "),
        scopes: new.scopes.join(" "),
        created_at: SystemClock.now_ms(),
    };
    storage.create_client(&client).await?;
    let created = entry(events::CLIENT_CREATED)
        .actor("cli")
        .client(&client.client_id)
        .detail("name", client.name.as_str())
        .detail("public", client.is_public())
        .detail("grant_types", client.grant_types.as_str())
        .detail("scopes", client.scopes.as_str());
    storage.append_audit(&[created.at(client.created_at)]).await?;
    Ok(json!({
        "client_id": client.client_id,
        "client_secret": secret.as_ref().map(Secret::expose),
        "grant_types": new.grant_types,
        "scopes": new.scopes,
    }))
}

/// Rotates the signing key now; returns the new active kid.
pub async fn rotate_keys(config: &Config) -> anyhow::Result<String> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = key_manager(config, storage.clone(), clock)?;
    keys.reload().await?;
    let previous = keys.signer().map(|s| s.kid.clone());
    let kid = keys.rotate().await?;
    if previous.as_deref() != Some(kid.as_str()) {
        let record = key_rotated(&kid, config.signing_algorithm, previous.as_deref()).actor("cli");
        storage.append_audit(&[record.at(SystemClock.now_ms())]).await?;
    }
    Ok(kid)
}

/// Which audit records to export.
pub struct AuditExport {
    pub since: Option<Millis>,
    pub until: Option<Millis>,
    pub event: Option<String>,
    pub user_id: Option<String>,
}

/// Writes the matching audit records as JSON lines, oldest first; returns how many.
pub async fn export_audit(
    config: &Config,
    export: AuditExport,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<u64> {
    let storage = open_storage(config).await?;
    let mut query = AuditQuery {
        user_id: export.user_id,
        event: export.event,
        since: export.since,
        until: export.until,
        cursor: None,
        ascending: true,
        limit: 1000,
    };
    let mut written = 0;
    loop {
        let page = storage.query_audit(&query).await?;
        for record in &page {
            writeln!(out, "{}", record_json(record))?;
        }
        written += page.len() as u64;
        match page.last() {
            Some(last) if page.len() == query.limit as usize => {
                query.cursor = Some(last.id.clone())
            }
            _ => break,
        }
    }
    out.flush()?;
    Ok(written)
}
