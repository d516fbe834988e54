//! The `DateTime` scalar. Input is kept raw so that an unparseable timestamp inside an event batch
//! is reported by the domain with its batch index, instead of failing GraphQL coercion first.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::Utc;

use crate::domain::validate::{self, TimestampValue};

/// RFC 3339 date-time (output always in UTC). Input also accepts epoch seconds or milliseconds as
/// a number (below 100,000,000,000: seconds; from there: milliseconds).
pub enum DateTime {
    Utc(chrono::DateTime<Utc>),
    Input(TimestampValue),
}

impl DateTime {
    pub fn into_input(self) -> TimestampValue {
        match self {
            DateTime::Input(value) => value,
            DateTime::Utc(time) => TimestampValue::Text(time.to_rfc3339()),
        }
    }
}

impl From<chrono::DateTime<Utc>> for DateTime {
    fn from(time: chrono::DateTime<Utc>) -> Self {
        DateTime::Utc(time)
    }
}

#[Scalar(name = "DateTime")]
impl ScalarType for DateTime {
    fn parse(value: Value) -> InputValueResult<Self> {
        let raw = match value {
            Value::String(text) => TimestampValue::Text(text),
            Value::Number(number) => match number.as_f64() {
                Some(number) => TimestampValue::Number(number),
                None => TimestampValue::Other("number"),
            },
            Value::Boolean(_) => TimestampValue::Other("boolean"),
            Value::List(_) => TimestampValue::Other("list"),
            Value::Object(_) => TimestampValue::Other("object"),
            Value::Enum(_) => TimestampValue::Other("enum value"),
            Value::Binary(_) => TimestampValue::Other("binary"),
            Value::Null => return Err(InputValueError::custom("a DateTime must not be null")),
        };
        Ok(DateTime::Input(raw))
    }

    fn to_value(&self) -> Value {
        match self {
            DateTime::Utc(time) => Value::String(validate::format_timestamp(*time)),
            DateTime::Input(TimestampValue::Text(text)) => Value::String(text.clone()),
            DateTime::Input(TimestampValue::Number(number)) => {
                Value::from_json(serde_json::json!(number)).unwrap_or(Value::Null)
            }
            DateTime::Input(TimestampValue::Other(_)) => Value::Null,
        }
    }
}
