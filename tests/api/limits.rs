//! Limits and CSRF rules on /graphql.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{HTTP_KEY, TestApp, TestDatabase};

#[tokio::test]
async fn mutations_over_get_are_refused_and_queries_over_get_work() {
    let app = TestApp::spawn().await;
    let mutation =
        "mutation { collectEvents(events: [{userId: \"u\", eventName: \"e\"}]) { accepted } }";

    let response = app
        .client
        .get(app.url("/graphql"))
        .query(&[("query", mutation), ("http_key", HTTP_KEY)])
        .header("graphql-preflight", "1")
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let history = app
        .gql("{ userEvents(userId: \"u\") { nodes { id } } }", json!({}))
        .await;
    assert_eq!(
        history["userEvents"]["nodes"],
        json!([]),
        "nothing was stored"
    );
}

#[tokio::test]
async fn a_non_json_post_without_a_preflighted_header_is_refused() {
    let app = TestApp::spawn().await;
    let body = json!({"query": "mutation { collectEvents(events: [{userId: \"u\", eventName: \"e\"}]) { accepted } }"}).to_string();

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut request = app
            .client
            .post(app.url(&format!("/graphql?http_key={HTTP_KEY}")))
            .body(body.clone());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let error: Value = response.json().await.unwrap();
        assert_eq!(
            error["errors"][0]["extensions"]["errors"][0]["field"],
            "Content-Type"
        );
    }
    // GraphQL over HTTP takes JSON bodies only, whatever other headers say.
    let preflighted = app
        .graphql_post()
        .header("content-type", "text/plain")
        .body(json!({"query": "{ health { status } }"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(preflighted.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn batches_are_capped_at_ten_operations() {
    let app = TestApp::spawn().await;
    let batch = |n: usize| Value::Array(vec![json!({"query": "{ health { status } }"}); n]);

    let ten = app.graphql_post().json(&batch(10)).send().await.unwrap();
    let eleven = app.graphql_post().json(&batch(11)).send().await.unwrap();

    assert_eq!(ten.status(), StatusCode::OK);
    assert_eq!(
        ten.json::<Value>().await.unwrap().as_array().unwrap().len(),
        10
    );
    assert_eq!(eleven.status(), StatusCode::BAD_REQUEST);
    let error: Value = eleven.json().await.unwrap();
    assert!(
        error["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 10"),
        "{error}"
    );
}

#[tokio::test]
async fn deep_or_wide_queries_are_refused_before_they_run() {
    let app = TestApp::spawn().await;
    let deep = "{ health { database { ok } cache { hits } } }";
    // 13 levels of data; and introspection with 40 nested `ofType`, a known DoS shape.
    let too_deep_data = format!("{{ {} id {} }}", "a { ".repeat(12), "} ".repeat(12));
    let nested = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(40),
        "} ".repeat(40)
    );
    let wide: String = (0..2_100)
        .map(|i| format!("a{i}: health {{ status }} "))
        .collect();

    let (_, fine) = app.gql_as(Some(HTTP_KEY), deep, json!({})).await;
    let (_, too_deep) = app.gql_as(Some(HTTP_KEY), &nested, json!({})).await;
    let (_, too_deep_data) = app.gql_as(Some(HTTP_KEY), &too_deep_data, json!({})).await;
    let (_, too_wide) = app
        .gql_as(Some(HTTP_KEY), &format!("{{ {wide} }}"), json!({}))
        .await;

    assert!(fine.get("errors").is_none(), "{fine}");
    for too_deep in [too_deep, too_deep_data] {
        assert!(
            too_deep["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("levels deep"),
            "{too_deep}"
        );
    }
    assert!(
        too_wide["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("complex"),
        "{too_wide}"
    );
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let app = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.server.disable_introspection = true;
    })
    .await;

    let (_, body) = app
        .gql_as(
            Some(HTTP_KEY),
            "{ __schema { queryType { name } } }",
            json!({}),
        )
        .await;
    let published = app
        .client
        .get(app.url("/playground/schema.json"))
        .send()
        .await
        .unwrap();

    assert!(
        body.get("errors").is_some() || body["data"]["__schema"].is_null(),
        "{body}"
    );
    assert_eq!(published.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.gql("{ health { status } }", json!({})).await["health"]["status"],
        "ok"
    );
}

#[tokio::test]
async fn invalid_utf8_gets_400_with_a_clear_error_on_both_transports() {
    let app = TestApp::spawn().await;
    let bytes = vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'];

    let graphql = app
        .graphql_post()
        .header("content-type", "application/json")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    let rpc = app
        .client
        .post(app.url(&format!(
            "/v2/rpc/FetchRemoteConfig?http_key={HTTP_KEY}&unwrap"
        )))
        .body(bytes)
        .send()
        .await
        .unwrap();

    assert_eq!(graphql.status(), StatusCode::BAD_REQUEST);
    let body: Value = graphql.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(rpc.status(), StatusCode::BAD_REQUEST);
    let body: Value = rpc.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"].as_str().unwrap().contains("UTF-8"),
        "{body}"
    );
}
