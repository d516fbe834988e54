//! DataLoaders that batch per-item lookups (`Event.experiment`, `Experiment.variants`) into one
//! query per batch.

use std::{collections::HashMap, sync::Arc};

use async_graphql::dataloader::Loader;

use crate::{
    domain::{Services, config::ConfigVariant, experiments::Experiment},
    graphql::error::Extend,
};

pub struct ExperimentLoader(pub Services);

impl Loader<String> for ExperimentLoader {
    type Value = Arc<Experiment>;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        self.0.experiments.get_many(ids).await.extended()
    }
}

pub struct VariantLoader(pub Services);

impl Loader<String> for VariantLoader {
    type Value = Vec<ConfigVariant>;
    type Error = async_graphql::Error;

    async fn load(&self, ids: &[String]) -> Result<HashMap<String, Self::Value>, Self::Error> {
        let variants = self.0.config.variants_of(ids).await.extended()?;
        let mut by_experiment: HashMap<String, Vec<ConfigVariant>> = HashMap::new();
        for variant in variants {
            if let Some(id) = &variant.experiment_id {
                by_experiment.entry(id.clone()).or_default().push(variant);
            }
        }
        Ok(by_experiment)
    }
}
