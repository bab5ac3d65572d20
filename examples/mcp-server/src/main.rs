//! Runs the example MCP server. Environment:
//! - `MCP_RESOURCE`: its MCP endpoint URL, the `aud` its tokens carry
//!   (default `http://127.0.0.1:8000/mcp`);
//! - `MCP_ISSUER`: atoms-auth's issuer (default `http://127.0.0.1:8080`);
//! - `MCP_TOOL_SCOPE`: the scope its tool needs (default `notes:read`);
//! - `MCP_INTROSPECTION_CLIENT_ID` and `MCP_INTROSPECTION_CLIENT_SECRET`: introspect each
//!   token with this resource-server client (optional).

use std::time::Duration;

use atoms_mcp_example::{Protection, router};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let resource = setting("MCP_RESOURCE", "http://127.0.0.1:8000/mcp");
    let introspection = match (
        std::env::var("MCP_INTROSPECTION_CLIENT_ID"),
        std::env::var("MCP_INTROSPECTION_CLIENT_SECRET"),
    ) {
        (Ok(id), Ok(secret)) => Some((id, secret)),
        _ => None,
    };
    let protection = Protection {
        issuer: setting("MCP_ISSUER", "http://127.0.0.1:8080"),
        tool_scope: setting("MCP_TOOL_SCOPE", "notes:read"),
        leeway: Duration::from_secs(30),
        introspection,
        resource: resource.clone(),
    };
    let url = url::Url::parse(&resource)?;
    let address = format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port_or_known_default().unwrap_or(8000)
    );
    let listener = tokio::net::TcpListener::bind(&address).await?;
    tracing::info!(%resource, "MCP server listening");
    axum::serve(listener, router(protection)?).await?;
    Ok(())
}
