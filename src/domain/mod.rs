//! The rules of the server, independent of HTTP: tokens, keys and secrets.

pub mod keys;
pub mod secrets;
pub mod tokens;
