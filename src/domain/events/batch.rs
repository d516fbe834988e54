//! The rules of a `collectEvents` batch (docs/api.md §4 and §8), as a pure function: every rule on
//! every event, each broken one named with its index, so a bad batch is refused whole.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{EventInput, MAX_BATCH};
use crate::{
    db::ingest::EventRow,
    domain::validate,
    error::{Error, FieldError, FieldErrors, Result},
};

/// Checks every rule on every event; on failure the error lists each broken rule by index.
pub fn validate_batch(inputs: Vec<EventInput>, now: DateTime<Utc>) -> Result<Vec<EventRow>> {
    if inputs.is_empty() || inputs.len() > MAX_BATCH {
        return Err(Error::invalid(
            "events",
            format!(
                "a batch holds 1 to {MAX_BATCH} events (got {})",
                inputs.len()
            ),
        ));
    }
    let total = inputs.len();
    let mut valid = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for (index, input) in inputs.into_iter().enumerate() {
        match validate_event(input, now) {
            Ok(event) => valid.push(event),
            Err(event_errors) => errors.extend(event_errors.into_iter().map(|e| e.at(index))),
        }
    }
    if errors.is_empty() {
        return Ok(valid);
    }
    let bad_events = errors
        .iter()
        .filter_map(|error| error.index)
        .collect::<HashSet<_>>()
        .len();
    Err(Error::BadUserInput {
        message: format!(
            "{bad_events} of {total} events are invalid; nothing was stored: {}",
            summary(&errors)
        ),
        errors,
    })
}

/// Every bad event by index with its first problem, in one line: legacy clients read only
/// `message`, so it must name them all (the details of each are in the error list).
fn summary(errors: &[FieldError]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut previous_index = None;
    let mut more_for_this_event = 0;
    for error in errors {
        if error.index.is_some() && error.index == previous_index {
            more_for_this_event += 1;
            continue;
        }
        if more_for_this_event > 0
            && let Some(last) = parts.last_mut()
        {
            last.push_str(&format!(" (and {more_for_this_event} more)"));
        }
        more_for_this_event = 0;
        previous_index = error.index;
        parts.push(match error.index {
            Some(index) => format!("events[{index}].{} {}", error.field, error.reason),
            None => format!("{} {}", error.field, error.reason),
        });
    }
    if more_for_this_event > 0
        && let Some(last) = parts.last_mut()
    {
        last.push_str(&format!(" (and {more_for_this_event} more)"));
    }
    parts.join("; ")
}

fn validate_event(input: EventInput, now: DateTime<Utc>) -> Result<EventRow, Vec<FieldError>> {
    let mut errors = FieldErrors::from(input.decode_errors);
    // A field the transport could not decode (or a whole event that was not an object) is already
    // reported; checking its placeholder value again would only add noise.
    let whole_event_bad = errors.names("event");
    if !(whole_event_bad || errors.names("userId")) {
        errors.check("userId", validate::printable_text(&input.user_id));
    }
    if !(whole_event_bad || errors.names("eventName")) {
        errors.check("eventName", validate::slug(&input.event_name));
    }
    if let Some(event_id) = &input.event_id {
        errors.check("eventId", validate::printable_text(event_id));
    }
    if let Some(session_id) = &input.session_id {
        errors.check("sessionId", validate::printable_text(session_id));
    }
    if let Some(experiment_id) = &input.experiment_id {
        errors.check("experimentId", validate::slug(experiment_id));
    }
    if let Some(cohort) = &input.cohort {
        errors.check("cohort", validate::slug(cohort));
    }
    let properties = input
        .properties
        .unwrap_or_else(|| Value::Object(Map::new()));
    errors.check(
        "properties",
        validate::json_object(&properties, validate::MAX_PROPERTIES_BYTES),
    );
    let timestamp = match &input.timestamp {
        None => Some(now),
        Some(value) => errors.check("timestamp", validate::event_timestamp(value, now)),
    };
    match timestamp {
        Some(timestamp) if errors.is_empty() => Ok(EventRow {
            event_id: input
                .event_id
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            user_id: input.user_id,
            session_id: input.session_id,
            event_name: input.event_name,
            timestamp,
            properties,
            experiment_id: input.experiment_id,
            cohort: input.cohort,
        }),
        _ => Err(errors.into_vec()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::validate::TimestampValue;

    /// (index, field) of every reported problem, in order.
    fn fields(error: &Error) -> Vec<(Option<usize>, &str)> {
        error
            .field_errors()
            .iter()
            .map(|e| (e.index, e.field.as_str()))
            .collect()
    }

    fn event(user: &str, name: &str) -> EventInput {
        EventInput {
            user_id: user.into(),
            event_name: name.into(),
            ..EventInput::default()
        }
    }

    #[test]
    fn a_batch_reports_every_broken_rule_with_its_index() {
        let now = Utc::now();
        let mut bad_properties = event("u1", "ok");
        bad_properties.properties = Some(json!([1, 2]));
        let mut bad_time = event("u1", "ok");
        bad_time.timestamp = Some(TimestampValue::Text("not a time".into()));
        let batch = vec![
            event("u1", "fine"),
            event("", "bad name"),
            bad_properties,
            bad_time,
        ];

        let error = validate_batch(batch, now).unwrap_err();

        assert_eq!(
            fields(&error),
            [
                (Some(1), "userId"),
                (Some(1), "eventName"),
                (Some(2), "properties"),
                (Some(3), "timestamp")
            ]
        );
        assert_eq!(
            error.to_string(),
            "3 of 4 events are invalid; nothing was stored: events[1].userId must not be empty \
             (and 1 more); events[2].properties must be a JSON object (got array); \
             events[3].timestamp must be RFC 3339 (e.g. 2026-01-31T12:00:00Z) or epoch \
             seconds/milliseconds: premature end of input"
        );
    }

    #[test]
    fn fields_the_transport_could_not_decode_are_not_checked_again() {
        let mut undecodable = event("", "");
        undecodable.decode_errors =
            vec![FieldError::new("userId", "must be a string (got number)")];
        let mut not_an_object = event("", "");
        not_an_object.decode_errors = vec![FieldError::new("event", "must be a JSON object")];

        let error = validate_batch(vec![undecodable, not_an_object], Utc::now()).unwrap_err();

        assert_eq!(
            fields(&error),
            [
                (Some(0), "userId"),
                (Some(0), "eventName"),
                (Some(1), "event")
            ]
        );
    }

    #[test]
    fn batches_hold_one_to_one_hundred_events() {
        let now = Utc::now();
        assert!(validate_batch(vec![], now).is_err());
        assert!(validate_batch(vec![event("u", "e"); 100], now).is_ok());
        let error = validate_batch(vec![event("u", "e"); 101], now).unwrap_err();
        assert_eq!(error.field_errors()[0].field, "events");
    }
}
