//! A real browser (headless Chromium over WebDriver) signs a person in: the authorize URL,
//! the login form, the consent, the redirect with a code, the code exchange, then the account
//! page, where the session is ended. It also takes screenshots of the pages at desktop and
//! phone width (into the test's scratch folder; `docs/screenshots` keeps one set).
//!
//! It needs `chromium` and `chromedriver` (Debian's `chromium` and `chromium-driver`, which
//! `scripts/services.sh` installs). Without them it is skipped, unless
//! `ATOMS_AUTH_REQUIRE_BROWSER` is set, as CI sets it: there it fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::{Backend, TestApp, TestClient, spawn_app_with};
use crate::sign_in::{
    PASSWORD, VERIFIER, authorize_query, browser_client, exchange_at, refresh_public,
};

/// A chromedriver on a free port, stopped on drop.
pub struct Driver {
    child: tokio::process::Child,
    url: String,
}

impl Driver {
    pub async fn start() -> Option<Self> {
        let found = |name: &str| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths).map(|p| p.join(name)).find(|p| p.is_file())
            })
        };
        let (Some(driver), Some(_)) = (found("chromedriver"), found("chromium")) else {
            assert!(
                std::env::var_os("ATOMS_AUTH_REQUIRE_BROWSER").is_none(),
                "chromium and chromedriver are required (apt-get install chromium chromium-driver)"
            );
            eprintln!("skipped: chromium or chromedriver is not installed");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = tokio::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{url}/status")).await.is_ok_and(|r| r.status().is_success()) {
                return Some(Self { child, url });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start");
    }

    pub async fn browser(&self) -> Browser {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--hide-scrollbars"
            ] }),
        );
        ClientBuilder::rustls()
            .expect("tls")
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a browser session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot folder");
    dir
}

async fn screenshot(browser: &Browser, name: &str) {
    let png = browser.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{name} is a real picture");
    std::fs::write(screenshots().join(format!("{name}.png")), png).expect("write screenshot");
}

pub async fn fill(browser: &Browser, selector: &str, text: &str) {
    let field = browser.find(Locator::Css(selector)).await.expect(selector);
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

pub async fn click(browser: &Browser, selector: &str) {
    browser.find(Locator::Css(selector)).await.expect(selector).click().await.expect("click");
}

/// Waits until the browser is at a URL starting with `prefix`; returns it.
pub async fn reached(browser: &Browser, prefix: &str) -> url::Url {
    for _ in 0..100 {
        let url = browser.current_url().await.expect("url");
        if url.as_str().starts_with(prefix) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never reached {prefix}: at {}", browser.current_url().await.expect("url"));
}

/// A page the client's redirect URI shows, so the browser lands on something real.
pub async fn callback_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://127.0.0.1:{}", listener.local_addr().expect("addr").port());
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(|| async { "signed in: the application has its code" }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn exchange(
    app: &TestApp,
    client: &TestClient,
    code: &str,
    redirect: &str,
) -> crate::helpers::Answer {
    exchange_at(app, client, code, redirect, VERIFIER).await
}

/// Signs `alice` in through `client`'s authorize URL at the current window size, taking the
/// login and consent screenshots as `{prefix}-…`; returns the code.
async fn sign_in(
    app: &TestApp,
    browser: &Browser,
    client: &TestClient,
    redirect: &str,
    prefix: &str,
) -> String {
    browser
        .goto(&format!("{}{}", app.base, authorize_query(&client.id, redirect, &[])))
        .await
        .expect("open");
    browser.find(Locator::Css("input#password")).await.expect("the login page");
    screenshot(browser, &format!("login-{prefix}")).await;
    fill(browser, "#username", "alice").await;
    fill(browser, "#password", PASSWORD).await;
    click(browser, "button[type=submit]").await;
    if browser.wait().for_element(Locator::Css("button[value=allow]")).await.is_err() {
        let at = browser.current_url().await.expect("url");
        panic!("no consent page at {at}: {}", browser.source().await.unwrap_or_default());
    }
    screenshot(browser, &format!("consent-{prefix}")).await;
    click(browser, "button[value=allow]").await;
    let landed = reached(browser, redirect).await;
    let params: std::collections::HashMap<String, String> =
        landed.query_pairs().into_owned().collect();
    assert_eq!(params.get("state").map(String::as_str), Some("st-123"));
    assert_eq!(params.get("iss").map(String::as_str), Some("http://localhost"));
    params.get("code").cloned().expect("a code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_with_a_real_browser_and_ends_the_session() {
    let Some(driver) = Driver::start().await else { return };
    // An issuer at http://localhost serves its pages over plain HTTP: its cookies cannot be
    // Secure, and the browser talks to it on 127.0.0.1.
    let app =
        spawn_app_with(Backend::Sqlite, |c| c.server.issuer = Some("http://localhost".into()))
            .await;
    app.create_user("alice", PASSWORD).await;
    let callback = callback_server().await;
    let redirect = format!("{callback}/callback");
    // Registered as a loopback URI without a port: any port matches.
    let client = browser_client(&app, "http://127.0.0.1/callback", false).await;
    let browser = driver.browser().await;

    let code = sign_in(&app, &browser, &client, &redirect, "desktop").await;
    let tokens = exchange(&app, &client, &code, &redirect).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);

    browser.goto(&format!("{}/account", app.base)).await.expect("account");
    let page = browser.source().await.expect("source");
    assert!(page.contains("alice") && page.contains(&client.id), "{page}");
    assert!(page.contains("this device"), "{page}");
    screenshot(&browser, "account-desktop").await;
    // End the session (the only one): its refresh token dies.
    click(&browser, "form[action^='/account/sessions/'] button").await;
    reached(&browser, &format!("{}/account?done=ended", app.base)).await;
    let refresh = refresh_public(&app, &client, &tokens.str("refresh_token")).await;
    assert_eq!(refresh.str("error"), "invalid_grant", "{}", refresh.body);

    // The same pages at phone width, for another application (so it asks for consent again).
    browser.set_window_size(390, 844).await.expect("phone width");
    browser.goto(&format!("{}/account", app.base)).await.expect("account");
    click(&browser, "form[action='/account/signout'] button").await;
    reached(&browser, &format!("{}/account", app.base)).await;
    let phone = browser_client(&app, "http://127.0.0.1/callback", false).await;
    let code = sign_in(&app, &browser, &phone, &redirect, "phone").await;
    assert_eq!(exchange(&app, &phone, &code, &redirect).await.status, 200);
    browser.goto(&format!("{}/account", app.base)).await.expect("account");
    browser
        .find(Locator::Css("form[action='/account/signout-everywhere']"))
        .await
        .expect("account page");
    screenshot(&browser, "account-phone").await;
    browser.close().await.expect("close");
}
