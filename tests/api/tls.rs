//! HTTPS served by the binary itself (rustls), with the certificate read again when its
//! files change.

use std::time::Duration;

use crate::helpers::{Backend, spawn_app_with};

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn certificate() -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// A client that trusts only `cert_pem` and finds `localhost` at `addr`.
fn client(cert_pem: &str, addr: std::net::SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("pem")])
        .resolve("localhost", addr)
        .build()
        .expect("client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_speaks_https_and_serves_a_renewed_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let (first_cert, first_key) = certificate();
    std::fs::write(&cert_path, &first_cert).expect("cert");
    std::fs::write(&key_path, &first_key).expect("key");
    let (cert, key) = (cert_path.clone(), key_path.clone());
    let app = spawn_app_with(Backend::Sqlite, move |c| {
        c.server.tls_cert = Some(cert);
        c.server.tls_key = Some(key);
    })
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().expect("addr");
    let url = format!("https://localhost:{}/health/live", addr.port());

    let live = client(&first_cert, addr).get(&url).send().await.expect("https request");
    assert_eq!(live.status(), 200);
    assert_eq!(live.version(), reqwest::Version::HTTP_2, "h2 through ALPN");
    // Plain HTTP on the TLS port gets no answer.
    assert!(app.http.get(format!("{}/health/live", app.base)).send().await.is_err());
    // The container health check asks over HTTPS on this host, whatever name the certificate
    // carries.
    let probe = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
            .args(["health", "--url", &url])
            .env("ATOMS_AUTH_LOG", "warn")
            .status()
            .expect("health")
            .success()
    };
    assert!(probe(format!("https://127.0.0.1:{}", addr.port())), "ready over HTTPS");
    assert!(!probe(format!("http://127.0.0.1:{}", addr.port())), "plain HTTP is no answer");

    // A renewed certificate: new connections get it, without a restart.
    let (second_cert, second_key) = certificate();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&key_path, &second_key).expect("key");
    std::fs::write(&cert_path, &second_cert).expect("cert");
    let mut renewed = false;
    for _ in 0..30 {
        if client(&second_cert, addr).get(&url).send().await.is_ok() {
            renewed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(renewed, "the renewed certificate is served");
    assert!(client(&first_cert, addr).get(&url).send().await.is_err(), "the old one is not");
}

#[tokio::test]
async fn a_certificate_without_its_key_stops_the_start() {
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let mut config = db.config();
    config.server.tls_cert = Some("/nonexistent/cert.pem".into());
    let clock: std::sync::Arc<dyn atoms_auth::clock::Clock> =
        std::sync::Arc::new(atoms_auth::clock::SystemClock);
    let refused = atoms_auth::App::build_with_clock(config.clone(), clock.clone()).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("go together")));
    config.server.tls_key = Some("/nonexistent/key.pem".into());
    let refused = atoms_auth::App::build_with_clock(config, clock).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("/nonexistent/cert.pem")));
}

/// A certificate authority and a `localhost` certificate it signed: (CA PEM, certificate PEM,
/// key PEM).
fn signed_certificate() -> (String, String, String) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().expect("key"))
        .expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// The binary on a Redis that speaks only TLS with a password (`rediss://`, as a managed
/// Redis with encryption in transit does), trusting its CA through `SSL_CERT_FILE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stores_in_a_redis_that_speaks_only_tls() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca, cert, key) = signed_certificate();
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
    for (name, pem) in [("ca.pem", &ca), ("cert.pem", &cert), ("key.pem", &key)] {
        std::fs::write(path(name), pem).expect("write");
    }
    let port = crate::helpers::free_port();
    let tls_port = port.to_string();
    let redis_args = [
        "--port",
        "0",
        "--tls-port",
        &tls_port,
        "--tls-auth-clients",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--requirepass",
        "tls-test-password",
    ];
    let _redis = tokio::process::Command::new("redis-server")
        .args(redis_args)
        .args(["--tls-cert-file", &path("cert.pem"), "--tls-key-file", &path("key.pem")])
        .args(["--tls-ca-cert-file", &path("ca.pem"), "--dir", &path("")])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("redis-server");
    let listen = crate::helpers::free_port();
    let _server = tokio::process::Command::new(env!("CARGO_BIN_EXE_atoms-auth"))
        .env("ATOMS_AUTH_DATABASE_URL", format!("rediss://:tls-test-password@localhost:{port}"))
        .env("ATOMS_AUTH_LISTEN", format!("127.0.0.1:{listen}"))
        .env("ATOMS_AUTH_LOG", "warn")
        .env("SSL_CERT_FILE", path("ca.pem"))
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("atoms-auth");
    let http = reqwest::Client::new();
    let health = format!("http://127.0.0.1:{listen}/health");
    let mut answer = None;
    for _ in 0..100 {
        if let Ok(r) = http.get(&health).send().await {
            answer = Some(r.json::<serde_json::Value>().await.expect("json"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answer = answer.expect("the server starts on the TLS Redis");
    assert_eq!(answer["status"], "healthy", "{answer}");
    assert_eq!(answer["checks"]["storage"]["backend"], "redis", "{answer}");
}
