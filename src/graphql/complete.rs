//! Two rules of GraphQL responses that async-graphql's executor does not keep, applied to its
//! result:
//!
//! - **Order.** Keys come in the order of the selection set (the spec's "serialized map ordering");
//!   the executor puts the root fields of a merged object in the order its parts complete.
//! - **Null propagation.** A field that failed is null, and a null in a non-null position makes its
//!   nearest nullable parent null (up to `data` itself); the executor left failed fields out, and
//!   nulls inside non-null lists.
//!
//! Both need the field types, read once from the schema's own introspection.

use std::collections::HashMap;

use async_graphql::{
    Name, PathSegment, Value,
    parser::types::{
        DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
    },
};

/// A field's type as introspection describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TypeRef {
    NonNull(Box<TypeRef>),
    List(Box<TypeRef>),
    Named(String),
}

impl TypeRef {
    fn from_introspection(value: &serde_json::Value) -> Option<TypeRef> {
        let of_type = || value.get("ofType").and_then(TypeRef::from_introspection);
        Some(match value.get("kind")?.as_str()? {
            "NON_NULL" => TypeRef::NonNull(Box::new(of_type()?)),
            "LIST" => TypeRef::List(Box::new(of_type()?)),
            _ => TypeRef::Named(value.get("name")?.as_str()?.to_owned()),
        })
    }

    fn is_non_null(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    fn nullable(&self) -> &TypeRef {
        match self {
            TypeRef::NonNull(inner) => inner,
            other => other,
        }
    }

    /// The named type under any wrappers.
    fn named(&self) -> &str {
        match self {
            TypeRef::NonNull(inner) | TypeRef::List(inner) => inner.named(),
            TypeRef::Named(name) => name,
        }
    }
}

/// Field types by object type and field name.
pub struct Shapes {
    fields: HashMap<String, HashMap<String, TypeRef>>,
    query: String,
    mutation: Option<String>,
}

const SHAPES_QUERY: &str = "{ __schema { queryType { name } mutationType { name } \
    types { name fields(includeDeprecated: true) { name type { ...T } } } } } \
    fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name \
    ofType { kind name } } } } }";

impl Shapes {
    /// Reads the types of `schema` (built without limits or data; introspection of itself).
    pub async fn of<Q, M, S>(schema: &async_graphql::Schema<Q, M, S>) -> Shapes
    where
        Q: async_graphql::ObjectType + 'static,
        M: async_graphql::ObjectType + 'static,
        S: async_graphql::SubscriptionType + 'static,
    {
        let response = schema.execute(SHAPES_QUERY).await;
        let json = response.data.into_json().unwrap_or_default();
        let root = &json["__schema"];
        let mut fields: HashMap<String, HashMap<String, TypeRef>> = HashMap::new();
        for object in root["types"].as_array().into_iter().flatten() {
            let Some(type_name) = object["name"].as_str() else {
                continue;
            };
            let mut by_name: HashMap<String, TypeRef> = object["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|field| {
                    let name = field["name"].as_str()?.to_owned();
                    Some((name, TypeRef::from_introspection(&field["type"])?))
                })
                .collect();
            by_name.insert(
                "__typename".to_owned(),
                TypeRef::NonNull(Box::new(TypeRef::Named("String".to_owned()))),
            );
            fields.insert(type_name.to_owned(), by_name);
        }
        let query = root["queryType"]["name"]
            .as_str()
            .unwrap_or("Query")
            .to_owned();
        if let Some(query_fields) = fields.get_mut(&query) {
            query_fields.insert(
                "__schema".to_owned(),
                TypeRef::NonNull(Box::new(TypeRef::Named("__Schema".to_owned()))),
            );
            query_fields.insert("__type".to_owned(), TypeRef::Named("__Type".to_owned()));
        }
        Shapes {
            fields,
            query,
            mutation: root["mutationType"]["name"].as_str().map(str::to_owned),
        }
    }

    fn field(&self, object: &str, field: &str) -> Option<&TypeRef> {
        self.fields.get(object)?.get(field)
    }
}

/// Applies null propagation for every error with a path, then orders every object's keys.
pub fn complete(
    shapes: &Shapes,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    response: &mut async_graphql::Response,
) {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        _ => None,
    };
    let Some(operation) = operation else {
        return;
    };
    let root = match operation.node.ty {
        OperationType::Query => shapes.query.as_str(),
        OperationType::Mutation => match &shapes.mutation {
            Some(mutation) => mutation.as_str(),
            None => return,
        },
        OperationType::Subscription => return,
    };
    let walk = Walk { shapes, document };
    let roots = [&operation.node.selection_set.node];
    for error in &response.errors {
        if !error.path.is_empty() {
            walk.propagate(&mut response.data, root, &roots, &error.path);
        }
    }
    walk.order(&mut response.data, root, &roots);
}

struct Walk<'a> {
    shapes: &'a Shapes,
    document: &'a ExecutableDocument,
}

/// The fields selected under one response key: the field's name and every selection set below it.
struct Selected<'d> {
    field: &'d str,
    below: Vec<&'d SelectionSet>,
}

impl<'a> Walk<'a> {
    /// Response keys in selection order, fragments expanded where they stand, repeated keys
    /// merged.
    fn selected(&self, sets: &[&'a SelectionSet]) -> Vec<(&'a str, Selected<'a>)> {
        let mut keys = Vec::new();
        let mut spread = Vec::new();
        for set in sets {
            self.collect(set, &mut keys, &mut spread);
        }
        keys
    }

    /// Fragment cycles were refused before execution; a fragment spread twice at one level adds
    /// nothing the first spread did not.
    fn collect(
        &self,
        set: &'a SelectionSet,
        keys: &mut Vec<(&'a str, Selected<'a>)>,
        spread: &mut Vec<&'a Name>,
    ) {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let key = field.response_key().node.as_str();
                    let below = &field.selection_set.node;
                    match keys.iter_mut().find(|(existing, _)| *existing == key) {
                        Some((_, selected)) => selected.below.push(below),
                        None => keys.push((
                            key,
                            Selected {
                                field: field.name.node.as_str(),
                                below: vec![below],
                            },
                        )),
                    }
                }
                Selection::InlineFragment(fragment) => {
                    self.collect(&fragment.node.selection_set.node, keys, spread);
                }
                Selection::FragmentSpread(fragment) => {
                    let name = &fragment.node.fragment_name.node;
                    if !spread.contains(&name)
                        && let Some(definition) = self.document.fragments.get(name)
                    {
                        spread.push(name);
                        self.collect(&definition.node.selection_set.node, keys, spread);
                    }
                }
            }
        }
    }

    fn order(&self, value: &mut Value, object: &str, sets: &[&'a SelectionSet]) {
        // Every item of a list has the same selection: work it out once, not per item.
        let selected = self.selected(sets);
        self.order_selected(value, object, &selected);
    }

    fn order_selected(
        &self,
        value: &mut Value,
        object: &str,
        selected: &[(&'a str, Selected<'a>)],
    ) {
        match value {
            Value::List(items) => {
                for item in items {
                    self.order_selected(item, object, selected);
                }
            }
            Value::Object(map) => {
                let in_order = map
                    .keys()
                    .zip(selected.iter().filter(|(key, _)| map.contains_key(*key)))
                    .all(|(present, (key, _))| present.as_str() == *key);
                if !in_order {
                    let mut old = std::mem::take(map);
                    for (key, _) in selected {
                        if let Some((name, value)) = old.shift_remove_entry(*key) {
                            map.insert(name, value);
                        }
                    }
                    map.extend(old);
                }
                for (key, selected) in selected {
                    if selected.below.iter().all(|set| set.items.is_empty()) {
                        continue;
                    }
                    let Some(child_type) = self.shapes.field(object, selected.field) else {
                        continue;
                    };
                    if let Some(child) = map.get_mut(*key) {
                        self.order(child, child_type.named(), &selected.below);
                    }
                }
            }
            _ => {}
        }
    }

    /// Makes the errored position null and carries the null up past non-null positions.
    fn propagate(
        &self,
        data: &mut Value,
        root: &str,
        roots: &[&'a SelectionSet],
        path: &[PathSegment],
    ) {
        // Whether each position along the path is non-null.
        let mut non_null = Vec::with_capacity(path.len());
        let mut object = root.to_owned();
        let mut sets: Vec<&'a SelectionSet> = roots.to_vec();
        let mut current: Option<TypeRef> = None;
        for segment in path {
            match segment {
                PathSegment::Field(key) => {
                    let selected = self.selected(&sets);
                    let Some((_, selected)) = selected.into_iter().find(|(k, _)| k == key) else {
                        return;
                    };
                    let Some(field_type) = self.shapes.field(&object, selected.field) else {
                        return;
                    };
                    non_null.push(field_type.is_non_null());
                    object = field_type.named().to_owned();
                    sets = selected.below;
                    current = Some(field_type.clone());
                }
                PathSegment::Index(_) => {
                    let Some(TypeRef::List(item)) = current.as_ref().map(TypeRef::nullable) else {
                        return;
                    };
                    non_null.push(item.is_non_null());
                    current = Some((**item).clone());
                }
            }
        }
        let mut nulled = path.len();
        while nulled > 0 && non_null[nulled - 1] {
            nulled -= 1;
        }
        if nulled == 0 {
            *data = Value::Null;
            return;
        }
        let Some((last, parents)) = path[..nulled].split_last() else {
            return;
        };
        let mut value = data;
        for segment in parents {
            value = match (segment, value) {
                (PathSegment::Field(key), Value::Object(map)) => match map.get_mut(key.as_str()) {
                    Some(child) => child,
                    None => return,
                },
                (PathSegment::Index(index), Value::List(items)) => match items.get_mut(*index) {
                    Some(child) => child,
                    None => return,
                },
                // Already null higher up.
                _ => return,
            };
        }
        match (last, value) {
            (PathSegment::Field(key), Value::Object(map)) => match map.get_mut(key.as_str()) {
                Some(child) => *child = Value::Null,
                None => {
                    map.insert(Name::new(key), Value::Null);
                }
            },
            (PathSegment::Index(index), Value::List(items)) => {
                if let Some(child) = items.get_mut(*index) {
                    *child = Value::Null;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::{ServerError, parser::parse_query};
    use serde_json::json;

    use super::*;

    /// Query { list: [Item!]!, maybe: Item, items: [Item] }, Item { id: ID!, name: String }.
    fn shapes() -> Shapes {
        let named = |name: &str| TypeRef::Named(name.to_owned());
        let non_null = |inner: TypeRef| TypeRef::NonNull(Box::new(inner));
        let list = |inner: TypeRef| TypeRef::List(Box::new(inner));
        let query = HashMap::from([
            ("list".to_owned(), non_null(list(non_null(named("Item"))))),
            ("maybe".to_owned(), named("Item")),
            ("items".to_owned(), list(named("Item"))),
        ]);
        let item = HashMap::from([
            ("id".to_owned(), non_null(named("ID"))),
            ("name".to_owned(), named("String")),
        ]);
        Shapes {
            fields: HashMap::from([("Query".to_owned(), query), ("Item".to_owned(), item)]),
            query: "Query".to_owned(),
            mutation: None,
        }
    }

    fn completed(
        query: &str,
        data: serde_json::Value,
        error_paths: &[serde_json::Value],
    ) -> String {
        let document = parse_query(query).unwrap();
        let mut response = async_graphql::Response::new(Value::from_json(data).unwrap());
        for path in error_paths {
            let mut error = ServerError::new("failed", None);
            error.path = serde_json::from_value(path.clone()).unwrap();
            response.errors.push(error);
        }
        complete(&shapes(), &document, None, &mut response);
        serde_json::to_string(&response.data).unwrap()
    }

    #[test]
    fn keys_follow_the_selection_set_with_fragments_where_they_stand() {
        let query =
            "{ z: maybe { name id } ...F a: list { id } } fragment F on Query { m: items { id } }";
        let data = json!({"a": [{"id": 1}], "m": [], "z": {"id": 2, "name": "n"}});
        assert_eq!(
            completed(query, data, &[]),
            r#"{"z":{"name":"n","id":2},"m":[],"a":[{"id":1}]}"#
        );
    }

    #[test]
    fn a_failed_field_nulls_its_nearest_nullable_parent() {
        let query = "{ maybe { id name } items { id } list { id } }";
        let data = || json!({"maybe": {"name": "x"}, "items": [{"id": 1}, {}], "list": [{"id": 1}, {"id": 2}]});
        // Left out by the executor: a non-null field nulls its nullable object.
        assert_eq!(
            completed(query, data(), &[json!(["maybe", "id"])]),
            r#"{"maybe":null,"items":[{"id":1},{}],"list":[{"id":1},{"id":2}]}"#
        );
        // Inside a list of nullable items: the item only.
        assert_eq!(
            completed(query, data(), &[json!(["items", 1, "id"])]),
            r#"{"maybe":{"name":"x"},"items":[{"id":1},null],"list":[{"id":1},{"id":2}]}"#
        );
        // [Item!]! all the way up: data itself.
        assert_eq!(
            completed(query, data(), &[json!(["list", 1, "id"])]),
            "null"
        );
        // A nullable field fails alone.
        assert_eq!(
            completed(query, data(), &[json!(["maybe", "name"])]),
            r#"{"maybe":{"name":null},"items":[{"id":1},{}],"list":[{"id":1},{"id":2}]}"#
        );
    }
}
