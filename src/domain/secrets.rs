//! Secrets: user passwords (argon2id, verified off the async threads), server-generated
//! client secrets and refresh tokens (256 random bits, stored as SHA-256: their entropy makes
//! a slow hash pointless), and constant-time comparison.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

/// A secret value (refresh token, client secret) whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// 256 random bits, base64url without padding.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Wraps a value a client sent.
    pub fn from_client(value: String) -> Self {
        Self(value)
    }

    /// The value, for the one place it is handed out.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the value: what the storage keeps.
    pub fn sha256(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Hex SHA-256 of the value.
    pub fn sha256_hex(&self) -> String {
        self.sha256().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether the value hashes to `expected_hex`, compared in constant time.
    pub fn matches_hex(&self, expected_hex: &str) -> bool {
        self.sha256_hex().as_bytes().ct_eq(expected_hex.as_bytes()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// A hash verified for unknown users, so that their answer takes as long as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    Argon2::default()
        .hash_password(b"atoms-auth dummy password")
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Argon2 runs on its own threads, one per core: each run holds 19 MiB and a core for about
/// 15 ms, so more at once would only add memory without finishing sooner, and the same few
/// threads reuse the same memory (runs spread over many short-lived threads would leave a
/// 19 MiB hole in the allocator's arena of each).
struct Hashers {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    /// Jobs queued or running: past `limit`, new work is shed.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
}

/// Queued verifications a hashing thread may owe before new ones are refused: a queue this
/// long already takes about a second to drain, longer than a client should wait.
const MAX_QUEUED_PER_THREAD: usize = 64;

/// Password hashing is saturated: the request should be retried later (503).
#[derive(Debug, thiserror::Error)]
#[error("password verification is saturated; retry later")]
pub struct Overloaded;

static HASHERS: LazyLock<Hashers> = LazyLock::new(|| {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    Hashers::start(threads, threads * MAX_QUEUED_PER_THREAD)
});

impl Hashers {
    /// `threads` hashing threads that owe at most `limit` jobs at once.
    fn start(threads: usize, limit: usize) -> Self {
        let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let spawned =
                std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a password hashing thread");
            }
        }
        Self {
            jobs: std::sync::Mutex::new(jobs),
            queued: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            limit,
        }
    }

    /// Runs `work` on a hashing thread; refuses when the queue is full, and skips the work
    /// when its request has gone (timed out or disconnected) before a thread reached it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> anyhow::Result<Result<T, Overloaded>> {
        use std::sync::atomic::Ordering;
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Ok(Err(Overloaded));
        }
        let (done, result) = tokio::sync::oneshot::channel();
        let queued = self.queued.clone();
        let job: Box<dyn FnOnce() + Send> = Box::new(move || {
            if !done.is_closed() {
                let _ = done.send(work());
            }
            queued.fetch_sub(1, Ordering::AcqRel);
        });
        let sent = self
            .jobs
            .lock()
            .map_err(|_| anyhow::anyhow!("password hashing is unavailable"))
            .and_then(|jobs| {
                jobs.send(job).map_err(|_| anyhow::anyhow!("password hashing is unavailable"))
            });
        if let Err(e) = sent {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        Ok(Ok(result.await?))
    }
}

/// Runs `work` on one of the process's hashing threads (see [`Hashers::run`]).
async fn on_hasher<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<Result<T, Overloaded>> {
    HASHERS.run(work).await
}

/// A bound on the verifications of one account that run at once in this process.
pub struct VerifyGate {
    per_account: usize,
    accounts: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A turn to verify a password of one account; the account's slot frees when it drops.
pub struct Turn<'a> {
    gate: &'a VerifyGate,
    account: String,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl VerifyGate {
    pub fn new(per_account: usize) -> Self {
        Self { per_account: per_account.max(1), accounts: std::sync::Mutex::new(HashMap::new()) }
    }

    /// Waits for a turn of `account`.
    pub async fn enter(&self, account: &str) -> Turn<'_> {
        let account: String = account.chars().take(256).collect();
        let slots = self.accounts.lock().ok().map(|mut accounts| {
            accounts
                .entry(account.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_account)))
                .clone()
        });
        let permit = match slots {
            Some(slots) => slots.acquire_owned().await.ok(),
            None => None,
        };
        Turn { gate: self, account, permit }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        drop(self.permit.take());
        // The map keeps an account only while someone holds or awaits its slots: the map's
        // own reference is then the last one.
        if let Ok(mut accounts) = self.gate.accounts.lock()
            && accounts.get(&self.account).is_some_and(|s| Arc::strong_count(s) == 1)
        {
            accounts.remove(&self.account);
        }
    }
}

/// Hashes a password with argon2id on a hashing thread.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    on_hasher(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
    })
    .await??
}

/// Verifies `password` against `hash` on a hashing thread; with no hash (unknown user, or an
/// attempt the lockout refused) it verifies against a dummy hash and answers false, taking
/// the same time. `Err` when hashing is saturated.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, Overloaded> {
    let verified = on_hasher(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok();
        ok && known
    })
    .await;
    match verified {
        Ok(result) => result,
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full queue sheds new work at once, and work whose caller has gone is skipped.
    #[tokio::test]
    async fn a_full_queue_sheds_work_and_abandoned_work_is_skipped() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hashers = Arc::new(Hashers::start(1, 2));
        let ran = Arc::new(AtomicUsize::new(0));
        let job = |ms: u64| {
            let ran = ran.clone();
            move || {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                ran.fetch_add(1, Ordering::SeqCst);
            }
        };
        let busy = tokio::spawn({
            let hashers = hashers.clone();
            let work = job(300);
            async move { hashers.run(work).await.map(|r| r.is_ok()).unwrap_or(false) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        // Queued behind the busy job, then abandoned by its caller.
        let abandoned = tokio::spawn({
            let hashers = hashers.clone();
            let work = job(0);
            async move { hashers.run(work).await.map(|r| r.is_ok()).unwrap_or(false) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(hashers.run(job(0)).await, Ok(Err(Overloaded))), "the queue is full");
        abandoned.abort();
        assert!(busy.await.expect("join"));
        // The queue drains (the worker may take a moment to skip the abandoned job on a busy
        // machine), and new work runs again.
        let mut ran_again = false;
        for _ in 0..100 {
            match hashers.run(job(0)).await {
                Ok(Ok(())) => {
                    ran_again = true;
                    break;
                }
                Ok(Err(Overloaded)) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(_) => break,
            }
        }
        assert!(ran_again, "new work runs once the queue has drained");
        assert_eq!(ran.load(Ordering::SeqCst), 2, "the busy job and the last one ran");
    }

    #[tokio::test]
    async fn one_account_verifies_at_most_its_share_at_once() {
        let gate = Arc::new(VerifyGate::new(2));
        let a1 = gate.enter("alice").await;
        let _a2 = gate.enter("alice").await;
        let _b = gate.enter("bob").await;
        let waiting = {
            let gate = gate.clone();
            tokio::spawn(async move {
                let _turn = gate.enter("alice").await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a third turn of alice waits");
        drop(a1);
        tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .expect("the third turn starts once one ends")
            .expect("join");
    }

    #[test]
    fn generated_secrets_are_256_bits_and_distinct() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert_ne!(a, b);
        assert_eq!(URL_SAFE_NO_PAD.decode(a.expose()).map(|v| v.len()).ok(), Some(32));
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::from_client("hunter2".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn secret_matches_its_own_hash_only() {
        let s = Secret::generate();
        assert!(s.matches_hex(&s.sha256_hex()));
        assert!(!Secret::generate().matches_hex(&s.sha256_hex()));
        assert!(!s.matches_hex(""));
    }

    #[tokio::test]
    async fn password_verifies_and_unknown_user_never_does() {
        let hash = hash_password("correct horse".into()).await.ok();
        assert!(hash.as_deref().is_some_and(|h| h.starts_with("$argon2id$")));
        assert!(verify_password("correct horse".into(), hash.clone()).await.unwrap_or(false));
        assert!(!verify_password("wrong".into(), hash).await.unwrap_or(true));
        assert!(!verify_password("atoms-auth dummy password".into(), None).await.unwrap_or(true));
    }
}
