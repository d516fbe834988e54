//! Metric definitions: what `experimentResults` measures per user, given in the query or saved on
//! the experiment. One set of rules for both places.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{
    domain::validate,
    error::{FieldError, FieldErrors},
};

/// Most metrics in one list (saved or queried).
pub const MAX_METRICS: usize = 20;
const MAX_KEY_CHARS: usize = 64;
/// Ten years: a longer window is a mistake, and it keeps `assigned_at + window` a valid instant.
pub const MAX_WINDOW_HOURS: f64 = 87_600.0;
const MICROS_PER_HOUR: f64 = 3_600_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MetricKind {
    /// 1 when the user has a qualifying event, else 0.
    Conversion,
    /// The number of qualifying events.
    Count,
    /// The sum of a numeric property over qualifying events.
    Sum,
}

/// A metric as given or stored; [`parse_metrics`] checks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metric {
    pub key: String,
    pub event_name: String,
    pub kind: MetricKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_hours: Option<f64>,
}

impl Metric {
    /// The window after assignment in whole microseconds (the precision instants are stored at),
    /// at least 1.
    pub fn window_micros(&self) -> Option<i64> {
        self.window_hours
            .map(|hours| ((hours * MICROS_PER_HOUR).round() as i64).max(1))
    }
}

/// Checks a list of metrics, naming each problem as `field[i].name`. `min` is the fewest allowed
/// (0 when saving, where an empty list clears the saved metrics; 1 when analysing).
pub fn parse_metrics(field: &str, metrics: &[Metric], min: usize) -> Result<(), Vec<FieldError>> {
    let mut errors = FieldErrors::default();
    if metrics.len() < min || metrics.len() > MAX_METRICS {
        errors.push(FieldError::new(
            field,
            format!(
                "must list {min} to {MAX_METRICS} metrics (got {})",
                metrics.len()
            ),
        ));
    }
    let mut keys = HashSet::new();
    for (index, metric) in metrics.iter().enumerate() {
        let name = |part: &str| format!("{field}[{index}].{part}");
        errors.check(&name("key"), metric_key(&metric.key));
        if !keys.insert(metric.key.as_str()) {
            errors.push(FieldError::new(
                name("key"),
                format!("{:?} is already used by another metric", metric.key),
            ));
        }
        errors.check(&name("eventName"), validate::slug(&metric.event_name));
        match (metric.kind, &metric.property) {
            (MetricKind::Sum, None) => errors.push(FieldError::new(
                name("property"),
                "is required for SUM metrics (the numeric event property to add up)",
            )),
            (MetricKind::Sum, Some(property)) => {
                errors.check(&name("property"), property_name(property));
            }
            (kind, Some(_)) => errors.push(FieldError::new(
                name("property"),
                format!("is only allowed for SUM metrics (this one is {kind:?})"),
            )),
            (_, None) => {}
        }
        if let Some(hours) = metric.window_hours
            && !(hours > 0.0 && hours <= MAX_WINDOW_HOURS)
        {
            errors.push(FieldError::new(
                name("windowHours"),
                format!("must be greater than 0 and at most {MAX_WINDOW_HOURS} (got {hours})"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.into_vec())
    }
}

fn metric_key(key: &str) -> Result<(), String> {
    let chars = key.chars().count();
    if chars == 0 || chars > MAX_KEY_CHARS {
        return Err(format!(
            "must be 1 to {MAX_KEY_CHARS} characters (got {chars})"
        ));
    }
    validate::slug(key)
}

/// An event property name: printable text, and no `"` or `\`, which SQLite's JSON paths cannot
/// quote.
fn property_name(property: &str) -> Result<(), String> {
    validate::printable_text(property)?;
    match property.chars().find(|c| matches!(c, '"' | '\\')) {
        Some(bad) => Err(format!("must not contain {bad:?}")),
        None => Ok(()),
    }
}

/// Metrics as saved on an experiment; anything unreadable (never written by this code) is skipped.
pub fn from_stored(value: &serde_json::Value) -> Vec<Metric> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| serde_json::from_value(item.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn to_stored(metrics: &[Metric]) -> serde_json::Value {
    serde_json::to_value(metrics).unwrap_or_else(|_| serde_json::Value::Array(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(key: &str, kind: MetricKind, property: Option<&str>) -> Metric {
        Metric {
            key: key.into(),
            event_name: "purchase".into(),
            kind,
            property: property.map(Into::into),
            window_hours: None,
        }
    }

    #[test]
    fn each_rule_is_named_with_the_metric_position() {
        let mut windowed = metric("late", MetricKind::Count, None);
        windowed.window_hours = Some(0.0);
        let metrics = [
            metric("revenue", MetricKind::Sum, None),
            metric("revenue", MetricKind::Conversion, Some("amount")),
            metric("bad key!", MetricKind::Sum, Some("a\"b")),
            windowed,
        ];
        let errors = parse_metrics("metrics", &metrics, 1).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "metrics[0].property",
                "metrics[1].key",
                "metrics[1].property",
                "metrics[2].key",
                "metrics[2].property",
                "metrics[3].windowHours"
            ]
        );
    }

    #[test]
    fn list_length_and_window_bounds() {
        assert!(parse_metrics("metrics", &[], 1).is_err());
        assert!(parse_metrics("metrics", &[], 0).is_ok());
        let many: Vec<Metric> = (0..21)
            .map(|i| metric(&format!("m{i}"), MetricKind::Count, None))
            .collect();
        assert!(parse_metrics("metrics", &many, 0).is_err());
        assert!(parse_metrics("metrics", &many[..20], 1).is_ok());
        let mut longest = metric("w", MetricKind::Conversion, None);
        longest.window_hours = Some(MAX_WINDOW_HOURS);
        assert!(parse_metrics("metrics", std::slice::from_ref(&longest), 1).is_ok());
        longest.window_hours = Some(MAX_WINDOW_HOURS * 1.0001);
        assert!(parse_metrics("metrics", &[longest], 1).is_err());
    }

    #[test]
    fn windows_are_whole_microseconds() {
        let mut windowed = metric("w", MetricKind::Conversion, None);
        windowed.window_hours = Some(1.5);
        assert_eq!(windowed.window_micros(), Some(5_400_000_000));
        windowed.window_hours = Some(1e-12);
        assert_eq!(windowed.window_micros(), Some(1));
    }

    #[test]
    fn stored_metrics_round_trip() {
        let mut windowed = metric("revenue", MetricKind::Sum, Some("amount"));
        windowed.window_hours = Some(24.0);
        let metrics = vec![windowed, metric("buyers", MetricKind::Conversion, None)];
        let stored = to_stored(&metrics);
        assert_eq!(
            stored[0],
            serde_json::json!({"key": "revenue", "eventName": "purchase", "kind": "SUM", "property": "amount", "windowHours": 24.0})
        );
        assert_eq!(from_stored(&stored), metrics);
    }
}
