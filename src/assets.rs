//! Web pages served from the binary (the playground and the console): bundles embedded at compile
//! time, and asset URLs that carry a hash of those bundles, so browsers may cache them for good and
//! still never mix versions.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

pub struct Asset {
    pub name: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

pub const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
pub const CSS: &str = "text/css; charset=utf-8";

/// `html` with `__ASSET_VERSION__` replaced by a hash of every asset's bytes.
pub fn versioned_page(html: &str, assets: &[Asset]) -> String {
    let mut hasher = blake3::Hasher::new();
    for asset in assets {
        hasher.update(asset.bytes);
    }
    let version = hasher.finalize().to_hex();
    html.replace("__ASSET_VERSION__", &version[..16])
}

/// A page: never cached, so a new binary's page (and through it, its assets) is seen at once.
pub fn page(html: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

/// The asset called `name`, cached for good (its URL changes with its bytes), or 404.
pub fn asset(assets: &[Asset], name: &str) -> Response {
    let Some(asset) = assets.iter().find(|asset| asset.name == name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut response = asset.bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    response
}
