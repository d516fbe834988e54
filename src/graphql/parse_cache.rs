//! Remembers parsed query documents by their text. Clients send the same few operations over and
//! over; parsing them again each time was a large share of a cached `remoteConfig` request.

use std::sync::Arc;

use async_graphql::{
    ServerResult, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::ExecutableDocument,
};
use moka::sync::Cache;

/// Longer documents are parsed every time: they are rare and would crowd the cache.
const MAX_CACHED_QUERY_BYTES: usize = 8 * 1024;

pub struct ParseCache {
    documents: Cache<String, ExecutableDocument>,
}

impl ParseCache {
    pub fn new(capacity: u64) -> Self {
        ParseCache {
            documents: Cache::new(capacity),
        }
    }
}

impl ExtensionFactory for ParseCache {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ParseCacheExtension {
            documents: self.documents.clone(),
        })
    }
}

struct ParseCacheExtension {
    documents: Cache<String, ExecutableDocument>,
}

#[async_trait::async_trait]
impl Extension for ParseCacheExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        if let Some(document) = self.documents.get(query) {
            return Ok(document);
        }
        let document = next.run(ctx, query, variables).await?;
        if query.len() <= MAX_CACHED_QUERY_BYTES {
            self.documents.insert(query.to_owned(), document.clone());
        }
        Ok(document)
    }
}
