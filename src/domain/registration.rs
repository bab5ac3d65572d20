//! Dynamic client registration (RFC 7591): a client that has no relationship with the server
//! yet registers itself, as an MCP client meeting a new MCP server does.

use serde_json::{Value, json};
use uuid::Uuid;

use super::audit::{Entry, entry, events};
use super::secrets::Secret;
use super::sign_in::check_redirect_uri;
use crate::clock::Millis;
use crate::storage::{Client, Storage, StorageError};

/// Why a registration was refused (RFC 7591 §3.2.2).
#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("{0}")]
    InvalidRedirectUri(String),
    #[error("{0}")]
    InvalidClientMetadata(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The grant types a registered client may have.
const GRANTS: [&str; 2] = ["authorization_code", "refresh_token"];

/// A field that must be a string, if present.
fn text<'a>(metadata: &'a Value, name: &str) -> Result<Option<&'a str>, RegistrationError> {
    match metadata.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => {
            Err(RegistrationError::InvalidClientMetadata(format!("{name} must be a string")))
        }
    }
}

/// A field that must be an array of strings, if present.
fn texts(metadata: &Value, name: &str) -> Result<Option<Vec<String>>, RegistrationError> {
    let wrong =
        || RegistrationError::InvalidClientMetadata(format!("{name} must be an array of strings"));
    match metadata.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned).ok_or_else(wrong))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// Whether a redirect URI suits the application type: a native app's is a loopback http URI
/// or a private-use scheme (RFC 8252 §7.1, §7.3); a web app's is https (http on localhost).
fn suits(uri: &str, native: bool) -> Result<(), String> {
    check_redirect_uri(uri)?;
    let url = url::Url::parse(uri).map_err(|e| e.to_string())?;
    // check_redirect_uri has refused http on any other host already.
    let ok = match (native, url.scheme()) {
        (true, "http") => crate::net::is_loopback_host(&url),
        (true, "https") => false,
        (true, _) => true,
        (false, scheme) => scheme == "https" || scheme == "http",
    };
    if ok {
        Ok(())
    } else if native {
        Err(format!(
            "{uri}: a native client's redirect URI is http on a loopback address or a private-use scheme"
        ))
    } else {
        Err(format!("{uri}: a web client's redirect URI is https"))
    }
}

/// Client metadata (RFC 7591 §2) as read and checked: the same rules whether a client
/// registers or publishes a client ID metadata document.
#[derive(Debug, Clone)]
pub struct Metadata {
    pub application_type: &'static str,
    pub token_endpoint_auth_method: &'static str,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    /// The scopes asked for, if the metadata names any.
    pub scope: Option<Vec<String>>,
    pub client_name: Option<String>,
}

impl Metadata {
    pub fn is_public(&self) -> bool {
        self.token_endpoint_auth_method == "none"
    }
}

/// Reads and checks client metadata. `default_auth_method` is the authentication method when
/// the metadata names none.
pub fn read_metadata(
    metadata: &Value,
    default_auth_method: &'static str,
) -> Result<Metadata, RegistrationError> {
    let invalid = |why: &str| RegistrationError::InvalidClientMetadata(why.to_owned());
    if !metadata.is_object() {
        return Err(invalid("the body must be a JSON object of client metadata"));
    }
    let (application_type, native) = match text(metadata, "application_type")? {
        None | Some("web") => ("web", false),
        Some("native") => ("native", true),
        Some(other) => {
            return Err(invalid(&format!("application_type {other} is not native or web")));
        }
    };
    let auth_method = match text(metadata, "token_endpoint_auth_method")? {
        None => default_auth_method,
        Some("none") => "none",
        Some("client_secret_basic") => "client_secret_basic",
        Some(other) => {
            return Err(invalid(&format!(
                "token_endpoint_auth_method {other} is not supported: use none or client_secret_basic"
            )));
        }
    };
    let grant_types =
        texts(metadata, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".into()]);
    if let Some(g) = grant_types.iter().find(|g| !GRANTS.contains(&g.as_str())) {
        return Err(invalid(&format!("grant type {g} is not available to registered clients")));
    }
    let response_types = texts(metadata, "response_types")?.unwrap_or_else(|| vec!["code".into()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(invalid("response_types may only be code"));
    }
    let redirect_uris = texts(metadata, "redirect_uris")?.unwrap_or_default();
    if redirect_uris.is_empty() && grant_types.iter().any(|g| g == "authorization_code") {
        return Err(RegistrationError::InvalidRedirectUri("redirect_uris is required".into()));
    }
    for uri in &redirect_uris {
        suits(uri, native).map_err(RegistrationError::InvalidRedirectUri)?;
    }
    let scope = text(metadata, "scope")?.map(|s| s.split_whitespace().map(str::to_owned).collect());
    let name = text(metadata, "client_name")?.map(str::trim).filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.chars().count() > 200 || n.contains('\0')) {
        return Err(invalid("client_name has at most 200 characters"));
    }
    Ok(Metadata {
        application_type,
        token_endpoint_auth_method: auth_method,
        grant_types,
        response_types,
        redirect_uris,
        scope,
        client_name: name.map(str::to_owned),
    })
}

/// Registers a client from its metadata. `scopes_supported` are the scopes it may ask for
/// (every one when it names none). Returns the client, its secret (for
/// `client_secret_basic`), the answer's JSON and the `client.registered` record.
pub async fn register(
    storage: &dyn Storage,
    metadata: &Value,
    scopes_supported: &[String],
    now: Millis,
) -> Result<(Client, Option<Secret>, Value, Entry), RegistrationError> {
    let m = read_metadata(metadata, "client_secret_basic")?;
    let scopes: Vec<String> = match &m.scope {
        Some(asked) => {
            if let Some(s) = asked.iter().find(|s| !scopes_supported.contains(s)) {
                return Err(RegistrationError::InvalidClientMetadata(format!(
                    "scope {s} is not supported"
                )));
            }
            asked.clone()
        }
        None => scopes_supported.to_vec(),
    };
    let public = m.is_public();
    let secret = (!public).then(Secret::generate);
    let client = Client {
        client_id: Uuid::new_v4().simple().to_string(),
        name: m.client_name.clone().unwrap_or_else(|| "Unnamed application".to_owned()),
        secret_hash: secret.as_ref().map(Secret::sha256_hex),
        grant_types: m.grant_types.join(" "),
        scopes: scopes.join(" "),
        created_at: now,
        disabled: false,
        created_by: None,
        resource_server: false,
        redirect_uris: m.redirect_uris.join(" "),
        skip_consent: false,
        registered: true,
        last_used_at: None,
        metadata_document: false,
    };
    storage.create_client(&client).await?;
    let answer = json!({
        "client_id": client.client_id,
        "client_secret": secret.as_ref().map(Secret::expose),
        "client_id_issued_at": now / 1000,
        "client_secret_expires_at": secret.as_ref().map(|_| 0),
        "client_name": client.name,
        "redirect_uris": m.redirect_uris,
        "grant_types": m.grant_types,
        "response_types": m.response_types,
        "token_endpoint_auth_method": m.token_endpoint_auth_method,
        "application_type": m.application_type,
        "scope": client.scopes,
    });
    let registered = entry(events::CLIENT_REGISTERED)
        .client(&client.client_id)
        .actor(format!("client:{}", client.client_id))
        .detail("name", client.name.as_str())
        .detail("application_type", m.application_type)
        .detail("public", public)
        .detail("redirect_uris", client.redirect_uris.as_str());
    Ok((client, secret, answer, registered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_suit_the_application_type() {
        assert!(suits("http://127.0.0.1/cb", true).is_ok());
        assert!(suits("com.example.app:/cb", true).is_ok());
        assert!(suits("https://app.example/cb", true).is_err());
        assert!(suits("https://app.example/cb", false).is_ok());
        assert!(suits("http://localhost:3000/cb", false).is_ok());
        assert!(suits("com.example.app:/cb", false).is_err());
        assert!(suits("http://app.example/cb", false).is_err());
        assert!(suits("https://app.example/cb#frag", false).is_err());
    }
}
