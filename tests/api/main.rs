//! The integration suite: one binary, every test against its own server and database.

mod account;
mod at_rest;
mod audit;
mod browser;
mod cli;
mod cluster;
mod contract;
mod contract_sessions;
mod contract_sign_in;
mod documents;
mod erasure;
mod fixtures;
mod helpers;
mod mcp;
mod oauth;
mod oauth_errors;
mod ops;
mod outage;
mod receiver;
mod registration;
mod resources;
mod roles;
mod security;
mod sign_in;
mod tls;
mod webhooks;
