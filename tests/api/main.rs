//! The integration suite: one binary, every test against its own server and database.

mod cli;
mod contract;
mod helpers;
mod oauth;
mod oauth_errors;
