//! The resources tokens may be issued for (RFC 8707): registering and removing them, and the
//! rules a resource URI must follow.

use super::accounts::AccountError;
use super::audit::{Entry, entry, events};
use crate::clock::Millis;
use crate::storage::{Resource, Storage};

/// A resource to register.
pub struct NewResource {
    pub uri: String,
    pub name: Option<String>,
    pub scopes: Vec<String>,
}

/// Why a resource URI is not one (RFC 8707 §2): it must be absolute and have no fragment. It
/// is https, or http on a loopback or localhost host (development).
pub fn check_resource_uri(uri: &str) -> Result<(), String> {
    let url = url::Url::parse(uri).map_err(|_| format!("{uri} is not an absolute URI"))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(format!("{uri} has a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if crate::net::is_local_host(&url) => Ok(()),
        _ => Err(format!("{uri}: a resource is https (http only on localhost)")),
    }
}

/// A resource of the configuration's list: `URI=scope scope…`.
pub fn parse_configured(entry: &str) -> Result<NewResource, String> {
    let (uri, scopes) = entry
        .split_once('=')
        .ok_or_else(|| format!("resources: {entry} is not URI=scope scope…"))?;
    let scopes: Vec<String> = scopes.split_whitespace().map(str::to_owned).collect();
    Ok(NewResource { uri: uri.trim().to_owned(), name: None, scopes })
}

/// Registers the configuration's resources that are not registered yet; returns the records
/// of those it registered. One registered already is left as it is.
pub async fn register_configured(
    storage: &dyn Storage,
    entries: impl Iterator<Item = &str>,
    now: Millis,
) -> Result<Vec<Entry>, AccountError> {
    let mut created = Vec::new();
    for entry in entries {
        let new = parse_configured(entry).map_err(AccountError::Invalid)?;
        if storage.resource(&new.uri).await?.is_some() {
            continue;
        }
        match create_resource(storage, new, now).await {
            Ok((_, record)) => created.push(record.actor("config")),
            // Another instance registered it first.
            Err(AccountError::Storage(crate::storage::StorageError::Conflict(_))) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// The scopes of the registered resources, each once: what clients may ask for.
pub async fn scopes_supported(storage: &dyn Storage) -> crate::storage::StorageResult<Vec<String>> {
    let mut scopes: Vec<String> = Vec::new();
    for resource in storage.resources().await? {
        for scope in resource.scopes.split_whitespace() {
            if !scopes.iter().any(|s| s == scope) {
                scopes.push(scope.to_owned());
            }
        }
    }
    Ok(scopes)
}

/// Registers a resource; returns it and its `resource.created` record.
pub async fn create_resource(
    storage: &dyn Storage,
    new: NewResource,
    now: Millis,
) -> Result<(Resource, Entry), AccountError> {
    check_resource_uri(&new.uri).map_err(AccountError::Invalid)?;
    let token = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
    };
    if new.scopes.is_empty() || !new.scopes.iter().all(|s| token(s)) {
        return Err(AccountError::Invalid(
            "a resource has one or more scopes, each printable ASCII without spaces".into(),
        ));
    }
    let name = new.name.map(|n| n.trim().to_owned()).filter(|n| !n.is_empty());
    if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(AccountError::Invalid("the name has at most 200 characters".into()));
    }
    let resource = Resource {
        name: name.unwrap_or_else(|| new.uri.clone()),
        uri: new.uri,
        scopes: new.scopes.join(" "),
        created_at: now,
    };
    storage.create_resource(&resource).await?;
    let created = entry(events::RESOURCE_CREATED)
        .detail("uri", resource.uri.as_str())
        .detail("scopes", resource.scopes.as_str());
    Ok((resource, created))
}

/// Removes a resource; its `resource.deleted` record, or `None` when there was none.
pub async fn delete_resource(
    storage: &dyn Storage,
    uri: &str,
) -> Result<Option<Entry>, AccountError> {
    let deleted = storage.delete_resource(uri).await?;
    Ok(deleted.then(|| entry(events::RESOURCE_DELETED).detail("uri", uri)))
}

/// A resource as the API and the CLI show it.
pub fn resource_json(r: &Resource) -> serde_json::Value {
    serde_json::json!({
        "uri": r.uri,
        "name": r.name,
        "scopes": r.scopes.split_whitespace().collect::<Vec<_>>(),
        "created_at": crate::clock::rfc3339(r.created_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_is_an_absolute_uri_without_fragment() {
        for ok in
            ["https://mcp.example.com/mcp", "http://127.0.0.1:8000/mcp", "http://localhost/mcp"]
        {
            assert_eq!(check_resource_uri(ok), Ok(()), "{ok}");
        }
        for bad in
            ["https://mcp.example.com/mcp#tools", "/mcp", "http://mcp.example.com/mcp", "urn:x"]
        {
            assert!(check_resource_uri(bad).is_err(), "{bad}");
        }
    }
}
