//! The GraphiQL playground, served from the binary: the page and its bundles (built from pinned npm
//! packages into `playground/dist/`, see the Playground section of the README).

use std::sync::LazyLock;

use axum::{
    Router,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tower_http::compression::CompressionLayer;

use crate::{
    assets::{self, Asset, CSS, JAVASCRIPT, versioned_page},
    graphql,
};

/// `/playground`, its bundles and the published schema. `introspection` false hides the schema.
pub fn router(introspection: bool) -> Router {
    // The bundles are large and compress well.
    Router::new()
        .route("/playground", get(page))
        .route("/playground/assets/{name}", get(asset))
        .route("/playground/schema.json", get(schema))
        .layer(CompressionLayer::new().gzip(true))
        .with_state(Introspection(introspection))
}

#[derive(Clone, Copy)]
struct Introspection(bool);

const ASSETS: [Asset; 5] = [
    Asset {
        name: "graphiql.min.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("../playground/dist/graphiql.min.js"),
    },
    Asset {
        name: "graphiql.min.css",
        content_type: CSS,
        bytes: include_bytes!("../playground/dist/graphiql.min.css"),
    },
    Asset {
        name: "react.production.min.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("../playground/dist/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("../playground/dist/react-dom.production.min.js"),
    },
    Asset {
        name: "playground.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("../playground/dist/playground.js"),
    },
];

static PAGE: LazyLock<String> =
    LazyLock::new(|| versioned_page(include_str!("../playground/dist/index.html"), &ASSETS));

/// The standard introspection query of graphql-js (what GraphiQL itself would send).
const INTROSPECTION_QUERY: &str = include_str!("../playground/dist/introspection.graphql");

/// The schema as an introspection result, public like `schema.graphql` in the repository, so the
/// docs explorer works before a key is entered. Computed once, from the schema without data or
/// limits: introspection nests deeper than the depth limit of `/graphql` allows.
async fn schema(State(Introspection(allowed)): State<Introspection>) -> Response {
    static INTROSPECTION: tokio::sync::OnceCell<Option<String>> =
        tokio::sync::OnceCell::const_new();
    if !allowed {
        return (StatusCode::NOT_FOUND, "introspection is disabled").into_response();
    }
    let introspection = INTROSPECTION
        .get_or_init(|| async {
            let response = graphql::schema()
                .finish()
                .execute(async_graphql::Request::new(INTROSPECTION_QUERY))
                .await;
            if !response.errors.is_empty() {
                tracing::error!(errors = ?response.errors, "introspecting our own schema failed");
                return None;
            }
            serde_json::to_string(&response).ok()
        })
        .await;
    match introspection {
        Some(body) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body.clone(),
        )
            .into_response(),
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn page() -> Response {
    assets::page(PAGE.as_str())
}

async fn asset(Path(name): Path<String>) -> Response {
    assets::asset(&ASSETS, &name)
}
