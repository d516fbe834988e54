use std::net::SocketAddr;

use octp_backend::{App, Config};
use reqwest::{StatusCode, Url};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const HTTP_KEY: &str = "defaulthttpkey";
pub const ADMIN_KEY: &str = "defaultadminkey";

/// A database that exists for one test only.
pub enum TestDatabase {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        server_url: String,
        name: String,
        url: String,
    },
    /// A database the test manages itself (e.g. on a cluster it starts and stops).
    External(String),
}

impl TestDatabase {
    /// A fresh database on the backend TEST_DATABASE_URL selects (SQLite when unset).
    pub async fn create() -> Self {
        match std::env::var("TEST_DATABASE_URL") {
            Ok(server_url) if server_url.starts_with("postgres") => {
                Self::create_postgres(server_url).await
            }
            Ok(other) if !other.is_empty() => {
                panic!("TEST_DATABASE_URL must be a postgres:// URL, got {other:?}")
            }
            _ => Self::create_sqlite(),
        }
    }

    pub fn create_sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}/octp.db", dir.path().display());
        TestDatabase::Sqlite { _dir: dir, url }
    }

    async fn create_postgres(server_url: String) -> Self {
        let name = format!("octp_test_{}", uuid::Uuid::new_v4().simple());
        let server = Database::connect(server_url.as_str())
            .await
            .expect("connect to the PostgreSQL server named by TEST_DATABASE_URL");
        server
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .expect("create a test database");
        server.close().await.ok();
        let mut url = Url::parse(&server_url).expect("TEST_DATABASE_URL is a URL");
        url.set_path(&name);
        TestDatabase::Postgres {
            server_url,
            name,
            url: url.to_string(),
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite { url, .. }
            | TestDatabase::Postgres { url, .. }
            | TestDatabase::External(url) => url,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.url().starts_with("postgres")
    }

    /// A separate connection, for checking what the server stored.
    pub async fn connect(&self) -> DatabaseConnection {
        Database::connect(self.url())
            .await
            .expect("connect to the test database")
    }

    /// Names of the tables and indexes in the database, sorted.
    pub async fn schema_objects(&self) -> (Vec<String>, Vec<String>) {
        let connection = self.connect().await;
        let (tables, indexes) = if self.is_postgres() {
            (
                "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public'",
                "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'",
            )
        } else {
            (
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
                "SELECT name FROM sqlite_master WHERE type = 'index' AND name NOT LIKE 'sqlite_%'",
            )
        };
        let names = |sql: &'static str| {
            let connection = &connection;
            async move {
                let backend = connection.get_database_backend();
                let mut names: Vec<String> = connection
                    .query_all_raw(Statement::from_string(backend, sql))
                    .await
                    .expect("list schema objects")
                    .iter()
                    .map(|row| row.try_get::<String>("", "name").expect("a name column"))
                    .collect();
                names.sort();
                names
            }
        };
        (names(tables).await, names(indexes).await)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let TestDatabase::Postgres {
            server_url, name, ..
        } = self
        else {
            return;
        };
        let (server_url, name) = (server_url.clone(), name.clone());
        let dropped = run_aside(|| async move {
            let server = Database::connect(server_url.as_str()).await?;
            server
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await?;
            server.close().await
        });
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database: {dropped:?}");
        }
    }
}

/// Runs `work` to completion on a runtime and a thread of its own: `Drop` runs inside a test's
/// runtime, which cannot be blocked on.
fn run_aside<T, F>(work: impl FnOnce() -> F + Send + 'static) -> std::thread::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a runtime")
            .block_on(work())
    })
    .join()
}

/// The server, running on an ephemeral port with its own database.
pub struct TestApp {
    pub address: SocketAddr,
    pub client: reqwest::Client,
    /// Dropped to shut the server down.
    shutdown: Option<oneshot::Sender<()>>,
    // Declared late so the server stops before its database is dropped.
    pub database: TestDatabase,
    /// The ClickHouse database of this test's events, when TEST_EVENTS_URL names a server.
    pub events_database: Option<EventsDatabase>,
}

/// A ClickHouse database that exists for one test only, dropped with it.
pub struct EventsDatabase {
    /// ClickHouse's HTTP address, e.g. `http://127.0.0.1:18123`.
    pub http_url: String,
    pub name: String,
    /// The cluster its tables are spread over, from TEST_EVENTS_CLUSTER.
    pub cluster: Option<String>,
}

impl EventsDatabase {
    /// A fresh database name on the server TEST_EVENTS_URL (`clickhouse://host:port`) names; the
    /// server creates it, over the cluster TEST_EVENTS_CLUSTER names if set. `None` when
    /// TEST_EVENTS_URL is unset: events stay in the main database.
    pub fn from_env() -> Option<Self> {
        let url = std::env::var("TEST_EVENTS_URL")
            .ok()
            .filter(|url| !url.is_empty())?;
        let host = url
            .strip_prefix("clickhouse://")
            .unwrap_or_else(|| {
                panic!("TEST_EVENTS_URL must be clickhouse://host:port, got {url:?}")
            })
            .trim_end_matches('/');
        Some(EventsDatabase {
            http_url: format!("http://{host}"),
            name: format!("octp_test_{}", uuid::Uuid::new_v4().simple()),
            cluster: std::env::var("TEST_EVENTS_CLUSTER")
                .ok()
                .filter(|cluster| !cluster.is_empty()),
        })
    }

    /// The `--events-url` of this database.
    pub fn events_url(&self) -> String {
        format!(
            "clickhouse://{}/{}",
            self.http_url.trim_start_matches("http://"),
            self.name
        )
    }

    /// Runs one statement through ClickHouse's HTTP interface; returns its text output.
    pub async fn query(&self, sql: &str) -> String {
        clickhouse_sql(&self.http_url, sql).await
    }
}

/// Runs one statement on the ClickHouse server at `http_url` (its HTTP interface); returns its
/// text output, failing the test on any error.
pub async fn clickhouse_sql(http_url: &str, sql: &str) -> String {
    let response = reqwest::Client::new()
        .post(http_url)
        .body(sql.to_owned())
        .send()
        .await
        .expect("ClickHouse answers");
    let status = response.status();
    let text = response.text().await.expect("a text body");
    assert!(status.is_success(), "{http_url}: {sql}: {status} {text}");
    text
}

impl Drop for EventsDatabase {
    fn drop(&mut self) {
        let (http_url, name) = (self.http_url.clone(), self.name.clone());
        let on_cluster = self
            .cluster
            .as_ref()
            .map(|cluster| format!(" ON CLUSTER {cluster}"))
            .unwrap_or_default();
        let dropped = run_aside(|| async move {
            reqwest::Client::new()
                .post(&http_url)
                .body(format!("DROP DATABASE IF EXISTS {name}{on_cluster}"))
                .send()
                .await?
                .error_for_status()
        });
        if !matches!(dropped, Ok(Ok(_))) {
            eprintln!("could not drop a ClickHouse test database: {dropped:?}");
        }
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(TestDatabase::create().await, |_| {}).await
    }

    /// Takes this server's database back to an older schema with `rewind` (statements dropping
    /// what a migration made, and its record), then starts a second server on it, which migrates
    /// it again as an upgrade would.
    pub async fn upgraded_after(&self, rewind: &[&str]) -> TestApp {
        let connection = self.database.connect().await;
        for statement in rewind {
            sea_orm::ConnectionTrait::execute_unprepared(&connection, statement)
                .await
                .unwrap_or_else(|error| panic!("{statement}: {error}"));
        }
        TestApp::spawn_with(
            TestDatabase::External(self.database.url().to_owned()),
            |_| {},
        )
        .await
    }

    pub async fn spawn_with(database: TestDatabase, adjust: impl FnOnce(&mut Config)) -> Self {
        // Server warnings and errors show in a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("warn")
            .with_test_writer()
            .try_init();
        let mut config = Config::with_database(database.url(), "127.0.0.1:0".parse().unwrap());
        let events_database = EventsDatabase::from_env();
        config.database.events_url = events_database.as_ref().map(EventsDatabase::events_url);
        config.database.events_cluster = events_database
            .as_ref()
            .and_then(|events| events.cluster.clone());
        adjust(&mut config);
        let app = App::build(config).await.expect("the server starts");
        let address = app.local_addr();
        let (shutdown, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run(async {
            stopped.await.ok();
        }));
        TestApp {
            address,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            database,
            events_database,
        }
    }

    /// Starts the server's shutdown, as SIGTERM does for the binary.
    pub fn begin_shutdown(&mut self) {
        self.shutdown.take();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.address, path)
    }

    /// Runs a GraphQL operation with the given key (or none); returns the status and the body.
    pub async fn gql_as(
        &self,
        key: Option<&str>,
        query: &str,
        variables: Value,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(self.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.expect("the request is answered");
        let status = response.status();
        let body = response.json().await.expect("a JSON body");
        (status, body)
    }

    /// A POST to `/graphql` with the http key, for requests the helpers below cannot build.
    pub fn graphql_post(&self) -> reqwest::RequestBuilder {
        self.client.post(self.url("/graphql")).bearer_auth(HTTP_KEY)
    }

    /// Runs a GraphQL operation with the http key and returns `data`, failing on any error.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        self.data_as(HTTP_KEY, query, variables).await
    }

    /// Runs a GraphQL operation with the admin key and returns `data`, failing on any error.
    pub async fn admin(&self, query: &str, variables: Value) -> Value {
        self.data_as(ADMIN_KEY, query, variables).await
    }

    async fn data_as(&self, key: &str, query: &str, variables: Value) -> Value {
        let (status, body) = self.gql_as(Some(key), query, variables).await;
        assert_eq!(status, StatusCode::OK, "unexpected status; body: {body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Creates or replaces an experiment with the admin key.
    pub async fn upsert_experiment(&self, input: Value) -> Value {
        self.admin(
            "mutation($input: ExperimentInput!) { upsertExperiment(input: $input) { id name cohorts { name weight } active } }",
            json!({"input": input}),
        )
        .await["upsertExperiment"]
            .clone()
    }

    /// The user's cohort through `experimentAssignment`.
    pub async fn cohort_of(&self, user: &str, experiment: &str) -> String {
        let data = self
            .gql(
                "query($u: String!, $e: String!) { experimentAssignment(userId: $u, experimentId: $e) { cohort } }",
                json!({"u": user, "e": experiment}),
            )
            .await;
        data["experimentAssignment"]["cohort"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Stores a config with the admin key; returns the ConfigVariant.
    pub async fn set_config(
        &self,
        experiment: Option<&str>,
        cohort: Option<&str>,
        config: Value,
        merge: bool,
    ) -> Value {
        self.admin(
            "mutation($e: String, $c: String, $config: JSON!, $m: Boolean) { updateRemoteConfig(experimentId: $e, cohort: $c, config: $config, merge: $m) { experimentId cohort config version updatedAt } }",
            json!({"e": experiment, "c": cohort, "config": config, "m": merge}),
        )
        .await["updateRemoteConfig"]
            .clone()
    }

    /// Overwrites every stored config straight in the database, unseen by the server's caches.
    pub async fn set_every_config_behind_the_servers_back(&self, config: Value) {
        let connection = self.database.connect().await;
        let sql = format!(
            "UPDATE config_variants SET config_data = '{}'",
            config.to_string().replace('\'', "''")
        );
        connection
            .execute_unprepared(&sql)
            .await
            .expect("update the stored configs");
    }

    /// How many events of `user` are stored, and how many distinct event ids they have, read
    /// straight from the database.
    pub async fn stored_event_ids(&self, user: &str) -> (i64, i64) {
        if let Some(events) = &self.events_database {
            // What reads see: copies of one event folded by FINAL.
            let counts = events
                .query(&format!(
                    "SELECT count(), uniqExact(event_id) FROM {}.events FINAL WHERE user_id = '{}'",
                    events.name,
                    user.replace('\\', "\\\\").replace('\'', "\\'")
                ))
                .await;
            let mut counts = counts
                .split_whitespace()
                .map(|n| n.parse().expect("a count"));
            return (
                counts.next().expect("a count"),
                counts.next().expect("a distinct count"),
            );
        }
        let connection = self.database.connect().await;
        let row = connection
            .query_one_raw(Statement::from_sql_and_values(
                connection.get_database_backend(),
                match connection.get_database_backend() {
                    sea_orm::DatabaseBackend::Postgres => {
                        "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM analytics_events WHERE user_id = $1"
                    }
                    _ => "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM analytics_events WHERE user_id = ?",
                },
                [user.into()],
            ))
            .await
            .expect("count stored events")
            .expect("a count row");
        (
            row.try_get("", "n").expect("a count"),
            row.try_get("", "d").expect("a distinct count"),
        )
    }

    /// The `extensions.code` of the first error, for operations expected to fail.
    pub async fn gql_err_code(&self, key: Option<&str>, query: &str, variables: Value) -> String {
        let (_, body) = self.gql_as(key, query, variables).await;
        body["errors"][0]["extensions"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("expected an error with a code, got {body}"))
            .to_owned()
    }
}

/// A port nothing listens on right now, for servers started outside the test process.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free port")
        .port()
}

/// Starts the server binary (not an in-process server: for signals, crashes and memory) on a
/// fresh database and waits until it is ready; it is killed when the handle drops. Its log goes
/// to `log` when given (at the `--log-level` in `extra_args`, else warn).
pub async fn start_binary(
    database: &TestDatabase,
    port: u16,
    extra_args: &[&str],
    log: Option<&std::path::Path>,
) -> tokio::process::Child {
    use std::{process::Stdio, time::Duration};
    let stderr = match log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("create the log file")),
        None => Stdio::null(),
    };
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_octp-backend"))
        .args([
            "--database-url",
            database.url(),
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--log-level",
            "warn",
        ])
        .args(extra_args)
        .stdout(Stdio::null())
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start the server binary");
    let client = reqwest::Client::new();
    for _ in 0..600 {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .timeout(Duration::from_millis(200))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if ready {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // polling for readiness, not a race
    }
    panic!("the server did not become ready");
}

/// Says out loud that a test did not run its assertions, and why; under `CI=true` a test that
/// cannot run where it must fails instead (pass `required_in_ci`).
pub fn skip(test: &str, why: &str, required_in_ci: bool) {
    assert!(
        !(required_in_ci && std::env::var("CI").as_deref() == Ok("true")),
        "{test} cannot run under CI=true: {why}"
    );
    // Straight to the process's stderr: the test harness swallows `eprintln!` of passing tests,
    // and a skip must be seen.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {test}: {why}");
}

/// Runs one of the Node.js test files under `tests/<dir>` with `node --test`, installing its pinned
/// npm packages first when they are missing; returns whether it passed and everything it printed.
pub async fn run_node_test(dir: &str, file: &str, env: &[(&str, String)]) -> (bool, String) {
    use tokio::process::Command;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    // Tests of one directory run at once; without the lock one test's `npm ci` (which empties
    // node_modules first) pulls the packages from under another test already running node. The
    // lockfile npm writes last tells a finished install from one under way or interrupted.
    static INSTALLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let installing = INSTALLS.lock().await;
    // An install older than the lockfile predates a package added since: install again.
    let modified =
        |path: std::path::PathBuf| std::fs::metadata(path).and_then(|meta| meta.modified());
    let installed = modified(dir.join("node_modules").join(".package-lock.json"));
    let locked = modified(dir.join("package-lock.json"));
    let current = matches!((installed, locked), (Ok(installed), Ok(locked)) if installed >= locked);
    if !current {
        // `--ignore-scripts`: a dependency's install script phones home, which must not run in tests.
        let install = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .expect("npm is installed (these tests need Node.js 18 or newer)");
        assert!(
            install.status.success(),
            "npm ci failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
    }
    drop(installing);
    let run = Command::new("node")
        .args(["--test", "--test-reporter=spec", file])
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .current_dir(&dir)
        .output()
        .await
        .expect("node is installed");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    (run.status.success(), output)
}
