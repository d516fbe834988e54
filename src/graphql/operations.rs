//! Which operation a GraphQL request ran, as a metrics label: the root field it selects (one of
//! the schema's, so the set is fixed), `multiple` for several, `batch` for a batch, `other` for
//! anything unknown or unparsed.

use std::{collections::HashMap, sync::OnceLock};

use async_graphql::parser::{
    parse_schema,
    types::{DocumentOperations, ExecutableDocument, Selection, TypeKind, TypeSystemDefinition},
};

use crate::telemetry::requests::Operation;

pub const MULTIPLE: &str = "multiple";
pub const BATCH: &str = "batch";

/// The label of `operation_name` (or the only operation) in `document`.
pub fn label(document: &ExecutableDocument, operation_name: Option<&str>) -> &'static str {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => {
            match operations
                .iter()
                .find(|(candidate, _)| candidate.as_str() == name)
            {
                Some((_, operation)) => operation,
                None => return Operation::OTHER,
            }
        }
        (DocumentOperations::Multiple(_), None) => return Operation::OTHER,
    };
    let mut label = None;
    for selection in &operation.node.selection_set.node.items {
        let Selection::Field(field) = &selection.node else {
            return MULTIPLE;
        };
        let name = field.node.name.node.as_str();
        if name == "__typename" {
            continue;
        }
        let known = root_fields().get(name).copied().unwrap_or(Operation::OTHER);
        match label {
            None => label = Some(known),
            Some(seen) if seen == known => {}
            Some(_) => return MULTIPLE,
        }
    }
    label.unwrap_or(Operation::OTHER)
}

/// Every root field of the schema (queries, mutations, subscriptions, `__schema`, `__type`).
fn root_fields() -> &'static HashMap<&'static str, &'static str> {
    static FIELDS: OnceLock<HashMap<&'static str, &'static str>> = OnceLock::new();
    FIELDS.get_or_init(|| {
        let mut fields: Vec<String> = vec!["__schema".to_owned(), "__type".to_owned()];
        if let Ok(document) = parse_schema(super::sdl()) {
            for definition in document.definitions {
                let TypeSystemDefinition::Type(definition) = definition else {
                    continue;
                };
                let name = definition.node.name.node.as_str();
                if !matches!(name, "Query" | "Mutation" | "Subscription") {
                    continue;
                }
                if let TypeKind::Object(object) = &definition.node.kind {
                    fields.extend(
                        object
                            .fields
                            .iter()
                            .map(|field| field.node.name.node.to_string()),
                    );
                }
            }
        }
        fields
            .into_iter()
            .map(|field| {
                let field: &'static str = Box::leak(field.into_boxed_str());
                (field, field)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn of(query: &str, name: Option<&str>) -> &'static str {
        label(&parse_query(query).unwrap(), name)
    }

    #[test]
    fn requests_are_labelled_by_their_root_field_from_a_fixed_set() {
        assert_eq!(
            of("{ remoteConfig(userId: \"u\") { config } }", None),
            "remoteConfig"
        );
        assert_eq!(
            of(
                "{ a: health { status } b: health { status } __typename }",
                None
            ),
            "health"
        );
        assert_eq!(
            of("mutation { collectEvents(events: []) { accepted } }", None),
            "collectEvents"
        );
        assert_eq!(
            of("{ health { status } activeExperiments { id } }", None),
            MULTIPLE
        );
        assert_eq!(of("{ noSuchField }", None), Operation::OTHER);
        assert_eq!(
            of("{ ...F } fragment F on Query { health { status } }", None),
            MULTIPLE
        );
        let two = "query A { health { status } } query B { auditLog { totalCount } }";
        assert_eq!(of(two, Some("B")), "auditLog");
        assert_eq!(of(two, Some("C")), Operation::OTHER);
        assert_eq!(of(two, None), Operation::OTHER);
        assert_eq!(of("{ __schema { types { name } } }", None), "__schema");
    }
}
