//! The designer console in headless Chromium (tests/browser/console.test.mjs): the whole loop a
//! designer walks, through the page only, against a real server, with every non-local request
//! blocked. The server side seeds what a browser cannot: an experiment whose players were split
//! unevenly (chosen with the assignment rule itself), for the sample-ratio banner.

use std::path::Path;

use serde_json::json;

use crate::{
    helpers::{ADMIN_KEY, HTTP_KEY, TestApp, run_node_test, skip},
    results::{assign_user, users_in},
};

#[tokio::test]
async fn a_designer_runs_an_experiment_end_to_end_in_the_console() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    if !Path::new(&chromium).exists() {
        skip(
            "a_designer_runs_an_experiment_end_to_end_in_the_console",
            &format!("no Chromium at {chromium}; `apt-get install chromium` (.ci/run does)"),
            true,
        );
        return;
    }
    let app = TestApp::spawn().await;
    // Every player of `skewed` lands in `a` although the weights promise half to `b`.
    let weights = json!({"a": 1, "b": 1});
    app.upsert_experiment(json!({"id": "skewed", "name": "Skewed", "cohorts": weights,
        "metrics": [{"key": "taps", "eventName": "tap", "kind": "COUNT"}]}))
        .await;
    for user in users_in("skewed", &weights, "a", "lopsided").take(40) {
        assign_user(&app, &user, "skewed", "a").await;
    }

    let screenshots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    // Pictures of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).unwrap();
    let (passed, output) = run_node_test(
        "browser",
        "console.test.mjs",
        &[
            ("OCTP_PORT", app.address.port().to_string()),
            ("CHROMIUM", chromium),
            ("SCREENSHOTS", screenshots.display().to_string()),
            ("HTTP_KEY", HTTP_KEY.to_owned()),
            ("ADMIN_KEY", ADMIN_KEY.to_owned()),
        ],
    )
    .await;
    assert!(passed, "the console test failed:\n{output}");
    for page in [
        "experiments",
        "experiment",
        "results",
        "srm",
        "live",
        "audit",
    ] {
        assert!(
            screenshots.join(format!("{page}.png")).is_file(),
            "a screenshot of {page}"
        );
    }
}

#[tokio::test]
async fn the_console_page_pins_its_assets_and_forbids_framing_and_foreign_scripts() {
    let app = TestApp::spawn().await;
    let page = app.client.get(app.url("/console")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-cache");
    let html = page.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page loads its script");
    assert!(
        script.starts_with("/console/assets/console.js?v="),
        "{script}"
    );

    let bundle = app
        .client
        .get(app.url(script))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(bundle.status(), 200);
    assert_eq!(bundle.headers()["content-encoding"], "gzip");
    assert_eq!(
        bundle.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        bundle.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let missing = app
        .client
        .get(app.url("/console/assets/nothing.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
