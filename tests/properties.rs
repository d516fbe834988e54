//! Property tests: every validator, the assignment function and the payload decoders take arbitrary
//! input without panicking, and answer with a clear reason whenever they refuse.

use chrono::Utc;
use octp_backend::{
    domain::{
        assignment::{self, CohortWeights},
        events::{EventInput, validate_batch},
        validate::{self, TimestampValue},
    },
    rpc::decode_event_batch,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn timestamp() -> impl Strategy<Value = TimestampValue> {
    prop_oneof![
        ".{0,40}".prop_map(TimestampValue::Text),
        any::<f64>().prop_map(TimestampValue::Number),
        json_value().prop_map(|value| TimestampValue::from_json(&value)),
    ]
}

proptest! {
    #[test]
    fn text_validators_never_panic_and_always_give_a_reason(text in "\\PC{0,200}|.{0,200}") {
        for outcome in [validate::printable_text(&text), validate::slug(&text)] {
            if let Err(reason) = outcome {
                prop_assert!(!reason.is_empty());
            }
        }
    }

    #[test]
    fn timestamps_parse_or_are_refused_with_a_reason(value in timestamp()) {
        match validate::event_timestamp(&value, Utc::now()) {
            Ok(time) => prop_assert!(time.timestamp() >= 946_684_800),
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    /// Generated values are small and at most 5 levels deep, so only the kind and NUL decide.
    #[test]
    fn json_objects_are_checked_without_panicking(value in json_value()) {
        let outcome = validate::json_object(&value, validate::MAX_PROPERTIES_BYTES);
        prop_assert_eq!(outcome.is_ok(), value.is_object() && !value.to_string().contains("\\u0000"));
    }

    #[test]
    fn cohort_weights_from_any_json_are_valid_or_refused(value in json_value()) {
        if let Ok(weights) = CohortWeights::parse(&value) {
            prop_assert!(weights.iter().any(|(_, weight)| weight > 0.0));
        }
    }

    #[test]
    fn assignment_always_picks_a_cohort_with_weight(
        salt in ".{0,40}",
        user in ".{0,60}",
        weights in prop::collection::btree_map("[a-z]{1,8}", 0.0f64..1e6, 1..20),
    ) {
        let object: Map<String, Value> = weights.iter().map(|(name, weight)| (name.clone(), Value::from(*weight))).collect();
        prop_assume!(weights.values().sum::<f64>() > 0.0 && !weights.contains_key("default"));
        let parsed = CohortWeights::parse(&Value::Object(object)).unwrap();
        let cohort = assignment::assign(&salt, &user, &parsed);
        prop_assert!(weights.get(cohort).is_some_and(|weight| *weight > 0.0), "{} has no weight", cohort);
        let x = assignment::draw(&salt, &user);
        prop_assert!((0.0..1.0).contains(&x));
    }

    #[test]
    fn event_batches_of_arbitrary_fields_validate_or_name_each_problem(
        events in prop::collection::vec(
            (".{0,140}", ".{0,140}", prop::option::of(".{0,140}"), prop::option::of(timestamp()), prop::option::of(json_value())),
            0..120,
        ),
    ) {
        let count = events.len();
        let inputs = events
            .into_iter()
            .map(|(user_id, event_name, event_id, timestamp, properties)| EventInput {
                user_id,
                event_name,
                event_id,
                timestamp,
                properties,
                ..EventInput::default()
            })
            .collect();
        match validate_batch(inputs, Utc::now()) {
            Ok(rows) => prop_assert_eq!(rows.len(), count),
            Err(error) => {
                prop_assert!(!error.to_string().is_empty());
                for detail in error.field_errors() {
                    prop_assert!(detail.index.is_none_or(|index| index < count));
                    prop_assert!(!detail.reason.is_empty());
                }
            }
        }
    }

    #[test]
    fn rpc_payloads_of_arbitrary_text_decode_or_are_refused(text in "\\PC{0,200}|.{0,200}") {
        check_rpc_batch(&text)?;
    }

    #[test]
    fn rpc_event_batches_of_arbitrary_json_decode_or_are_refused(
        events in prop::collection::vec(json_value(), 0..20),
        wrap in any::<bool>(),
    ) {
        let payload = if wrap { serde_json::json!({"events": events}) } else { Value::Array(events) };
        check_rpc_batch(&payload.to_string())?;
    }
}

/// Decoding then validating either yields events or errors that each name a field and a reason.
fn check_rpc_batch(text: &str) -> Result<(), TestCaseError> {
    match decode_event_batch(text) {
        Ok(inputs) => {
            let count = inputs.len();
            if let Err(error) = validate_batch(inputs, Utc::now()) {
                for detail in error.field_errors() {
                    prop_assert!(detail.index.is_none_or(|index| index < count));
                    prop_assert!(!detail.field.is_empty() && !detail.reason.is_empty());
                }
            }
        }
        Err(error) => prop_assert!(!error.to_string().is_empty()),
    }
    Ok(())
}
