//! Checks every query document before async-graphql sees it, in time linear in its size, and
//! remembers the checked documents by their text.
//!
//! async-graphql's own passes (the recursion-depth check, validation, complexity) walk fragment
//! spreads afresh each time they are spread: 26 fragments that each spread the next twice make a
//! 1 KB document expand to 2^26 fields, which took minutes and tens of GB before any limit fired.
//! Here each fragment is measured once (memoised), so a document is refused for its *expanded*
//! size, its aliases or a fragment cycle before any of those passes run. The text is also scanned
//! for bracket nesting first, so the recursive-descent parser never meets a document deep enough
//! to exhaust the stack.

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    ErrorExtensions, Name, Request, ServerError, ServerResult,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest},
    parser::{
        Error as ParseError, parse_query,
        types::{ExecutableDocument, Selection, SelectionSet},
    },
};

use moka::sync::Cache;

use super::error::request_error;
use crate::error::Error;

/// Most fields one document may select once every fragment is expanded (aliases and `__typename`
/// included).
pub const MAX_FIELDS: u64 = 2_000;
/// Most aliased fields, expanded: each alias is another copy of its field's work. Tools look up a
/// few hundred users' assignments in one request; complexity prices what each alias does.
pub const MAX_ALIASES: u64 = 256;
/// Deepest bracket nesting (`{`, `[`, `(`) in the text: selections are limited to 12 levels and
/// JSON literals to 64, so anything deeper is refused before parsing.
pub const MAX_NESTING: usize = 100;
/// Deepest data selection. Our deepest real query is about 6 levels.
pub const MAX_DEPTH: u64 = 12;
/// Deepest introspection selection: graphql-js's standard introspection query (what code
/// generators and API tools send) reaches 14; dozens of nested `ofType` are a known DoS shape.
pub const MAX_INTROSPECTION_DEPTH: u64 = 20;
/// Longer documents are checked every time: they are rare and would crowd the cache.
const MAX_CACHED_QUERY_BYTES: usize = 8 * 1024;
/// Query text kept at most; a parsed document takes roughly ten times its text, and anyone with
/// the http key can send new documents.
const MAX_CACHED_TEXT_BYTES: u64 = 1024 * 1024;

/// Checked documents by query text, shared with the transport (which completes responses along
/// the same document).
pub type Documents = Cache<String, Arc<ExecutableDocument>, ahash::RandomState>;

/// An empty cache of checked documents.
pub fn documents() -> Documents {
    Cache::builder()
        .max_capacity(MAX_CACHED_TEXT_BYTES)
        .weigher(|query: &String, _| u32::try_from(query.len()).unwrap_or(u32::MAX))
        .build_with_hasher(ahash::RandomState::new())
}

pub struct DocumentGuard {
    documents: Documents,
    introspection: bool,
}

impl DocumentGuard {
    /// With `introspection` false, documents that read `__schema` or `__type` are refused.
    pub fn new(introspection: bool, documents: Documents) -> Self {
        DocumentGuard {
            introspection,
            documents,
        }
    }
}

impl ExtensionFactory for DocumentGuard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentGuardExtension {
            documents: self.documents.clone(),
            introspection: self.introspection,
        })
    }
}

struct DocumentGuardExtension {
    documents: Documents,
    introspection: bool,
}

#[async_trait::async_trait]
impl Extension for DocumentGuardExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        let document = match self.documents.get(&request.query) {
            Some(document) => document,
            None => {
                let document = Arc::new(checked_document(&request.query, self.introspection)?);
                if request.query.len() <= MAX_CACHED_QUERY_BYTES {
                    self.documents
                        .insert(request.query.clone(), document.clone());
                }
                document
            }
        };
        request.set_parsed_query(ExecutableDocument::clone(&document));
        next.run(ctx, request).await
    }
}

/// The parsed document, or why it is refused.
pub fn checked_document(query: &str, introspection: bool) -> ServerResult<ExecutableDocument> {
    let nesting = max_nesting(query);
    if nesting > MAX_NESTING {
        return Err(too_complex(format!(
            "brackets nest {nesting} levels deep (at most {MAX_NESTING})"
        )));
    }
    let document = parse_query(query).map_err(syntax_error)?;
    let cost = expanded_cost(&document).map_err(too_complex)?;
    if cost.fields > MAX_FIELDS {
        return Err(too_complex(format!(
            "it selects {} fields once fragments are expanded (at most {MAX_FIELDS})",
            display_count(cost.fields)
        )));
    }
    if cost.aliases > MAX_ALIASES {
        return Err(too_complex(format!(
            "it uses {} aliases once fragments are expanded (at most {MAX_ALIASES})",
            display_count(cost.aliases)
        )));
    }
    if cost.depth > MAX_DEPTH {
        return Err(too_complex(format!(
            "its selections nest {} levels deep (at most {MAX_DEPTH})",
            cost.depth
        )));
    }
    if cost.introspection_depth > 0 && !introspection {
        return Err(request_error(&Error::invalid(
            "query",
            "introspection is disabled on this server",
        )));
    }
    if cost.introspection_depth > MAX_INTROSPECTION_DEPTH {
        return Err(too_complex(format!(
            "its introspection nests {} levels deep (at most {MAX_INTROSPECTION_DEPTH})",
            cost.introspection_depth
        )));
    }
    Ok(document)
}

fn too_complex(reason: String) -> ServerError {
    request_error(&Error::invalid(
        "query",
        format!("the query is too complex: {reason}"),
    ))
}

/// A parse error in one sentence with its place, instead of the parser's multi-line rendering
/// (which quotes the offending line, however long).
fn syntax_error(error: ParseError) -> ServerError {
    let message = match &error {
        ParseError::Syntax { message, start, .. } => {
            let expected = message
                .lines()
                .find_map(|line| line.trim().strip_prefix("= "))
                .unwrap_or("unexpected input");
            format!(
                "syntax error at line {}, column {}: {expected}",
                start.line, start.column
            )
        }
        other => other.to_string(),
    };
    let mut server_error = ServerError::new(message, error.positions().next());
    server_error.extensions = Error::invalid("query", "does not parse")
        .extend()
        .extensions;
    server_error
}

fn display_count(count: u64) -> String {
    if count == u64::MAX {
        "more than 18 quintillion".to_owned()
    } else {
        count.to_string()
    }
}

/// The deepest nesting of brackets outside strings and comments.
fn max_nesting(query: &str) -> usize {
    let mut depth = 0usize;
    let mut deepest = 0usize;
    let mut bytes = query.bytes().peekable();
    while let Some(byte) = bytes.next() {
        match byte {
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            b'#' => {
                for byte in bytes.by_ref() {
                    if byte == b'\n' || byte == b'\r' {
                        break;
                    }
                }
            }
            b'"' => {
                // Block strings ("""…""") hold no escapes but `\"""`; plain strings end at an
                // unescaped quote. Either way nothing inside counts.
                if bytes.peek() == Some(&b'"') {
                    bytes.next();
                    if bytes.peek() == Some(&b'"') {
                        bytes.next();
                        let mut quotes = 0;
                        let mut escaped = false;
                        for byte in bytes.by_ref() {
                            match byte {
                                b'"' if !escaped => {
                                    quotes += 1;
                                    if quotes == 3 {
                                        break;
                                    }
                                }
                                _ => quotes = 0,
                            }
                            escaped = byte == b'\\';
                        }
                    }
                    // Otherwise it was an empty string "".
                } else {
                    let mut escaped = false;
                    for byte in bytes.by_ref() {
                        match byte {
                            b'"' if !escaped => break,
                            b'\\' => escaped = !escaped,
                            _ => escaped = false,
                        }
                    }
                }
            }
            _ => {}
        }
    }
    deepest
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Cost {
    fields: u64,
    aliases: u64,
    /// Deepest nesting of data fields (introspection subtrees excluded).
    depth: u64,
    /// Deepest introspection subtree, counted from its `__schema` or `__type` field.
    introspection_depth: u64,
}

impl Cost {
    /// Selections side by side: counts add up, depths take the deeper.
    fn beside(self, other: Cost) -> Cost {
        Cost {
            fields: self.fields.saturating_add(other.fields),
            aliases: self.aliases.saturating_add(other.aliases),
            depth: self.depth.max(other.depth),
            introspection_depth: self.introspection_depth.max(other.introspection_depth),
        }
    }

    /// A field over the selections below it.
    fn field(name: &str, aliased: bool, below: Cost) -> Cost {
        let (depth, introspection_depth) = if matches!(name, "__schema" | "__type") {
            let subtree = below.depth.saturating_add(1);
            (1, below.introspection_depth.max(subtree))
        } else {
            (below.depth.saturating_add(1), below.introspection_depth)
        };
        Cost {
            fields: below.fields.saturating_add(1),
            aliases: below.aliases.saturating_add(u64::from(aliased)),
            depth,
            introspection_depth,
        }
    }
}

/// Fields and aliases of every operation with fragments expanded, each fragment measured once.
fn expanded_cost(document: &ExecutableDocument) -> Result<Cost, String> {
    let mut fragments = Fragments {
        document,
        measured: HashMap::new(),
    };
    let mut total = Cost::default();
    for (_, operation) in document.operations.iter() {
        total = total.beside(fragments.selection_set(&operation.node.selection_set.node)?);
    }
    Ok(total)
}

struct Fragments<'a> {
    document: &'a ExecutableDocument,
    /// `None` while a fragment is being measured: meeting it again is a cycle.
    measured: HashMap<&'a Name, Option<Cost>>,
}

impl<'a> Fragments<'a> {
    fn selection_set(&mut self, selection_set: &'a SelectionSet) -> Result<Cost, String> {
        let mut cost = Cost::default();
        for selection in &selection_set.items {
            let inner = match &selection.node {
                Selection::Field(field) => Cost::field(
                    field.node.name.node.as_str(),
                    field.node.alias.is_some(),
                    self.selection_set(&field.node.selection_set.node)?,
                ),
                Selection::InlineFragment(fragment) => {
                    self.selection_set(&fragment.node.selection_set.node)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.node.fragment_name.node)?
                }
            };
            cost = cost.beside(inner);
        }
        Ok(cost)
    }

    fn fragment(&mut self, name: &'a Name) -> Result<Cost, String> {
        match self.measured.get(name) {
            Some(Some(cost)) => return Ok(*cost),
            Some(None) => return Err(format!("fragment {name} spreads itself")),
            None => {}
        }
        // An unknown fragment adds nothing here; validation names it.
        let Some(definition) = self.document.fragments.get(name) else {
            return Ok(Cost::default());
        };
        self.measured.insert(name, None);
        let cost = self.selection_set(&definition.node.selection_set.node)?;
        self.measured.insert(name, Some(cost));
        Ok(cost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fan_out(levels: usize) -> String {
        let mut query = String::from("{ ...F0 }");
        for level in 0..levels {
            query.push_str(&format!(
                " fragment F{level} on Query {{ ...F{next} ...F{next} }}",
                next = level + 1
            ));
        }
        query.push_str(&format!(
            " fragment F{levels} on Query {{ health {{ status }} }}"
        ));
        query
    }

    fn refusal(query: &str) -> String {
        checked_document(query, true).unwrap_err().message
    }

    #[test]
    fn syntax_errors_are_one_sentence_with_their_place() {
        let error = checked_document(
            &format!("{{ health {{ status }} {}", "x".repeat(10_000)),
            true,
        )
        .unwrap_err();
        assert!(
            error.message.starts_with("syntax error at line 1, column"),
            "{}",
            error.message
        );
        assert!(error.message.len() < 200, "{}", error.message);
        assert_eq!(error.locations.len(), 1);
        let error = checked_document("{", true).unwrap_err();
        assert_eq!(
            error.message,
            "syntax error at line 1, column 2: expected selection"
        );
    }

    #[test]
    fn fragments_are_counted_each_time_they_are_spread_without_expanding_them() {
        // 2^10 spreads × 2 fields: over the limit, though the text is short.
        assert!(
            refusal(&fan_out(10)).contains("2048 fields"),
            "{}",
            refusal(&fan_out(10))
        );
        assert!(checked_document(&fan_out(9), true).is_ok());
        // 2^60 × 2 saturates instead of overflowing, and takes no longer than the text.
        assert!(refusal(&fan_out(70)).contains("too complex"));
    }

    #[test]
    fn cycles_aliases_and_nesting_are_refused() {
        assert!(refusal("{ ...A } fragment A on Query { ...A ...A }").contains("spreads itself"));
        assert!(
            refusal("{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }")
                .contains("spreads itself")
        );
        let aliases: String = (0..257).map(|i| format!("a{i}: __typename ")).collect();
        assert!(refusal(&format!("{{ {aliases} }}")).contains("257 aliases"));
        let within: String = (0..256).map(|i| format!("a{i}: __typename ")).collect();
        assert!(checked_document(&format!("{{ {within} }}"), true).is_ok());
        let deep = format!("{{ f(x: {}1{}) }}", "[".repeat(200), "]".repeat(200));
        assert!(
            refusal(&deep).contains("nest 202 levels"),
            "{}",
            refusal(&deep)
        );
        let deep_object = format!(
            "{{ f(x: {}1{}) }}",
            "{a: ".repeat(100_000),
            "}".repeat(100_000)
        );
        assert!(refusal(&deep_object).contains("levels deep"));
    }

    #[test]
    fn data_depth_excludes_introspection_which_has_its_own_limit() {
        let nested = |levels: usize| {
            format!(
                "{{ {} id {} }}",
                "a { ".repeat(levels - 1),
                "} ".repeat(levels - 1)
            )
        };
        assert!(checked_document(&nested(12), true).is_ok());
        assert!(refusal(&nested(13)).contains("nest 13 levels"));
        // graphql-js's standard introspection query: 14 levels, fine; 20 + 1 is not.
        let type_ref = |of_types: usize| {
            format!(
                "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
                "ofType { ".repeat(of_types),
                "} ".repeat(of_types)
            )
        };
        assert!(checked_document(&type_ref(9), true).is_ok());
        assert!(checked_document(&type_ref(15), true).is_ok());
        assert!(refusal(&type_ref(16)).contains("introspection nests 21 levels"));
        // Fragments count where they are spread.
        let through_fragment = "{ __schema { ...T } } fragment T on __Schema { types { fields { type { ofType { ofType { name } } } } } }";
        assert!(checked_document(through_fragment, true).is_ok());
        let error = checked_document("{ __type(name: \"Query\") { name } }", false).unwrap_err();
        assert!(
            error.message.contains("introspection is disabled"),
            "{}",
            error.message
        );
        assert!(checked_document("{ __typename }", false).is_ok());
    }

    #[test]
    fn brackets_inside_strings_and_comments_do_not_count() {
        let cases = [
            ("{ a }", 1),
            ("{ a(x: \"{{{[[[(((\") }", 2),
            ("{ a(x: \"\\\"{{{\") }", 2),
            ("{ a(x: \"\"\"{{{ \\\"\"\" [[[\"\"\") }", 2),
            ("{ a(x: \"\") { b } }", 2),
            ("# {{{{{\n{ a }", 1),
            ("{ a(x: [[1]]) }", 4),
        ];
        for (query, nesting) in cases {
            assert_eq!(max_nesting(query), nesting, "{query}");
        }
    }
}
