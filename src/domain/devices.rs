//! Devices: how a login is recognised as coming from a device seen before, and how an
//! unnamed device gets a readable name. User agents are parsed with woothee's embedded
//! rules; versions are left out of the fingerprint so a browser update is the same device.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::clock::Millis;
use crate::storage::Device;

/// What a request says about the device it comes from.
#[derive(Debug, Clone, Default)]
pub struct DeviceHints {
    /// A stable id the client app keeps for itself (`device_id` form field).
    pub device_id: Option<String>,
    pub name: Option<String>,
    pub platform: Option<String>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
}

/// The user agent's browser (or app) name, operating system and category.
struct Agent {
    name: String,
    os: Option<String>,
    category: String,
}

fn parse_agent(user_agent: &str) -> Option<Agent> {
    let parsed = woothee::parser::Parser::new().parse(user_agent)?;
    let known =
        |v: &str| (v != woothee::woothee::VALUE_UNKNOWN && !v.is_empty()).then(|| v.to_owned());
    Some(Agent {
        name: known(parsed.name)?,
        os: known(parsed.os),
        category: parsed.category.to_owned(),
    })
}

/// The user agent without versions or noise: what identifies a device when the client does
/// not name it.
fn normalised_agent(user_agent: Option<&str>) -> String {
    match user_agent.map(str::trim).filter(|ua| !ua.is_empty()) {
        None => String::new(),
        Some(ua) => match parse_agent(ua) {
            Some(a) => format!("{}|{}|{}", a.name, a.os.unwrap_or_default(), a.category),
            None => ua.to_ascii_lowercase(),
        },
    }
}

/// Hex SHA-256 of the user id with the client's device id, or else with the normalised user
/// agent and platform.
pub fn fingerprint(user_id: &str, hints: &DeviceHints) -> String {
    let mut hash = Sha256::new();
    hash.update(user_id.as_bytes());
    hash.update([0]);
    match hints.device_id.as_deref().filter(|id| !id.is_empty()) {
        Some(id) => {
            hash.update(b"id\0");
            hash.update(id.as_bytes());
        }
        None => {
            hash.update(b"agent\0");
            hash.update(normalised_agent(hints.user_agent.as_deref()).as_bytes());
            hash.update([0]);
            hash.update(
                hints.platform.as_deref().unwrap_or_default().to_ascii_lowercase().as_bytes(),
            );
        }
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The device as this login sees it, and whether its name was chosen by the client.
pub fn sighting(user_id: &str, hints: &DeviceHints, now: Millis) -> (Device, bool) {
    let agent = hints.user_agent.as_deref().and_then(parse_agent);
    let platform = hints.platform.clone().or_else(|| agent.as_ref().and_then(|a| a.os.clone()));
    let named = hints.name.as_deref().is_some_and(|n| !n.trim().is_empty());
    let name = match (&hints.name, &agent) {
        (Some(name), _) if named => name.trim().to_owned(),
        (_, Some(a)) => match &a.os {
            Some(os) => format!("{} on {os}", a.name),
            None => a.name.clone(),
        },
        _ => platform.clone().unwrap_or_else(|| "Unknown device".to_owned()),
    };
    let device = Device {
        id: super::id_text(Uuid::now_v7()),
        user_id: user_id.to_owned(),
        fingerprint: fingerprint(user_id, hints),
        name,
        platform,
        user_agent: hints.user_agent.clone(),
        last_ip: hints.ip.clone(),
        first_seen_at: now,
        last_seen_at: now,
        trusted: false,
    };
    (device, named)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHROME_MAC_120: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const CHROME_MAC_121: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/121.0.0.0 Safari/537.36";
    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0";

    fn ua(agent: &str) -> DeviceHints {
        DeviceHints { user_agent: Some(agent.into()), ..DeviceHints::default() }
    }

    #[test]
    fn a_browser_update_is_the_same_device() {
        assert_eq!(fingerprint("u", &ua(CHROME_MAC_120)), fingerprint("u", &ua(CHROME_MAC_121)));
        assert_ne!(fingerprint("u", &ua(CHROME_MAC_120)), fingerprint("u", &ua(FIREFOX_LINUX)));
    }

    #[test]
    fn fingerprints_belong_to_one_user() {
        assert_ne!(fingerprint("u1", &ua(CHROME_MAC_120)), fingerprint("u2", &ua(CHROME_MAC_120)));
    }

    #[test]
    fn a_client_device_id_wins_over_the_user_agent() {
        let a = DeviceHints { device_id: Some("phone-1".into()), ..ua(CHROME_MAC_120) };
        let b = DeviceHints { device_id: Some("phone-1".into()), ..ua(FIREFOX_LINUX) };
        let c = DeviceHints { device_id: Some("phone-2".into()), ..ua(CHROME_MAC_120) };
        assert_eq!(fingerprint("u", &a), fingerprint("u", &b));
        assert_ne!(fingerprint("u", &a), fingerprint("u", &c));
    }

    #[test]
    fn unnamed_devices_are_named_from_the_user_agent() {
        let (device, named) = sighting("u", &ua(CHROME_MAC_120), 5);
        assert_eq!(device.name, "Chrome on Mac OSX");
        assert_eq!(device.platform.as_deref(), Some("Mac OSX"));
        assert!(!named && !device.trusted);
        let hints = DeviceHints {
            name: Some(" Work laptop ".into()),
            platform: Some("macOS".into()),
            ..ua(CHROME_MAC_120)
        };
        let (device, named) = sighting("u", &hints, 5);
        assert_eq!(
            (device.name.as_str(), device.platform.as_deref(), named),
            ("Work laptop", Some("macOS"), true)
        );
        let (device, _) = sighting("u", &DeviceHints::default(), 5);
        assert_eq!(device.name, "Unknown device");
    }
}
