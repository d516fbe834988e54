//! Deterministic cohort assignment (docs/api.md §5). Pure, so the golden vectors pin it down.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::domain::validate;

/// Most cohorts an experiment may have.
pub const MAX_COHORTS: usize = 20;
/// The cohort name reserved for an experiment's own default config.
pub const DEFAULT_COHORT: &str = "default";

/// Cohort name → weight, iterated in byte order of the names (the order the algorithm uses).
#[derive(Debug, Clone, PartialEq)]
pub struct CohortWeights(BTreeMap<String, f64>);

impl CohortWeights {
    /// Validates a JSON object of 1 to 20 cohorts with finite weights ≥ 0 summing to more than 0.
    pub fn parse(value: &Value) -> Result<Self, String> {
        let Value::Object(object) = value else {
            return Err(format!(
                "must be a JSON object of cohort name to weight (got {})",
                validate::json_type(value)
            ));
        };
        if object.is_empty() || object.len() > MAX_COHORTS {
            return Err(format!(
                "must hold 1 to {MAX_COHORTS} cohorts (got {})",
                object.len()
            ));
        }
        let mut weights = BTreeMap::new();
        for (name, weight) in object {
            validate::slug(name).map_err(|reason| format!("cohort name {name:?} {reason}"))?;
            if name == DEFAULT_COHORT {
                return Err(format!(
                    "cohort name {DEFAULT_COHORT:?} is reserved for the experiment's default config"
                ));
            }
            let weight = weight
                .as_f64()
                .filter(|weight| weight.is_finite() && *weight >= 0.0)
                .ok_or_else(|| {
                    format!("weight of {name:?} must be a finite number ≥ 0 (got {weight})")
                })?;
            weights.insert(name.clone(), weight);
        }
        let total: f64 = weights.values().sum();
        if !(total > 0.0 && total.is_finite()) {
            return Err("weights must add up to more than 0".to_owned());
        }
        Ok(CohortWeights(weights))
    }

    /// Weights read back from storage, which only ever holds validated objects.
    pub fn from_stored(value: &Value) -> Self {
        let weights = value
            .as_object()
            .map(|object| {
                object
                    .iter()
                    .map(|(name, weight)| (name.clone(), weight.as_f64().unwrap_or(0.0)))
                    .collect()
            })
            .unwrap_or_default();
        CohortWeights(weights)
    }

    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(name, weight)| (name.clone(), Value::from(*weight)))
                .collect(),
        )
    }

    pub fn contains(&self, cohort: &str) -> bool {
        self.0.contains_key(cohort)
    }

    /// The cohort's weight, 0 when it is not one of these cohorts.
    pub fn weight(&self, cohort: &str) -> f64 {
        self.0.get(cohort).copied().unwrap_or(0.0)
    }

    /// Cohorts in byte order of their names.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(name, weight)| (name.as_str(), *weight))
    }
}

/// The uniform draw in [0, 1) for a user under a salt.
pub fn draw(salt: &str, user_id: &str) -> f64 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(salt.as_bytes());
    hasher.update(&[0]);
    hasher.update(user_id.as_bytes());
    let hash = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    let bits = u64::from_le_bytes(first) >> 11;
    bits as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The cohort a user falls in: the first cohort (byte order) with weight > 0 whose running sum
/// exceeds x·W; if rounding leaves none, the last cohort with weight > 0.
pub fn assign<'a>(salt: &str, user_id: &str, weights: &'a CohortWeights) -> &'a str {
    let x = draw(salt, user_id);
    let total: f64 = weights.0.values().sum();
    let target = x * total;
    let mut running = 0.0;
    let mut last_positive = None;
    for (name, weight) in weights.iter() {
        running += weight;
        if weight > 0.0 {
            if target < running {
                return name;
            }
            last_positive = Some(name);
        }
    }
    last_positive.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// docs/api.md §5: golden values that must never move.
    #[test]
    fn the_contract_vectors_assign_exactly_as_published() {
        let onboarding = json!({"control": 0.5, "variant_b": 0.5});
        let shop = json!({"control": 1, "cheap": 1, "premium": 2});
        let difficulty = json!({"easy": 0.2, "normal": 0.6, "hard": 0.2});
        let holdout = json!({"control": 0.9, "treatment": 0.1});
        let vectors = [
            ("onboarding_v2", "user-1", &onboarding, 0.364277, "control"),
            (
                "onboarding_v2",
                "user-3",
                &onboarding,
                0.559799,
                "variant_b",
            ),
            ("shop_prices", "alice", &shop, 0.650482, "premium"),
            ("shop_prices", "erin", &shop, 0.164483, "cheap"),
            ("shop_prices", "sybil", &shop, 0.332007, "control"),
            (
                "difficulty",
                "7f3c2a9e-0b1d-4e55-9a61-2f4e8c1d0b77",
                &difficulty,
                0.176135,
                "easy",
            ),
            ("difficulty", "Ωmega-üser", &difficulty, 0.206619, "hard"),
            ("holdout", "user-28", &holdout, 0.913275, "treatment"),
        ];
        for (salt, user, cohorts, x, cohort) in vectors {
            let weights = CohortWeights::parse(cohorts).unwrap();
            let drawn = draw(salt, user);
            assert!(
                (drawn - x).abs() < 5e-7,
                "{salt}/{user}: x = {drawn}, expected {x}"
            );
            assert_eq!(assign(salt, user, &weights), cohort, "{salt}/{user}");
        }
    }

    #[test]
    fn zero_weight_cohorts_are_never_drawn() {
        let weights = CohortWeights::parse(&json!({"a": 0, "b": 1, "c": 0})).unwrap();
        for user in 0..1000 {
            assert_eq!(assign("s", &format!("u{user}"), &weights), "b");
        }
    }

    #[test]
    fn weights_are_validated() {
        let bad = [
            json!({}),
            json!([1]),
            json!({"a": -1}),
            json!({"a": 0}),
            json!({"a": "1"}),
            json!({"default": 1}),
            json!({"bad name": 1}),
            Value::Object((0..21).map(|i| (format!("c{i}"), json!(1))).collect()),
        ];
        for weights in bad {
            assert!(CohortWeights::parse(&weights).is_err(), "{weights}");
        }
        assert!(CohortWeights::parse(&json!({"a": 0, "b": 1e-9})).is_ok());
    }
}
