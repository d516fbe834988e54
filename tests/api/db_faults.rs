//! Database faults against a PostgreSQL cluster of the test's own (initdb + pg_ctl on a free port),
//! so the test can stop and start it under a running server without touching the shared one.

use std::path::{Path, PathBuf};
use std::process::Output;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::helpers::{HTTP_KEY, TestApp, TestDatabase, free_port, skip};

const COLLECT: &str =
    "mutation($e: [EventInput!]!) { collectEvents(events: $e) { accepted duplicates eventIds } }";
const USER_EVENTS: &str =
    "query($u: String!) { userEvents(userId: $u, first: 100) { nodes { eventId } } }";
const REMOTE_CONFIG: &str =
    "query($u: String!) { remoteConfig(userId: $u) { source version config } }";
const ASSIGNMENT: &str = "query($u: String!, $e: String!) { experimentAssignment(userId: $u, experimentId: $e) { cohort } }";

/// A PostgreSQL cluster in a temporary directory, removed on drop. It listens on a Unix socket in
/// that directory and on no TCP port: while it is stopped, a TCP port it had freed could be taken by
/// a server another test spawns, and the restart would then fail or the app would reach that server.
struct ThrowawayCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// Names the socket file (`.s.PGSQL.<port>`); no TCP port is opened.
    port: u16,
    /// initdb and postgres refuse to run as root; as root they run as the `postgres` user.
    run_as_postgres: bool,
}

impl ThrowawayCluster {
    /// A new, started cluster; None (after saying why) when PostgreSQL's server binaries are missing
    /// outside CI. Under CI=true their absence fails the test.
    async fn start_new() -> Option<Self> {
        let Some(bin) = postgres_bin_dir() else {
            skip(
                "a database-fault test",
                "no PostgreSQL server binaries (initdb, pg_ctl) on this machine",
                true,
            );
            return None;
        };
        let run_as_postgres = run(Command::new("id").arg("-u")).await.stdout == b"0\n";
        let dir = tempfile::tempdir().expect("create a temporary directory");
        if run_as_postgres {
            let owner = run(Command::new("chown").arg("postgres:").arg(dir.path())).await;
            assert!(owner.status.success(), "chown the cluster directory");
        }
        let cluster = ThrowawayCluster {
            bin,
            dir,
            port: free_port(),
            run_as_postgres,
        };
        let data = cluster.data_dir();
        cluster
            .pg(
                "initdb",
                &[
                    "-D",
                    data.to_str().unwrap(),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "--no-sync",
                ],
            )
            .await;
        cluster.start().await;
        Some(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!(
            "postgres://postgres@localhost:{}/postgres?host={}",
            self.port,
            self.dir.path().display()
        )
    }

    async fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses='' -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let data = self.data_dir();
        let log = self.dir.path().join("postgres.log");
        self.pg(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
                "-w",
                "start",
            ],
        )
        .await;
    }

    /// Stops the cluster the way an administrator would: open connections are cut.
    async fn stop(&self) {
        let data = self.data_dir();
        self.pg(
            "pg_ctl",
            &["-D", data.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        )
        .await;
    }

    async fn pg(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&path);
            command
        } else {
            Command::new(&path)
        };
        let output = run(command.args(args)).await;
        assert!(
            output.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayCluster {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl");
        let data = self.data_dir();
        let mut command = if self.run_as_postgres {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(pg_ctl);
            command
        } else {
            std::process::Command::new(pg_ctl)
        };
        // The cluster may already be stopped; either way nothing of it may outlive the test.
        let _ = command
            .arg("-D")
            .arg(data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// Debian installs the server binaries outside PATH, under /usr/lib/postgresql/<version>/bin.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop().or_else(|| {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .find(|dir| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file())
        })
    })
}

async fn run(command: &mut Command) -> Output {
    command.output().await.expect("run a command")
}

fn events(user: &str, ids: std::ops::Range<usize>) -> Value {
    Value::Array(
        ids.map(
            |n| json!({"eventId": format!("{user}-{n}"), "userId": user, "eventName": "level_up"}),
        )
        .collect(),
    )
}

async fn stored_ids(app: &TestApp, user: &str) -> Vec<String> {
    let data = app.gql(USER_EVENTS, json!({"u": user})).await;
    let mut ids: Vec<String> = data["userEvents"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["eventId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted_ids(user: &str, ids: std::ops::Range<usize>) -> Vec<String> {
    let mut ids: Vec<String> = ids.map(|n| format!("{user}-{n}")).collect();
    ids.sort();
    ids
}

async fn readyz(app: &TestApp) -> StatusCode {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("/readyz answers")
        .status()
}

fn is_masked(body: &Value, cluster: &ThrowawayCluster) -> bool {
    let text = body.to_string();
    !text.contains(&cluster.port.to_string())
        && !text.to_lowercase().contains("refused")
        && !text.contains(Path::new(cluster.dir.path()).to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_fails_requests_fast_with_service_unavailable_and_recovers_without_restart()
 {
    let Some(cluster) = ThrowawayCluster::start_new().await else {
        return;
    };
    let app = TestApp::spawn_with(TestDatabase::External(cluster.url()), |config| {
        config.database.acquire_timeout_secs = 1;
        // Far longer than the acquire timeout: an outage must be answered by the pool giving up,
        // not by the request timing out.
        config.server.request_timeout_secs = 60;
    })
    .await;
    app.upsert_experiment(json!({"id": "fault_exp", "name": "Fault", "cohorts": {"a": 1, "b": 1}}))
        .await;
    app.set_config(None, None, json!({"coins": 5}), false).await;
    let first = app
        .gql(COLLECT, json!({"e": events("fault-user", 0..3)}))
        .await;
    assert_eq!(first["collectEvents"]["accepted"], 3);
    let cached = app.gql(REMOTE_CONFIG, json!({"u": "cached-user"})).await;
    let cohort_before = app.cohort_of("sticky-user", "fault_exp").await;

    cluster.stop().await;

    // Writes, uncached reads and history reads all say SERVICE_UNAVAILABLE, without internals.
    let (status, body) = app
        .gql_as(
            Some(HTTP_KEY),
            COLLECT,
            json!({"e": events("fault-user", 3..6)}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{body}"
    );
    assert!(is_masked(&body, &cluster), "internals leaked: {body}");
    for (query, variables) in [
        (USER_EVENTS, json!({"u": "fault-user"})),
        (ASSIGNMENT, json!({"u": "new-user", "e": "fault_exp"})),
        (REMOTE_CONFIG, json!({"u": "uncached-user"})),
    ] {
        let code = app.gql_err_code(Some(HTTP_KEY), query, variables).await;
        assert_eq!(code, "SERVICE_UNAVAILABLE", "{query}");
    }
    // New players at once: their first assignments share a group write, and every one of them
    // hears that it failed; none is given a cohort.
    let players = (0..12).map(|i| {
        app.gql_err_code(
            Some(HTTP_KEY),
            ASSIGNMENT,
            json!({"u": format!("outage-player-{i}"), "e": "fault_exp"}),
        )
    });
    for code in futures_util::future::join_all(players).await {
        assert_eq!(code, "SERVICE_UNAVAILABLE");
    }
    let rpc = app
        .client
        .post(app.url("/v2/rpc/AnalyticsCollectEvents?http_key=defaulthttpkey"))
        .json(&json!({"events": events("fault-user", 3..6)}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(rpc.status(), StatusCode::SERVICE_UNAVAILABLE);
    let rpc_body: Value = rpc.json().await.unwrap();
    assert_eq!(rpc_body["code"], 14, "{rpc_body}");
    assert!(
        is_masked(&rpc_body, &cluster),
        "internals leaked: {rpc_body}"
    );

    // The process stays up: liveness, readiness, health and already cached config all answer.
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(readyz(&app).await, StatusCode::SERVICE_UNAVAILABLE);
    let health = app
        .gql("{ health { status database { ok } } }", json!({}))
        .await;
    assert_eq!(health["health"]["status"], "degraded", "{health}");
    assert_eq!(health["health"]["database"]["ok"], false, "{health}");
    assert_eq!(
        app.gql(REMOTE_CONFIG, json!({"u": "cached-user"})).await,
        cached
    );

    cluster.start().await;

    // Recovery without a restart: the pools reconnect on their own.
    let mut attempts = 0;
    while readyz(&app).await != StatusCode::OK {
        attempts += 1;
        assert!(attempts < 300, "/readyz never recovered");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let retried = app
        .gql(COLLECT, json!({"e": events("fault-user", 0..6)}))
        .await;
    assert_eq!(retried["collectEvents"]["accepted"], 3, "{retried}");
    assert_eq!(retried["collectEvents"]["duplicates"], 3, "{retried}");
    assert_eq!(
        stored_ids(&app, "fault-user").await,
        sorted_ids("fault-user", 0..6)
    );
    assert_eq!(
        app.cohort_of("sticky-user", "fault_exp").await,
        cohort_before
    );
    app.cohort_of("new-user", "fault_exp").await;
    let health = app.gql("{ health { status } }", json!({})).await;
    assert_eq!(health["health"]["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_stuck_on_a_lock_gets_408_and_its_retry_stores_the_batch_once() {
    let Some(cluster) = ThrowawayCluster::start_new().await else {
        return;
    };
    let app = TestApp::spawn_with(TestDatabase::External(cluster.url()), |config| {
        config.server.request_timeout_secs = 1;
    })
    .await;
    let (locker, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the throwaway cluster");
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE analytics_events IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let batch = json!({"e": events("slow-user", 0..4)});
    let stuck = app
        .graphql_post()
        .json(&json!({"query": COLLECT, "variables": batch}))
        .send()
        .await
        .unwrap();
    assert_eq!(stuck.status(), StatusCode::REQUEST_TIMEOUT);

    locker.batch_execute("COMMIT").await.unwrap();
    // The cut request may or may not have been stored; a retry with the same ids makes it whole.
    let retried = app.gql(COLLECT, batch).await;
    let counted = retried["collectEvents"]["accepted"].as_u64().unwrap()
        + retried["collectEvents"]["duplicates"].as_u64().unwrap();
    assert_eq!(counted, 4, "{retried}");
    assert_eq!(
        stored_ids(&app, "slow-user").await,
        sorted_ids("slow-user", 0..4)
    );
}
