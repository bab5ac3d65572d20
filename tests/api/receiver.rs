//! A real HTTP webhook receiver for tests: it records what it is sent and answers with the
//! status codes it is told to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: String,
    pub status: u16,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("json body")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    /// Answers to give, in order; 200 once they run out.
    script: Vec<u16>,
    received: Vec<Received>,
    /// How long each answer takes.
    delay: Duration,
    /// Requests being answered, by `webhook-id`.
    in_flight: std::collections::HashMap<String, usize>,
    /// Requests that arrived while another of the same `webhook-id` was being answered.
    overlaps: usize,
}

/// A running receiver.
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    server: tokio::task::JoinHandle<()>,
}

/// A request being answered; it stops counting as in flight when the answer is sent or the
/// sender gives up (the handler is dropped).
struct InFlight {
    inner: Arc<Mutex<Inner>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(in_flight) = inner.in_flight.get_mut(&self.id) {
            *in_flight -= 1;
        }
    }
}

/// Records the request as it arrives (so one the sender gives up on is recorded too), waits
/// the delay, and answers.
async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (status, delay) = {
        let mut inner = inner.lock().expect("lock");
        let in_flight = inner.in_flight.entry(id.clone()).or_default();
        *in_flight += 1;
        if *in_flight > 1 {
            inner.overlaps += 1;
        }
        let status = if inner.script.is_empty() { 200 } else { inner.script.remove(0) };
        let body = String::from_utf8_lossy(&body).into_owned();
        inner.received.push(Received { headers, body, status });
        (status, inner.delay)
    };
    let _in_flight = InFlight { inner, id };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr")).await
    }

    pub async fn start_on(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind receiver");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/hook", post(receive)).with_state(inner.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { url: format!("http://{addr}/hook"), inner, server }
    }

    /// A free local port nothing listens on (yet).
    pub async fn unused_addr() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    }

    /// Takes `delay` over each answer from now on.
    pub fn slow_down(&self, delay: Duration) {
        self.inner.lock().expect("lock").delay = delay;
    }

    /// How many requests arrived while another with the same `webhook-id` was being answered.
    pub fn overlaps(&self) -> usize {
        self.inner.lock().expect("lock").overlaps
    }

    /// Answers the next requests with these statuses.
    pub fn answer(&self, statuses: &[u16]) {
        self.inner.lock().expect("lock").script = statuses.to_vec();
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }

    /// The requests received once `done` holds for them (panics after 15 s).
    pub async fn wait_until(&self, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let received = self.received();
            if done(&received) {
                return received;
            }
            assert!(Instant::now() < deadline, "receiver waited in vain; got {received:#?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests answered 2xx.
    pub fn delivered(received: &[Received]) -> Vec<&Received> {
        received.iter().filter(|r| (200..300).contains(&r.status)).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}
