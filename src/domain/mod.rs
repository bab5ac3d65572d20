//! The rules of the server, independent of HTTP: tokens, keys, secrets, sessions and devices.

pub mod accounts;
pub mod audit;
pub mod devices;
pub mod keys;
pub mod ratelimit;
pub mod roles;
pub mod secrets;
pub mod sessions;
pub mod tokens;
pub mod webhooks;
