//! The playground in headless Chromium (Debian's package; `.ci/run` installs it) driven by
//! playwright-core (pinned under tests/browser), with every non-local request blocked.

use std::path::Path;

use crate::helpers::{TestApp, run_node_test, skip};

#[tokio::test]
async fn the_playground_runs_a_health_query_in_a_real_browser_offline() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        // CI must run it; a developer without Chromium is told how to get it.
        skip(
            "the_playground_runs_a_health_query_in_a_real_browser_offline",
            &format!("no Chromium at {chromium}; `apt-get install chromium` (.ci/run does)"),
            true,
        );
        return;
    }
    let app = TestApp::spawn().await;
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground.png");

    let (passed, output) = run_node_test(
        "browser",
        "playground.test.mjs",
        &[
            ("OCTP_PORT", app.address.port().to_string()),
            ("CHROMIUM", chromium),
            ("SCREENSHOT", screenshot.display().to_string()),
        ],
    )
    .await;

    assert!(passed, "the browser test failed:\n{output}");
    assert!(screenshot.is_file(), "a screenshot was saved");
    eprintln!("playground screenshot: {}", screenshot.display());
}

#[tokio::test]
async fn every_playground_example_is_a_valid_operation() {
    let app = TestApp::spawn().await;
    let (passed, output) = run_node_test(
        "browser",
        "examples.test.mjs",
        &[("OCTP_PORT", app.address.port().to_string())],
    )
    .await;
    assert!(
        passed,
        "a playground example is refused by the server:\n{output}"
    );
}
