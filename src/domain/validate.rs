//! Input rules of docs/api.md §4 as pure functions. Each returns the reason a value is refused, worded
//! for the person who sent it; callers attach the field name and batch index.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use serde_json::Value;

/// Longest id, name or slug, in Unicode code points.
pub const MAX_TEXT_CHARS: usize = 128;
/// Largest `properties` object, in bytes of compact JSON.
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// Largest remote `config` object, in bytes of compact JSON.
pub const MAX_CONFIG_BYTES: usize = 64 * 1024;
/// Deepest nesting of objects and arrays in a stored JSON value (the top object is level 1). JSON
/// parsers stop at 128 levels, and what is stored must always be readable again.
pub const MAX_JSON_DEPTH: usize = 64;
/// Epoch numbers below this are seconds, from here on milliseconds (about year 5138 in seconds).
const EPOCH_MILLIS_FROM: f64 = 100_000_000_000.0;
/// How far ahead of the server's clock a client timestamp may be.
const MAX_CLOCK_SKEW: Duration = Duration::hours(24);

/// A timestamp as the client sent it, parsed only by [`timestamp`].
#[derive(Debug, Clone, PartialEq)]
pub enum TimestampValue {
    Text(String),
    Number(f64),
    /// Any other JSON type; always refused, with its type named.
    Other(&'static str),
}

impl TimestampValue {
    pub fn from_json(value: &Value) -> Self {
        match value {
            Value::String(text) => TimestampValue::Text(text.clone()),
            Value::Number(number) => number
                .as_f64()
                .map_or(TimestampValue::Other("number"), TimestampValue::Number),
            Value::Null => TimestampValue::Other("null"),
            Value::Bool(_) => TimestampValue::Other("boolean"),
            Value::Array(_) => TimestampValue::Other("array"),
            Value::Object(_) => TimestampValue::Other("object"),
        }
    }
}

/// Printable text of 1 to 128 code points: user, session and event ids.
pub fn printable_text(value: &str) -> Result<(), String> {
    check_length(value)?;
    if let Some(bad) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "must not contain control characters (found U+{:04X})",
            u32::from(bad)
        ));
    }
    Ok(())
}

/// A name of 1 to 128 characters from `[A-Za-z0-9_.:-]`: event names, experiment ids, cohorts, salts.
pub fn slug(value: &str) -> Result<(), String> {
    check_length(value)?;
    match value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')))
    {
        Some(bad) => Err(format!(
            "may only contain letters, digits, '_', '.', ':' and '-' (found {bad:?})"
        )),
        None => Ok(()),
    }
}

fn check_length(value: &str) -> Result<(), String> {
    let chars = value.chars().count();
    if chars == 0 {
        Err("must not be empty".to_owned())
    } else if chars > MAX_TEXT_CHARS {
        Err(format!(
            "must be at most {MAX_TEXT_CHARS} characters (got {chars})"
        ))
    } else {
        Ok(())
    }
}

/// A JSON object whose compact serialisation fits in `max_bytes`, that both databases store and
/// give back as it was: at most [`MAX_JSON_DEPTH`] levels, and no NUL character in any key or
/// string (PostgreSQL's JSONB cannot hold one; SQLite could, so both refuse it alike).
pub fn json_object(value: &Value, max_bytes: usize) -> Result<(), String> {
    if !value.is_object() {
        return Err(format!("must be a JSON object (got {})", json_type(value)));
    }
    storable_json(value)?;
    let bytes = serde_json::to_vec(value).map_or(usize::MAX, |text| text.len());
    if bytes > max_bytes {
        return Err(format!(
            "must be at most {max_bytes} bytes as compact JSON (got {bytes})"
        ));
    }
    Ok(())
}

/// Depth and NUL rules of [`json_object`], walked without recursion (the value may be deep).
fn storable_json(value: &Value) -> Result<(), String> {
    let mut pending = vec![(value, 1usize)];
    while let Some((value, depth)) = pending.pop() {
        let nested = match value {
            Value::Array(items) => {
                pending.extend(items.iter().map(|item| (item, depth + 1)));
                true
            }
            Value::Object(entries) => {
                for (key, item) in entries {
                    if key.contains('\0') {
                        return Err(format!(
                            "must not contain NUL (U+0000) characters (found in key {key:?})"
                        ));
                    }
                    pending.push((item, depth + 1));
                }
                true
            }
            Value::String(text) if text.contains('\0') => {
                return Err(
                    "must not contain NUL (U+0000) characters (found in a string value)".to_owned(),
                );
            }
            _ => false,
        };
        if nested && depth > MAX_JSON_DEPTH {
            return Err(format!(
                "must not nest objects and arrays more than {MAX_JSON_DEPTH} levels deep"
            ));
        }
    }
    Ok(())
}

/// Memory a parsed JSON value takes, roughly: each node's enum and container slot, plus its text.
pub fn estimated_json_bytes(value: &Value) -> usize {
    const NODE_BYTES: usize = 48;
    let shape = JsonShape::of(value);
    (shape.values + shape.keys) * NODE_BYTES + shape.text_bytes
}

/// What a JSON value is made of, for estimating what holding it costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonShape {
    /// Values at any depth, the value itself included.
    pub values: usize,
    /// Object keys at any depth.
    pub keys: usize,
    /// Bytes of every string and key.
    pub text_bytes: usize,
}

impl JsonShape {
    /// Walked without recursion (the value may be deep).
    pub fn of(value: &Value) -> Self {
        let mut shape = JsonShape::default();
        let mut pending = vec![value];
        while let Some(value) = pending.pop() {
            shape.values += 1;
            match value {
                Value::String(text) => shape.text_bytes += text.len(),
                Value::Array(items) => pending.extend(items),
                Value::Object(entries) => {
                    for (key, item) in entries {
                        shape.keys += 1;
                        shape.text_bytes += key.len();
                        pending.push(item);
                    }
                }
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        shape
    }
}

/// Free text (descriptions): any length the caller allows, line breaks and tabs allowed, but no
/// other control character (NUL, which PostgreSQL cannot store, among them).
pub fn free_text(value: &str) -> Result<(), String> {
    match value
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        Some(bad) => Err(format!(
            "must not contain control characters other than line breaks and tabs (found U+{:04X})",
            u32::from(bad)
        )),
        None => Ok(()),
    }
}

pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses RFC 3339 (any offset) or epoch seconds/milliseconds into UTC, truncated to microseconds
/// (the precision both databases keep).
pub fn parse_timestamp(value: &TimestampValue) -> Result<DateTime<Utc>, String> {
    let parsed = match value {
        TimestampValue::Text(text) => DateTime::parse_from_rfc3339(text.trim())
            .map(|time| time.with_timezone(&Utc))
            .map_err(|error| {
                format!("must be RFC 3339 (e.g. 2026-01-31T12:00:00Z) or epoch seconds/milliseconds: {error}")
            })?,
        TimestampValue::Number(number) => from_epoch(*number)?,
        TimestampValue::Other(kind) => {
            return Err(format!(
                "must be an RFC 3339 string or an epoch number (got {kind})"
            ));
        }
    };
    storable_instant(truncate_to_micros(parsed))
}

/// An instant both databases store and compare correctly: SQLite keeps instants as text, which
/// sorts right only for four-digit years.
pub fn storable_instant(time: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if (1..=9999).contains(&time.year()) {
        Ok(time)
    } else {
        Err(format!(
            "must be between 0001-01-01 and 9999-12-31 (got {})",
            time.to_rfc3339()
        ))
    }
}

/// An optional timestamp: absent stays absent.
pub fn optional_timestamp(value: Option<&TimestampValue>) -> Result<Option<DateTime<Utc>>, String> {
    value.map(parse_timestamp).transpose()
}

/// An event timestamp: parsed, and within 2000-01-01 .. now + 24 h.
pub fn event_timestamp(
    value: &TimestampValue,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let time = parse_timestamp(value)?;
    let earliest = Utc
        .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default();
    if time < earliest {
        return Err(format!(
            "must not be before 2000-01-01 (got {})",
            time.to_rfc3339()
        ));
    }
    if time > now + MAX_CLOCK_SKEW {
        return Err(format!(
            "must not be more than 24 hours after the server's clock (got {}, server time {})",
            time.to_rfc3339(),
            now.to_rfc3339()
        ));
    }
    Ok(time)
}

fn from_epoch(number: f64) -> Result<DateTime<Utc>, String> {
    if !number.is_finite() {
        return Err("must be a finite epoch number".to_owned());
    }
    let micros = if number.abs() < EPOCH_MILLIS_FROM {
        number * 1_000_000.0
    } else {
        number * 1_000.0
    };
    // Beyond ±2^62 µs chrono cannot represent the instant anyway.
    if micros.abs() > 4.0e18 {
        return Err(format!("epoch number {number} is out of range"));
    }
    DateTime::from_timestamp_micros(micros.floor() as i64)
        .ok_or_else(|| format!("epoch number {number} is out of range"))
}

/// The one textual form of instants in responses: RFC 3339 in UTC with `Z`, fraction only when
/// there is one.
pub fn format_timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub fn truncate_to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_length_counts_code_points_not_bytes() {
        assert!(printable_text(&"é".repeat(128)).is_ok());
        assert!(printable_text(&"é".repeat(129)).is_err());
        assert!(printable_text("").is_err());
        assert!(printable_text("emoji 🎮 ok").is_ok());
        assert!(printable_text("tab\there").is_err());
    }

    #[test]
    fn slugs_allow_only_the_documented_characters() {
        assert!(slug("level_up.v2:a-b").is_ok());
        assert!(slug("level up").is_err());
        assert!(slug("niveau_é").is_err());
        assert!(slug(&"a".repeat(128)).is_ok());
        assert!(slug(&"a".repeat(129)).is_err());
    }

    #[test]
    fn json_objects_are_limited_by_compact_size() {
        let fits = json!({"k": "x".repeat(MAX_PROPERTIES_BYTES - 8)});
        assert_eq!(
            serde_json::to_vec(&fits).unwrap().len(),
            MAX_PROPERTIES_BYTES
        );
        assert!(json_object(&fits, MAX_PROPERTIES_BYTES).is_ok());
        let over = json!({"k": "x".repeat(MAX_PROPERTIES_BYTES - 7)});
        assert!(json_object(&over, MAX_PROPERTIES_BYTES).is_err());
        assert!(json_object(&json!([1]), MAX_PROPERTIES_BYTES).is_err());
    }

    #[test]
    fn stored_json_is_at_most_64_levels_deep_and_holds_no_nul() {
        fn nested(levels: usize) -> Value {
            (1..levels).fold(json!({}), |inner, _| json!({ "a": inner }))
        }
        assert!(json_object(&nested(64), MAX_CONFIG_BYTES).is_ok());
        let error = json_object(&nested(65), MAX_CONFIG_BYTES).unwrap_err();
        assert!(error.contains("64 levels"), "{error}");
        let arrays = json!({"a": (1..64).fold(json!(1), |inner, _| json!([inner]))});
        assert!(json_object(&arrays, MAX_CONFIG_BYTES).is_ok());
        let arrays = json!({"a": (1..65).fold(json!(1), |inner, _| json!([inner]))});
        assert!(json_object(&arrays, MAX_CONFIG_BYTES).is_err());
        assert!(json_object(&json!({"k": "a\u{0}b"}), MAX_CONFIG_BYTES).is_err());
        assert!(json_object(&json!({"k\u{0}": 1}), MAX_CONFIG_BYTES).is_err());
        assert!(json_object(&json!({"k": ["x", {"y": "\u{0}"}]}), MAX_CONFIG_BYTES).is_err());
        assert!(json_object(&json!({"k": "tab\t and é"}), MAX_CONFIG_BYTES).is_ok());
    }

    #[test]
    fn free_text_allows_line_breaks_but_no_other_control_character() {
        assert!(free_text("two\nlines\tand\r\n").is_ok());
        assert!(free_text("nul\u{0}").is_err());
        assert!(free_text("bell\u{7}").is_err());
    }

    /// Numbers as PostgreSQL gives them back (JSONB keeps the decimal value and prints it in full)
    /// parse to the very value that was sent.
    #[test]
    fn numbers_parse_back_from_their_full_decimal_form_exactly() {
        let cases = [
            (
                "1.7976931348623157e308",
                format!("17976931348623157{}", "0".repeat(292)),
            ),
            ("1.6e308", format!("16{}", "0".repeat(307))),
            ("5e-324", format!("0.{}5", "0".repeat(323))),
            ("0.1", "0.1".to_owned()),
        ];
        for (sent, stored) in cases {
            let sent: Value = serde_json::from_str(sent).unwrap();
            let back: Value = serde_json::from_str(&stored).unwrap();
            assert_eq!(back.as_f64(), sent.as_f64(), "{stored:.40}");
            assert_eq!(back.to_string(), sent.to_string());
        }
    }

    #[test]
    fn timestamps_accept_rfc3339_with_offsets_and_epoch_seconds_or_millis() {
        let expected = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap();
        let cases = [
            TimestampValue::Text("2024-05-01T10:00:00Z".into()),
            TimestampValue::Text("2024-05-01T12:00:00+02:00".into()),
            TimestampValue::Number(1_714_557_600.0),
            TimestampValue::Number(1_714_557_600_000.0),
        ];
        for case in cases {
            assert_eq!(parse_timestamp(&case).unwrap(), expected, "{case:?}");
        }
        let fractional = parse_timestamp(&TimestampValue::Number(1_714_557_600.5)).unwrap();
        assert_eq!(fractional.timestamp_subsec_millis(), 500);
        assert!(parse_timestamp(&TimestampValue::Text("yesterday".into())).is_err());
        // Past 9999 SQLite's text comparison breaks; before year 1 too.
        assert!(
            parse_timestamp(&TimestampValue::Text("9999-12-31T23:59:59.999999Z".into())).is_ok()
        );
        assert!(parse_timestamp(&TimestampValue::Number(253_402_300_800_000.0)).is_err());
        assert!(parse_timestamp(&TimestampValue::Text("0000-12-31T00:00:00Z".into())).is_err());
        assert!(parse_timestamp(&TimestampValue::Other("boolean")).is_err());
    }

    #[test]
    fn event_timestamps_must_fall_between_2000_and_a_day_ahead() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let at = |text: &str| event_timestamp(&TimestampValue::Text(text.into()), now);
        assert!(at("2000-01-01T00:00:00Z").is_ok());
        assert!(at("1999-12-31T23:59:59.999Z").is_err());
        assert!(at("2026-01-02T00:00:00Z").is_ok());
        assert!(at("2026-01-02T00:00:00.001Z").is_err());
    }
}
