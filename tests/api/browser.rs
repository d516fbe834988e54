//! The playground in headless Chromium (Debian's package; `.ci/run` installs it) driven by
//! playwright-core (pinned under tests/browser), with every non-local request blocked.

use std::path::Path;

use tokio::process::Command;

use crate::helpers::TestApp;

#[tokio::test]
async fn the_playground_runs_a_health_query_in_a_real_browser_offline() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        // CI must run it; a developer without Chromium is told how to get it.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "Chromium is missing at {chromium}: `apt-get install chromium` (.ci/run does)"
        );
        eprintln!(
            "SKIPPED: no Chromium at {chromium}; `apt-get install chromium` to run this test"
        );
        return;
    }
    let app = TestApp::spawn().await;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    if !dir.join("node_modules/playwright-core").is_dir() {
        let install = Command::new("npm")
            .args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
            .current_dir(&dir)
            .output()
            .await
            .expect("npm is installed");
        assert!(
            install.status.success(),
            "npm ci failed: {}",
            String::from_utf8_lossy(&install.stderr)
        );
    }
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground.png");

    let run = Command::new("node")
        .args(["--test", "--test-reporter=spec", "playground.test.mjs"])
        .env("OCTP_PORT", app.address.port().to_string())
        .env("CHROMIUM", &chromium)
        .env("SCREENSHOT", &screenshot)
        .current_dir(&dir)
        .output()
        .await
        .expect("node is installed");

    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "the browser test failed:\n{output}");
    assert!(screenshot.is_file(), "a screenshot was saved");
    eprintln!("playground screenshot: {}", screenshot.display());
}
