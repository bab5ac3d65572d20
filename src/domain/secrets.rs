//! Secrets: user passwords (argon2id, verified off the async threads), server-generated
//! client secrets and refresh tokens (256 random bits, stored as SHA-256: their entropy makes
//! a slow hash pointless), and constant-time comparison.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

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
}

static HASHERS: LazyLock<Hashers> = LazyLock::new(|| {
    let (jobs, queue) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    for i in 0..std::thread::available_parallelism().map_or(2, |n| n.get()) {
        let queue = queue.clone();
        let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
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
    Hashers { jobs: std::sync::Mutex::new(jobs) }
});

/// Runs `work` on a hashing thread.
async fn on_hasher<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = done.send(work());
    });
    HASHERS
        .jobs
        .lock()
        .map_err(|_| anyhow::anyhow!("password hashing is unavailable"))?
        .send(job)
        .map_err(|_| anyhow::anyhow!("password hashing is unavailable"))?;
    Ok(result.await?)
}

/// Hashes a password with argon2id on a hashing thread.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    on_hasher(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("password hashing failed: {e}"))
    })
    .await?
}

/// Verifies `password` against `hash` on a hashing thread; with no hash (unknown user) it
/// verifies against a dummy hash and answers false, taking the same time.
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    on_hasher(move || {
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = Argon2::default().verify_password(password.as_bytes(), hash.as_str()).is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(verify_password("correct horse".into(), hash.clone()).await);
        assert!(!verify_password("wrong".into(), hash).await);
        assert!(!verify_password("atoms-auth dummy password".into(), None).await);
    }
}
