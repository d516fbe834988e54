//! Analytics through the typed client generated from the committed schema.graphql.

use std::collections::HashSet;

use graphql_client::GraphQLQuery;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestApp, skip};

type DateTime = Value;
#[allow(clippy::upper_case_acronyms)]
type JSON = Value;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/graphql/collect_events.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone, Default"
)]
struct CollectEvents;

#[derive(GraphQLQuery)]
#[graphql(
    schema_path = "schema.graphql",
    query_path = "tests/graphql/user_events.graphql",
    response_derives = "Debug, Clone, PartialEq",
    variables_derives = "Debug, Clone, Default"
)]
struct UserEvents;

use collect_events::EventInput;

fn event(user: &str, name: &str) -> EventInput {
    EventInput {
        event_id: None,
        user_id: user.to_owned(),
        session_id: None,
        event_name: name.to_owned(),
        timestamp: None,
        properties: None,
        experiment_id: None,
        cohort: None,
    }
}

fn with_id(mut input: EventInput, id: &str) -> EventInput {
    input.event_id = Some(id.to_owned());
    input
}

fn at(mut input: EventInput, timestamp: Value) -> EventInput {
    input.timestamp = Some(timestamp);
    input
}

impl TestApp {
    async fn typed<Q: GraphQLQuery>(
        &self,
        variables: Q::Variables,
    ) -> graphql_client::Response<Q::ResponseData> {
        self.client
            .post(self.url("/graphql"))
            .bearer_auth(HTTP_KEY)
            .json(&Q::build_query(variables))
            .send()
            .await
            .expect("the request is answered")
            .json()
            .await
            .expect("a GraphQL response")
    }

    async fn collect(&self, events: Vec<EventInput>) -> collect_events::CollectEventsCollectEvents {
        let response = self
            .typed::<CollectEvents>(collect_events::Variables { events })
            .await;
        assert!(
            response.errors.is_none(),
            "unexpected errors: {:?}",
            response.errors
        );
        response.data.unwrap().collect_events
    }

    /// The error of a batch that must be refused, as raw JSON.
    async fn collect_refused(&self, events: Vec<EventInput>) -> Value {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(HTTP_KEY)
            .json(&CollectEvents::build_query(collect_events::Variables {
                events,
            }))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        body["errors"][0].clone()
    }

    async fn history(
        &self,
        variables: user_events::Variables,
    ) -> user_events::UserEventsUserEvents {
        let response = self.typed::<UserEvents>(variables).await;
        assert!(
            response.errors.is_none(),
            "unexpected errors: {:?}",
            response.errors
        );
        response.data.unwrap().user_events
    }

    async fn all_event_ids(&self, user: &str) -> Vec<String> {
        let page = self
            .history(user_events::Variables {
                user_id: user.to_owned(),
                first: Some(500),
                ..Default::default()
            })
            .await;
        page.edges
            .into_iter()
            .map(|edge| edge.node.event_id)
            .collect()
    }
}

fn bad_fields(error: &Value) -> Vec<(u64, String)> {
    error["extensions"]["errors"]
        .as_array()
        .expect("extensions.errors")
        .iter()
        .map(|e| {
            (
                e["index"].as_u64().unwrap(),
                e["field"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_100_event_batch_is_stored_and_read_back_newest_first() {
    let app = TestApp::spawn().await;
    let events: Vec<EventInput> = (0..100)
        .map(|i| {
            let mut input = at(
                with_id(event("player-1", "level_up"), &format!("e-{i:03}")),
                json!(1_700_000_000 + i),
            );
            input.properties =
                Some(json!({"level": i, "tags": ["a", "b"], "nested": {"deep": {"x": i}}}));
            input.session_id = Some("s-1".to_owned());
            input
        })
        .collect();

    let outcome = app.collect(events).await;

    assert_eq!(outcome.accepted, 100);
    assert_eq!(outcome.duplicates, 0);
    assert_eq!(
        outcome.event_ids,
        (0..100).map(|i| format!("e-{i:03}")).collect::<Vec<_>>()
    );
    let page = app
        .history(user_events::Variables {
            user_id: "player-1".to_owned(),
            first: Some(100),
            ..Default::default()
        })
        .await;
    assert_eq!(page.edges.len(), 100);
    assert!(!page.page_info.has_next_page);
    let newest = &page.edges[0].node;
    assert_eq!(newest.event_id, "e-099");
    assert_eq!(newest.timestamp, json!("2023-11-14T22:14:59Z"));
    assert_eq!(newest.session_id.as_deref(), Some("s-1"));
    assert_eq!(
        newest.properties,
        json!({"level": 99, "tags": ["a", "b"], "nested": {"deep": {"x": 99}}})
    );
    assert_eq!(page.edges[99].node.event_id, "e-000");
}

#[tokio::test]
async fn events_without_ids_get_uuids_returned_in_input_order() {
    let app = TestApp::spawn().await;

    let outcome = app
        .collect(vec![
            event("u", "a"),
            with_id(event("u", "b"), "mine"),
            event("u", "c"),
        ])
        .await;

    assert_eq!(outcome.accepted, 3);
    assert_eq!(outcome.event_ids[1], "mine");
    for generated in [&outcome.event_ids[0], &outcome.event_ids[2]] {
        assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
    }
    let stored: HashSet<String> = app.all_event_ids("u").await.into_iter().collect();
    assert_eq!(stored, outcome.event_ids.into_iter().collect());
}

#[tokio::test]
async fn retries_and_repeats_inside_a_batch_are_stored_once() {
    let app = TestApp::spawn().await;
    let batch = vec![
        with_id(event("u", "first"), "a"),
        with_id(event("u", "only"), "b"),
        with_id(event("u", "repeat"), "a"),
    ];

    let first = app.collect(batch.clone()).await;
    let retry = app.collect(batch).await;

    assert_eq!((first.accepted, first.duplicates), (2, 1));
    assert_eq!(first.event_ids, ["a", "b", "a"]);
    assert_eq!((retry.accepted, retry.duplicates), (0, 3));
    let page = app
        .history(user_events::Variables {
            user_id: "u".into(),
            ..Default::default()
        })
        .await;
    let names: HashSet<String> = page
        .edges
        .iter()
        .map(|e| e.node.event_name.clone())
        .collect();
    assert_eq!(page.edges.len(), 2);
    assert!(
        names.contains("first") && !names.contains("repeat"),
        "the first occurrence is stored"
    );
}

#[tokio::test]
async fn a_batch_with_any_bad_event_stores_nothing_and_names_every_bad_event() {
    let app = TestApp::spawn().await;
    let mut bad_properties = event("u", "ok");
    bad_properties.properties = Some(json!("not an object"));
    let batch = vec![
        with_id(event("u", "fine"), "good-1"),
        event("", "fine"),
        event("u", "has space"),
        bad_properties,
        at(event("u", "fine"), json!("last tuesday")),
        at(event("u", "fine"), json!(true)),
        with_id(event("u", "fine"), "good-2"),
    ];

    let error = app.collect_refused(batch).await;

    assert_eq!(
        bad_fields(&error),
        [
            (1, "userId".to_owned()),
            (2, "eventName".to_owned()),
            (3, "properties".to_owned()),
            (4, "timestamp".to_owned()),
            (5, "timestamp".to_owned()),
        ]
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("5 of 7 events are invalid")
    );
    assert!(
        app.all_event_ids("u").await.is_empty(),
        "nothing may be stored"
    );
}

#[tokio::test]
async fn batches_hold_one_to_one_hundred_events() {
    let app = TestApp::spawn().await;

    let empty = app.collect_refused(vec![]).await;
    let too_many = app.collect_refused(vec![event("u", "e"); 101]).await;

    assert_eq!(empty["extensions"]["errors"][0]["field"], "events");
    assert!(too_many["message"].as_str().unwrap().contains("got 101"));
    assert!(app.all_event_ids("u").await.is_empty());
}

#[tokio::test]
async fn text_fields_are_checked_at_and_beyond_their_limits() {
    let app = TestApp::spawn().await;
    let long = |n: usize| "é".repeat(n);
    let slug = |n: usize| "a".repeat(n);
    let mut at_limit = event(&long(128), &slug(128));
    at_limit.event_id = Some(long(128));
    at_limit.session_id = Some(long(128));
    at_limit.experiment_id = Some(slug(128));
    at_limit.cohort = Some(slug(128));

    assert_eq!(app.collect(vec![at_limit]).await.accepted, 1);

    let cases: Vec<(EventInput, &str)> = vec![
        (event(&long(129), "e"), "userId"),
        (event("u\u{7}", "e"), "userId"),
        (event("u", &slug(129)), "eventName"),
        (event("u", ""), "eventName"),
        (event("u", "naïve"), "eventName"),
        (with_id(event("u", "e"), &long(129)), "eventId"),
        (with_id(event("u", "e"), ""), "eventId"),
        (
            EventInput {
                session_id: Some(long(129)),
                ..event("u", "e")
            },
            "sessionId",
        ),
        (
            EventInput {
                session_id: Some("a\nb".into()),
                ..event("u", "e")
            },
            "sessionId",
        ),
        (
            EventInput {
                experiment_id: Some(slug(129)),
                ..event("u", "e")
            },
            "experimentId",
        ),
        (
            EventInput {
                experiment_id: Some("a b".into()),
                ..event("u", "e")
            },
            "experimentId",
        ),
        (
            EventInput {
                cohort: Some(String::new()),
                ..event("u", "e")
            },
            "cohort",
        ),
        (
            EventInput {
                cohort: Some("c/d".into()),
                ..event("u", "e")
            },
            "cohort",
        ),
    ];
    for (input, field) in cases {
        let error = app.collect_refused(vec![input]).await;
        assert_eq!(bad_fields(&error), [(0, field.to_owned())], "{error}");
    }
}

#[tokio::test]
async fn properties_must_be_an_object_of_at_most_16_kib() {
    let app = TestApp::spawn().await;
    // {"k":"xxx…"} is 8 bytes plus the padding.
    let sized = |bytes: usize| json!({"k": "x".repeat(bytes - 8)});
    let mut fits = event("u", "e");
    fits.properties = Some(sized(16_384));
    let mut over = event("u", "e");
    over.properties = Some(sized(16_385));
    let mut array = event("u", "e");
    array.properties = Some(json!([1, 2, 3]));

    assert_eq!(app.collect(vec![fits]).await.accepted, 1);
    for input in [over, array] {
        let error = app.collect_refused(vec![input]).await;
        assert_eq!(bad_fields(&error), [(0, "properties".to_owned())]);
    }
}

#[tokio::test]
async fn timestamps_accept_offsets_and_epochs_and_refuse_out_of_range_values() {
    let app = TestApp::spawn().await;
    let good = vec![
        with_id(
            at(event("u", "offset"), json!("2024-05-01T12:00:00+02:00")),
            "offset",
        ),
        with_id(at(event("u", "seconds"), json!(1_714_557_600)), "seconds"),
        with_id(
            at(event("u", "millis"), json!(1_714_557_600_250_i64)),
            "millis",
        ),
        with_id(
            at(event("u", "fraction"), json!(1_714_557_600.5)),
            "fraction",
        ),
        with_id(at(event("u", "y2k"), json!("2000-01-01T00:00:00Z")), "y2k"),
        with_id(event("u", "absent"), "absent"),
    ];

    app.collect(good).await;

    let page = app
        .history(user_events::Variables {
            user_id: "u".into(),
            ..Default::default()
        })
        .await;
    let by_id = |id: &str| {
        page.edges
            .iter()
            .find(|e| e.node.event_id == id)
            .unwrap()
            .node
            .clone()
    };
    assert_eq!(by_id("offset").timestamp, json!("2024-05-01T10:00:00Z"));
    assert_eq!(by_id("seconds").timestamp, json!("2024-05-01T10:00:00Z"));
    assert_eq!(by_id("millis").timestamp, json!("2024-05-01T10:00:00.250Z"));
    assert_eq!(
        by_id("fraction").timestamp,
        json!("2024-05-01T10:00:00.500Z")
    );
    assert_eq!(by_id("y2k").timestamp, json!("2000-01-01T00:00:00Z"));
    let absent = by_id("absent");
    assert_eq!(
        absent.timestamp, absent.received_at,
        "absent → the receive time"
    );

    let tomorrow_and_a_bit = chrono::Utc::now() + chrono::Duration::hours(25);
    for bad in [
        json!("1999-12-31T23:59:59Z"),
        json!(tomorrow_and_a_bit.to_rfc3339()),
        json!(-5),
        json!("2024-13-01T00:00:00Z"),
        json!("yesterday"),
        json!({"when": "now"}),
    ] {
        let error = app
            .collect_refused(vec![at(event("u", "e"), bad.clone())])
            .await;
        assert_eq!(bad_fields(&error), [(0, "timestamp".to_owned())], "{bad}");
    }
}

#[tokio::test]
async fn unicode_quotes_and_sql_looking_text_are_stored_verbatim() {
    let app = TestApp::spawn().await;
    let tricky = [
        "Ωmega-üser 🎮",
        "robert'); DROP TABLE analytics_events;--",
        "quote \" backslash \\ tab-free",
        "日本語のユーザー",
        // What PostgreSQL's COPY text format would read as NULL, an escape or an end of data.
        "\\N",
        "\\.",
        "ends with a backslash \\",
    ];
    let events = tricky
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let mut input = with_id(event(text, "e"), text);
            input.session_id = Some(text.to_string());
            input.properties =
                Some(json!({"text": text, "emoji": "🔥💯", "n": i, "lines": "a\nb\tc\r\\N\u{7}"}));
            input
        })
        .collect();

    app.collect(events).await;

    for (i, text) in tricky.iter().enumerate() {
        let page = app
            .history(user_events::Variables {
                user_id: text.to_string(),
                ..Default::default()
            })
            .await;
        assert_eq!(page.edges.len(), 1, "{text}");
        let node = &page.edges[0].node;
        assert_eq!(node.event_id, *text);
        assert_eq!(node.user_id, *text);
        assert_eq!(node.session_id.as_deref(), Some(*text));
        assert_eq!(
            node.properties,
            json!({"text": text, "emoji": "🔥💯", "n": i, "lines": "a\nb\tc\r\\N\u{7}"})
        );
    }
}

#[tokio::test]
async fn paging_through_three_pages_while_events_arrive_has_no_gap_or_repeat() {
    let app = TestApp::spawn().await;
    let original: Vec<EventInput> = (0..30)
        .map(|i| {
            with_id(
                at(event("pager", "tick"), json!(1_700_000_000 + i)),
                &format!("old-{i}"),
            )
        })
        .collect();
    app.collect(original).await;
    let page = |after: Option<String>| user_events::Variables {
        user_id: "pager".into(),
        first: Some(10),
        after,
        ..Default::default()
    };

    let mut seen = Vec::new();
    let mut after = None;
    for round in 0..3 {
        let result = app.history(page(after.clone())).await;
        seen.extend(result.edges.iter().map(|edge| edge.node.event_id.clone()));
        assert_eq!(result.page_info.has_next_page, round < 2);
        after = result.page_info.end_cursor;
        // Newer events arrive between pages, including one sharing a timestamp with the page end.
        let arriving = vec![
            with_id(event("pager", "tick"), &format!("new-{round}")),
            with_id(
                at(event("pager", "tick"), json!(1_700_000_029 - 10 * round)),
                &format!("same-ts-{round}"),
            ),
        ];
        app.collect(arriving).await;
    }

    let expected: Vec<String> = (0..30).rev().map(|i| format!("old-{i}")).collect();
    let old_seen: Vec<String> = seen
        .iter()
        .filter(|id| id.starts_with("old-"))
        .cloned()
        .collect();
    assert_eq!(
        old_seen, expected,
        "every original event exactly once, newest first"
    );
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        seen.len(),
        "no repeats: {seen:?}"
    );
}

#[tokio::test]
async fn filters_by_name_and_half_open_time_range_and_caps_first_at_500() {
    let app = TestApp::spawn().await;
    for chunk in 0..6 {
        let batch = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                let name = if n % 2 == 0 { "even" } else { "odd" };
                at(event("heavy", name), json!(1_700_000_000 + n))
            })
            .collect();
        app.collect(batch).await;
    }

    let capped = app
        .history(user_events::Variables {
            user_id: "heavy".into(),
            first: Some(1000),
            ..Default::default()
        })
        .await;
    let odd = app
        .history(user_events::Variables {
            user_id: "heavy".into(),
            event_name: Some("odd".into()),
            first: Some(500),
            ..Default::default()
        })
        .await;
    let window = app
        .history(user_events::Variables {
            user_id: "heavy".into(),
            since: Some(json!(1_700_000_010)),
            until: Some(json!("2023-11-14T22:13:40Z")), // = 1_700_000_020
            ..Default::default()
        })
        .await;

    assert_eq!(capped.edges.len(), 500);
    assert!(capped.page_info.has_next_page);
    assert_eq!(odd.edges.len(), 300);
    assert!(odd.edges.iter().all(|e| e.node.event_name == "odd"));
    let seconds: Vec<i64> = window
        .edges
        .iter()
        .map(|e| {
            chrono::DateTime::parse_from_rfc3339(e.node.timestamp.as_str().unwrap())
                .unwrap()
                .timestamp()
                - 1_700_000_000
        })
        .collect();
    assert_eq!(
        seconds,
        (10..20).rev().collect::<Vec<_>>(),
        "since inclusive, until exclusive"
    );
}

#[tokio::test]
async fn bad_paging_arguments_are_refused_with_the_field_named() {
    let app = TestApp::spawn().await;
    let query = "query($after: String, $first: Int, $since: DateTime) { userEvents(userId: \"u\", after: $after, first: $first, since: $since) { nodes { id } } }";

    for (variables, field) in [
        (json!({"after": "garbage"}), "after"),
        (json!({"first": -1}), "first"),
        (json!({"since": "not a time"}), "since"),
    ] {
        let (_, body) = app.gql_as(Some(HTTP_KEY), query, variables).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
            "{body}"
        );
        assert_eq!(
            body["errors"][0]["extensions"]["errors"][0]["field"], field,
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_event_resolves_its_experiment() {
    let app = TestApp::spawn().await;
    let (_, created) = app
        .gql_as(
            Some(ADMIN_KEY),
            r#"mutation { upsertExperiment(input: {id: "onboarding_v2", name: "Onboarding", cohorts: {control: 0.5, variant_b: 0.5}}) { id } }"#,
            json!({}),
        )
        .await;
    assert_eq!(
        created["data"]["upsertExperiment"]["id"], "onboarding_v2",
        "{created}"
    );
    let mut tagged = event("u", "e");
    tagged.experiment_id = Some("onboarding_v2".into());
    tagged.cohort = Some("control".into());
    let mut unknown = event("u", "e");
    unknown.experiment_id = Some("no_such_experiment".into());
    app.collect(vec![tagged, unknown, event("u", "e")]).await;

    let page = app
        .history(user_events::Variables {
            user_id: "u".into(),
            ..Default::default()
        })
        .await;

    let mut experiments: Vec<Option<String>> = page
        .edges
        .iter()
        .map(|edge| {
            edge.node
                .experiment
                .as_ref()
                .map(|experiment| experiment.name.clone())
        })
        .collect();
    experiments.sort();
    assert_eq!(experiments, [None, None, Some("Onboarding".to_owned())]);
}

/// PostgreSQL may switch a cached prepared statement to a generic plan, which knows nothing of how
/// skewed `user_id` is, and even custom plans for a heavy user prefer scanning the timestamp index.
/// Every shape of the history query must still walk the user's slice of the
/// (user_id, event_timestamp, id) index, under generic and custom plans alike.
#[tokio::test]
async fn history_queries_stay_on_the_users_index_slice_under_skew_on_postgres() {
    use octp_backend::domain::{
        events::{UserEventsQuery, user_events_statement},
        validate::TimestampValue,
    };
    use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

    let app = TestApp::spawn().await;
    if !app.database.is_postgres() {
        // SQLite has a single plan shape and no plan cache to go generic; .ci/run's PostgreSQL pass runs it.
        skip(
            "history_queries_stay_on_the_users_index_slice_under_skew_on_postgres",
            "PostgreSQL only (set TEST_DATABASE_URL)",
            false,
        );
        return;
    }
    let seeding = app.database.connect().await;
    for sql in [
        "INSERT INTO analytics_events (event_id, user_id, event_name, event_timestamp, received_at, properties) \
         SELECT 'h' || n, 'heavy', 'name_' || (n % 50), timestamptz '2024-01-01' + n * interval '1 second', now(), '{}' \
         FROM generate_series(1, 60000) AS n",
        "INSERT INTO analytics_events (event_id, user_id, event_name, event_timestamp, received_at, properties) \
         SELECT 'l' || n, 'light-' || (n % 3000), 'name_' || (n % 50), timestamptz '2024-01-01' + n * interval '1 minute', now(), '{}' \
         FROM generate_series(1, 15000) AS n",
        "ANALYZE analytics_events",
    ] {
        seeding.execute_unprepared(sql).await.unwrap();
    }
    let cursor = app
        .history(user_events::Variables {
            user_id: "heavy".into(),
            first: Some(5),
            ..Default::default()
        })
        .await
        .page_info
        .end_cursor;
    let text = |t: &str| Some(TimestampValue::Text(t.into()));
    let shapes = [
        UserEventsQuery {
            user_id: "heavy".into(),
            ..Default::default()
        },
        UserEventsQuery {
            user_id: "light-7".into(),
            ..Default::default()
        },
        UserEventsQuery {
            user_id: "heavy".into(),
            event_name: Some("name_3".into()),
            ..Default::default()
        },
        UserEventsQuery {
            user_id: "heavy".into(),
            since: text("2024-01-01T00:10:00Z"),
            until: text("2024-01-01T00:11:00Z"),
            ..Default::default()
        },
        UserEventsQuery {
            user_id: "heavy".into(),
            since: text("2024-01-01T00:00:00Z"),
            ..Default::default()
        },
        UserEventsQuery {
            user_id: "heavy".into(),
            after: cursor,
            first: Some(50),
            ..Default::default()
        },
        UserEventsQuery {
            user_id: "light-7".into(),
            event_name: Some("name_7".into()),
            until: text("2030-01-01T00:00:00Z"),
            ..Default::default()
        },
    ];

    for mode in ["force_generic_plan", "force_custom_plan"] {
        // One connection, so the settings below apply to the EXPLAINs.
        let mut options = sea_orm::ConnectOptions::new(app.database.url());
        options.max_connections(1).min_connections(1);
        let connection = Database::connect(options).await.unwrap();
        connection
            .execute_unprepared(&format!("SET plan_cache_mode = {mode}"))
            .await
            .unwrap();
        // The settings the server's history connections run with.
        for (name, value) in octp_backend::db::HISTORY_PLANNER_SETTINGS {
            connection
                .execute_unprepared(&format!("SET {name} = {value}"))
                .await
                .unwrap();
        }
        for shape in &shapes {
            let statement = user_events_statement(shape.clone(), DbBackend::Postgres).unwrap();
            let explain = Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!("EXPLAIN {}", statement.sql),
                statement
                    .values
                    .clone()
                    .map(|values| values.0)
                    .unwrap_or_default(),
            );
            let plan: Vec<String> = connection
                .query_all_raw(explain)
                .await
                .unwrap()
                .iter()
                .map(|row| row.try_get_by_index::<String>(0).unwrap())
                .collect();
            let plan = plan.join("\n");
            assert!(
                plan.contains("idx_analytics_events_user_timestamp") && !plan.contains("Sort"),
                "{mode}, {shape:?}: the plan leaves the user's index slice:\n{plan}"
            );
        }
    }
}

#[tokio::test]
async fn concurrent_batches_with_overlapping_ids_store_each_event_once() {
    let app = TestApp::spawn().await;
    let batch = |client: usize| -> Vec<EventInput> {
        (0..100)
            .map(|i| {
                // The first half of every batch repeats ids that other clients send too.
                let id = if i < 50 {
                    format!("shared-{i}")
                } else {
                    format!("own-{client}-{i}")
                };
                with_id(event("crowd", "tick"), &id)
            })
            .collect()
    };

    let outcomes =
        futures_util::future::join_all((0..20).map(|client| app.collect(batch(client)))).await;

    let accepted: i64 = outcomes.iter().map(|outcome| outcome.accepted).sum();
    let duplicates: i64 = outcomes.iter().map(|outcome| outcome.duplicates).sum();
    assert_eq!(accepted + duplicates, 20 * 100);
    if app.events_database.is_some() {
        // ClickHouse has no unique index: batches racing with one id may each count it as
        // accepted (docs/api.md §13); reads below still see it once.
        assert!(
            (50 + 20 * 50..=20 * 100).contains(&accepted),
            "accepted {accepted}"
        );
    } else {
        assert_eq!(
            accepted,
            50 + 20 * 50,
            "each shared id is accepted exactly once"
        );
    }
    let (stored, distinct) = app.stored_event_ids("crowd").await;
    assert_eq!(stored, 1050);
    assert_eq!(distinct, 1050);
}

#[tokio::test]
async fn the_events_store_is_reported_in_health_and_readyz() {
    let app = TestApp::spawn().await;
    let health = app
        .gql("{ health { eventsStore { kind ok } } }", json!({}))
        .await;
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz answers")
        .json()
        .await
        .expect("a JSON body");
    assert_eq!(ready["status"], "ready", "{ready}");
    if app.events_database.is_none() {
        assert_eq!(health["health"]["eventsStore"], Value::Null);
        assert!(ready.get("events").is_none(), "{ready}");
        return;
    }
    let kind = health["health"]["eventsStore"]["kind"]
        .as_str()
        .unwrap_or_default();
    assert!(kind.starts_with("clickhouse "), "{health}");
    assert_eq!(health["health"]["eventsStore"]["ok"], true);
    assert_eq!(ready["events"], "ok", "{ready}");
    assert_eq!(ready["eventsStore"], kind, "{ready}");
}

/// Batches spread over many months arriving together are all stored, each counted on its own:
/// the ClickHouse writer stores concurrent batches in one INSERT, and current ClickHouse releases
/// refuse one INSERT over more than 100 months (18.16 has no such limit), so it splits groups.
#[tokio::test]
async fn concurrent_batches_spread_over_decades_are_all_stored() {
    let app = TestApp::spawn().await;
    let batch = |client: usize| -> Vec<EventInput> {
        (0..100)
            .map(|i| {
                // Each event in a different month; together the clients cover 2000–2020 (event
                // times start at 2000), about 250 months.
                let year = 2000 + client * 4 + i / 12;
                let month = i % 12 + 1;
                at(
                    event(&format!("decades-{client}"), "tick"),
                    json!(format!("{year:04}-{month:02}-15T12:00:00Z")),
                )
            })
            .collect()
    };
    let outcomes =
        futures_util::future::join_all((0..4).map(|client| app.collect(batch(client)))).await;
    for outcome in &outcomes {
        assert_eq!(outcome.accepted, 100, "{outcome:?}");
    }
    for client in 0..4 {
        let (stored, distinct) = app.stored_event_ids(&format!("decades-{client}")).await;
        assert_eq!((stored, distinct), (100, 100));
    }
}

/// `liveEvents` on ClickHouse reads `recent_events`, which keeps the last days only: a server
/// drops older days when it starts (and hourly), on every shard of a cluster.
#[tokio::test]
async fn clickhouse_keeps_only_the_last_days_of_the_live_feed() {
    let app = TestApp::spawn().await;
    let Some(events) = &app.events_database else {
        return skip(
            "clickhouse_keeps_only_the_last_days_of_the_live_feed",
            "needs a ClickHouse server (set TEST_EVENTS_URL; .ci/run's ClickHouse passes run it)",
            false,
        );
    };
    // Straight into the first shard's table: a copy through a Distributed table would arrive
    // whenever it is forwarded.
    let table = match events.cluster {
        Some(_) => "recent_events_local",
        None => "recent_events",
    };
    let day_us = 86_400_000_000_i64;
    let now_us = chrono::Utc::now().timestamp_micros();
    for (event_id, received_at_us) in [("old", now_us - 5 * day_us), ("recent", now_us - day_us)] {
        events
            .query(&format!(
                "INSERT INTO {}.{table} (id, event_id, user_id, event_name, timestamp_us, received_at_us, properties, keep) \
                 VALUES (1, '{event_id}', 'feed-user', 'tick', {received_at_us}, {received_at_us}, '{{}}', 1)",
                events.name
            ))
            .await;
    }
    let stored = || async {
        events
            .query(&format!(
                "SELECT event_id FROM {}.{table} ORDER BY event_id",
                events.name
            ))
            .await
    };
    // A server starting on the same store prunes at once (the first one's start may have pruned
    // before or after the rows went in).
    let _restarted = TestApp::spawn_with(
        crate::helpers::TestDatabase::External(app.database.url().to_owned()),
        |config| {
            config.database.events_url = Some(events.events_url());
            config.database.events_cluster = events.cluster.clone();
        },
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = stored().await;
        if left == "recent\n" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "days older than two are still there: {left:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
