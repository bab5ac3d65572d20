//! [`SignInStore`] on Redis. A browser session is a hash that expires with it, indexed in a
//! set per user; a user's consents are one hash of client id → scopes; a code is a hash kept
//! for [`CODE_KEPT_MS`] after it is made, so that a replay is still recognised. Taking a
//! code and binding its session are scripts: each runs alone on the server.

use ::redis::AsyncCommands;
use async_trait::async_trait;

use super::{Fields, RedisStorage, field, hex, optional};
use crate::clock::Millis;
use crate::ids::UserId;
use crate::storage::*;

fn browser_session_from_map(hash: &[u8], map: &Fields) -> StorageResult<BrowserSession> {
    Ok(BrowserSession {
        hash: hash.to_vec(),
        user_id: field(map, "user_id")?,
        created_at: field(map, "created_at")?,
        idle_expires_at: field(map, "idle_expires_at")?,
        expires_at: field(map, "expires_at")?,
        ip: optional(map, "ip"),
        user_agent: optional(map, "user_agent"),
    })
}

fn code_from_map(hash: &[u8], map: &Fields) -> StorageResult<AuthorizationCode> {
    Ok(AuthorizationCode {
        hash: hash.to_vec(),
        client_id: field(map, "client_id")?,
        redirect_uri: field(map, "redirect_uri")?,
        code_challenge: field(map, "code_challenge")?,
        scope: map.get("scope").cloned().unwrap_or_default(),
        resource: optional(map, "resource"),
        user_id: field(map, "user_id")?,
        ip: optional(map, "ip"),
        user_agent: optional(map, "user_agent"),
        created_at: field(map, "created_at")?,
        expires_at: field(map, "expires_at")?,
    })
}

/// The fields of a flat `[field, value, ...]` list.
fn pairs(list: &[String]) -> Fields {
    list.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect()
}

/// Optional text as hash fields: an absent value has no field.
fn present_fields<'a>(fields: &[(&'a str, &'a Option<String>)]) -> Vec<(&'a str, &'a str)> {
    fields.iter().filter_map(|(name, value)| value.as_deref().map(|v| (*name, v))).collect()
}

#[async_trait]
impl SignInStore for RedisStorage {
    async fn create_browser_session(&self, s: &BrowserSession) -> StorageResult<()> {
        let key = self.key("browser", &hex(&s.hash));
        let by_user = self.key("user_browsers", &s.user_id);
        let mut fields = vec![
            ("user_id", s.user_id.clone()),
            ("created_at", s.created_at.to_string()),
            ("idle_expires_at", s.idle_expires_at.to_string()),
            ("expires_at", s.expires_at.to_string()),
        ];
        for (name, value) in present_fields(&[("ip", &s.ip), ("user_agent", &s.user_agent)]) {
            fields.push((name, value.to_owned()));
        }
        let _: () = ::redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire_at(&key, s.expires_at)
            .ignore()
            .sadd(&by_user, hex(&s.hash))
            .ignore()
            .pexpire_at(&by_user, s.expires_at)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn touch_browser_session(
        &self,
        hash: &[u8],
        now: Millis,
        idle_until: Millis,
    ) -> StorageResult<Option<BrowserSession>> {
        let list: Vec<String> = self
            .scripts
            .touch_browser_session
            .key(self.key("browser", &hex(hash)))
            .arg(now)
            .arg(idle_until)
            .invoke_async(&mut self.conn())
            .await?;
        if list.is_empty() {
            return Ok(None);
        }
        browser_session_from_map(hash, &pairs(&list)).map(Some)
    }

    async fn end_browser_session(&self, hash: &[u8]) -> StorageResult<()> {
        let key = self.key("browser", &hex(hash));
        let user: Option<String> = self.conn().hget(&key, "user_id").await?;
        let mut pipe = ::redis::pipe();
        pipe.del(&key).ignore();
        if let Some(user) = user {
            pipe.srem(self.key("user_browsers", &user), hex(hash)).ignore();
        }
        let _: () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn end_user_browser_sessions(&self, user_id: UserId<'_>) -> StorageResult<u64> {
        let by_user = self.key("user_browsers", user_id.as_str());
        let hashes: Vec<String> = self.conn().smembers(&by_user).await?;
        let keys: Vec<String> = hashes.iter().map(|h| self.key("browser", h)).collect();
        let mut pipe = ::redis::pipe();
        for key in &keys {
            pipe.del(key);
        }
        pipe.del(&by_user).ignore();
        let deleted: Vec<u64> = pipe.query_async(&mut self.conn()).await?;
        Ok(deleted.iter().sum())
    }

    async fn consent(&self, user_id: UserId<'_>, client_id: &str) -> StorageResult<Option<String>> {
        Ok(self.conn().hget(self.key("consents", user_id.as_str()), client_id).await?)
    }

    async fn save_consent(
        &self,
        user_id: UserId<'_>,
        client_id: &str,
        scopes: &str,
        _now: Millis,
    ) -> StorageResult<()> {
        let _: () =
            self.conn().hset(self.key("consents", user_id.as_str()), client_id, scopes).await?;
        Ok(())
    }

    async fn create_code(&self, c: &AuthorizationCode) -> StorageResult<()> {
        let key = self.key("code", &hex(&c.hash));
        let mut fields = vec![
            ("client_id", c.client_id.clone()),
            ("redirect_uri", c.redirect_uri.clone()),
            ("code_challenge", c.code_challenge.clone()),
            ("scope", c.scope.clone()),
            ("user_id", c.user_id.clone()),
            ("created_at", c.created_at.to_string()),
            ("expires_at", c.expires_at.to_string()),
        ];
        for (name, value) in present_fields(&[
            ("ip", &c.ip),
            ("user_agent", &c.user_agent),
            ("resource", &c.resource),
        ]) {
            fields.push((name, value.to_owned()));
        }
        let _: () = ::redis::pipe()
            .atomic()
            .hset_multiple(&key, &fields)
            .ignore()
            .pexpire_at(&key, c.created_at + CODE_KEPT_MS)
            .ignore()
            .query_async(&mut self.conn())
            .await?;
        Ok(())
    }

    async fn take_code(&self, hash: &[u8], now: Millis) -> StorageResult<CodeTaken> {
        let list: Vec<String> = self
            .scripts
            .take_code
            .key(self.key("code", &hex(hash)))
            .arg(now)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match list.split_first() {
            Some((status, fields)) if status == "first" => {
                CodeTaken::First(Box::new(code_from_map(hash, &pairs(fields))?))
            }
            Some((status, rest)) if status == "again" => {
                CodeTaken::Again { session_id: rest.first().filter(|id| !id.is_empty()).cloned() }
            }
            _ => CodeTaken::Unknown,
        })
    }

    async fn bind_code_session(&self, hash: &[u8], session_id: &str) -> StorageResult<bool> {
        let bound: i64 = self
            .scripts
            .bind_code_session
            .key(self.key("code", &hex(hash)))
            .arg(session_id)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(bound == 1)
    }
}
