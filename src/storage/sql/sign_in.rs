//! [`SignInStore`] in SQL. Taking a code is one statement, so two exchanges of one code cannot
//! both take it; the one that finds it taken marks it replayed in a second statement.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement};
use crate::clock::Millis;
use crate::ids::UserId;
use crate::storage::{AuthorizationCode, BrowserSession, CodeTaken, SignInStore, StorageResult};

#[async_trait]
impl<D: Dialect> SignInStore for SqlStorage<D> {
    async fn create_browser_session(&self, s: &BrowserSession) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO browser_sessions \
             (hash, user_id, created_at, idle_expires_at, expires_at, ip, user_agent) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .arg(&s.hash)
        .arg(&s.user_id)
        .arg(s.created_at)
        .arg(s.idle_expires_at)
        .arg(s.expires_at)
        .arg(&s.ip)
        .arg(&s.user_agent)
        .run(self.writer())
        .await?;
        Ok(())
    }

    async fn touch_browser_session(
        &self,
        hash: &[u8],
        now: Millis,
        idle_until: Millis,
    ) -> StorageResult<Option<BrowserSession>> {
        sqlx::query(
            "UPDATE browser_sessions \
             SET idle_expires_at = CASE WHEN $1 < expires_at THEN $1 ELSE expires_at END \
             WHERE hash = $2 AND idle_expires_at > $3 AND expires_at > $3 RETURNING *",
        )
        .arg(idle_until)
        .arg(hash)
        .arg(now)
        .optional(self.writer())
        .await
    }

    async fn end_browser_session(&self, hash: &[u8]) -> StorageResult<()> {
        sqlx::query("DELETE FROM browser_sessions WHERE hash = $1")
            .arg(hash)
            .run(self.writer())
            .await?;
        Ok(())
    }

    async fn end_user_browser_sessions(&self, user_id: UserId<'_>) -> StorageResult<u64> {
        sqlx::query("DELETE FROM browser_sessions WHERE user_id = $1")
            .arg(user_id.as_str())
            .run(self.writer())
            .await
    }

    async fn consent(&self, user_id: UserId<'_>, client_id: &str) -> StorageResult<Option<String>> {
        let found: Option<(String,)> =
            sqlx::query("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2")
                .arg(user_id.as_str())
                .arg(client_id)
                .optional(self.reader())
                .await?;
        Ok(found.map(|(scopes,)| scopes))
    }

    async fn save_consent(
        &self,
        user_id: UserId<'_>,
        client_id: &str,
        scopes: &str,
        now: Millis,
    ) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scopes, granted_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, client_id) \
             DO UPDATE SET scopes = excluded.scopes, granted_at = excluded.granted_at",
        )
        .arg(user_id.as_str())
        .arg(client_id)
        .arg(scopes)
        .arg(now)
        .run(self.writer())
        .await?;
        Ok(())
    }

    async fn create_code(&self, c: &AuthorizationCode) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO authorization_codes (hash, client_id, redirect_uri, code_challenge, \
             scope, user_id, ip, user_agent, created_at, expires_at, resource) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .arg(&c.hash)
        .arg(&c.client_id)
        .arg(&c.redirect_uri)
        .arg(&c.code_challenge)
        .arg(&c.scope)
        .arg(&c.user_id)
        .arg(&c.ip)
        .arg(&c.user_agent)
        .arg(c.created_at)
        .arg(c.expires_at)
        .arg(&c.resource)
        .run(self.writer())
        .await?;
        Ok(())
    }

    async fn take_code(&self, hash: &[u8], now: Millis) -> StorageResult<CodeTaken> {
        let taken: Option<AuthorizationCode> = sqlx::query(
            "UPDATE authorization_codes SET used_at = $1 \
             WHERE hash = $2 AND used_at IS NULL RETURNING *",
        )
        .arg(now)
        .arg(hash)
        .optional(self.writer())
        .await?;
        if let Some(code) = taken {
            return Ok(CodeTaken::First(Box::new(code)));
        }
        let again: Option<(Option<String>,)> = sqlx::query(
            "UPDATE authorization_codes SET replayed = TRUE WHERE hash = $1 RETURNING session_id",
        )
        .arg(hash)
        .optional(self.writer())
        .await?;
        Ok(match again {
            Some((session_id,)) => CodeTaken::Again { session_id },
            None => CodeTaken::Unknown,
        })
    }

    async fn bind_code_session(&self, hash: &[u8], session_id: &str) -> StorageResult<bool> {
        let replayed: Option<(bool,)> = sqlx::query(
            "UPDATE authorization_codes SET session_id = $1 WHERE hash = $2 RETURNING replayed",
        )
        .arg(session_id)
        .arg(hash)
        .optional(self.writer())
        .await?;
        Ok(replayed.is_some_and(|(replayed,)| !replayed))
    }
}
