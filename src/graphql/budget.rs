//! What one response may hold. Complexity (see `graphql::build`) bounds how many things a query
//! asks for; the JSON values it returns (event properties, configs) vary in size, and the executor
//! holds each in several forms at once (the stored value, its GraphQL value, the serialised reply),
//! so each JSON value charges its estimated weight to the request's budget and the request fails
//! with a clear error once the budget is spent, long before memory runs short.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use async_graphql::{Context, Json, Result};
use serde_json::Value;

use crate::{domain::validate::JsonShape, error::Error, graphql::error::Extend};

/// Estimated bytes of JSON values one request may hold: about 64 MiB of the executor's
/// representations, a few MiB of reply. A page of 500 events with typical properties uses a
/// fraction of it; 500 events with the largest properties made of tiny values do not fit.
pub const MAX_RESPONSE_WEIGHT: u64 = 64 * 1024 * 1024;
/// Memory a JSON value costs in the executor beyond its text: a tree node in two representations.
const WEIGHT_PER_NODE: u64 = 160;
/// Strings and keys live in the stored value, the GraphQL value and the reply.
const WEIGHT_PER_TEXT_BYTE: u64 = 3;

/// The weight spent so far by one request; clones share it, so a batch shares one budget.
#[derive(Clone, Default)]
pub struct ResponseBudget(Arc<AtomicU64>);

impl ResponseBudget {
    /// Whether some value was refused: the response is then an error as a whole.
    pub fn exceeded(&self) -> bool {
        self.0.load(Ordering::Relaxed) > MAX_RESPONSE_WEIGHT
    }

    fn spend(&self, weight: u64) -> Result<(), Error> {
        let spent = self
            .0
            .fetch_add(weight, Ordering::Relaxed)
            .saturating_add(weight);
        if spent > MAX_RESPONSE_WEIGHT {
            return Err(Error::invalid(
                "query",
                format!(
                    "the response would be too large (its JSON values weigh more than {} MiB); \
                     ask for fewer items (e.g. a smaller `first`) or leave out large fields",
                    MAX_RESPONSE_WEIGHT / (1024 * 1024)
                ),
            ));
        }
        Ok(())
    }
}

/// A JSON value for the response, charged to the request's budget.
pub fn json_output(ctx: &Context<'_>, value: &Value) -> Result<Json<Value>> {
    if let Some(budget) = ctx.data_opt::<ResponseBudget>() {
        budget.spend(weight(value)).extended()?;
    }
    Ok(Json(value.clone()))
}

/// The estimated weight of a value.
fn weight(value: &Value) -> u64 {
    let shape = JsonShape::of(value);
    (shape.values as u64)
        .saturating_mul(WEIGHT_PER_NODE)
        .saturating_add((shape.text_bytes as u64).saturating_mul(WEIGHT_PER_TEXT_BYTE))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn weight_counts_nodes_and_text() {
        assert_eq!(weight(&json!(1)), WEIGHT_PER_NODE);
        assert_eq!(
            weight(&json!("abcd")),
            WEIGHT_PER_NODE + 4 * WEIGHT_PER_TEXT_BYTE
        );
        assert_eq!(
            weight(&json!({"ab": [1, 2]})),
            4 * WEIGHT_PER_NODE + 2 * WEIGHT_PER_TEXT_BYTE
        );
    }

    #[test]
    fn a_budget_refuses_once_spent() {
        let budget = ResponseBudget::default();
        assert!(budget.spend(MAX_RESPONSE_WEIGHT).is_ok());
        let error = budget.spend(1).unwrap_err();
        assert!(error.to_string().contains("too large"), "{error}");
    }
}
