//! Signing keys: generated here, kept in storage (the private part encrypted with the master
//! key when one is set), parsed once into signers and verifiers, rotated on a schedule or on
//! demand. A retired key stays in the JWKS until every token it signed has expired.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::audit::{Audit, Entry, entry, events};
use crate::clock::{Clock, Millis};
use crate::config::SigningAlgorithm;
use crate::storage::{ServerSecret, Storage, StoredKey};

/// A parsed private key, ready to sign without re-parsing.
enum KeyPair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// The key new tokens are signed with.
pub struct Signer {
    pub kid: String,
    pub alg: SigningAlgorithm,
    pub created_at: Millis,
    pair: KeyPair,
    rng: SystemRandom,
}

impl Signer {
    /// Signs `message` (the JWS signing input).
    pub fn sign(&self, message: &[u8]) -> anyhow::Result<Vec<u8>> {
        Ok(match &self.pair {
            KeyPair::Ed(pair) => pair.sign(message).as_ref().to_vec(),
            KeyPair::Ec(pair) => pair
                .sign(&self.rng, message)
                .map_err(|_| anyhow!("ES256 signing failed"))?
                .as_ref()
                .to_vec(),
            KeyPair::Rsa(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .map_err(|_| anyhow!("RS256 signing failed"))?;
                signature
            }
        })
    }
}

/// A public key that verifies tokens of one `kid`.
pub struct Verifier {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

struct KeySet {
    signer: Option<Arc<Signer>>,
    /// The newest unretired key in storage, usable or not: what a rotation replaces.
    stored_active: Option<String>,
    verifiers: HashMap<String, Arc<Verifier>>,
    jwks: serde_json::Value,
}

/// Holds the parsed keys and keeps them in step with storage.
pub struct KeyManager {
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    alg: SigningAlgorithm,
    /// The master key's cipher, shared with what else seals secrets at rest (webhooks).
    sealer: Arc<Sealer>,
    /// How long a retired key must stay published: the access-token lifetime, plus the
    /// time other instances may keep signing with it before they reload.
    publish_after_retire_ms: Millis,
    rotation_interval_ms: Millis,
    set: RwLock<Arc<KeySet>>,
    last_reload: AtomicI64,
    /// When the last reload that an unknown kid asked for began; held while one runs.
    unknown_kid_reload: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    audit: std::sync::OnceLock<Arc<Audit>>,
}

/// The least time between two reloads for unknown kids: tokens with made-up kids cost at
/// most this many storage reads, whatever their number.
const UNKNOWN_KID_RELOAD_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// Slack for a reload that runs late and for clocks that disagree a little.
const RELOAD_MARGIN_MS: Millis = 60_000;

/// How long a retired key stays published for access tokens living `access_ttl_ms`, when
/// every instance reloads the keys each `reload_interval_ms`: an instance may sign with a key
/// another one retired until its next reload.
pub fn publish_after_retire_ms(access_ttl_ms: Millis, reload_interval_ms: Millis) -> Millis {
    access_ttl_ms + reload_interval_ms + RELOAD_MARGIN_MS
}

/// The key that wraps private keys: AES-256-GCM under the configured master key, plus the
/// derivation of earlier versions, which only opens keys sealed before.
struct MasterKey {
    current: LessSafeKey,
    legacy: LessSafeKey,
}

/// The shortest passphrase accepted in place of a random 32-byte key.
const MIN_PASSPHRASE_CHARS: usize = 20;

/// Derives the wrapping key from the configured master key: 32 random bytes in base64 are
/// used as they are; anything else is a passphrase stretched with argon2id (a slow KDF, so
/// a guessed passphrase costs as much as a guessed password), and must be long.
fn master_cipher(master_key: &str) -> anyhow::Result<MasterKey> {
    use base64::Engine;
    let trimmed = master_key.trim();
    let decoded = base64::engine::general_purpose::STANDARD.decode(trimmed).ok();
    let material: [u8; 32] = match decoded.and_then(|d| <[u8; 32]>::try_from(d).ok()) {
        Some(bytes) => bytes,
        None => {
            if trimmed.chars().count() < MIN_PASSPHRASE_CHARS {
                bail!(
                    "the master key must be 32 random bytes in base64 (openssl rand -base64 32) \
                     or a passphrase of at least {MIN_PASSPHRASE_CHARS} characters"
                );
            }
            tracing::warn!(
                "the master key is a passphrase; 32 random bytes in base64 are stronger"
            );
            let mut out = [0u8; 32];
            argon2::Argon2::default()
                .hash_password_into(trimmed.as_bytes(), b"atoms-auth master key v2", &mut out)
                .map_err(|e| anyhow!("deriving the master key failed: {e}"))?;
            out
        }
    };
    let current = Sha256::new_with_prefix(b"atoms-auth signing-key wrap v2\0")
        .chain_update(material)
        .finalize();
    let legacy = Sha256::new_with_prefix(b"atoms-auth signing-key wrap v1\0")
        .chain_update(master_key.as_bytes())
        .finalize();
    let cipher = |bytes: &[u8]| {
        UnboundKey::new(&AES_256_GCM, bytes)
            .map(LessSafeKey::new)
            .map_err(|_| anyhow!("bad master key"))
    };
    Ok(MasterKey { current: cipher(&current)?, legacy: cipher(&legacy)? })
}

impl KeyManager {
    pub fn new(
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        alg: SigningAlgorithm,
        master_key: Option<&str>,
        publish_after_retire_ms: Millis,
        rotation_interval_ms: Millis,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            storage,
            clock,
            alg,
            sealer: Arc::new(Sealer { master: master_key.map(master_cipher).transpose()? }),
            publish_after_retire_ms,
            rotation_interval_ms,
            set: RwLock::new(Arc::new(KeySet {
                signer: None,
                verifiers: HashMap::new(),
                jwks: serde_json::json!({ "keys": [] }),
                stored_active: None,
            })),
            last_reload: AtomicI64::new(0),
            unknown_kid_reload: tokio::sync::Mutex::new(None),
            audit: std::sync::OnceLock::new(),
        })
    }

    /// Audits rotations from now on (a server sets this; the CLI audits on its own).
    pub fn set_audit(&self, audit: Arc<Audit>) {
        let _ = self.audit.set(audit);
    }

    fn current(&self) -> Arc<KeySet> {
        // A poisoned lock only means a writer panicked between two whole-Arc swaps; the Arc
        // inside is still consistent.
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key to sign with, when one is loaded.
    pub fn signer(&self) -> Option<Arc<Signer>> {
        self.current().signer.clone()
    }

    /// The published key set (RFC 7517).
    pub fn jwks(&self) -> serde_json::Value {
        self.current().jwks.clone()
    }

    /// The verifier of `kid`. An unknown kid may be another instance's new key, so the keys
    /// are read again from storage: by a reload that began after this call did, which sees
    /// every key stored before the token was signed. Such reloads run one at a time and at
    /// most every [`UNKNOWN_KID_RELOAD_EVERY`]; callers that wait for one share its result.
    pub async fn verifier(&self, kid: &str) -> Option<Arc<Verifier>> {
        if let Some(v) = self.current().verifiers.get(kid) {
            return Some(v.clone());
        }
        let arrived = tokio::time::Instant::now();
        let mut last = self.unknown_kid_reload.lock().await;
        match *last {
            Some(began) if began >= arrived => {
                return self.current().verifiers.get(kid).cloned();
            }
            Some(began) => tokio::time::sleep_until(began + UNKNOWN_KID_RELOAD_EVERY).await,
            None => {}
        }
        *last = Some(tokio::time::Instant::now());
        if let Err(e) = self.reload().await {
            tracing::warn!(error = %e, "reloading signing keys failed");
        }
        self.current().verifiers.get(kid).cloned()
    }

    /// Reads the keys from storage and replaces the parsed set.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let stored = self.storage.signing_keys(self.clock.now_ms()).await?;
        let mut signer = None;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        for key in &stored {
            if self.sealer.master.is_some() && !key.encrypted {
                // Not used: a new key replaces it (see `rotate`).
                tracing::error!(kid = %key.kid, "a signing key stored in clear while a master key is set is ignored");
                continue;
            }
            let der = self.unwrap_private(key)?;
            let alg = SigningAlgorithm::parse(&key.alg)
                .ok_or_else(|| anyhow!("key {} has unknown algorithm {}", key.kid, key.alg))?;
            let mut jwk = public_jwk(alg, &der).with_context(|| format!("key {}", key.kid))?;
            jwk.common.key_id = Some(key.kid.clone());
            jwk.common.public_key_use = Some(PublicKeyUse::Signature);
            let decoding = DecodingKey::from_jwk(&jwk)?;
            verifiers
                .insert(key.kid.clone(), Arc::new(Verifier { alg: alg.jose(), key: decoding }));
            jwks.push(serde_json::to_value(&jwk)?);
            if signer.is_none() && key.retired_at.is_none() {
                signer = Some(Arc::new(Signer {
                    kid: key.kid.clone(),
                    alg,
                    created_at: key.created_at,
                    pair: parse_pair(alg, &der)?,
                    rng: SystemRandom::new(),
                }));
            }
        }
        let stored_active = stored.iter().find(|k| k.retired_at.is_none()).map(|k| k.kid.clone());
        let set = Arc::new(KeySet {
            signer,
            verifiers,
            jwks: serde_json::json!({ "keys": jwks }),
            stored_active,
        });
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        self.last_reload.store(self.clock.now_ms(), Ordering::Relaxed);
        Ok(())
    }

    /// Loads the keys, generating the first one when storage has none.
    pub async fn ensure_active(&self) -> anyhow::Result<()> {
        self.reload().await?;
        if self.signer().is_none() {
            self.rotate().await?;
        }
        Ok(())
    }

    /// Generates a key and makes it the active one, retiring the others. When another
    /// instance rotated at the same moment, its key wins and this one is dropped. Returns the
    /// active kid.
    pub async fn rotate(&self) -> anyhow::Result<String> {
        self.reload().await?;
        let expected = self.current().stored_active.clone();
        let alg = self.alg;
        let der = tokio::task::spawn_blocking(move || generate_pkcs8(alg)).await??;
        let now = self.clock.now_ms();
        let kid = uuid::Uuid::now_v7().simple().to_string();
        let (private_key, encrypted) = match &self.sealer.master {
            Some(master) => (seal(&master.current, &kid, &der)?, true),
            None => (der, false),
        };
        let key = StoredKey {
            kid,
            alg: alg.as_str().to_owned(),
            private_key,
            encrypted,
            created_at: now,
            retired_at: None,
            expires_at: None,
        };
        let retire_until = now + self.publish_after_retire_ms;
        let rotated =
            self.storage.rotate_signing_key(expected.as_deref(), &key, retire_until).await?;
        self.reload().await?;
        if rotated {
            tracing::info!(kid = %key.kid, alg = alg.as_str(), "signing key rotated");
            if let Some(audit) = self.audit.get() {
                audit.record(key_rotated(&key.kid, alg, expected.as_deref())).await?;
            }
        }
        self.signer().map(|s| s.kid.clone()).ok_or_else(|| anyhow!("no active signing key"))
    }

    /// Rotates when the active key is older than the rotation interval.
    pub async fn rotate_if_due(&self) -> anyhow::Result<()> {
        self.reload().await?;
        let due = self.signer().is_none_or(|s| {
            self.rotation_interval_ms > 0
                && self.clock.now_ms() - s.created_at >= self.rotation_interval_ms
        });
        if due {
            self.rotate().await?;
        }
        Ok(())
    }

    /// The private key of a stored key. With a master key set, a key stored in clear is
    /// refused: it was not made by this server under this key (or was written by someone with
    /// access to the database), and signing with it would let them mint tokens.
    fn unwrap_private(&self, key: &StoredKey) -> anyhow::Result<Vec<u8>> {
        match (&self.sealer.master, key.encrypted) {
            (None, false) => Ok(key.private_key.clone()),
            (None, true) => bail!("key {} is encrypted but no master key is set", key.kid),
            (Some(_), false) => {
                bail!("key {} is stored in clear while a master key is set", key.kid)
            }
            (Some(master), true) => open(&master.current, &key.kid, &key.private_key)
                .or_else(|_| open(&master.legacy, &key.kid, &key.private_key))
                .with_context(|| format!("key {} does not decrypt with the master key", key.kid)),
        }
    }
}

/// How a text secret sealed with the master key begins, when stored.
const SEALED_TEXT: &str = "sealed:v1:";

/// Seals secrets at rest with the master key (when one is set). The key manager and the
/// webhooks share one; it refers to nothing else, so sharing it makes no reference cycle.
pub struct Sealer {
    master: Option<MasterKey>,
}

impl Sealer {
    /// A text secret as it is stored: sealed with the master key (bound to `label`) when one
    /// is set, else as it is.
    pub fn seal_text(&self, label: &str, plain: &str) -> anyhow::Result<String> {
        Ok(match &self.master {
            Some(master) => {
                let sealed = seal(&master.current, label, plain.as_bytes())?;
                format!("{SEALED_TEXT}{}", base64::engine::general_purpose::STANDARD.encode(sealed))
            }
            None => plain.to_owned(),
        })
    }

    /// A text secret from how it is stored (one stored before sealing, or without a master
    /// key, is as it was written).
    pub fn open_text(&self, label: &str, stored: &str) -> anyhow::Result<String> {
        let Some(sealed) = stored.strip_prefix(SEALED_TEXT) else {
            return Ok(stored.to_owned());
        };
        let master = self
            .master
            .as_ref()
            .ok_or_else(|| anyhow!("{label} is sealed but no master key is set"))?;
        let sealed = base64::engine::general_purpose::STANDARD.decode(sealed)?;
        let plain = open(&master.current, label, &sealed)
            .or_else(|_| open(&master.legacy, label, &sealed))
            .with_context(|| format!("{label} does not decrypt with the master key"))?;
        Ok(String::from_utf8(plain)?)
    }
}

impl KeyManager {
    /// The sealer of secrets at rest, for others that keep secrets.
    pub fn sealer(&self) -> Arc<Sealer> {
        self.sealer.clone()
    }

    /// A 32-byte secret of the server, kept in storage (sealed with the master key when one
    /// is set) and the same on every instance: the first instance to ask makes it.
    pub async fn server_secret(&self, name: &str) -> anyhow::Result<[u8; 32]> {
        let mut fresh = [0u8; 32];
        rand::rng().fill_bytes(&mut fresh);
        let label = format!("secret:{name}");
        let (value, encrypted) = match &self.sealer.master {
            Some(master) => (seal(&master.current, &label, &fresh)?, true),
            None => (fresh.to_vec(), false),
        };
        let candidate = ServerSecret { value, encrypted, created_at: self.clock.now_ms() };
        let stored = self.storage.server_secret(name, &candidate).await?;
        let plain = match (&self.sealer.master, stored.encrypted) {
            (None, false) => stored.value,
            (None, true) => bail!("the secret {name} is encrypted but no master key is set"),
            (Some(_), false) => {
                // Made before a master key was configured: still the secret every instance
                // shares (anyone able to replace it could rewrite sessions directly).
                tracing::warn!(name, "a server secret is stored in clear");
                stored.value
            }
            (Some(master), true) => open(&master.current, &label, &stored.value)
                .or_else(|_| open(&master.legacy, &label, &stored.value))
                .with_context(|| format!("the secret {name} does not decrypt"))?,
        };
        plain.try_into().map_err(|_| anyhow!("the secret {name} is not 32 bytes"))
    }
}

/// The `key.rotated` audit record.
pub fn key_rotated(kid: &str, alg: SigningAlgorithm, previous: Option<&str>) -> Entry {
    entry(events::KEY_ROTATED)
        .actor("system")
        .detail("kid", kid)
        .detail("alg", alg.as_str())
        .detail("previous_kid", previous.map(str::to_owned))
}

/// A new private key of `alg`, as PKCS#8 DER.
pub fn generate_pkcs8(alg: SigningAlgorithm) -> anyhow::Result<Vec<u8>> {
    let rng = SystemRandom::new();
    let failed = |_| anyhow!("{} key generation failed", alg.as_str());
    Ok(match alg {
        SigningAlgorithm::EdDSA => {
            Ed25519KeyPair::generate_pkcs8v1(&rng).map_err(failed)?.as_ref().to_vec()
        }
        SigningAlgorithm::ES256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
        SigningAlgorithm::RS256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            let der: Pkcs8V1Der<'static> = pair.as_der().map_err(failed)?;
            der.as_ref().to_vec()
        }
    })
}

fn parse_pair(alg: SigningAlgorithm, der: &[u8]) -> anyhow::Result<KeyPair> {
    let rejected = |e: aws_lc_rs::error::KeyRejected| anyhow!("invalid {} key: {e}", alg.as_str());
    Ok(match alg {
        SigningAlgorithm::EdDSA => KeyPair::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(rejected)?),
        SigningAlgorithm::ES256 => KeyPair::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(rejected)?,
        ),
        SigningAlgorithm::RS256 => KeyPair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?),
    })
}

fn public_jwk(alg: SigningAlgorithm, der: &[u8]) -> anyhow::Result<Jwk> {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> =
        body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
    let pem =
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n"));
    let encoding = match alg {
        SigningAlgorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes())?,
        SigningAlgorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes())?,
        SigningAlgorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes())?,
    };
    Ok(Jwk::from_encoding_key(&encoding, alg.jose())?)
}

fn seal(cipher: &LessSafeKey, kid: &str, plain: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    let mut buf = plain.to_vec();
    cipher
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(kid.as_bytes()),
            &mut buf,
        )
        .map_err(|_| anyhow!("key encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

fn open(cipher: &LessSafeKey, kid: &str, sealed: &[u8]) -> anyhow::Result<Vec<u8>> {
    if sealed.len() < 12 {
        bail!("sealed key too short");
    }
    let (nonce, rest) = sealed.split_at(12);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| anyhow!("bad nonce"))?;
    let mut buf = rest.to_vec();
    let plain = cipher
        .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
        .map_err(|_| anyhow!("decryption failed"))?;
    Ok(plain.to_vec())
}

/// base64url without padding, as JOSE wants it.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_generates_a_key_that_signs_and_publishes() {
        for alg in [SigningAlgorithm::EdDSA, SigningAlgorithm::ES256, SigningAlgorithm::RS256] {
            let der = generate_pkcs8(alg).expect("generate");
            let jwk = public_jwk(alg, &der).expect("jwk");
            let pair = parse_pair(alg, &der).expect("parse");
            let signer =
                Signer { kid: "k".into(), alg, created_at: 0, pair, rng: SystemRandom::new() };
            let sig = signer.sign(b"header.payload").expect("sign");
            let key = DecodingKey::from_jwk(&jwk).expect("decoding key");
            let ok = jsonwebtoken::crypto::verify(&b64(&sig), b"header.payload", &key, alg.jose());
            assert!(ok.expect("verify"), "{alg:?}");
        }
    }

    #[test]
    fn sealed_key_opens_only_with_its_master_key_and_kid() {
        let cipher = master_cipher("master one is a long passphrase").expect("cipher").current;
        let sealed = seal(&cipher, "kid-1", b"private").expect("seal");
        assert_eq!(open(&cipher, "kid-1", &sealed).expect("open"), b"private");
        assert!(open(&cipher, "kid-2", &sealed).is_err());
        let other = master_cipher("master two is a long passphrase").expect("cipher").current;
        assert!(open(&other, "kid-1", &sealed).is_err());
    }

    #[test]
    fn master_keys_are_random_bytes_or_long_passphrases() {
        assert!(master_cipher("short").is_err());
        assert!(master_cipher("").is_err());
        let random = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
        assert!(master_cipher(random).is_ok());
        // The two forms derive different keys from the same text.
        let a = master_cipher(random).expect("key").current;
        let sealed = seal(&a, "k", b"x").expect("seal");
        assert!(open(&master_cipher(random).expect("key").legacy, "k", &sealed).is_err());
    }
}
