//! Command-line entry point: parses arguments and calls into the library.

use std::io::Read;
use std::path::PathBuf;

use atoms_auth::commands::{self, AuditExport, MigrateAction, NewClient};
use atoms_auth::config::Config;
use atoms_auth::domain::accounts::ClientChange;
use atoms_auth::domain::resources::NewResource;
use clap::{Parser, Subcommand};

/// mimalloc returns freed memory to the system promptly, so the 19 MiB blocks of password
/// hashing do not stay resident after a login burst (glibc keeps them in per-thread arenas).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "atoms-auth", version, about = "OAuth 2.0 auth and session server")]
struct Cli {
    /// TOML configuration file (ATOMS_AUTH_* variables override it).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply, revert or list schema migrations.
    Migrate {
        #[command(subcommand)]
        action: Migrate,
    },
    /// Manage users.
    Users {
        #[command(subcommand)]
        action: Users,
    },
    /// Manage OAuth clients.
    Clients {
        #[command(subcommand)]
        action: Clients,
    },
    /// Manage the resources (MCP servers) tokens may be issued for.
    Resources {
        #[command(subcommand)]
        action: Resources,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        action: Keys,
    },
    /// Read the audit log.
    Audit {
        #[command(subcommand)]
        action: Audit,
    },
    /// Exit 0 when the server is ready (`/health/ready`), 1 otherwise: the container's
    /// health check, with no HTTP client needed in the image.
    Health {
        /// The server to ask (default: the configured listen address).
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Subcommand)]
enum Audit {
    /// Write audit records as JSON lines, oldest first.
    Export {
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        since: Option<String>,
        /// RFC 3339 time, exclusive.
        #[arg(long)]
        until: Option<String>,
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

fn parse_time(value: Option<String>) -> anyhow::Result<Option<i64>> {
    value
        .map(|v| {
            let t = time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc3339)
                .map_err(|_| anyhow::anyhow!("{v} is not an RFC 3339 time"))?;
            Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
        })
        .transpose()
}

#[derive(Subcommand)]
enum Migrate {
    /// Apply every pending migration.
    Up,
    /// Revert the newest migrations.
    Down {
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// List migrations, whether applied, and checksum mismatches.
    Status,
}

#[derive(Subcommand)]
enum Users {
    /// Create a user. The password is read from standard input unless --password is given.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, env = "ATOMS_AUTH_NEW_USER_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// owner, admin, member or viewer (see the README's access matrix).
        #[arg(long, default_value = "member")]
        role: atoms_auth::domain::roles::Role,
    },
    /// Erase a user: end their sessions, delete the account, devices and consents, and keep
    /// their audit records under a pseudonym without personal data.
    Delete {
        #[arg(long, required_unless_present = "username", conflicts_with = "username")]
        id: Option<String>,
        #[arg(long)]
        username: Option<String>,
    },
}

#[derive(Subcommand)]
enum Resources {
    /// Register a resource (RFC 8707): an MCP server tokens may be issued for.
    Create {
        /// Its URI: absolute, no fragment; https, or http on localhost.
        #[arg(long)]
        uri: String,
        /// A name people see (the URI by default).
        #[arg(long)]
        name: Option<String>,
        /// The scopes it understands, space or comma separated.
        #[arg(long)]
        scopes: String,
    },
    /// List the registered resources.
    List,
    /// Remove a resource.
    Delete {
        #[arg(long)]
        uri: String,
    },
}

#[derive(Subcommand)]
enum Clients {
    /// Register a client and print its secret (shown only this once).
    Create {
        #[arg(long)]
        name: String,
        /// Choose the client id (a random one otherwise).
        #[arg(long)]
        client_id: Option<String>,
        /// A public client has no secret.
        #[arg(long)]
        public: bool,
        /// Allowed grant types, space or comma separated.
        #[arg(long, default_value = "password refresh_token")]
        grant_types: String,
        /// Allowed scopes, space or comma separated.
        #[arg(long, default_value = "openid profile")]
        scopes: String,
        /// May introspect the tokens of every client.
        #[arg(long)]
        resource_server: bool,
        /// Where the authorization endpoint may send the browser back, space or comma
        /// separated (required with the authorization_code grant).
        #[arg(long, default_value = "")]
        redirect_uris: String,
        /// A first-party client: its users are not asked for consent.
        #[arg(long)]
        skip_consent: bool,
    },
    /// Disable a client: it authenticates no more and its tokens act for nobody.
    Disable { client_id: String },
    /// Enable a disabled client.
    Enable { client_id: String },
    /// Give a confidential client a new secret (printed once); the old one stops working.
    RotateSecret { client_id: String },
    /// Delete a client.
    Delete { client_id: String },
}

#[derive(Subcommand)]
enum Keys {
    /// Generate a new signing key and retire the current one.
    Rotate,
}

fn list(value: &str) -> Vec<String> {
    value.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATOMS_AUTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if std::env::var("ATOMS_AUTH_LOG_FORMAT").is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => commands::serve(config).await?,
        Command::Migrate { action } => {
            let action = match action {
                Migrate::Up => MigrateAction::Up,
                Migrate::Down { steps } => MigrateAction::Down { steps },
                Migrate::Status => MigrateAction::Status,
            };
            for m in commands::migrate(&config, action).await? {
                let state = if m.applied { "applied" } else { "pending" };
                let mismatch = if m.checksum_ok { "" } else { "  CHECKSUM MISMATCH" };
                println!("{:>4}  {:<8} {}{}", m.version, state, m.description, mismatch);
            }
        }
        Command::Users { action: Users::Create { username, password, role } } => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut p = String::new();
                    std::io::stdin().read_to_string(&mut p)?;
                    p.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            let id = commands::create_user(&config, &username, password, role).await?;
            println!("{}", serde_json::json!({ "id": id, "username": username }));
        }
        Command::Users { action: Users::Delete { id, username } } => {
            let user = match (id, username) {
                (Some(id), _) => commands::UserRef::Id(id),
                (None, Some(name)) => commands::UserRef::Username(name),
                (None, None) => anyhow::bail!("give --id or --username"),
            };
            match commands::erase_user(config, user).await? {
                Some(erased) => println!("{}", serde_json::to_string(&erased)?),
                None => anyhow::bail!("no such user"),
            }
        }
        Command::Clients {
            action:
                Clients::Create {
                    name,
                    client_id,
                    public,
                    grant_types,
                    scopes,
                    resource_server,
                    redirect_uris,
                    skip_consent,
                },
        } => {
            let new = NewClient {
                client_id,
                name,
                public,
                grant_types: list(&grant_types),
                scopes: list(&scopes),
                resource_server,
                created_by: None,
                redirect_uris: list(&redirect_uris),
                skip_consent,
            };
            println!("{}", commands::create_client(&config, new).await?);
        }
        Command::Clients { action: Clients::Delete { client_id } } => {
            commands::delete_client(&config, &client_id).await?;
            println!("{}", serde_json::json!({ "client_id": client_id, "deleted": true }));
        }
        Command::Clients { action: Clients::Disable { client_id } } => {
            let change = ClientChange { disabled: Some(true), ..ClientChange::default() };
            println!("{}", commands::update_client(&config, &client_id, change).await?);
        }
        Command::Clients { action: Clients::Enable { client_id } } => {
            let change = ClientChange { disabled: Some(false), ..ClientChange::default() };
            println!("{}", commands::update_client(&config, &client_id, change).await?);
        }
        Command::Clients { action: Clients::RotateSecret { client_id } } => {
            let change = ClientChange { rotate_secret: true, ..ClientChange::default() };
            println!("{}", commands::update_client(&config, &client_id, change).await?);
        }
        Command::Health { url } => {
            let scheme = if config.server.tls_cert.is_some() { "https" } else { "http" };
            let base = url.unwrap_or_else(|| format!("{scheme}://{}", config.server.listen));
            let ready = commands::ready(&base).await;
            println!("{}", if ready { "ready" } else { "not ready" });
            if !ready {
                std::process::exit(1);
            }
        }
        Command::Audit { action: Audit::Export { since, until, event, user_id, output } } => {
            let export = AuditExport {
                since: parse_time(since)?,
                until: parse_time(until)?,
                event,
                user_id,
            };
            let mut out: Box<dyn std::io::Write + Send> = match output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let written = commands::export_audit(&config, export, out.as_mut()).await?;
            tracing::info!(records = written, "audit exported");
        }
        Command::Resources { action: Resources::Create { uri, name, scopes } } => {
            let new = NewResource { uri, name, scopes: list(&scopes) };
            println!("{}", commands::create_resource(&config, new).await?);
        }
        Command::Resources { action: Resources::List } => {
            println!("{}", commands::list_resources(&config).await?);
        }
        Command::Resources { action: Resources::Delete { uri } } => {
            commands::delete_resource(&config, &uri).await?;
            println!("{}", serde_json::json!({ "uri": uri, "deleted": true }));
        }
        Command::Keys { action: Keys::Rotate } => {
            println!(
                "{}",
                serde_json::json!({ "active_kid": commands::rotate_keys(&config).await? })
            );
        }
    }
    Ok(())
}
