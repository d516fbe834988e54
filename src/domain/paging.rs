//! Paging shared by the newest-first listings keyed by a growing number (config versions, audit
//! entries): the `first` rule and an opaque cursor naming the number a page ended at, so pages stay
//! right while new rows arrive.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use crate::error::FieldError;

/// `first` as asked, `default` when absent; outside 1..=`max` it is refused by name.
pub fn page_size(first: Option<i64>, default: u64, max: u64) -> Result<u64, FieldError> {
    match first {
        None => Ok(default),
        Some(first) if (1..=max as i64).contains(&first) => Ok(first as u64),
        Some(_) => Err(FieldError::new(
            "first",
            format!("must be between 1 and {max}"),
        )),
    }
}

/// The cursor of the row numbered `number` in a listing whose cursors start with `kind`.
pub fn cursor(kind: &str, number: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}:{number}"))
}

/// The number a cursor of `kind` names; anything this server did not issue is refused as `after`.
pub fn decode_cursor(kind: &str, text: &str) -> Result<i64, FieldError> {
    URL_SAFE_NO_PAD
        .decode(text.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix(kind)?.strip_prefix(':')?.parse().ok())
        .ok_or_else(|| FieldError::new("after", "is not a cursor this server issued"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_within_their_kind_only() {
        assert_eq!(decode_cursor("au1", &cursor("au1", 42)).unwrap(), 42);
        assert_eq!(decode_cursor("cv1", &cursor("cv1", -3)).unwrap(), -3);
        for garbage in [
            cursor("cv1", 42),
            "not-a-cursor".to_owned(),
            String::new(),
            URL_SAFE_NO_PAD.encode("au1:x"),
            URL_SAFE_NO_PAD.encode("au12:1"),
        ] {
            assert!(decode_cursor("au1", &garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn first_is_one_to_max_and_defaults_when_absent() {
        assert_eq!(page_size(None, 20, 300).unwrap(), 20);
        assert_eq!(page_size(Some(1), 20, 300).unwrap(), 1);
        assert_eq!(page_size(Some(300), 20, 300).unwrap(), 300);
        assert!(page_size(Some(0), 20, 300).is_err());
        assert!(page_size(Some(301), 20, 300).is_err());
        assert!(page_size(Some(-1), 20, 300).is_err());
    }
}
