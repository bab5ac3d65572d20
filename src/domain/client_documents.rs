//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document): a client with
//! no prior relationship to this server names itself by an https URL, and publishes its
//! metadata (RFC 7591 §2) there. The document is fetched through the same guard as webhook
//! targets, checked, kept as its caching headers allow within configured bounds, and the
//! client it describes is public and never stored.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::registration::{RegistrationError, read_metadata};
use crate::clock::Millis;
use crate::metrics::Metrics;
use crate::storage::{Client, Storage, StorageError};

/// The largest document read. Real documents are a few hundred bytes; some list many
/// redirect URIs and logos, so more than the 5 KiB the draft mentions is allowed.
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;

/// The longest URL taken for a document.
pub const MAX_URL_LEN: usize = 1024;

/// How long a fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Documents kept at once, per instance.
const CACHED_DOCUMENTS: u64 = 10_000;

/// Why a client's metadata document is not usable.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DocumentError {
    #[error("the client's metadata document could not be fetched: {0}")]
    Fetch(String),
    #[error("the client's metadata document is not valid: {0}")]
    Invalid(String),
    #[error("storage: {0}")]
    Storage(String),
}

impl From<StorageError> for DocumentError {
    fn from(e: StorageError) -> Self {
        Self::Storage(e.to_string())
    }
}

/// What the fetcher may do.
#[derive(Debug, Clone)]
pub struct DocumentPolicy {
    pub cache_min: Duration,
    pub cache_max: Duration,
    /// Fetch from loopback and private addresses, and over http (development, tests).
    pub allow_private: bool,
    /// Further trusted roots (PEM).
    pub ca_file: Option<std::path::PathBuf>,
}

/// A checked document's client, and how long it may be kept.
#[derive(Clone)]
struct Fetched {
    client: Client,
    keep: Duration,
}

struct KeepAsFetched;

impl moka::Expiry<String, Fetched> for KeepAsFetched {
    fn expire_after_create(&self, _: &String, value: &Fetched, _: Instant) -> Option<Duration> {
        Some(value.keep)
    }
}

/// Fetches, checks and caches metadata documents.
pub struct ClientDocuments {
    http: reqwest::Client,
    cache: moka::future::Cache<String, Fetched>,
    policy: DocumentPolicy,
    storage: Arc<dyn Storage>,
    metrics: Arc<Metrics>,
}

impl ClientDocuments {
    pub fn new(
        policy: DocumentPolicy,
        storage: Arc<dyn Storage>,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let agent = concat!("atoms-auth/", env!("CARGO_PKG_VERSION"));
        let http = crate::net::outbound_client(
            FETCH_TIMEOUT,
            agent,
            policy.allow_private,
            policy.ca_file.as_deref(),
        )?;
        let cache = moka::future::Cache::builder()
            .max_capacity(CACHED_DOCUMENTS)
            .expire_after(KeepAsFetched)
            .build();
        Ok(Self { http, cache, policy, storage, metrics })
    }

    /// Whether a client id names a metadata document (and so is fetched, not looked up).
    pub fn is_document_url(&self, client_id: &str) -> bool {
        // Every token request asks this of its client id: most are not URLs at all, and
        // tell so by their first bytes, without the parse (and its error text).
        let url_like = client_id.starts_with("https://")
            || self.policy.allow_private && client_id.starts_with("http://");
        url_like && document_url(client_id, self.policy.allow_private).is_ok()
    }

    /// The client a document describes. Concurrent requests for one URL share one fetch.
    pub async fn client(&self, url: &str, now: Millis) -> Result<Client, DocumentError> {
        if let Some(fetched) = self.cache.get(url).await {
            self.metrics.cache("client_documents", true);
            return Ok(fetched.client);
        }
        self.metrics.cache("client_documents", false);
        let fetched = self
            .cache
            .try_get_with(url.to_owned(), self.fetch(url, now))
            .await
            .map_err(|e| (*e).clone())?;
        Ok(fetched.client)
    }

    async fn fetch(&self, url: &str, now: Millis) -> Result<Fetched, DocumentError> {
        let parsed =
            document_url(url, self.policy.allow_private).map_err(DocumentError::Invalid)?;
        let target = crate::net::check_url(parsed.as_str(), self.policy.allow_private)
            .await
            .map_err(|e| DocumentError::Fetch(e.to_string()))?;
        let fail = |e: reqwest::Error| {
            let why = if e.is_timeout() { "it took too long".to_owned() } else { e.to_string() };
            DocumentError::Fetch(why)
        };
        let mut response = self
            .http
            .get(target)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(fail)?;
        // Redirects are not followed: a 3xx is as much a failure as a 404.
        if response.status() != reqwest::StatusCode::OK {
            return Err(DocumentError::Fetch(format!("it answered {}", response.status())));
        }
        let too_big =
            || DocumentError::Invalid(format!("it is larger than {MAX_DOCUMENT_BYTES} bytes"));
        if response.content_length().is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64) {
            return Err(too_big());
        }
        let keep = self.keep_for(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(fail)? {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(too_big());
            }
            body.extend_from_slice(&chunk);
        }
        let document: Value = serde_json::from_slice(&body)
            .map_err(|e| DocumentError::Invalid(format!("it is not JSON: {e}")))?;
        let scopes = super::resources::scopes_supported(self.storage.as_ref()).await?;
        let client = client_of(url, &document, &scopes, now).map_err(DocumentError::Invalid)?;
        Ok(Fetched { client, keep })
    }

    /// How long a document may be kept: its `Cache-Control` max-age, within the bounds (a
    /// document that may not be stored is kept for the least time, so that one sign-in does
    /// not fetch it for every request).
    fn keep_for(&self, headers: &reqwest::header::HeaderMap) -> Duration {
        let directives: Vec<String> = headers
            .get_all(reqwest::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|d| d.trim().to_ascii_lowercase())
            .collect();
        let max_age = directives
            .iter()
            .filter_map(|d| d.strip_prefix("max-age="))
            .find_map(|secs| secs.trim_matches('"').parse::<u64>().ok())
            .map(Duration::from_secs);
        let forbidden = directives.iter().any(|d| d == "no-store" || d == "no-cache");
        let asked = if forbidden { Duration::ZERO } else { max_age.unwrap_or(Duration::ZERO) };
        asked.clamp(self.policy.cache_min, self.policy.cache_max)
    }
}

/// A client id that can name a metadata document: an https URL (http too when `allow_http`)
/// with a path, and no fragment, user, password, or dot segments.
pub fn document_url(client_id: &str, allow_http: bool) -> Result<url::Url, String> {
    let https = client_id.starts_with("https://");
    if !(https || allow_http && client_id.starts_with("http://")) {
        return Err("the client id is not an https URL".into());
    }
    if client_id.len() > MAX_URL_LEN {
        return Err(format!("the URL is longer than {MAX_URL_LEN} characters"));
    }
    let url = url::Url::parse(client_id).map_err(|e| format!("the URL is not valid: {e}"))?;
    let raw_path = client_id.split_once("://").and_then(|(_, rest)| rest.find('/'));
    let has_dot_segment =
        client_id.split(['?', '#']).next().unwrap_or_default().split('/').any(|segment| {
            segment == "." || segment == ".." || segment.eq_ignore_ascii_case("%2e")
        });
    if raw_path.is_none() || url.path() == "/" {
        return Err("the URL has no path".into());
    }
    if url.fragment().is_some() || client_id.contains('#') {
        return Err("the URL has a fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL has a user or password".into());
    }
    if has_dot_segment {
        return Err("the URL has a . or .. segment".into());
    }
    Ok(url)
}

/// The public client a document describes: its `client_id` is the URL it came from, it has
/// redirect URIs, and it authenticates with nothing (`token_endpoint_auth_method` `none`,
/// the default here, and no secret). It may ask for the scopes it names that this server
/// knows, or all of them when it names none.
pub fn client_of(
    url: &str,
    document: &Value,
    scopes_supported: &[String],
    now: Millis,
) -> Result<Client, String> {
    if document.get("client_id").and_then(Value::as_str) != Some(url) {
        return Err("its client_id is not the URL it is published at".into());
    }
    for secret in ["client_secret", "client_secret_expires_at"] {
        if document.get(secret).is_some() {
            return Err(format!("it has a {secret}: a document describes a public client"));
        }
    }
    let m = read_metadata(document, "none").map_err(|e| match e {
        RegistrationError::InvalidRedirectUri(why)
        | RegistrationError::InvalidClientMetadata(why) => why,
        RegistrationError::Storage(e) => e.to_string(),
    })?;
    if !m.is_public() {
        return Err("its token_endpoint_auth_method must be none".into());
    }
    if m.redirect_uris.is_empty() {
        return Err("it has no redirect_uris".into());
    }
    let scopes: Vec<&str> = match &m.scope {
        Some(asked) => asked
            .iter()
            .map(String::as_str)
            .filter(|s| scopes_supported.iter().any(|k| k == s))
            .collect(),
        None => scopes_supported.iter().map(String::as_str).collect(),
    };
    let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_owned));
    Ok(Client {
        client_id: url.to_owned(),
        name: m.client_name.or(host).unwrap_or_else(|| url.to_owned()),
        secret_hash: None,
        grant_types: m.grant_types.join(" "),
        scopes: scopes.join(" "),
        created_at: now,
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: m.redirect_uris.join(" "),
        skip_consent: false,
        registered: false,
        last_used_at: None,
        metadata_document: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const URL: &str = "https://app.example.com/oauth/client.json";

    fn document() -> Value {
        json!({
            "client_id": URL,
            "client_name": "Example Assistant",
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        })
    }

    fn scopes() -> Vec<String> {
        vec!["notes:read".into(), "notes:write".into()]
    }

    #[test]
    fn a_valid_document_is_a_public_client_with_the_known_scopes() {
        let client = client_of(URL, &document(), &scopes(), 7).expect("valid");
        assert!(client.is_public() && client.metadata_document && !client.registered);
        assert_eq!(client.name, "Example Assistant");
        assert_eq!(client.scopes, "notes:read notes:write");
        assert_eq!(client.grant_types, "authorization_code refresh_token");
        let mut narrow = document();
        narrow["scope"] = json!("notes:read unknown");
        assert_eq!(client_of(URL, &narrow, &scopes(), 7).expect("valid").scopes, "notes:read");
        let mut unnamed = document();
        unnamed.as_object_mut().expect("object").remove("client_name");
        assert_eq!(client_of(URL, &unnamed, &scopes(), 7).expect("valid").name, "app.example.com");
    }

    #[test]
    fn documents_that_fail_a_check_are_refused() {
        let change = |field: &str, value: Value| {
            let mut d = document();
            d[field] = value;
            client_of(URL, &d, &scopes(), 7).err()
        };
        assert!(change("client_id", json!("https://app.example.com/other.json")).is_some());
        assert!(change("client_id", json!(42)).is_some());
        assert!(change("redirect_uris", json!([])).is_some());
        assert!(change("redirect_uris", json!("http://127.0.0.1/cb")).is_some());
        assert!(change("redirect_uris", json!(["https://app.example.com/cb#x"])).is_some());
        assert!(change("token_endpoint_auth_method", json!("client_secret_basic")).is_some());
        assert!(change("client_secret", json!("s3cret")).is_some());
        assert!(change("grant_types", json!(["client_credentials"])).is_some());
        assert!(change("client_name", json!(["a"])).is_some());
        assert!(client_of(URL, &json!([1, 2]), &scopes(), 7).is_err());
    }

    #[test]
    fn only_https_urls_with_a_clean_path_name_documents() {
        assert!(document_url(URL, false).is_ok());
        for bad in [
            "http://app.example.com/client.json",
            "https://app.example.com",
            "https://app.example.com/",
            "https://app.example.com/client.json#x",
            "https://user:pw@app.example.com/client.json",
            "https://app.example.com/a/../client.json",
            "https://app.example.com/./client.json",
            "app-client",
        ] {
            assert!(document_url(bad, false).is_err(), "{bad}");
        }
        assert!(document_url("http://127.0.0.1:8000/client.json", true).is_ok());
        assert!(
            document_url(&format!("https://a.example/{}", "x".repeat(MAX_URL_LEN)), false).is_err()
        );
    }
}
