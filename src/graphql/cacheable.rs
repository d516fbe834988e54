//! Which GraphQL documents are plain config reads, whose whole replies the config service may keep
//! (see `crate::domain::config::replies`): one query operation whose root fields are
//! `remoteConfig` (selecting only plain values of the fetch) or `__typename`.

use async_graphql::parser::{
    parse_query,
    types::{DocumentOperations, OperationType, Selection, SelectionSet},
};
use moka::sync::Cache;

/// Longer query texts are not examined (nor cached).
const MAX_EXAMINED_QUERY_BYTES: usize = 4 * 1024;

/// `RemoteConfig` fields that are plain values of the fetch (no nested resolvers).
const CACHEABLE_CONFIG_FIELDS: [&str; 7] = [
    "userId",
    "experimentId",
    "cohort",
    "source",
    "version",
    "config",
    "__typename",
];

/// `Assignment` fields: plain values of the fetch's assignments.
const ASSIGNMENT_FIELDS: [&str; 5] = [
    "userId",
    "experimentId",
    "cohort",
    "assignedAt",
    "__typename",
];

/// Verdicts by query text: clients send the same few documents over and over.
pub struct CacheableDocuments {
    verdicts: Cache<String, bool>,
}

impl CacheableDocuments {
    pub fn new() -> Self {
        CacheableDocuments {
            verdicts: Cache::new(1_000),
        }
    }

    /// Whether a document's reply may be kept.
    pub fn is_cacheable(&self, query: &str) -> bool {
        if query.len() > MAX_EXAMINED_QUERY_BYTES {
            return false;
        }
        if let Some(verdict) = self.verdicts.get(query) {
            return verdict;
        }
        let verdict = reads_only_config(query);
        self.verdicts.insert(query.to_owned(), verdict);
        verdict
    }
}

fn reads_only_config(query: &str) -> bool {
    let Ok(document) = parse_query(query) else {
        return false;
    };
    if !document.fragments.is_empty() {
        return false;
    }
    // A named operation is parsed into the map even when it is the only one.
    let operation = match &document.operations {
        DocumentOperations::Single(operation) => operation,
        DocumentOperations::Multiple(operations) if operations.len() == 1 => {
            match operations.values().next() {
                Some(operation) => operation,
                None => return false,
            }
        }
        DocumentOperations::Multiple(_) => return false,
    };
    let operation = &operation.node;
    operation.ty == OperationType::Query
        && only_fields(
            &operation.selection_set.node,
            |name, selection_set| match name {
                "__typename" => true,
                "remoteConfig" => only_fields(selection_set, |field, nested| match field {
                    // The user's assignments are part of the fetch too (sticky, and any change
                    // to an experiment moves the generation that drops kept replies).
                    "assignments" => only_fields(nested, |field, below| {
                        ASSIGNMENT_FIELDS.contains(&field) && below.items.is_empty()
                    }),
                    _ => CACHEABLE_CONFIG_FIELDS.contains(&field) && nested.items.is_empty(),
                }),
                _ => false,
            },
        )
}

/// True when every selection is a plain field (no fragments) accepted by `accept`.
fn only_fields(selection_set: &SelectionSet, accept: impl Fn(&str, &SelectionSet) -> bool) -> bool {
    selection_set
        .items
        .iter()
        .all(|selection| match &selection.node {
            Selection::Field(field) => accept(
                field.node.name.node.as_str(),
                &field.node.selection_set.node,
            ),
            Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_config_reads_are_cacheable() {
        let cache = CacheableDocuments::new();
        for query in [
            "{ remoteConfig(userId: \"u\") { config } }",
            "query($u: String!) { remoteConfig(userId: $u) { source version config } }",
            "query Q($u: String!) { a: remoteConfig(userId: $u) { config } b: remoteConfig(userId: $u, experimentId: \"e\") { cohort } __typename }",
            "{ remoteConfig(userId: \"u\") { config assignments { experimentId cohort assignedAt } } }",
        ] {
            assert!(cache.is_cacheable(query), "{query}");
        }
        for query in [
            "{ remoteConfig(userId: \"u\") { assignments { cohort ... on Assignment { userId } } } }",
            "{ remoteConfig(userId: \"u\") { config } health { status } }",
            "{ remoteConfig(userId: \"u\") { ...F } } fragment F on RemoteConfig { config }",
            "{ remoteConfig(userId: \"u\") { ... on RemoteConfig { config } } }",
            "mutation { updateRemoteConfig(config: {}) { version } }",
            "query A { remoteConfig(userId: \"u\") { config } } query B { remoteConfig(userId: \"v\") { config } }",
            "{ remoteConfig(userId: ",
        ] {
            assert!(!cache.is_cacheable(query), "{query}");
        }
    }
}
