//! The pure core of a config fetch (docs/api.md §6 and §8): which stored variant serves a user for
//! one experiment, and how the merged answer is laid together from the global default and every
//! active experiment. No I/O: the service hands in the variants and the user's cohorts.

use std::{collections::HashMap, sync::Arc};

use serde_json::{Map, Value};

use super::{ConfigSource, ConfigVariant};
use crate::domain::{assignment::DEFAULT_COHORT, experiments::GLOBAL};

/// Every stored variant, keyed by (experiment id, cohort); the global default is (`global`, `default`).
pub type VariantMap = HashMap<(String, String), Arc<ConfigVariant>>;

/// What a fetch serves: the level used, its version (the sum for a merged answer) and the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub source: ConfigSource,
    pub version: i64,
    pub config: Value,
}

impl Served {
    fn nothing() -> Self {
        Served {
            source: ConfigSource::None,
            version: 0,
            config: Value::Object(Map::new()),
        }
    }
}

fn lookup<'a>(
    variants: &'a VariantMap,
    experiment: &str,
    cohort: &str,
) -> Option<&'a ConfigVariant> {
    variants
        .get(&(experiment.to_owned(), cohort.to_owned()))
        .map(Arc::as_ref)
}

/// The fallback chain for one experiment. `cohort` is the user's cohort when the experiment is
/// active, `None` when it is unknown or inactive (then only the global default can serve).
/// Levels are not merged: the first that exists serves alone.
pub fn fallback(variants: &VariantMap, experiment_id: &str, cohort: Option<&str>) -> Served {
    let served = cohort.and_then(|cohort| {
        lookup(variants, experiment_id, cohort)
            .map(|variant| (ConfigSource::Cohort, variant))
            .or_else(|| {
                lookup(variants, experiment_id, DEFAULT_COHORT)
                    .map(|variant| (ConfigSource::ExperimentDefault, variant))
            })
    });
    let served = served.or_else(|| {
        lookup(variants, GLOBAL, DEFAULT_COHORT).map(|variant| (ConfigSource::Global, variant))
    });
    match served {
        Some((source, variant)) => Served {
            source,
            version: variant.version,
            config: variant.config.clone(),
        },
        None => Served::nothing(),
    }
}

/// The merged answer: the global default, then for each (experiment, user's cohort) in the order
/// given (byte order of experiment ids) its cohort variant or else its `default`, top-level keys
/// replaced. The version is the sum of the versions used; the source the most specific level used.
pub fn merge(variants: &VariantMap, cohorts: &[(&str, &str)]) -> Served {
    let global =
        lookup(variants, GLOBAL, DEFAULT_COHORT).map(|variant| (ConfigSource::Global, variant));
    let experiments = cohorts.iter().filter_map(|(experiment, cohort)| {
        lookup(variants, experiment, cohort)
            .map(|variant| (ConfigSource::Cohort, variant))
            .or_else(|| {
                lookup(variants, experiment, DEFAULT_COHORT)
                    .map(|variant| (ConfigSource::ExperimentDefault, variant))
            })
    });
    let mut served = Served::nothing();
    let mut config = Map::new();
    for (level, variant) in global.into_iter().chain(experiments) {
        overlay(&mut config, &variant.config);
        served.version += variant.version;
        served.source = served.source.max(level);
    }
    served.config = Value::Object(config);
    served
}

/// Lays the top-level keys of `top` over `base`, replacing whole values.
pub fn overlay(base: &mut Map<String, Value>, top: &Value) {
    if let Value::Object(top) = top {
        for (key, value) in top {
            base.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::json;

    use super::*;

    fn variants(rows: &[(&str, &str, i64, Value)]) -> VariantMap {
        rows.iter()
            .map(|(experiment, cohort, version, config)| {
                let variant = ConfigVariant {
                    experiment_id: (*experiment != GLOBAL).then(|| experiment.to_string()),
                    cohort: cohort.to_string(),
                    config: config.clone(),
                    version: *version,
                    updated_at: Utc::now(),
                };
                (
                    (experiment.to_string(), cohort.to_string()),
                    Arc::new(variant),
                )
            })
            .collect()
    }

    #[test]
    fn the_fallback_chain_serves_the_most_specific_stored_level_alone() {
        use ConfigSource::{Cohort, ExperimentDefault, Global};
        let all = variants(&[
            ("global", "default", 3, json!({"g": 1})),
            ("exp", "default", 2, json!({"d": 1})),
            ("exp", "a", 5, json!({"a": 1})),
        ]);
        let no_cohorts = variants(&[
            ("global", "default", 3, json!({"g": 1})),
            ("exp", "default", 2, json!({"d": 1})),
        ]);
        let only_global = variants(&[("global", "default", 3, json!({"g": 1}))]);
        let empty = variants(&[]);
        let cases: [(&VariantMap, Option<&str>, ConfigSource, i64, Value); 8] = [
            (&all, Some("a"), Cohort, 5, json!({"a": 1})),
            (&all, Some("b"), ExperimentDefault, 2, json!({"d": 1})),
            // Inactive or unknown experiment: straight to the global default.
            (&all, None, Global, 3, json!({"g": 1})),
            (
                &no_cohorts,
                Some("a"),
                ExperimentDefault,
                2,
                json!({"d": 1}),
            ),
            (&only_global, Some("a"), Global, 3, json!({"g": 1})),
            (&only_global, None, Global, 3, json!({"g": 1})),
            (&empty, Some("a"), ConfigSource::None, 0, json!({})),
            (&empty, None, ConfigSource::None, 0, json!({})),
        ];
        for (variants, cohort, source, version, config) in cases {
            let served = fallback(variants, "exp", cohort);
            assert_eq!(
                served,
                Served {
                    source,
                    version,
                    config
                },
                "cohort {cohort:?} over {:?}",
                variants.keys().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn the_merged_answer_lays_experiments_over_the_global_default_in_order() {
        use ConfigSource::{Cohort, ExperimentDefault, Global};
        let stored = variants(&[
            (
                "global",
                "default",
                1,
                json!({"color": "grey", "speed": 1, "keep": true}),
            ),
            ("a_exp", "fast", 4, json!({"speed": 2})),
            ("a_exp", "default", 9, json!({"speed": 0})),
            ("b_exp", "default", 2, json!({"color": "red", "speed": 3})),
        ]);
        type Cohorts<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Cohorts, ConfigSource, i64, Value); 4] = [
            (
                &[],
                Global,
                1,
                json!({"color": "grey", "speed": 1, "keep": true}),
            ),
            (
                &[("a_exp", "fast")],
                Cohort,
                5,
                json!({"color": "grey", "speed": 2, "keep": true}),
            ),
            (
                &[("a_exp", "slow"), ("b_exp", "x")],
                ExperimentDefault,
                12,
                json!({"color": "red", "speed": 3, "keep": true}),
            ),
            (
                &[("a_exp", "fast"), ("c_exp", "nothing_stored")],
                Cohort,
                5,
                json!({"color": "grey", "speed": 2, "keep": true}),
            ),
        ];
        for (cohorts, source, version, config) in cases {
            assert_eq!(
                merge(&stored, cohorts),
                Served {
                    source,
                    version,
                    config
                },
                "{cohorts:?}"
            );
        }
        assert_eq!(
            merge(&variants(&[]), &[("a_exp", "fast")]),
            Served::nothing()
        );
    }

    #[test]
    fn overlay_replaces_top_level_keys_whole() {
        let mut base = json!({"a": 1, "nested": {"x": 1, "y": 2}})
            .as_object()
            .cloned()
            .unwrap();
        overlay(&mut base, &json!({"nested": {"x": 9}, "b": 2}));
        assert_eq!(
            Value::Object(base),
            json!({"a": 1, "b": 2, "nested": {"x": 9}})
        );
    }

    #[test]
    fn sources_order_from_least_to_most_specific() {
        assert!(ConfigSource::None < ConfigSource::Global);
        assert!(ConfigSource::Global < ConfigSource::ExperimentDefault);
        assert!(ConfigSource::ExperimentDefault < ConfigSource::Cohort);
    }
}
