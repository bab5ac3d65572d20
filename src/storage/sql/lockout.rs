//! [`LockoutStore`] in SQL: each step is one statement.

use async_trait::async_trait;

use super::{Dialect, SqlStorage, Statement};
use crate::clock::Millis;
use crate::storage::{Admission, LockoutPolicy, LockoutStore, StorageResult};

/// Admits a login attempt (see `LockoutStore::begin_login_attempt`) in one statement:
/// `$1` key, `$2` now, `$3` start of the current window, `$4` threshold. A window that has
/// passed starts again; `outcome` tells the caller whether this call admitted the attempt
/// (1) or refused it (0), since RETURNING sees only the new row.
const BEGIN_LOGIN_ATTEMPT: &str = "INSERT INTO login_attempts \
     (attempt_key, failures, pending, window_start, locked_until, outcome) \
     VALUES ($1, 0, 1, $2, NULL, 1) \
     ON CONFLICT (attempt_key) DO UPDATE SET \
     outcome = CASE WHEN login_attempts.locked_until > $2 THEN 0 \
       WHEN login_attempts.window_start <= $3 THEN 1 \
       WHEN login_attempts.failures + login_attempts.pending >= $4 THEN 0 ELSE 1 END, \
     pending = CASE WHEN login_attempts.locked_until > $2 THEN login_attempts.pending \
       WHEN login_attempts.window_start <= $3 THEN 1 \
       WHEN login_attempts.failures + login_attempts.pending >= $4 THEN login_attempts.pending \
       ELSE login_attempts.pending + 1 END, \
     failures = CASE WHEN login_attempts.locked_until > $2 THEN login_attempts.failures \
       WHEN login_attempts.window_start <= $3 THEN 0 ELSE login_attempts.failures END, \
     window_start = CASE WHEN login_attempts.locked_until > $2 THEN login_attempts.window_start \
       WHEN login_attempts.window_start <= $3 THEN $2 ELSE login_attempts.window_start END \
     RETURNING outcome, locked_until";

/// Ends an admitted attempt: `$1` key, `$2` succeeded, `$3` now, `$4` threshold, `$5` the
/// end of a lock this failure would start. `outcome` 2 says this call locked the key. A lock
/// starts a new window with no failures; a success forgets failures but not a lock.
const FINISH_LOGIN_ATTEMPT: &str = "UPDATE login_attempts SET \
     pending = CASE WHEN pending > 0 THEN pending - 1 ELSE 0 END, \
     outcome = CASE WHEN NOT $2 AND failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN 2 ELSE 0 END, \
     locked_until = CASE WHEN NOT $2 AND failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN $5 ELSE locked_until END, \
     window_start = CASE WHEN NOT $2 AND failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN $3 ELSE window_start END, \
     failures = CASE WHEN $2 THEN 0 WHEN failures + 1 >= $4 \
       AND (locked_until IS NULL OR locked_until <= $3) THEN 0 ELSE failures + 1 END \
     WHERE attempt_key = $1 RETURNING outcome, locked_until";

#[async_trait]
impl<D: Dialect> LockoutStore for SqlStorage<D> {
    async fn begin_login_attempt(&self, key: &str, p: &LockoutPolicy) -> StorageResult<Admission> {
        let (outcome, locked_until): (i32, Option<Millis>) = sqlx::query(BEGIN_LOGIN_ATTEMPT)
            .arg(key)
            .arg(p.now)
            .arg(p.now - p.window_ms)
            .arg(p.threshold)
            .one(self.writer())
            .await?;
        Ok(if outcome == 1 {
            Admission::Verify
        } else {
            Admission::Refused { locked_until: locked_until.filter(|u| *u > p.now) }
        })
    }

    async fn finish_login_attempt(
        &self,
        key: &str,
        succeeded: bool,
        p: &LockoutPolicy,
    ) -> StorageResult<Option<Millis>> {
        let row: Option<(i32, Option<Millis>)> = sqlx::query(FINISH_LOGIN_ATTEMPT)
            .arg(key)
            .arg(succeeded)
            .arg(p.now)
            .arg(p.threshold)
            .arg(p.now + p.lock_ms)
            .optional(self.writer())
            .await?;
        Ok(row.and_then(|(outcome, until)| if outcome == 2 { until } else { None }))
    }
}
