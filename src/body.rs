//! Request bodies, read the same way by both transports: refused from the announced length when it
//! is over the limit, and capped while streaming (the length may be absent or wrong).

use axum::{
    body::{Body, Bytes},
    http::{HeaderMap, header},
};
use http_body_util::{BodyExt, LengthLimitError, Limited};

pub use crate::config::MAX_BODY_BYTES;

/// Why a body could not be read; each transport words it in its own protocol.
#[derive(Debug)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The stream broke off or could not be decoded.
    Unreadable,
}

/// The whole body, at most [`MAX_BODY_BYTES`].
pub async fn read(headers: &HeaderMap, body: Body) -> Result<Bytes, BodyError> {
    if declared_length(headers).is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(BodyError::TooLarge),
        Err(error) => {
            tracing::debug!(%error, "reading a request body failed");
            Err(BodyError::Unreadable)
        }
    }
}

/// The body size a request announces.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
