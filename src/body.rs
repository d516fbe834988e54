//! Request bodies, read the same way by both transports: capped at [`MAX_BODY_BYTES`] whether the
//! length is announced, absent or wrong.
//!
//! A body over the limit is still read to its end (discarded, up to [`MAX_DRAINED_BYTES`]) before
//! the refusal goes out. Answering first and closing with the rest unread makes the kernel reset the
//! connection, and a proxy that is still sending the body (nginx in deploy/) then sees the reset and
//! answers 502 instead of passing on our 413; a direct client may lose the reply the same way.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;

pub use crate::config::MAX_BODY_BYTES;

/// How much of a refused body is read and thrown away so the refusal arrives intact; beyond it the
/// connection is closed (a client sending more than this gets no answer it can rely on).
pub const MAX_DRAINED_BYTES: u64 = 8 * MAX_BODY_BYTES as u64;

/// Why a body could not be read; each transport words it in its own protocol.
#[derive(Debug)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`].
    TooLarge,
    /// The stream broke off or could not be decoded.
    Unreadable,
}

/// The whole body, at most [`MAX_BODY_BYTES`].
pub async fn read(headers: &HeaderMap, mut body: Body) -> Result<Bytes, BodyError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|length| length > MAX_DRAINED_BYTES) {
        return Err(BodyError::TooLarge);
    }
    let mut too_large = declared.is_some_and(|length| length > MAX_BODY_BYTES as u64);
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut received: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            tracing::debug!(%error, "reading a request body failed");
            BodyError::Unreadable
        })?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        received += data.len() as u64;
        if received > MAX_DRAINED_BYTES {
            return Err(BodyError::TooLarge);
        }
        if received > MAX_BODY_BYTES as u64 {
            too_large = true;
            chunks = Vec::new();
        }
        if !too_large {
            chunks.push(data);
        }
    }
    if too_large {
        return Err(BodyError::TooLarge);
    }
    Ok(match chunks.as_slice() {
        [only] => only.clone(),
        _ => chunks.concat().into(),
    })
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
