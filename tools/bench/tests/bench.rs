//! The benchmark's own tests: its documented command cut short on every backend, an
//! interrupted run that still removes its database, and the measuring scripts kept in step
//! with the server's audit events.

use std::process::{Command, Stdio};

fn postgres_base() -> String {
    std::env::var("ATOMS_AUTH_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn redis_base() -> String {
    std::env::var("ATOMS_AUTH_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The benchmark's documented command, cut short: a row for each scenario without errors,
/// the storage floors with their CPU time, and the run's database removed.
async fn bench_reports_every_scenario_and_the_storage_floor(backend: &str) {
    let report = tempfile::NamedTempFile::new().expect("temp file");
    let scenarios =
        "refresh,client_credentials,introspect,sessions,authorization_code,password,health,metrics";
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--backend", backend, "-c", "4", "-d", "1", "--warmup", "0"])
        .args(["--rate", "50"])
        .args(["--scenarios", scenarios, "--json"])
        .arg(report.path())
        .env("ATOMS_AUTH_BENCH_POSTGRES_URL", postgres_base())
        .env("ATOMS_AUTH_BENCH_REDIS_URL", redis_base())
        .output()
        .await
        .expect("bench runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("removing the run's database"), "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path()).expect("report")).expect("json");
    let runs = report["runs"].as_array().expect("runs");
    for scenario in scenarios.split(',') {
        let row = runs.iter().find(|r| r["scenario"] == scenario && r["mode"] == "closed");
        let row = row.unwrap_or_else(|| panic!("no {scenario} row: {report}"));
        assert!(row["requests"].as_u64() > Some(0), "{row}");
        assert_eq!(row["errors"], 0, "{row}");
        assert!(row["cpu_us_per_request"]["machine"].as_f64() > Some(0.0), "{row}");
    }
    let open = runs.iter().find(|r| r["mode"] == "open").expect("open loop row");
    assert_eq!((open["scenario"].as_str(), open["errors"].as_u64()), (Some("refresh"), Some(0)));
    let floor = &report["storage_floor"];
    for field in ["rotate_refresh_per_sec", "access_token_state_per_sec"] {
        assert!(floor[field].as_f64() > Some(0.0), "{field}: {floor}");
    }
    for field in ["cpu_us_per_rotation", "cpu_us_per_lookup"] {
        assert!(floor[field]["machine"].as_f64() > Some(0.0), "{field}: {floor}");
    }
    assert!(report["rss_kib"]["peak"].as_u64() > Some(0), "{report}");
}

/// An interrupted benchmark still removes the database it made.
async fn interrupted_bench_removes_its_database(backend: &str) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut bench = tokio::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .args(["--backend", backend, "-c", "4", "-d", "30", "--scenarios", "refresh"])
        .env("ATOMS_AUTH_BENCH_POSTGRES_URL", postgres_base())
        .env("ATOMS_AUTH_BENCH_REDIS_URL", redis_base())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("bench runs");
    let mut lines = BufReader::new(bench.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    while let Some(line) = lines.next_line().await.expect("stderr line") {
        let started = line.contains("closed loop");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("closed loop")), "{seen:?}");
    let pid = bench.id().expect("pid").to_string();
    let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill");
    assert!(sent.success());
    while let Some(line) = lines.next_line().await.expect("stderr line") {
        seen.push(line);
    }
    let status = bench.wait().await.expect("exit");
    assert!(!status.success(), "{seen:?}");
    assert!(seen.iter().any(|l| l == "removing the run's database"), "{seen:?}");
    assert!(seen.iter().any(|l| l.contains("interrupted")), "{seen:?}");
}

macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() { super::$name("sqlite").await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() { super::$name("postgres").await }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() { super::$name("redis").await }
        })*
    };
}

per_backend!(
    bench_reports_every_scenario_and_the_storage_floor,
    interrupted_bench_removes_its_database
);

/// The measuring scripts' unaudited runs exclude every audit event type: their list is the
/// server's.
#[test]
fn the_measuring_scripts_list_every_audit_event() {
    let lib =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/measure-lib.sh"))
            .expect("tools/bench/scripts/measure-lib.sh");
    let mut listed: Vec<&str> = lib
        .lines()
        .filter_map(|line| line.strip_prefix("all_events="))
        .flat_map(|line| line.split(','))
        .filter(|event| *event != "$all_events")
        .collect();
    let mut all = atoms_auth::audit_event::events::ALL.to_vec();
    listed.sort_unstable();
    all.sort_unstable();
    assert_eq!(listed, all);
}
