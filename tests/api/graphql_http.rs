//! GraphQL over HTTP as the spec and other people's tools expect it: the `graphql-http` audit,
//! graphql-js's standard introspection queries, content negotiation, request errors, CSRF.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::{HTTP_KEY, TestApp, TestDatabase, run_node_test};

#[tokio::test]
async fn the_graphql_http_audit_passes_with_no_warnings() {
    let app = TestApp::spawn().await;
    let (passed, output) = run_node_test(
        "graphql-http",
        "audit.test.mjs",
        &[("OCTP_PORT", app.address.port().to_string())],
    )
    .await;
    assert!(passed, "the audit failed:\n{output}");
    assert!(output.contains(", 0 not ok"), "{output}");
}

#[tokio::test]
async fn graphql_js_standard_introspection_queries_build_the_committed_schema() {
    let app = TestApp::spawn().await;
    let (passed, output) = run_node_test(
        "graphql-http",
        "introspection.test.mjs",
        &[("OCTP_PORT", app.address.port().to_string())],
    )
    .await;
    assert!(passed, "introspection failed:\n{output}");
    assert!(output.contains("pass 4"), "every case ran:\n{output}");
}

/// With introspection off nothing hands out the schema: no `__schema`, no suggestions, no type
/// names in validation errors.
#[tokio::test]
async fn introspection_off_refuses_it_and_hides_names_from_errors() {
    let app = TestApp::spawn_with(TestDatabase::create().await, |config| {
        config.server.disable_introspection = true;
    })
    .await;
    let (_, schema) = app
        .gql_as(Some(HTTP_KEY), "{ __schema { types { name } } }", json!({}))
        .await;
    assert_eq!(
        schema["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{schema}"
    );
    assert!(
        schema["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("introspection is disabled")
    );
    assert!(schema.get("data").is_none(), "{schema}");

    for query in [
        "{ helth { status } }",
        "{ health }",
        "{ health { status(x: 1) } }",
    ] {
        let (_, body) = app.gql_as(Some(HTTP_KEY), query, json!({})).await;
        let text = body.to_string();
        assert!(body["errors"].is_array(), "{query}: {text}");
        for leak in ["Did you mean", "Health", "Query", "health"] {
            assert!(!text.contains(leak), "{query} leaks {leak:?}: {text}");
        }
    }
}

/// Errors of the request itself (before any GraphQL runs) have no `data` and no locations.
#[tokio::test]
async fn request_errors_carry_neither_data_nor_locations() {
    let app = TestApp::spawn().await;
    let bad_json = app
        .graphql_post()
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    let no_key = app
        .client
        .post(app.url("/graphql"))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    let too_large = app
        .graphql_post()
        .header("content-type", "application/json")
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    let batch = app
        .graphql_post()
        .json(&vec![json!({"query": "{ __typename }"}); 11])
        .send()
        .await
        .unwrap();
    let mutation_over_get = app
        .client
        .get(app.url("/graphql"))
        .bearer_auth(HTTP_KEY)
        .query(&[("query", "mutation { __typename }")])
        .send()
        .await
        .unwrap();
    for (response, status) in [
        (bad_json, StatusCode::BAD_REQUEST),
        (no_key, StatusCode::UNAUTHORIZED),
        (too_large, StatusCode::PAYLOAD_TOO_LARGE),
        (batch, StatusCode::BAD_REQUEST),
        (mutation_over_get, StatusCode::METHOD_NOT_ALLOWED),
    ] {
        assert_eq!(response.status(), status);
        let body: Value = response.json().await.unwrap();
        assert!(body.get("data").is_none(), "{body}");
        assert!(body["errors"][0].get("locations").is_none(), "{body}");
        assert!(
            body["errors"][0]["extensions"]["code"].is_string(),
            "{body}"
        );
    }
}

/// `Accept` decides the media type; with `application/graphql-response+json` a document that does
/// not parse or validate is a 400 without `data`, with `application/json` a 200.
#[tokio::test]
async fn the_accept_header_decides_media_type_and_status() {
    let app = TestApp::spawn().await;
    let ask = |accept: Option<&'static str>, query: &'static str| {
        let mut request = app.graphql_post().json(&json!({"query": query}));
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        request.send()
    };
    let response_json = "application/graphql-response+json";
    for (accept, expected) in [
        (None, "application/json"),
        (Some("application/json"), "application/json"),
        (Some(response_json), response_json),
        (
            Some("application/graphql-response+json, application/json;q=0.9"),
            response_json,
        ),
        (Some("text/html, */*;q=0.1"), "application/json"),
    ] {
        // Twice: the second answer comes from the reply cache and must be labelled the same.
        for _ in 0..2 {
            let reply = ask(
                accept,
                "{ health { status } remoteConfig(userId: \"u\") { version } }",
            )
            .await
            .unwrap();
            assert_eq!(reply.status(), StatusCode::OK);
            let content_type = reply.headers()[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                content_type.starts_with(expected),
                "{accept:?}: {content_type}"
            );
        }
    }
    for query in ["{", "{ nope }"] {
        let strict = ask(Some(response_json), query).await.unwrap();
        assert_eq!(strict.status(), StatusCode::BAD_REQUEST, "{query}");
        let body: Value = strict.json().await.unwrap();
        assert!(body.get("data").is_none(), "{body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        let legacy = ask(Some("application/json"), query).await.unwrap();
        assert_eq!(legacy.status(), StatusCode::OK, "{query}");
    }
    let (_, syntax) = app
        .gql_as(Some(HTTP_KEY), "{ health { status }", json!({}))
        .await;
    assert_eq!(
        syntax["errors"][0]["message"],
        "syntax error at line 1, column 20: expected selection"
    );
}

/// A GET runs only with a header no cross-site page can send; a key in the URL alone is not
/// enough. A document holding a query and a mutation may be sent over GET to run the query.
#[tokio::test]
async fn a_get_needs_a_preflighted_header_and_may_name_its_query() {
    let app = TestApp::spawn().await;
    let get = |extra: Option<(&'static str, &'static str)>,
               query: &'static str,
               operation: Option<&'static str>| {
        let mut parameters = vec![("query", query), ("http_key", HTTP_KEY)];
        if let Some(operation) = operation {
            parameters.push(("operationName", operation));
        }
        let mut request = app.client.get(app.url("/graphql")).query(&parameters);
        if let Some((name, value)) = extra {
            request = request.header(name, value);
        }
        request.send()
    };
    let bare = get(None, "{ __typename }", None).await.unwrap();
    assert_eq!(bare.status(), StatusCode::BAD_REQUEST);
    let body: Value = bare.json().await.unwrap();
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("GraphQL-Preflight"),
        "{body}"
    );
    for header in [
        ("graphql-preflight", "1"),
        ("x-requested-with", "XMLHttpRequest"),
        ("authorization", "Bearer defaulthttpkey"),
    ] {
        let reply = get(Some(header), "{ __typename }", None).await.unwrap();
        assert_eq!(reply.status(), StatusCode::OK, "{header:?}");
    }
    let mixed = "query Q { __typename } mutation M { collectEvents(events: [{userId: \"u\", eventName: \"e\"}]) { accepted } }";
    let query = get(Some(("graphql-preflight", "1")), mixed, Some("Q"))
        .await
        .unwrap();
    assert_eq!(query.status(), StatusCode::OK);
    let body: Value = query.json().await.unwrap();
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let mutation = get(Some(("graphql-preflight", "1")), mixed, Some("M"))
        .await
        .unwrap();
    assert_eq!(mutation.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// SQLite stores instants as text, which compares right only for four-digit years: instants past
/// 9999 are refused at the edge, on both backends alike.
#[tokio::test]
async fn instants_outside_years_1_to_9999_are_refused_on_both_backends() {
    let app = TestApp::spawn().await;
    for (argument, value) in [
        ("since", json!(253_402_300_800_000i64)),
        ("until", json!("10000-01-01T00:00:00Z")),
    ] {
        let (_, body) = app
            .gql_as(
                Some(HTTP_KEY),
                &format!("query($t: DateTime) {{ userEvents(userId: \"u\", {argument}: $t) {{ nodes {{ id }} }} }}"),
                json!({"t": value}),
            )
            .await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["errors"][0]["field"], argument,
            "{body}"
        );
    }
}

/// Keys come in the order of the selection set, every time (the executor used to put root fields
/// in the order they completed).
#[tokio::test]
async fn response_keys_follow_the_selection_set() {
    let app = TestApp::spawn().await;
    let query = "{ zeta: health { version status } alpha: activeExperiments { id } __typename mid: remoteConfig(userId: \"u\") { version userId } }";
    for _ in 0..5 {
        let text = app
            .graphql_post()
            .json(&json!({"query": query}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let positions: Vec<usize> = [
            "\"zeta\"",
            "\"alpha\"",
            "\"__typename\"",
            "\"mid\"",
            "\"version\":0",
            "\"userId\"",
        ]
        .iter()
        .map(|key| text.find(key).unwrap_or_else(|| panic!("{key} in {text}")))
        .collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{text}");
    }
}

/// A failed non-null field nulls its nearest nullable parent: a root field of type `Assignment!`
/// nulls `data`; a nullable field fails alone and is present as null.
#[tokio::test]
async fn failed_fields_null_their_nearest_nullable_parent() {
    let app = TestApp::spawn().await;
    let (_, root) = app
        .gql_as(
            Some(HTTP_KEY),
            "{ health { status } experimentAssignment(userId: \"u\", experimentId: \"nope\") { cohort } }",
            json!({}),
        )
        .await;
    assert_eq!(root["data"], Value::Null, "{root}");
    assert_eq!(root["errors"][0]["path"], json!(["experimentAssignment"]));
    let (_, nullable) = app
        .gql_as(
            Some(crate::helpers::ADMIN_KEY),
            "{ experiment(id: \"no such id!\") { id } health { status } }",
            json!({}),
        )
        .await;
    assert_eq!(
        nullable["data"],
        json!({"experiment": null, "health": {"status": "ok"}}),
        "{nullable}"
    );
}
