//! Refresh tokens that name their family. A token is the base64url of: a version byte, the
//! session's id (16 bytes), the token's generation (8 bytes, big endian), 32 random bytes,
//! and the first 16 bytes of an HMAC-SHA256 of all that under a server key kept in storage.
//! The session row keeps the SHA-256 of its live token (and of the one before), so a
//! rotation is one conditional update of that row, with no row per token: a token whose MAC
//! holds was made here for that session, and if it is neither the live one nor the previous
//! one within the grace period, it is an older one presented again (reuse), for the whole
//! life of the session. Nobody can make a token for a session id they have seen (in a JWT's
//! `sid`, in `/auth/sessions`) without the key.
//!
//! Tokens issued before this format are 32 random bytes, found through `refresh_tokens`; each
//! keeps working until it is rotated once.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::secrets::Secret;

const VERSION: u8 = 2;
const ID: usize = 16;
const RANDOM: usize = 32;
const TAG: usize = 16;
const SIGNED: usize = 1 + ID + 8 + RANDOM;
const LEN: usize = SIGNED + TAG;
/// The base64url length of a token issued before this format (32 bytes).
const LEGACY_CHARS: usize = 43;

/// The name of the MAC key among the server's secrets.
pub const MAC_KEY: &str = "refresh_token_mac";

/// What a presented refresh token says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// A token of this format whose MAC holds: its session and generation.
    Family { session_id: String, generation: i64 },
    /// A token of the format before, looked up by its hash.
    Legacy,
    /// Anything else: no storage is asked.
    Forged,
}

/// Makes and reads refresh tokens under the server's MAC key.
pub struct RefreshTokens {
    /// The MAC keyed once; each use works on a copy.
    keyed: Hmac<Sha256>,
}

impl RefreshTokens {
    pub fn new(key: [u8; 32]) -> anyhow::Result<Self> {
        let keyed = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .map_err(|e| anyhow::anyhow!("refresh token key: {e}"))?;
        Ok(Self { keyed })
    }

    fn tag(&self, signed: &[u8]) -> [u8; TAG] {
        let mut mac = self.keyed.clone();
        mac.update(signed);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG];
        tag.copy_from_slice(&full[..TAG]);
        tag
    }

    /// A new token of session `session_id` (a UUID) at `generation`; `None` when the id is
    /// not a UUID.
    pub fn mint(&self, session_id: &str, generation: i64) -> Option<Secret> {
        let id = uuid::Uuid::parse_str(session_id).ok()?;
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(VERSION);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&generation.to_be_bytes());
        let mut random = [0u8; RANDOM];
        rand::rng().fill_bytes(&mut random);
        bytes.extend_from_slice(&random);
        let tag = self.tag(&bytes);
        bytes.extend_from_slice(&tag);
        Some(Secret::from_client(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// What `token` is. The MAC is compared in constant time.
    pub fn read(&self, token: &str) -> Presented {
        if token.len() == LEGACY_CHARS {
            return Presented::Legacy;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(token) else {
            return Presented::Forged;
        };
        if bytes.len() != LEN || bytes[0] != VERSION {
            return Presented::Forged;
        }
        let (signed, tag) = bytes.split_at(SIGNED);
        let mut mac = self.keyed.clone();
        mac.update(signed);
        if mac.verify_truncated_left(tag).is_err() {
            return Presented::Forged;
        }
        let mut id = [0u8; ID];
        id.copy_from_slice(&signed[1..1 + ID]);
        let mut generation = [0u8; 8];
        generation.copy_from_slice(&signed[1 + ID..1 + ID + 8]);
        Presented::Family {
            session_id: super::id_text(uuid::Uuid::from_bytes(id)),
            generation: i64::from_be_bytes(generation),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SID: &str = "019ae2a4-7c1e-7b3a-9f00-1234567890ab";

    #[test]
    fn a_minted_token_reads_back_as_its_family() {
        let tokens = RefreshTokens::new([7; 32]).expect("key");
        let token = tokens.mint(SID, 41).expect("a uuid");
        assert_eq!(token.expose().len(), 98);
        assert_eq!(
            tokens.read(token.expose()),
            Presented::Family { session_id: SID.into(), generation: 41 }
        );
        // Two tokens of one generation differ.
        assert_ne!(tokens.mint(SID, 41).expect("a uuid").expose(), token.expose());
        assert!(tokens.mint("not-a-uuid", 0).is_none());
    }

    #[test]
    fn a_token_that_was_changed_or_made_with_another_key_is_forged() {
        let tokens = RefreshTokens::new([7; 32]).expect("key");
        let token = tokens.mint(SID, 3).expect("a uuid");
        let mut bytes = URL_SAFE_NO_PAD.decode(token.expose()).expect("base64");
        // Another generation (say, from the future) under the same tag.
        bytes[1 + ID + 7] ^= 1;
        assert_eq!(tokens.read(&URL_SAFE_NO_PAD.encode(&bytes)), Presented::Forged);
        // Another session's id.
        let mut other = URL_SAFE_NO_PAD.decode(token.expose()).expect("base64");
        other[1] ^= 0x80;
        assert_eq!(tokens.read(&URL_SAFE_NO_PAD.encode(&other)), Presented::Forged);
        let elsewhere = RefreshTokens::new([8; 32]).expect("key").mint(SID, 3).expect("a uuid");
        assert_eq!(tokens.read(elsewhere.expose()), Presented::Forged);
        for garbage in ["", "x", "not base64 at all!", &"A".repeat(98)] {
            assert_eq!(tokens.read(garbage), Presented::Forged, "{garbage}");
        }
        assert_eq!(tokens.read(&"A".repeat(43)), Presented::Legacy);
    }
}
