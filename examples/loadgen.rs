//! A closed-loop load generator for a running atoms-auth: C connections send requests of one
//! scenario for D seconds after a warm-up, then it prints requests per second and latency
//! percentiles.
//!
//! ```sh
//! cargo run --release --example loadgen -- --url http://127.0.0.1:8080 \
//!   --client-id ID --client-secret SECRET --scenario client_credentials -c 32 -d 10
//! ```
//! Scenarios: `client_credentials`, `introspect` (of a client_credentials token), `health`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "")]
    client_id: String,
    #[arg(long, default_value = "")]
    client_secret: String,
    #[arg(long, default_value = "client_credentials")]
    scenario: String,
    /// Concurrent connections.
    #[arg(short, long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds.
    #[arg(short, long, default_value_t = 10)]
    duration: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

fn request(http: &reqwest::Client, args: &Args, token: &str) -> reqwest::RequestBuilder {
    match args.scenario.as_str() {
        "introspect" => http
            .post(format!("{}/auth/introspect", args.url))
            .basic_auth(&args.client_id, Some(&args.client_secret))
            .form(&[("token", token)]),
        "health" => http.get(format!("{}/health/live", args.url)),
        _ => http
            .post(format!("{}/auth/token", args.url))
            .basic_auth(&args.client_id, Some(&args.client_secret))
            .form(&[("grant_type", "client_credentials")]),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder().pool_max_idle_per_host(args.connections).build()?;
    let token: String = if args.scenario == "introspect" {
        let answer: serde_json::Value =
            request(&http, &Args { scenario: "client_credentials".into(), ..(*args).clone() }, "")
                .send()
                .await?
                .json()
                .await?;
        answer["access_token"].as_str().unwrap_or_default().to_owned()
    } else {
        String::new()
    };
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.duration);
    let workers: Vec<_> = (0..args.connections)
        .map(|_| {
            let (http, args, token) = (http.clone(), args.clone(), token.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let ok = match request(&http, &args, &token).send().await {
                        Ok(r) => {
                            let ok = r.status().is_success();
                            let _ = r.bytes().await;
                            ok
                        }
                        Err(_) => false,
                    };
                    if sent >= measure_from {
                        latencies.push(sent.elapsed().as_micros() as u64);
                        errors += u64::from(!ok);
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (l, e) = worker.await?;
        latencies.extend(l);
        errors += e;
    }
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let rps = latencies.len() as f64 / args.duration as f64;
    println!(
        "{}",
        serde_json::json!({
            "scenario": args.scenario, "connections": args.connections, "seconds": args.duration,
            "requests": latencies.len(), "errors": errors, "rps": rps.round(),
            "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        })
    );
    Ok(())
}
