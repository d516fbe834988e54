use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestDatabase, skip};

const TABLES: [&str; 7] = [
    "analytics_events",
    "audit_log",
    "config_variants",
    "config_versions",
    "experiment_changes",
    "experiment_metadata",
    "user_experiment_assignments",
];

const INDEXES: [&str; 12] = [
    "idx_audit_log_entity",
    "idx_experiment_changes_experiment",
    "idx_analytics_events_event_name",
    "idx_analytics_events_event_timestamp",
    "idx_analytics_events_experiment_cohort",
    "idx_analytics_events_user_timestamp",
    "idx_experiment_metadata_active",
    "idx_user_experiment_assignments_experiment_cohort",
    "ux_analytics_events_event_id",
    "ux_config_variants_experiment_cohort",
    "ux_config_versions_variant_version",
    "ux_user_experiment_assignments_user_experiment",
];

#[tokio::test]
async fn startup_migrations_create_the_tables_and_their_indexes() {
    let app = TestApp::spawn().await;

    let (tables, indexes) = app.database.schema_objects().await;

    for table in TABLES {
        assert!(
            tables.iter().any(|name| name == table),
            "missing table {table} in {tables:?}"
        );
    }
    for index in INDEXES {
        assert!(
            indexes.iter().any(|name| name == index),
            "missing index {index} in {indexes:?}"
        );
    }
}

#[tokio::test]
async fn json_columns_are_jsonb_on_postgres() {
    let database = TestDatabase::create().await;
    if !database.is_postgres() {
        // SQLite has no JSON column type; it stores JSON text. .ci/run's PostgreSQL pass runs it.
        skip(
            "json_columns_are_jsonb_on_postgres",
            "PostgreSQL only (set TEST_DATABASE_URL)",
            false,
        );
        return;
    }
    let _app = TestApp::spawn_with(database, |_| {}).await;
    let app_database = &_app.database;
    let connection = app_database.connect().await;

    let rows = sea_orm::ConnectionTrait::query_all_raw(
        &connection,
        sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT table_name || '.' || column_name AS name FROM information_schema.columns WHERE data_type = 'jsonb' ORDER BY 1",
        ),
    )
    .await
    .unwrap();
    let columns: Vec<String> = rows
        .iter()
        .map(|row| row.try_get("", "name").unwrap())
        .collect();

    assert_eq!(
        columns,
        [
            "analytics_events.properties",
            "audit_log.after_data",
            "audit_log.before_data",
            "config_variants.config_data",
            "config_versions.config_data",
            "experiment_changes.cohorts",
            "experiment_metadata.cohorts",
            "experiment_metadata.metrics"
        ]
    );
}

#[tokio::test]
async fn a_missing_sqlite_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/deeper/octp.db", dir.path().display());
    let mut config = octp_backend::Config::with_database(url, "127.0.0.1:0".parse().unwrap());
    config.server.bind = "127.0.0.1:0".parse().unwrap();

    octp_backend::App::build(config)
        .await
        .expect("the server starts");

    assert!(dir.path().join("nested/deeper/octp.db").is_file());
}

#[tokio::test]
async fn an_unsupported_database_url_fails_with_a_clear_message() {
    let config = octp_backend::Config::with_database(
        "mysql://root@localhost/db",
        "127.0.0.1:0".parse().unwrap(),
    );

    let error = octp_backend::App::build(config)
        .await
        .err()
        .expect("startup fails");

    let message = format!("{error:#}");
    assert!(
        message.contains("unsupported database URL scheme \"mysql\""),
        "{message}"
    );
}

#[tokio::test]
async fn the_migrate_subcommand_shows_status_and_runs_migrations_down_and_up() {
    let database = TestDatabase::create().await;
    let migrate = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_octp-backend"))
            .args(["--database-url", database.url(), "migrate"])
            .args(args)
            .output()
            .expect("run the binary");
        assert!(
            output.status.success(),
            "migrate {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };

    let fresh = migrate(&["status"]);
    assert_eq!(fresh.matches("Pending").count(), 8, "{fresh}");

    assert!(migrate(&["up"]).contains("applied: 8, pending: 0"));
    assert_eq!(migrate(&["status"]).matches("Applied").count(), 8);

    assert!(migrate(&["down", "--steps", "5"]).contains("applied: 3, pending: 5"));
    let (tables, _) = database.schema_objects().await;
    for removed in [
        "user_experiment_assignments",
        "config_versions",
        "experiment_changes",
        "audit_log",
    ] {
        assert!(!tables.contains(&removed.to_owned()), "{tables:?}");
    }

    assert!(migrate(&["up"]).contains("applied: 8, pending: 0"));
}

#[tokio::test]
async fn the_playground_page_and_its_bundles_are_served_from_the_binary() {
    let app = TestApp::spawn().await;

    let response = app.client.get(app.url("/playground")).send().await.unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let page = response.text().await.unwrap();
    assert!(
        !page.contains("https://") && !page.contains("http://"),
        "nothing may come from the network"
    );
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter(|part| part.starts_with("/playground/assets/"))
        .collect();
    assert_eq!(assets.len(), 5, "{page}");
    for asset in assets {
        let response = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{asset}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = if asset.contains(".css") {
            "text/css"
        } else {
            "text/javascript"
        };
        assert!(
            content_type.starts_with(expected),
            "{asset}: {content_type}"
        );
        assert!(
            response.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert!(response.bytes().await.unwrap().len() > 1000, "{asset}");
    }
    let missing = app
        .client
        .get(app.url("/playground/assets/nope.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    let schema: Value = app
        .client
        .get(app.url("/playground/schema.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        schema["data"]["__schema"]["queryType"]["name"], "Query",
        "the schema is published without a key"
    );
    assert_eq!(
        schema["data"]["__schema"]["mutationType"]["name"],
        "Mutation"
    );
}

#[tokio::test]
async fn malformed_json_gets_400_with_a_clear_bad_user_input_error() {
    let app = TestApp::spawn().await;

    let response = app
        .graphql_post()
        .header("content-type", "application/json")
        .body("{\"query\": ")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("is not a GraphQL request")
    );
}

#[tokio::test]
async fn a_request_of_the_wrong_shape_says_what_is_wrong_with_it() {
    let app = TestApp::spawn().await;
    for (body, expected) in [
        (
            r#"{"query": 5}"#,
            "invalid type: integer `5`, expected a string",
        ),
        (
            r#"[{"query": "{ health { status } }"}, 7]"#,
            "invalid type: integer `7`",
        ),
        ("[]", "an empty batch holds no operation"),
        (r#""{ health { status } }""#, "invalid type: string"),
    ] {
        let response = app
            .graphql_post()
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{body}");
        let reply: Value = response.json().await.unwrap();
        let message = reply["errors"][0]["message"].as_str().unwrap();
        assert!(
            message.starts_with("invalid body: is not a GraphQL request (")
                && message.contains(expected),
            "{body}: {message}"
        );
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413_payload_too_large_and_exactly_one_is_accepted() {
    let app = TestApp::spawn().await;
    let body_of = |size: usize| {
        let prefix = r#"{"query":"{ health { status } }","variables":{"pad":""#;
        let suffix = r#""}}"#;
        let padding = "x".repeat(size - prefix.len() - suffix.len());
        format!("{prefix}{padding}{suffix}")
    };

    let at_limit = app
        .graphql_post()
        .header("content-type", "application/json")
        .body(body_of(1024 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(at_limit.status(), StatusCode::OK);

    let over = app
        .graphql_post()
        .header("content-type", "application/json")
        .body(body_of(1024 * 1024 + 1))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");

    let _ = json!({});
}

/// Sends `head` and then `body` (both raw HTTP/1.1) on `stream`, and reads one response's status
/// line and headers (the body is whatever Content-Length says).
async fn exchange(stream: &mut tokio::net::TcpStream, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = std::time::Duration::from_secs(10);
    loop {
        if let Some(end) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            let headers = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = headers
                .lines()
                .find_map(|line| line.strip_prefix("content-length: "))
                .map_or(0, |value| value.trim().parse().unwrap());
            if received.len() >= end + 4 + length {
                let status = headers[9..12].parse().unwrap();
                return (status, received[end + 4..end + 4 + length].to_vec());
            }
        }
        let read = tokio::time::timeout(deadline, stream.read(&mut buffer))
            .await
            .expect("a reply within the deadline")
            .unwrap();
        assert!(read > 0, "the server closed the connection: {received:?}");
        received.extend_from_slice(&buffer[..read]);
    }
}

/// A refused body is read to its end before the refusal, so the reply is not lost to a reset and
/// the connection stays usable (a proxy in front sees a 413, not a broken connection); past the
/// drain bound the refusal comes at once, without waiting for a body.
#[tokio::test]
async fn an_oversized_body_is_drained_so_the_refusal_arrives_and_the_connection_lives_on() {
    let app = TestApp::spawn().await;
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let auth = format!("Authorization: Bearer {}", crate::helpers::HTTP_KEY);
    // Chunked, so nothing announces the size: 3 MiB in 64 KiB chunks.
    let chunk = vec![b' '; 64 * 1024];
    let mut body = Vec::new();
    for _ in 0..48 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: test\r\n{auth}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let (status, reply) = exchange(&mut stream, &head, &body).await;
    assert_eq!(status, 413);
    let reply: Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(
        reply["errors"][0]["extensions"]["code"],
        "PAYLOAD_TOO_LARGE"
    );

    // The same connection answers the next request.
    let query = br#"{"query":"{ health { status } }"}"#;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: test\r\n{auth}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        query.len()
    );
    let (status, reply) = exchange(&mut stream, &head, query).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));

    // Announcing more than the drain bound: refused at once, no body awaited.
    let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
    let head = format!(
        "POST /v2/rpc/FetchRemoteConfig?http_key={} HTTP/1.1\r\nHost: test\r\n\
         Content-Length: {}\r\n\r\n",
        crate::helpers::HTTP_KEY,
        100 * 1024 * 1024
    );
    let (status, _) = exchange(&mut stream, &head, b"").await;
    assert_eq!(status, 400, "Nakama's answer to a body over the limit");
}

/// No Docker engine runs in CI, so check the compose file's promises by reading it.
#[test]
fn docker_compose_starts_the_server_on_a_healthy_postgres_with_keys_from_the_environment() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docker-compose.yml"))
        .unwrap();
    let compose: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
    let services = &compose["services"];

    let postgres = &services["postgres"];
    assert!(postgres["image"].as_str().unwrap().starts_with("postgres:"));
    let check = postgres["healthcheck"]["test"][1].as_str().unwrap();
    assert!(check.contains("pg_isready"), "{check}");

    let server = &services["server"];
    assert_eq!(server["build"].as_str(), Some("."));
    let check: Vec<&str> = server["healthcheck"]["test"]
        .as_sequence()
        .expect("the server has a health check")
        .iter()
        .filter_map(|part| part.as_str())
        .collect();
    assert_eq!(check, ["CMD", "octp-backend", "healthcheck"]);
    assert_eq!(
        server["depends_on"]["postgres"]["condition"].as_str(),
        Some("service_healthy")
    );
    let environment = &server["environment"];
    assert!(
        environment["OCTP_DATABASE_URL"]
            .as_str()
            .unwrap()
            .starts_with("postgres://")
    );
    for key in ["OCTP_HTTP_KEY", "OCTP_ADMIN_KEY"] {
        let value = environment[key].as_str().unwrap();
        assert!(
            value.starts_with("${") && value.contains(":?"),
            "{key} must come from the environment and be required: {value}"
        );
    }

    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "a two-stage build"
    );
    assert!(dockerfile.contains("COPY --from=build"));
}

/// The image's health check is the binary's own `healthcheck` command (tests/api/metrics.rs runs it).
#[test]
fn the_docker_image_checks_its_health_with_the_healthcheck_command() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let instruction = text
        .split("\nHEALTHCHECK ")
        .nth(1)
        .expect("the Dockerfile has a HEALTHCHECK");
    let command = instruction
        .split("CMD ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("HEALTHCHECK … CMD […]");
    let command: Vec<String> = serde_json::from_str(command).expect("CMD in exec form");
    assert_eq!(command, ["octp-backend", "healthcheck"]);
}
