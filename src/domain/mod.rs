//! The rules of the server, independent of HTTP: tokens, keys, secrets, sessions and devices.

pub mod accounts;
pub mod audit;
pub mod client_documents;
pub mod devices;
pub mod keys;
pub mod ratelimit;
pub mod refresh_tokens;
pub mod registration;
pub mod resources;
pub mod roles;
pub mod secrets;
pub mod sessions;
pub mod sign_in;
pub mod tokens;
pub mod webhooks;

/// A UUID as the hyphenated lowercase text that ids are stored and shown as. Written
/// straight into a buffer: `to_string()` goes through the formatting machinery, which costs
/// several times the rest of making an id.
pub fn id_text(id: uuid::Uuid) -> String {
    id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned()
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    #[test]
    fn id_text_is_the_hyphenated_lowercase_text() {
        for id in [Uuid::nil(), Uuid::max(), Uuid::now_v7(), Uuid::new_v4()] {
            assert_eq!(super::id_text(id), id.to_string());
            assert_eq!(super::id_text(id).len(), 36);
        }
    }
}
