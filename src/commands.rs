//! What the CLI subcommands do, apart from parsing their arguments.

use std::sync::Arc;

use crate::clock::{Clock, Millis, SystemClock};
use crate::config::Config;
pub use crate::domain::accounts::NewClient;
use crate::domain::accounts::{self, NewUser, client_json};
use crate::domain::audit::record_json;
use crate::domain::keys::key_rotated;
use crate::domain::resources::{self, NewResource};
use crate::domain::roles::Role;
use crate::storage::{AuditQuery, MigrationStatus};
use crate::{App, key_manager, open_storage};

/// Runs the server until SIGTERM or Ctrl-C.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let listen = config.server.listen;
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
    role: Role,
) -> anyhow::Result<String> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let now = SystemClock.now_ms();
    let new = NewUser { username: username.to_owned(), password, role };
    let (user, created) = accounts::create_user(storage.as_ref(), new, now).await?;
    storage.append_audit(Arc::new([created.actor("cli").at(now)])).await?;
    Ok(user.id)
}

/// A user named on the command line.
pub enum UserRef {
    Id(String),
    Username(String),
}

/// What `users delete` did.
#[derive(serde::Serialize)]
pub struct Erased {
    pub user_id: String,
    #[serde(flatten)]
    pub erasure: accounts::Erasure,
}

/// Erases a user as the admin API does (sessions ended and published, audit records
/// pseudonymised), recorded as done by `cli`; `None` when there is no such user.
pub async fn erase_user(config: Config, user: UserRef) -> anyhow::Result<Option<Erased>> {
    let state = App::build(config).await?;
    let found = match user {
        UserRef::Id(id) => state.storage.user_by_id(&id).await?,
        UserRef::Username(name) => state.storage.user_by_username(&name).await?,
    };
    let erased = match found {
        Some(user) => state
            .accounts
            .erase_user(&user.id, &state.sessions, "cli")
            .await?
            .map(|erasure| Erased { user_id: user.id, erasure }),
        None => None,
    };
    state.audit.close().await;
    Ok(erased)
}

/// Registers a client; the answer holds the secret, which is shown this once.
pub async fn create_client(config: &Config, new: NewClient) -> anyhow::Result<serde_json::Value> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let now = SystemClock.now_ms();
    let (client, secret, created) = accounts::create_client(storage.as_ref(), new, now).await?;
    storage.append_audit(Arc::new([created.actor("cli").at(now)])).await?;
    Ok(client_json(&client, secret.as_ref()))
}

/// Registers a resource; returns it.
pub async fn create_resource(
    config: &Config,
    new: NewResource,
) -> anyhow::Result<serde_json::Value> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let now = SystemClock.now_ms();
    let (resource, created) = resources::create_resource(storage.as_ref(), new, now).await?;
    storage.append_audit(Arc::new([created.actor("cli").at(now)])).await?;
    Ok(resources::resource_json(&resource))
}

/// Every registered resource.
pub async fn list_resources(config: &Config) -> anyhow::Result<serde_json::Value> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let all = storage.resources().await?;
    Ok(
        serde_json::json!({ "resources": all.iter().map(resources::resource_json).collect::<Vec<_>>() }),
    )
}

/// Removes a resource; an error when there is none.
pub async fn delete_resource(config: &Config, uri: &str) -> anyhow::Result<()> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let Some(deleted) = resources::delete_resource(storage.as_ref(), uri).await? else {
        anyhow::bail!("no resource {uri}");
    };
    storage.append_audit(Arc::new([deleted.actor("cli").at(SystemClock.now_ms())])).await?;
    Ok(())
}

/// Disables, enables or re-keys a client; returns it (with its new secret when rotated).
pub async fn update_client(
    config: &Config,
    client_id: &str,
    change: accounts::ClientChange,
) -> anyhow::Result<serde_json::Value> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let now = SystemClock.now_ms();
    let changed = accounts::update_client(storage.as_ref(), client_id, change).await?;
    let (client, secret, updated) =
        changed.ok_or_else(|| anyhow::anyhow!("no client {client_id}"))?;
    storage.append_audit(Arc::new([updated.actor("cli").at(now)])).await?;
    Ok(client_json(&client, secret.as_ref()))
}

/// Deletes a client.
pub async fn delete_client(config: &Config, client_id: &str) -> anyhow::Result<()> {
    let storage = open_storage(config).await?;
    storage.migrate_up().await?;
    let now = SystemClock.now_ms();
    let deleted = accounts::delete_client(storage.as_ref(), client_id).await?;
    let deleted = deleted.ok_or_else(|| anyhow::anyhow!("no client {client_id}"))?;
    storage.append_audit(Arc::new([deleted.actor("cli").at(now)])).await?;
    Ok(())
}

/// Whether the server at `base` answers `/health/ready` with 200 within three seconds. A
/// listen address of 0.0.0.0 is asked on loopback.
pub async fn ready(base: &str) -> bool {
    let base = base.replace("://0.0.0.0:", "://127.0.0.1:");
    // A probe of a server on this host over HTTPS cannot expect the certificate to name
    // 127.0.0.1; it sends nothing secret and learns only a status, so it takes any.
    let own_host = ["https://127.0.0.1:", "https://localhost:", "https://[::1]:"]
        .iter()
        .any(|prefix| base.starts_with(prefix));
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .danger_accept_invalid_certs(own_host)
        .build();
    let Ok(http) = http else {
        return false;
    };
    let answer = http.get(format!("{}/health/ready", base.trim_end_matches('/'))).send().await;
    answer.is_ok_and(|r| r.status().is_success())
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
        let record = key_rotated(&kid, config.keys.algorithm, previous.as_deref()).actor("cli");
        storage.append_audit(Arc::new([record.at(SystemClock.now_ms())])).await?;
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
