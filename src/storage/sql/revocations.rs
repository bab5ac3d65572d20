//! [`RevocationStore`] in SQL. Introspection asks for one token's state per request; under
//! load the lookups of concurrent requests share one statement (see `storage::batch`).

use async_trait::async_trait;
use sqlx::Pool;

use super::{Dialect, SqlStorage, Statement, batched_reader, place};
use crate::clock::Millis;
use crate::storage::batch::Batched;
use crate::storage::{
    AccessTokenState, RevocationStore, SessionLiveness, StorageError, StorageResult,
};

/// An access token's id and session, as one lookup of a batch.
#[derive(Debug, serde::Serialize)]
pub(super) struct TokenLookup {
    jti: String,
    sid: Option<String>,
}

/// A row of a batch of token states.
#[derive(sqlx::FromRow)]
pub struct TokenStateRow {
    n: i64,
    revoked: bool,
    revoked_at: Option<Millis>,
    expires_at: Option<Millis>,
    idle_expires_at: Option<Millis>,
}

/// Starts the reader of batches of token states.
pub(super) fn batched<D: Dialect>(pool: Pool<D::Db>) -> Batched<TokenLookup, AccessTokenState> {
    // A scalar subquery, never a hashed scan of the whole revocation list.
    let sql = format!(
        "SELECT CAST(q.value ->> 'n' AS BIGINT) AS n, (SELECT 1 FROM revoked_tokens r \
         WHERE r.jti = (q.value ->> 'jti')) IS NOT NULL AS revoked, s.revoked_at, s.expires_at, \
         s.idle_expires_at FROM {}",
        D::TOKEN_ROWS
    );
    batched_reader::<D, _, _, _>(pool, sql, token_states)
}

/// The state of each token of a batch of `lookups`, from the rows of its statement.
fn token_states(lookups: usize, rows: Vec<TokenStateRow>) -> StorageResult<Vec<AccessTokenState>> {
    let mut states = vec![None; lookups];
    for row in rows {
        // No session, or none found: the left join's columns are NULL.
        let session = match (row.expires_at, row.idle_expires_at) {
            (Some(expires_at), Some(idle_expires_at)) => Some(SessionLiveness {
                revoked: row.revoked_at.is_some(),
                expires_at,
                idle_expires_at,
            }),
            _ => None,
        };
        *place(&mut states, row.n)? = Some(AccessTokenState { revoked: row.revoked, session });
    }
    states
        .into_iter()
        .map(|s| s.ok_or_else(|| StorageError::Corrupt("a token lookup got no row".into())))
        .collect()
}

#[async_trait]
impl<D: Dialect> RevocationStore for SqlStorage<D> {
    async fn revoke_access_token(&self, jti: &str, expires_at: Millis) -> StorageResult<()> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .arg(jti)
        .arg(expires_at)
        .run(self.writer())
        .await?;
        Ok(())
    }

    async fn access_token_state(
        &self,
        jti: &str,
        session_id: Option<&str>,
    ) -> StorageResult<AccessTokenState> {
        let lookup = TokenLookup { jti: jti.to_owned(), sid: session_id.map(str::to_owned) };
        self.batched.token_states.get(lookup).await
    }
}
