//! The opaque `userEvents` cursor: a position in a newest-first listing, where events sort by
//! timestamp, then id, both descending. Versioned, so the format can change without breaking pages
//! that clients hold.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub timestamp_micros: i64,
    pub id: i64,
}

impl EventCursor {
    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("v1:{}:{}", self.timestamp_micros, self.id))
    }

    /// The cursor a text encodes, or `None` for anything this server did not issue.
    pub fn decode(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim()).ok()?;
        let text = String::from_utf8(bytes).ok()?;
        let mut parts = text.strip_prefix("v1:")?.splitn(2, ':');
        let timestamp_micros = parts.next()?.parse().ok()?;
        let id = parts.next()?.parse().ok()?;
        Some(EventCursor {
            timestamp_micros,
            id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        let cursor = EventCursor {
            timestamp_micros: 1_714_557_600_123_456,
            id: 42,
        };
        assert_eq!(EventCursor::decode(&cursor.encode()), Some(cursor));
        let negative = EventCursor {
            timestamp_micros: -1,
            id: i64::MAX,
        };
        assert_eq!(EventCursor::decode(&negative.encode()), Some(negative));
        for garbage in [
            "".to_owned(),
            "not-a-cursor".to_owned(),
            URL_SAFE_NO_PAD.encode("v1:x:1"),
            URL_SAFE_NO_PAD.encode("v2:1:1"),
            URL_SAFE_NO_PAD.encode("v1:1"),
            URL_SAFE_NO_PAD.encode("v1:1:99999999999999999999"),
            URL_SAFE_NO_PAD.encode([0xff, 0xfe]),
        ] {
            assert_eq!(EventCursor::decode(&garbage), None, "{garbage:?}");
        }
    }
}
