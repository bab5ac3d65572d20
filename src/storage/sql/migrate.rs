//! Versioned SQL migrations, embedded in the binary: each dialect's are the files of its own
//! folder (`migrations/sqlite/`, `migrations/postgres/`), each version an up and a down
//! script. A new migration goes in the folders of the dialects that need it; the versions a
//! dialect skips are simply absent from its folder. (The `SELECT 1;` scripts of older
//! versions stay: databases have them applied, and the migrator refuses a database with a
//! version it does not know.)

use std::ops::DerefMut;

use sqlx::migrate::{Migrate, MigrationType, Migrator};
use sqlx::{Database, Pool};

use crate::storage::{MigrationStatus, StorageError, StorageResult};

fn migrate_error(e: sqlx::migrate::MigrateError) -> StorageError {
    StorageError::Migration(e.to_string())
}

/// Applies every pending migration.
pub async fn up<DB>(migrator: &Migrator, pool: &Pool<DB>) -> StorageResult<()>
where
    DB: Database,
    DB::Connection: Migrate,
{
    migrator.run(pool).await.map_err(migrate_error)
}

/// Reverts the newest `steps` applied migrations.
pub async fn down<DB>(migrator: &Migrator, pool: &Pool<DB>, steps: usize) -> StorageResult<()>
where
    DB: Database,
    DB::Connection: Migrate,
{
    let applied = status(migrator, pool).await?;
    let mut versions: Vec<i64> = applied.iter().filter(|m| m.applied).map(|m| m.version).collect();
    versions.sort_unstable();
    let keep = versions.len().saturating_sub(steps);
    let target = if keep == 0 { 0 } else { versions[keep - 1] };
    migrator.undo(pool, target).await.map_err(migrate_error)
}

/// Every migration this binary knows, with whether it is applied and unchanged.
pub async fn status<DB>(migrator: &Migrator, pool: &Pool<DB>) -> StorageResult<Vec<MigrationStatus>>
where
    DB: Database,
    DB::Connection: Migrate,
{
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
