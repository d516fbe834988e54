//! The standard `graphql-ws` npm client (pinned under tests/graphql-ws), what GraphiQL, Apollo and
//! urql use for subscriptions, against `/graphql/ws`.

use crate::helpers::{TestApp, run_node_test};

#[tokio::test]
async fn the_graphql_ws_client_subscribes() {
    let app = TestApp::spawn().await;
    let (passed, output) = run_node_test(
        "graphql-ws",
        "subscriptions.test.mjs",
        &[("OCTP_PORT", app.address.port().to_string())],
    )
    .await;
    assert!(passed, "graphql-ws tests failed:\n{output}");
    assert!(
        output.contains("pass 3"),
        "every graphql-ws case ran:\n{output}"
    );
}
