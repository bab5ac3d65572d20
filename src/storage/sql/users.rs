//! [`UserStore`] in SQL.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement, unique};
use crate::storage::{StorageResult, User, UserStore};

#[async_trait]
impl<D: Dialect> UserStore for SqlStorage<D> {
    async fn create_user(&self, user: &User) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, disabled, role) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .arg(&user.id)
        .arg(&user.username)
        .arg(&user.password_hash)
        .arg(user.created_at)
        .arg(user.disabled)
        .arg(&user.role)
        .run(self.writer())
        .await
        .map_err(unique("user"))?;
        Ok(())
    }

    async fn user_by_username(&self, username: &str) -> StorageResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE username = $1")
            .arg(username)
            .optional(self.reader())
            .await
    }

    async fn user_by_id(&self, id: &str) -> StorageResult<Option<User>> {
        sqlx::query("SELECT * FROM users WHERE id = $1").arg(id).optional(self.reader()).await
    }

    async fn set_user_role(&self, id: &str, role: &str) -> StorageResult<bool> {
        let changed = sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .arg(role)
            .arg(id)
            .run(self.writer())
            .await?;
        Ok(changed > 0)
    }

    /// The account's sessions (with their token rows), devices, consents, browser sign-ins
    /// and codes go with it by their foreign keys' `ON DELETE CASCADE`.
    async fn delete_user(&self, id: &str) -> StorageResult<bool> {
        let deleted =
            sqlx::query("DELETE FROM users WHERE id = $1").arg(id).run(self.writer()).await?;
        Ok(deleted > 0)
    }
}
