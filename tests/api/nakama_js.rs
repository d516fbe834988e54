//! The real Nakama JavaScript client (npm `@heroiclabs/nakama-js`, pinned under tests/nakama-js)
//! calling the RPC aliases the way shipped game builds do (`rpcHttpKey`: GET with `?payload=`).

use crate::helpers::{TestApp, run_node_test};

#[tokio::test]
async fn the_nakama_js_client_drives_every_kind_of_rpc() {
    let app = TestApp::spawn().await;

    let (passed, output) = run_node_test(
        "nakama-js",
        "rpc-http-key.test.mjs",
        &[("OCTP_PORT", app.address.port().to_string())],
    )
    .await;

    assert!(passed, "nakama-js tests failed:\n{output}");
    assert!(
        output.contains("pass 9"),
        "every nakama-js case ran:\n{output}"
    );
}
