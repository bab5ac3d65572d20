//! Versioned SQL migrations, embedded in the binary and run by sqlx's migrator, for both SQL
//! backends. Every migration has an up and a down script.

use std::borrow::Cow;
use std::ops::DerefMut;

use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};
use sqlx::{AssertSqlSafe, Database, Pool, SqlSafeStr};

use crate::storage::{MigrationStatus, StorageError, StorageResult};

/// One embedded migration.
pub struct Script {
    pub version: i64,
    pub description: &'static str,
    pub up: &'static str,
    pub down: &'static str,
}

/// Builds the migrator for one dialect's scripts.
pub fn migrator(scripts: &[Script]) -> Migrator {
    let migrations = scripts
        .iter()
        .flat_map(|s| {
            [(MigrationType::ReversibleUp, s.up), (MigrationType::ReversibleDown, s.down)].map(
                |(kind, sql)| {
                    Migration::new(
                        s.version,
                        Cow::Borrowed(s.description),
                        kind,
                        AssertSqlSafe(sql).into_sql_str(),
                        false,
                    )
                },
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

fn migrate_error(e: sqlx::migrate::MigrateError) -> StorageError {
    StorageError::Migration(e.to_string())
}

/// Applies every pending migration.
pub async fn up<DB>(scripts: &[Script], pool: &Pool<DB>) -> StorageResult<()>
where
    DB: Database,
    DB::Connection: Migrate,
{
    migrator(scripts).run(pool).await.map_err(migrate_error)
}

/// Reverts the newest `steps` applied migrations.
pub async fn down<DB>(scripts: &[Script], pool: &Pool<DB>, steps: usize) -> StorageResult<()>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let applied = status(scripts, pool).await?;
    let mut versions: Vec<i64> = applied.iter().filter(|m| m.applied).map(|m| m.version).collect();
    versions.sort_unstable();
    let keep = versions.len().saturating_sub(steps);
    let target = if keep == 0 { 0 } else { versions[keep - 1] };
    migrator(scripts).undo(pool, target).await.map_err(migrate_error)
}

/// Every migration this binary knows, with whether it is applied and unchanged.
pub async fn status<DB>(scripts: &[Script], pool: &Pool<DB>) -> StorageResult<Vec<MigrationStatus>>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let migrator = migrator(scripts);
    let mut conn = pool.acquire().await?;
    let conn = conn.deref_mut();
    conn.ensure_migrations_table(&migrator.table_name).await.map_err(migrate_error)?;
    let applied =
        conn.list_applied_migrations(&migrator.table_name).await.map_err(migrate_error)?;
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type == MigrationType::ReversibleUp)
        .map(|m| {
            let found = applied.iter().find(|a| a.version == m.version);
            MigrationStatus {
                version: m.version,
                description: m.description.to_string(),
                applied: found.is_some(),
                checksum_ok: found.is_none_or(|a| a.checksum == m.checksum),
            }
        })
        .collect())
}

/// The embedded up and down scripts of one dialect's migrations, in order.
macro_rules! scripts {
    ($dialect:literal) => {
        $crate::storage::sql::migrate::scripts!(@list $dialect;
            1 "0001_init" "init",
            2 "0002_sessions_devices" "sessions devices",
            3 "0003_audit_webhooks" "audit webhooks",
            4 "0004_audit_indexes" "audit indexes",
            5 "0005_user_roles" "user roles",
            6 "0006_audit_without_rowid" "audit without rowid",
            7 "0007_audit_event_index" "audit event index",
            8 "0008_single_rotation_function" "single rotation function",
            9 "0009_audit_file" "audit file",
            10 "0010_audit_file_only" "audit file only",
            11 "0011_audit_packed" "audit packed",
            12 "0012_security_review" "security review",
        )
    };
    (@list $dialect:literal; $($version:literal $file:literal $description:literal,)*) => {
        &[$($crate::storage::sql::migrate::Script {
            version: $version,
            description: $description,
            up: include_str!(concat!("../../../migrations/", $dialect, "/", $file, ".up.sql")),
            down: include_str!(concat!("../../../migrations/", $dialect, "/", $file, ".down.sql")),
        },)*]
    };
}

pub(crate) use scripts;
