//! Decoding RPC payloads: a JSON object whose keys may be camelCase or snake_case.

use serde_json::{Map, Value};

use crate::{
    domain::validate::{self, TimestampValue},
    error::{Error, FieldError},
};

/// A decoded payload object.
pub struct Payload(Map<String, Value>);

impl Payload {
    /// Parses the payload text; empty text is an empty object (RPCs without input send nothing).
    pub fn parse(text: &str) -> Result<Self, Error> {
        if text.trim().is_empty() {
            return Ok(Payload(Map::new()));
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => Ok(Payload(object)),
            Ok(other) => Err(Error::invalid(
                "payload",
                format!(
                    "must be a JSON object (got {})",
                    validate::json_type(&other)
                ),
            )),
            Err(error) => Err(Error::invalid(
                "payload",
                format!("is not valid JSON: {error}"),
            )),
        }
    }

    pub fn from_object(object: Map<String, Value>) -> Self {
        Payload(object)
    }

    /// The value under the camelCase name or its snake_case spelling; null counts as absent.
    pub fn get(&self, camel: &str) -> Option<&Value> {
        self.0
            .get(camel)
            .or_else(|| self.0.get(&snake_case(camel)))
            .filter(|value| !value.is_null())
    }

    pub fn optional_string(&self, field: &str) -> Result<Option<String>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(FieldError::new(
                field,
                format!("must be a string (got {})", validate::json_type(other)),
            )),
        }
    }

    pub fn string(&self, field: &str) -> Result<String, FieldError> {
        self.optional_string(field)?
            .ok_or_else(|| FieldError::new(field, "is required"))
    }

    pub fn optional_bool(&self, field: &str) -> Result<Option<bool>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Bool(flag)) => Ok(Some(*flag)),
            Some(other) => Err(FieldError::new(
                field,
                format!("must be true or false (got {})", validate::json_type(other)),
            )),
        }
    }

    pub fn optional_int(&self, field: &str) -> Result<Option<i64>, FieldError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(number)) => number.as_i64().map(Some).ok_or_else(|| {
                FieldError::new(field, format!("must be a whole number (got {number})"))
            }),
            Some(other) => Err(FieldError::new(
                field,
                format!("must be a number (got {})", validate::json_type(other)),
            )),
        }
    }

    pub fn optional_timestamp(&self, field: &str) -> Option<TimestampValue> {
        self.get(field).map(TimestampValue::from_json)
    }

    pub fn value(&self, field: &str) -> Option<Value> {
        self.get(field).cloned()
    }
}

/// `experimentId` → `experiment_id`.
fn snake_case(camel: &str) -> String {
    let mut snake = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            snake.push('_');
            snake.push(c.to_ascii_lowercase());
        } else {
            snake.push(c);
        }
    }
    snake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_spellings_are_accepted_beside_camel_case() {
        let payload = Payload::parse(r#"{"user_id": "u1", "experimentId": "e"}"#).unwrap();
        assert_eq!(payload.string("userId").unwrap(), "u1");
        assert_eq!(payload.string("experimentId").unwrap(), "e");
        assert_eq!(snake_case("eventName"), "event_name");
    }

    #[test]
    fn wrong_types_and_non_objects_are_named() {
        let payload = Payload::parse(r#"{"userId": 5}"#).unwrap();
        assert_eq!(
            payload.string("userId").unwrap_err().reason,
            "must be a string (got number)"
        );
        assert!(Payload::parse("[1]").is_err());
        assert!(Payload::parse("{").is_err());
        assert!(Payload::parse("").is_ok());
    }
}
