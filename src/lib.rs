//! atoms-auth: an OAuth 2.0 auth and session server.
//!
//! [`App::build`] wires configuration, storage and keys; [`router`] is the HTTP surface;
//! [`run`] serves it on whatever listener it is given, so tests bind port 0.

pub mod audit_event;
pub mod clock;
pub mod commands;
pub mod config;
pub mod domain;
pub mod encoding;
pub mod error;
pub(crate) mod http;
pub mod ids;
pub mod input;
pub mod metrics;
pub mod net;
pub mod request;
pub mod storage;

use std::future::Future;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::clock::{Clock, Millis, SystemClock};
use crate::config::Config;
use crate::domain::audit::Audit;
use crate::domain::client_documents::{ClientDocuments, DocumentPolicy};
use crate::domain::keys::KeyManager;
use crate::domain::ratelimit::{RateLimits, Rule};
use crate::domain::sessions::{PurgeSettings, SessionService};
use crate::domain::sign_in::{SignIn, SignInPolicy};
use crate::domain::tokens::{TokenPolicy, TokenService};
use crate::domain::webhooks::Webhooks;
use crate::metrics::Metrics;
use crate::storage::{ConnectOptions, Storage};

pub use http::router;

/// Everything a request handler needs, cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<App>);

impl Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.0
    }
}

/// The wired application.
pub struct App {
    pub config: Config,
    pub storage: Arc<dyn Storage>,
    pub keys: Arc<KeyManager>,
    pub tokens: Arc<TokenService>,
    /// Browser sign-in: the authorization endpoint's pages and the account page.
    pub sign_in: SignIn,
    /// The certificate `listen` serves HTTPS with, when one is configured.
    pub tls: Option<Arc<http::tls::TlsFiles>>,
    pub sessions: SessionService,
    pub accounts: crate::domain::accounts::Accounts,
    pub audit: Arc<Audit>,
    pub webhooks: Arc<Webhooks>,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    pub limits: RateLimits,
    /// State shared by instances (a Redis), when one is configured.
    pub shared: Option<Arc<dyn storage::shared::SharedState>>,
    /// When the server started.
    pub started: std::time::Instant,
    /// The last `/health` answer and when it was made: checks run at most once a second,
    /// however often the endpoint is polled.
    pub health_cache: tokio::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
    /// The last `/health/ready` answer and when it was made, likewise.
    pub ready_cache: tokio::sync::Mutex<Option<(std::time::Instant, serde_json::Value)>>,
}

/// Opens the configured storage.
pub async fn open_storage(config: &Config) -> anyhow::Result<Arc<dyn Storage>> {
    let options = ConnectOptions {
        pool_size: config.storage.pool_size,
        redis_key_prefix: config.storage.redis_key_prefix.clone(),
        timeout: config.storage.timeout,
    };
    Ok(storage::connect(config.storage.url(), &options).await?)
}

/// The key manager of a configuration.
pub fn key_manager(
    config: &Config,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<KeyManager> {
    KeyManager::new(
        storage,
        clock,
        config.keys.algorithm,
        config.keys.master_key.as_ref().map(|k| k.expose_secret()),
        crate::domain::keys::publish_after_retire_ms(
            millis(config.tokens.access_ttl),
            millis(config.keys.reload_interval),
        ),
        millis(config.keys.rotation_interval),
    )
}

/// A duration in the milliseconds the domain counts time in.
fn millis(duration: Duration) -> Millis {
    Millis::try_from(duration.as_millis()).unwrap_or(Millis::MAX)
}

impl App {
    /// Connects storage, migrates when configured to, and loads (or creates) the signing key.
    pub async fn build(config: Config) -> anyhow::Result<AppState> {
        Self::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`App::build`] with an injected clock.
    pub async fn build_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<AppState> {
        let config = config.sanitized();
        let tls = match (&config.server.tls_cert, &config.server.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                http::tls::TlsFiles::load(cert.clone(), key.clone()).map_err(anyhow::Error::msg)?,
            )),
            (None, None) => None,
            _ => anyhow::bail!("ATOMS_AUTH_TLS_CERT and ATOMS_AUTH_TLS_KEY go together"),
        };
        let storage = open_storage(&config).await?;
        let metrics = Arc::new(Metrics::new(storage.backend())?);
        let storage = storage::Instrumented::wrap(storage, metrics.clone());
        if config.storage.auto_migrate {
            storage.migrate_up().await?;
        }
        let configured = crate::domain::resources::register_configured(
            storage.as_ref(),
            config.tokens.resources.iter(),
            clock.now_ms(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let keys = Arc::new(key_manager(&config, storage.clone(), clock.clone())?);
        keys.ensure_active().await?;
        let policy = TokenPolicy {
            issuer: config.issuer(),
            audience: config.audience(),
            access_ttl_secs: i64::try_from(config.tokens.access_ttl.as_secs()).unwrap_or(900),
            refresh_grace_ms: millis(config.tokens.refresh_grace),
            session_idle_ms: millis(config.sessions.idle_timeout),
            session_lifetime_ms: millis(config.sessions.max_lifetime),
            max_sessions: config.sessions.max_per_user,
            reuse_window_ms: millis(config.tokens.refresh_reuse_window),
            client_cache_ttl_ms: millis(config.tokens.client_cache_ttl),
            lockout_threshold: config.lockout.threshold,
            lockout_window_ms: millis(config.lockout.window),
            lockout_ms: millis(config.lockout.duration),
        };
        let purge = PurgeSettings {
            ended_retention_ms: millis(config.sessions.ended_retention),
            reuse_window_ms: policy.reuse_window_ms,
            audit_retention_ms: millis(config.audit.retention),
            unused_client_ms: millis(config.registration.unused_client_ttl),
            batch: config.purge.batch,
        };
        let webhooks = Arc::new(Webhooks::new(
            storage.clone(),
            config.webhooks.clone(),
            metrics.clone(),
            config.server.outbound_ca_file.as_deref(),
            keys.sealer(),
        )?);
        let audit = Arc::new(Audit::start(
            storage.clone(),
            clock.clone(),
            webhooks.clone(),
            metrics.clone(),
            &config.audit.exclude.0,
            config.audit.durable,
        ));
        keys.set_audit(audit.clone());
        for record in configured {
            audit.record(record).await?;
        }
        let mac_key = keys.server_secret(crate::domain::refresh_tokens::MAC_KEY).await?;
        let mut tokens = TokenService::new(
            storage.clone(),
            keys.clone(),
            clock.clone(),
            policy,
            audit.clone(),
            metrics.clone(),
            crate::domain::refresh_tokens::RefreshTokens::new(mac_key)?,
        );
        let registration = &config.registration;
        if registration.metadata_documents {
            let policy = DocumentPolicy {
                cache_min: registration.metadata_cache_min,
                cache_max: registration.metadata_cache_max,
                allow_private: registration.metadata_allow_private,
                ca_file: config.server.outbound_ca_file.clone(),
            };
            tokens = tokens.with_documents(ClientDocuments::new(
                policy,
                storage.clone(),
                metrics.clone(),
            )?);
        }
        let tokens = Arc::new(tokens);
        let sign_in = SignIn::new(
            storage.clone(),
            clock.clone(),
            tokens.clone(),
            audit.clone(),
            SignInPolicy {
                idle_ms: millis(config.sessions.browser_idle_timeout),
                lifetime_ms: millis(config.sessions.browser_max_lifetime),
            },
        );
        let sessions = SessionService::new(storage.clone(), clock.clone(), purge, audit.clone());
        let accounts =
            crate::domain::accounts::Accounts::new(storage.clone(), clock.clone(), audit.clone());
        let shared = match config.storage.shared_redis_url() {
            Some(url) => {
                Some(storage::shared::connect_shared(url, &config.storage.redis_key_prefix).await?)
            }
            None => None,
        };
        let rates = &config.rate_limits;
        let client_rule = Rule::new(rates.client_per_sec, rates.client_burst);
        let ip_rule = Rule::new(rates.ip_per_sec, rates.ip_burst);
        let limits = match &shared {
            Some(shared) => RateLimits::shared(client_rule, ip_rule, shared.clone()),
            None => RateLimits::local(client_rule, ip_rule),
        };
        let app = App {
            config,
            storage,
            keys,
            tokens,
            sign_in,
            tls,
            sessions,
            accounts,
            audit,
            webhooks,
            clock,
            metrics,
            limits,
            shared,
            started: std::time::Instant::now(),
            health_cache: tokio::sync::Mutex::new(None),
            ready_cache: tokio::sync::Mutex::new(None),
        };
        Ok(AppState(Arc::new(app)))
    }
}

/// Serves the application on `listener` until `shutdown` completes, then drains in-flight
/// requests. The background jobs (key maintenance, purge, webhook delivery) stop with it, and
/// the audit records still queued are stored before it returns.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let jobs = start_jobs(&state);
    let limits = http::server::ConnectionLimits {
        max_connections: state.config.server.max_connections,
        header_read_timeout: state.config.server.header_read_timeout,
        idle_timeout: state.config.server.idle_timeout,
    };
    // One shutdown signal for the main listener and the metrics one.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let metrics = match state.config.server.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await?;
            let mut stopped = stopped.clone();
            let router = http::metrics_router(state.clone());
            // Plain HTTP: the monitoring network's port.
            Some(tokio::spawn(http::server::serve(listener, router, limits, None, async move {
                let _ = stopped.wait_for(|s| *s).await;
            })))
        }
        None => None,
    };
    let mut stopped_main = stopped;
    let tls = state.tls.clone();
    let served = http::server::serve(listener, router(state.clone()), limits, tls, async move {
        tokio::select! {
            () = shutdown => {}
            _ = stopped_main.wait_for(|s| *s) => {}
        }
    })
    .await;
    let _ = stop.send(true);
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    jobs.stop().await;
    // Every request has answered and every job has stopped: store the audit records still
    // queued.
    state.audit.close().await;
    served
}

/// The server's background jobs, one pattern for all: each runs in one task set and stops
/// when one token is cancelled, finishing the pass it is in (a purge batch or a delivery is
/// not dropped midway); shutdown waits for them, then flushes the audit log.
struct Jobs {
    tasks: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
}

/// How long shutdown waits for a job's pass to finish (one stuck on an unreachable store).
const JOBS_GRACE: Duration = Duration::from_secs(10);

impl Jobs {
    fn new() -> Self {
        Self {
            tasks: tokio_util::task::TaskTracker::new(),
            stop: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Runs `pass` every `period` (the first one a period after the start when `delayed`).
    fn every<F, Fut>(&self, period: Duration, delayed: bool, mut pass: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            if delayed {
                tick.tick().await;
            }
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => pass().await,
                }
            }
        });
    }

    /// Runs a job that watches the stop token itself.
    fn run<Fut>(&self, job: impl FnOnce(tokio_util::sync::CancellationToken) -> Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(job(self.stop.clone()));
    }

    async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(JOBS_GRACE, self.tasks.wait()).await.is_err() {
            tracing::warn!("background jobs did not finish within the grace period");
        }
    }
}

/// Starts the key maintenance (picks up keys rotated elsewhere, rotates on schedule), the
/// purge (ended sessions, forgotten refresh tokens, stale revocations, audit records and
/// deliveries past retention), the gauges that need storage (sampled off the scrape path)
/// and the webhook deliverer.
fn start_jobs(state: &AppState) -> Jobs {
    let jobs = Jobs::new();
    let s = state.clone();
    jobs.every(state.config.keys.reload_interval, true, move || {
        let s = s.clone();
        async move {
            if let Err(e) = s.keys.rotate_if_due().await {
                tracing::warn!(error = %e, "signing key maintenance failed");
            }
        }
    });
    let s = state.clone();
    jobs.every(state.config.purge.interval, false, move || {
        let s = s.clone();
        async move {
            s.limits.housekeeping();
            match s.sessions.purge().await {
                Ok(report) if report.total() > 0 => tracing::info!(?report, "purged"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "purge failed"),
            }
        }
    });
    let s = state.clone();
    jobs.every(Duration::from_secs(15), false, move || {
        let s = s.clone();
        async move {
            match s.storage.count_active_sessions(s.clock.now_ms()).await {
                Ok(n) => s.metrics.active_sessions.set(i64::try_from(n).unwrap_or(i64::MAX)),
                Err(e) => tracing::warn!(error = %e, "counting active sessions failed"),
            }
            http::refresh_health(&s).await;
        }
    });
    // In-flight deliveries finish at shutdown; queued ones wait in storage for the next start.
    let webhooks = state.webhooks.clone();
    jobs.run(move |stop| webhooks.deliver_until(stop));
    jobs
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
