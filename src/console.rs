//! The designer console at `/console`: a page and one bundle (built from pinned npm packages into
//! `console/dist/`, see the Console section of the README) that talk to `/graphql` and
//! `/graphql/ws` like any other client, with the admin key the designer signs in with.

use std::sync::LazyLock;

use axum::{
    Router,
    extract::Path,
    http::{HeaderValue, header},
    response::{Redirect, Response},
    routing::get,
};
use tower_http::compression::CompressionLayer;

use crate::assets::{self, Asset, CSS, JAVASCRIPT, versioned_page};

pub fn router() -> Router {
    Router::new()
        .route("/console", get(page))
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route("/console/assets/{name}", get(asset))
        .layer(CompressionLayer::new().gzip(true))
}

const ASSETS: [Asset; 2] = [
    Asset {
        name: "console.js",
        content_type: JAVASCRIPT,
        bytes: include_bytes!("../console/dist/console.js"),
    },
    Asset {
        name: "console.css",
        content_type: CSS,
        bytes: include_bytes!("../console/dist/console.css"),
    },
];

static PAGE: LazyLock<String> =
    LazyLock::new(|| versioned_page(include_str!("../console/dist/index.html"), &ASSETS));

/// The page holds an admin key once signed in: nothing but this server may run script in it,
/// it talks to nothing else, and no other site may frame it (clickjacking).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

async fn page() -> Response {
    let mut response = assets::page(PAGE.as_str());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn asset(Path(name): Path<String>) -> Response {
    assets::asset(&ASSETS, &name)
}
