//! The Nakama-compatible aliases at /v2/rpc/{id}: transport byte for byte, payloads as in docs/api.md §7.

use std::io::Write;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp};

const NO_KEY: &str = r#"{"error":"Auth token or HTTP key required","message":"Auth token or HTTP key required","code":16}"#;
const BAD_KEY: &str = r#"{"error":"HTTP key invalid","message":"HTTP key invalid","code":16}"#;
const BAD_TOKEN: &str =
    r#"{"error":"Auth token invalid","message":"Auth token invalid","code":16}"#;
const NOT_A_STRING: &str = r#"{"error":"json: cannot unmarshal object into Go value of type string","message":"json: cannot unmarshal object into Go value of type string","code":3}"#;

struct Reply {
    status: StatusCode,
    headers: header::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    /// The RPC's own reply out of the `{"payload": "<json text>"}` envelope.
    fn payload(&self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.body);
        let envelope = self.json();
        assert_eq!(
            envelope.as_object().unwrap().len(),
            1,
            "the envelope is {{payload}} alone: {}",
            self.body
        );
        serde_json::from_str(envelope["payload"].as_str().unwrap()).unwrap()
    }
}

impl TestApp {
    async fn rpc_raw(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path_and_query));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.expect("the request is answered");
        Reply {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    /// What every Nakama SDK sends: POST with the payload as a JSON string.
    async fn rpc(&self, id: &str, key: &str, payload: Value) -> Reply {
        let text = if payload.is_null() {
            String::new()
        } else {
            payload.to_string()
        };
        let body = serde_json::to_vec(&Value::String(text)).unwrap();
        self.rpc_raw(
            Method::POST,
            &format!("/v2/rpc/{id}?http_key={key}"),
            Some(body),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// `?unwrap`: raw JSON in and out.
    async fn rpc_unwrapped(&self, id: &str, key: &str, payload: Value) -> Reply {
        let body = if payload.is_null() {
            Vec::new()
        } else {
            payload.to_string().into_bytes()
        };
        self.rpc_raw(
            Method::POST,
            &format!("/v2/rpc/{id}?http_key={key}&unwrap"),
            Some(body),
            &[("content-type", "application/json")],
        )
        .await
    }
}

/// Both body forms give the same reply (modulo fields that change between calls).
async fn both_forms(app: &TestApp, id: &str, key: &str, payload: Value) -> Value {
    let wrapped = app.rpc(id, key, payload.clone()).await.payload();
    let unwrapped = app.rpc_unwrapped(id, key, payload).await;
    assert_eq!(unwrapped.status, StatusCode::OK, "{}", unwrapped.body);
    assert_eq!(
        unwrapped.headers[header::CONTENT_TYPE],
        "application/json",
        "echoes the request's type"
    );
    let mut unwrapped = unwrapped.json();
    let mut first = wrapped.clone();
    for volatile in ["uptimeSeconds", "updatedAt", "version", "latencyMs"] {
        strip(&mut first, volatile);
        strip(&mut unwrapped, volatile);
    }
    if id != "AnalyticsCollectEvents" && id != "DetailedHealthCheck" {
        assert_eq!(first, unwrapped, "{id}: both body forms agree");
    }
    wrapped
}

fn strip(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => {
            map.remove(key);
            map.values_mut().for_each(|v| strip(v, key));
        }
        Value::Array(items) => items.iter_mut().for_each(|v| strip(v, key)),
        _ => {}
    }
}

#[tokio::test]
async fn every_rpc_works_in_both_body_forms() {
    let app = TestApp::spawn().await;
    let experiment = json!({"id": "onboarding_v2", "name": "Onboarding", "cohorts": {"control": 0.5, "variant_b": 0.5}});
    app.upsert_experiment(experiment).await;

    let health = both_forms(&app, "HealthCheck", HTTP_KEY, Value::Null).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health.as_object().unwrap().len(), 3, "{health}");

    let detailed = both_forms(&app, "DetailedHealthCheck", HTTP_KEY, Value::Null).await;
    assert_eq!(detailed["database"]["ok"], true);
    assert_eq!(detailed["database"]["migrationsApplied"], 8);
    assert_eq!(detailed["cache"]["ttlSeconds"], 60);

    let variant = both_forms(&app, "UpdateRemoteConfig", ADMIN_KEY, json!({"experimentId": "onboarding_v2", "cohort": "control", "config": {"tutorial": "short"}})).await;
    assert_eq!(variant["experimentId"], "onboarding_v2");
    assert_eq!(variant["cohort"], "control");
    assert_eq!(variant["version"], 1);

    let assignment = both_forms(
        &app,
        "GetExperimentAssignment",
        HTTP_KEY,
        json!({"userId": "user-1", "experimentId": "onboarding_v2"}),
    )
    .await;
    assert_eq!(assignment["cohort"], "control");
    assert!(assignment["assignedAt"].as_str().unwrap().ends_with('Z'));

    let config = both_forms(
        &app,
        "FetchRemoteConfig",
        HTTP_KEY,
        json!({"userId": "user-1", "experimentId": "onboarding_v2"}),
    )
    .await;
    assert_eq!(
        config["source"], "COHORT",
        "enum values keep their GraphQL spelling"
    );
    assert_eq!(config["config"], json!({"tutorial": "short"}));
    assert_eq!(config["cohort"], "control");

    let listed = both_forms(&app, "ListActiveExperiments", HTTP_KEY, json!({})).await;
    assert_eq!(listed["experiments"][0]["id"], "onboarding_v2");
    assert_eq!(
        listed["experiments"][0]["cohorts"],
        json!({"control": 0.5, "variant_b": 0.5})
    );

    let collected = both_forms(
        &app,
        "AnalyticsCollectEvents",
        HTTP_KEY,
        json!({"events": [{"eventId": "e1", "userId": "user-1", "eventName": "login"}]}),
    )
    .await;
    assert_eq!(
        collected,
        json!({"accepted": 1, "duplicates": 0, "eventIds": ["e1"]})
    );

    let history = both_forms(
        &app,
        "AnalyticsGetUserEvents",
        HTTP_KEY,
        json!({"userId": "user-1"}),
    )
    .await;
    assert_eq!(history["events"][0]["eventId"], "e1");
    assert_eq!(history["nextCursor"], Value::Null);
}

#[tokio::test]
async fn get_takes_the_payload_from_the_query_string_as_nakama_js_sends_it() {
    let app = TestApp::spawn().await;
    let payload = json!({"userId": "u 1/ü"}).to_string();
    let encoded: String = url_encode(&payload);

    let reply = app
        .rpc_raw(
            Method::GET,
            &format!("/v2/rpc/FetchRemoteConfig?payload={encoded}&http_key={HTTP_KEY}&"),
            None,
            &[("content-type", "application/json")],
        )
        .await;

    assert_eq!(reply.payload()["userId"], "u 1/ü");
    let empty = app
        .rpc_raw(
            Method::GET,
            &format!("/v2/rpc/HealthCheck?payload=&http_key={HTTP_KEY}&"),
            None,
            &[],
        )
        .await;
    assert_eq!(empty.payload()["status"], "ok");
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn snake_case_keys_are_accepted_beside_camel_case() {
    let app = TestApp::spawn().await;

    let collected = app
        .rpc("AnalyticsCollectEvents", HTTP_KEY, json!({"events": [{"event_id": "s1", "user_id": "snake", "event_name": "e", "session_id": "s"}]}))
        .await
        .payload();
    let history = app
        .rpc(
            "AnalyticsGetUserEvents",
            HTTP_KEY,
            json!({"user_id": "snake", "event_name": "e"}),
        )
        .await
        .payload();

    assert_eq!(collected["accepted"], 1);
    assert_eq!(history["events"][0]["sessionId"], "s");
}

/// Path, headers, expected status, expected exact body.
type AuthCase<'a> = (String, Vec<(&'a str, &'a str)>, StatusCode, Option<&'a str>);

#[tokio::test]
async fn authentication_answers_exactly_as_nakama() {
    let app = TestApp::spawn().await;
    let basic = |user: &str| format!("Basic {}", base64_encode(&format!("{user}:")));
    let good_basic = basic(HTTP_KEY);
    let bad_basic = basic("wrong");
    let cases: Vec<AuthCase> = vec![
        (
            "/v2/rpc/HealthCheck".into(),
            vec![],
            StatusCode::UNAUTHORIZED,
            Some(NO_KEY),
        ),
        (
            "/v2/rpc/NoSuchRpc".into(),
            vec![],
            StatusCode::UNAUTHORIZED,
            Some(NO_KEY),
        ),
        (
            "/v2/rpc/HealthCheck?http_key=wrong".into(),
            vec![],
            StatusCode::UNAUTHORIZED,
            Some(BAD_KEY),
        ),
        (
            "/v2/rpc/HealthCheck?http_key=".into(),
            vec![],
            StatusCode::UNAUTHORIZED,
            Some(NO_KEY),
        ),
        (
            "/v2/rpc/HealthCheck".into(),
            vec![("authorization", good_basic.as_str())],
            StatusCode::OK,
            None,
        ),
        (
            "/v2/rpc/HealthCheck".into(),
            vec![("authorization", bad_basic.as_str())],
            StatusCode::UNAUTHORIZED,
            Some(BAD_KEY),
        ),
        (
            "/v2/rpc/HealthCheck".into(),
            vec![("authorization", "Bearer defaulthttpkey")],
            StatusCode::UNAUTHORIZED,
            Some(BAD_TOKEN),
        ),
        (
            format!("/v2/rpc/HealthCheck?http_key={HTTP_KEY}"),
            vec![("authorization", "Bearer junk")],
            StatusCode::OK,
            None,
        ),
        (
            format!("/v2/rpc/HealthCheck?http_key={HTTP_KEY}&http_key=wrong"),
            vec![],
            StatusCode::OK,
            None,
        ),
        (
            format!("/v2/rpc/HealthCheck?http_key=wrong&http_key={HTTP_KEY}"),
            vec![],
            StatusCode::UNAUTHORIZED,
            Some(BAD_KEY),
        ),
    ];
    for (path, headers, status, body) in cases {
        let reply = app
            .rpc_raw(Method::POST, &path, Some(Vec::new()), &headers)
            .await;
        assert_eq!(reply.status, status, "{path} {headers:?}: {}", reply.body);
        if let Some(body) = body {
            assert_eq!(reply.body, body, "{path}");
            assert_eq!(reply.headers[header::CONTENT_TYPE], "application/json");
        }
    }
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn ids_match_like_nakama_and_transport_errors_are_byte_exact() {
    let app = TestApp::spawn().await;
    let key = format!("?http_key={HTTP_KEY}");

    for id in ["HealthCheck", "healthcheck", "HEALTHCHECK", "Health%43heck"] {
        let reply = app
            .rpc_raw(Method::POST, &format!("/v2/rpc/{id}{key}"), None, &[])
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{id}");
    }
    let empty = app
        .rpc_raw(Method::POST, &format!("/v2/rpc/{key}"), None, &[])
        .await;
    assert_eq!(
        (empty.status, empty.body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            r#"{"error":"RPC ID must be set","message":"RPC ID must be set","code":3}"#
        )
    );
    for unknown in ["Nope", "HealthCheck/"] {
        let reply = app
            .rpc_raw(Method::POST, &format!("/v2/rpc/{unknown}{key}"), None, &[])
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (
                StatusCode::NOT_FOUND,
                r#"{"error":"RPC function not found","message":"RPC function not found","code":5}"#
            ),
            "{unknown}"
        );
    }
    let put = app
        .rpc_raw(Method::PUT, "/v2/rpc/HealthCheck", None, &[])
        .await;
    assert_eq!(
        (put.status, put.body.as_str()),
        (
            StatusCode::NOT_IMPLEMENTED,
            r#"{"code":12,"message":"Method Not Allowed"}"#
        )
    );
    let options = app
        .rpc_raw(Method::OPTIONS, "/v2/rpc/HealthCheck", None, &[])
        .await;
    assert_eq!(options.status, StatusCode::OK);
    assert_eq!(options.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn post_bodies_must_be_a_json_string_unless_unwrapped() {
    let app = TestApp::spawn().await;
    let path = format!("/v2/rpc/HealthCheck?http_key={HTTP_KEY}");

    for body in ["", "null", "\"\""] {
        let reply = app
            .rpc_raw(Method::POST, &path, Some(body.into()), &[])
            .await;
        assert_eq!(reply.payload()["status"], "ok", "body {body:?}");
    }
    for body in ["{}", "[1]", "42", "{not json", "\u{fffd}"] {
        let reply = app
            .rpc_raw(
                Method::POST,
                &path,
                Some(body.into()),
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::BAD_REQUEST, NOT_A_STRING),
            "body {body:?}"
        );
    }
    let unwrapped = app
        .rpc_raw(
            Method::POST,
            &format!("{path}&unwrap=false"),
            Some(Vec::new()),
            &[],
        )
        .await;
    assert_eq!(unwrapped.status, StatusCode::OK);
    assert_eq!(
        unwrapped.headers[header::CONTENT_TYPE],
        "text/plain",
        "no request type: text/plain"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&unwrapped.body).unwrap()["status"],
        "ok"
    );
    assert_eq!(
        unwrapped.headers[header::CACHE_CONTROL],
        "no-store, no-cache, must-revalidate"
    );
}

#[tokio::test]
async fn rpc_errors_use_nakamas_body_with_the_mapped_status() {
    let app = TestApp::spawn().await;

    let forbidden = app
        .rpc("UpdateRemoteConfig", HTTP_KEY, json!({"config": {}}))
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    let body = forbidden.json();
    assert_eq!(body["code"], 7);
    assert_eq!(body["error"], body["message"]);
    assert_eq!(
        forbidden.body.find("\"code\""),
        Some(1),
        "keys in Go's alphabetical order: {}",
        forbidden.body
    );

    let missing = app
        .rpc(
            "GetExperimentAssignment",
            HTTP_KEY,
            json!({"userId": "u", "experimentId": "nope"}),
        )
        .await;
    assert_eq!(
        (missing.status, missing.json()["code"].clone()),
        (StatusCode::NOT_FOUND, json!(5))
    );

    let no_user = app.rpc("FetchRemoteConfig", HTTP_KEY, json!({})).await;
    assert_eq!(
        (no_user.status, no_user.json()["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(3))
    );
    assert_eq!(no_user.json()["error"]["errors"][0]["field"], "userId");

    let wrong_type = app
        .rpc("FetchRemoteConfig", HTTP_KEY, json!({"userId": 42}))
        .await;
    assert!(
        wrong_type.json()["message"]
            .as_str()
            .unwrap()
            .contains("must be a string")
    );

    for payload in ["[1]", "{broken", "\"text\""] {
        let body = serde_json::to_vec(&Value::String(payload.to_owned())).unwrap();
        let reply = app
            .rpc_raw(
                Method::POST,
                &format!("/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}"),
                Some(body),
                &[],
            )
            .await;
        assert_eq!(
            (reply.status, reply.json()["code"].clone()),
            (StatusCode::BAD_REQUEST, json!(3)),
            "{payload}"
        );
    }
}

#[tokio::test]
async fn a_bad_batch_names_every_bad_event_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let batch = json!({"events": [
        {"eventId": "ok-1", "userId": "u", "eventName": "fine"},
        {"userId": 7, "eventName": "fine"},
        "not an event",
        {"userId": "u"},
        {"userId": "u", "eventName": "fine", "timestamp": "whenever", "properties": [1]},
    ]});

    let reply = app.rpc("AnalyticsCollectEvents", HTTP_KEY, batch).await;

    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let details: Vec<(u64, String)> = reply.json()["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        details,
        [
            (1, "userId".into()),
            (2, "event".into()),
            (3, "eventName".into()),
            (4, "properties".into()),
            (4, "timestamp".into())
        ]
    );
    let history = app
        .rpc("AnalyticsGetUserEvents", HTTP_KEY, json!({"userId": "u"}))
        .await
        .payload();
    assert_eq!(history["events"], json!([]));
}

#[tokio::test]
async fn user_events_page_with_limit_and_cursor() {
    let app = TestApp::spawn().await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"eventId": format!("p{i}"), "userId": "pager", "eventName": "tick", "timestamp": 1_700_000_000 + i}))
        .collect();
    app.rpc(
        "AnalyticsCollectEvents",
        HTTP_KEY,
        json!({"events": events}),
    )
    .await
    .payload();

    let first = app
        .rpc(
            "AnalyticsGetUserEvents",
            HTTP_KEY,
            json!({"userId": "pager", "limit": 3}),
        )
        .await
        .payload();
    let rest = app
        .rpc(
            "AnalyticsGetUserEvents",
            HTTP_KEY,
            json!({"userId": "pager", "limit": 3, "cursor": first["nextCursor"]}),
        )
        .await
        .payload();

    let ids = |page: &Value| {
        page["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["eventId"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&first), ["p4", "p3", "p2"]);
    assert_eq!(ids(&rest), ["p1", "p0"]);
    assert_eq!(rest["nextCursor"], Value::Null);
    let bad = app
        .rpc(
            "AnalyticsGetUserEvents",
            HTTP_KEY,
            json!({"userId": "pager", "cursor": "bogus"}),
        )
        .await;
    assert_eq!(bad.json()["error"]["errors"][0]["field"], "cursor");
}

#[tokio::test]
async fn bodies_over_one_mebibyte_get_nakamas_too_large_reply() {
    let app = TestApp::spawn().await;
    let path = format!("/v2/rpc/HealthCheck?http_key={HTTP_KEY}&unwrap");

    let at_limit = app
        .rpc_raw(Method::POST, &path, Some(vec![b' '; 1024 * 1024]), &[])
        .await;
    let over = app
        .rpc_raw(Method::POST, &path, Some(vec![b' '; 1024 * 1024 + 1]), &[])
        .await;

    assert_eq!(at_limit.status, StatusCode::OK);
    assert_eq!(
        (over.status, over.body.as_str()),
        (
            StatusCode::BAD_REQUEST,
            r#"{"code":3, "message":"http: request body too large"}"#
        )
    );
}

#[tokio::test]
async fn gzip_bodies_are_decompressed_and_replies_compressed_on_request() {
    let app = TestApp::spawn().await;
    let payload = serde_json::to_vec(&Value::String(json!({"userId": "zip"}).to_string())).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&payload).unwrap();
    let compressed = encoder.finish().unwrap();

    let reply = app
        .rpc_raw(
            Method::POST,
            &format!("/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}"),
            Some(compressed),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(reply.payload()["userId"], "zip");

    let response = app
        .client
        .post(app.url(&format!("/v2/rpc/DetailedHealthCheck?http_key={HTTP_KEY}")))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let bytes = response.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .unwrap();
    assert!(text.starts_with("{\"payload\":"), "{text}");
}

#[tokio::test]
async fn a_repeated_fetch_remote_config_is_served_from_cache_in_both_forms_until_a_write() {
    let app = TestApp::spawn().await;
    app.set_config(None, None, json!({"coins": 10}), false)
        .await;
    let payload = json!({"userId": "rpc-cached"});
    let first = app
        .rpc("FetchRemoteConfig", HTTP_KEY, payload.clone())
        .await;
    app.set_every_config_behind_the_servers_back(json!({"coins": 99}))
        .await;

    // Byte for byte the same reply, wrapped and unwrapped (the same payload text, the same entry).
    let again = app
        .rpc("FetchRemoteConfig", HTTP_KEY, payload.clone())
        .await;
    assert_eq!(again.body, first.body);
    let unwrapped = app
        .rpc_unwrapped("FetchRemoteConfig", HTTP_KEY, payload.clone())
        .await;
    assert_eq!(unwrapped.json(), first.payload());
    assert_eq!(unwrapped.headers[header::CONTENT_TYPE], "application/json");
    let stats = app
        .gql("{ health { cache { hits misses } } }", json!({}))
        .await;
    assert_eq!(stats["health"]["cache"], json!({"hits": 2, "misses": 1}));

    app.upsert_experiment(json!({"id": "unrelated", "name": "Unrelated", "cohorts": {"a": 1}}))
        .await;
    let after_write = app.rpc("FetchRemoteConfig", HTTP_KEY, payload).await;
    assert_eq!(after_write.payload()["config"], json!({"coins": 99}));
}

/// Nakama checks the key, then the method and id, then reads the body: an encoding it cannot
/// decode changes nothing before that. Unknown encodings are read as they are; a corrupt gzip body
/// is a 400 whose `error` is a string, like every transport error.
#[tokio::test]
async fn content_encodings_are_handled_after_the_key_in_nakamas_order() {
    let app = TestApp::spawn().await;
    let send = |method: reqwest::Method, path: &str, encoding: &'static str, body: Vec<u8>| {
        app.client
            .request(method, app.url(path))
            .header("content-encoding", encoding)
            .body(body)
            .send()
    };
    let no_key = send(
        reqwest::Method::POST,
        "/v2/rpc/HealthCheck",
        "br",
        b"\"\"".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(no_key.status(), StatusCode::UNAUTHORIZED);
    let put = send(
        reqwest::Method::PUT,
        "/v2/rpc/HealthCheck",
        "br",
        b"\"\"".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(put.status(), StatusCode::NOT_IMPLEMENTED);
    let unknown = send(
        reqwest::Method::POST,
        "/v2/rpc/HealthCheck?http_key=defaulthttpkey",
        "br",
        b"\"\"".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        unknown.status(),
        StatusCode::OK,
        "an unknown encoding is read as it is"
    );
    let corrupt = send(
        reqwest::Method::POST,
        "/v2/rpc/HealthCheck?http_key=defaulthttpkey",
        "gzip",
        b"\x1f\x8b\x08\x00not gzip at all".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(corrupt.status(), StatusCode::BAD_REQUEST);
    let body: Value = corrupt.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["error"], body["message"]);
}

/// Legacy clients read only `message`: a bad batch names every bad event in it.
#[tokio::test]
async fn a_bad_batch_message_names_every_bad_event() {
    let app = TestApp::spawn().await;
    let events: Vec<Value> = (0..6)
        .map(|i| json!({"userId": "u", "eventName": if i == 2 { "fine" } else { "bad name" }}))
        .collect();
    let reply = app
        .rpc(
            "AnalyticsCollectEvents",
            HTTP_KEY,
            json!({"events": events}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message = reply.json()["message"].as_str().unwrap().to_owned();
    assert!(
        message.starts_with("5 of 6 events are invalid"),
        "{message}"
    );
    for index in [0, 1, 3, 4, 5] {
        assert!(
            message.contains(&format!("events[{index}].eventName")),
            "{message}"
        );
    }
    assert!(!message.contains("events[2]"), "{message}");
}

/// Errors name the RPC's own fields (`limit`, `cursor`), not GraphQL's (`first`, `after`).
#[tokio::test]
async fn user_events_errors_name_the_rpc_fields() {
    let app = TestApp::spawn().await;
    let reply = app
        .rpc(
            "AnalyticsGetUserEvents",
            HTTP_KEY,
            json!({"userId": "u", "limit": -1, "cursor": "not a cursor"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body = reply.json();
    let fields: Vec<&str> = body["error"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["cursor", "limit"], "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid cursor:"),
        "{body}"
    );
}
