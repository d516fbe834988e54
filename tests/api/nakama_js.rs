//! The real Nakama JavaScript client (npm `@heroiclabs/nakama-js`, pinned under tests/nakama-js)
//! calling the RPC aliases the way shipped game builds do (`rpcHttpKey`: GET with `?payload=`).

use std::path::Path;

use tokio::process::Command;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_nakama_js_client_drives_every_kind_of_rpc() {
    let app = TestApp::spawn().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nakama-js");
    if !dir.join("node_modules/@heroiclabs/nakama-js").is_dir() {
        // `--ignore-scripts`: a dependency's install script phones home, which must not run in tests.
        let install = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .expect("npm is installed (Node.js 18 or newer runs this test)");
        assert!(
            install.status.success(),
            "npm ci failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
    }

    let run = Command::new("node")
        .args(["--test", "--test-reporter=spec", "rpc-http-key.test.mjs"])
        .env("OCTP_PORT", app.address.port().to_string())
        .current_dir(&dir)
        .output()
        .await
        .expect("node is installed");

    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "nakama-js tests failed:\n{output}");
    assert!(
        output.contains("pass 9"),
        "every nakama-js case ran:\n{output}"
    );
}
