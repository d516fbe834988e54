// The designer console in a real browser (headless Chromium, every non-local request blocked),
// walking the loop a designer walks: sign in; create an experiment with two cohorts; set a config
// per cohort; meet a conflict when the config changed behind the page's back; roll back; watch
// events arrive live; read the results the API computes; see the sample-ratio banner.
// OCTP_PORT: a running server whose experiment `skewed` was seeded unevenly (tests/api/console.rs).
// SCREENSHOTS: a directory for one picture per page.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { test } from "node:test";

import { openOffline } from "./offline.mjs";

const port = process.env.OCTP_PORT;
assert.ok(port, "set OCTP_PORT to the server's port");
const origin = `http://127.0.0.1:${port}`;
const adminKey = process.env.ADMIN_KEY ?? "defaultadminkey";
const httpKey = process.env.HTTP_KEY ?? "defaulthttpkey";
const screenshots = process.env.SCREENSHOTS;

/** The API itself, to act behind the page's back and to know what the page should show. */
async function api(key, query, variables = {}) {
  const response = await fetch(`${origin}/graphql`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

/** axe-core's WCAG 2.1 A and AA rules (labels, names, contrast, roles, …) on the page as it is. */
async function assertAccessible(page, name) {
  // Evaluated through the DevTools protocol, which the page's Content-Security-Policy does not govern.
  await page.evaluate(axeSource);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] },
    });
    return {
      passed: result.passes.length,
      failed: result.violations.map(
        (violation) => `${violation.id}: ${violation.help} at ${violation.nodes.slice(0, 3).map((node) => node.target.join(" ")).join(", ")}`,
      ),
    };
  });
  assert.deepEqual(violations.failed, [], `accessibility of ${name}`);
  assert.ok(violations.passed >= 5, `axe checked ${name} (${violations.passed} rules passed)`);
}

async function shoot(page, name) {
  if (screenshots) await page.screenshot({ path: join(screenshots, `${name}.png`), fullPage: true });
}

/** Replaces the text of the CodeMirror editor of `cohort`, typing as a designer would. */
async function typeConfig(page, cohort, text) {
  const editor = page.getByTestId(`editor-${cohort}`).locator(".cm-content");
  await editor.click();
  await page.keyboard.press("Control+A");
  await page.keyboard.press("Delete");
  await page.keyboard.insertText(text);
}

const mean = new Intl.NumberFormat("en-US", { maximumFractionDigits: 3 });

test("a designer runs an experiment end to end in the console, offline", async () => {
  const { browser, page, blocked, pageErrors } = await openOffline({ viewport: { width: 1400, height: 1000 } });
  try {
    const consoleErrors = [];
    page.on("console", (message) => {
      if (message.type() === "error") consoleErrors.push(message.text());
    });

    // Sign in: a wrong key and the http key are refused, each saying why.
    await page.goto(`${origin}/console`);
    const keyInput = page.getByLabel("Admin key");
    await assertAccessible(page, "the sign-in page");
    await keyInput.fill("not-a-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("The server does not know this key.").waitFor();
    await keyInput.fill(httpKey);
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByText("the console needs the admin key").waitFor();
    // The keyboard alone signs in.
    await keyInput.fill("");
    await keyInput.focus();
    await page.keyboard.type(adminKey);
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "Experiments" }).waitFor();
    // Chromium logs the refused sign-in's 401 as a failed resource; nothing else may fail.
    assert.ok(consoleErrors.every((text) => text.includes("status of 401")), consoleErrors.join("\n"));
    consoleErrors.length = 0;
    assert.equal(await page.evaluate(() => sessionStorage.getItem("octp.console.adminKey")), adminKey);
    assert.equal(await page.evaluate(() => localStorage.length), 0, "the key is never kept beyond the tab");

    // Create an experiment with two cohorts; the rules are checked while typing.
    await page.getByRole("link", { name: "New experiment" }).click();
    await page.getByLabel("Id (used by the game; cannot change later)").fill("checkout_flow");
    await page.getByLabel("Name", { exact: true }).fill("Checkout flow");
    await page.getByLabel("Cohort 2 name").fill("cheap price");
    await page.getByText("may hold only letters, digits and _ . : -").waitFor();
    assert.equal(await page.getByRole("button", { name: "Create experiment" }).isDisabled(), true);
    await page.getByLabel("Cohort 2 name").fill("cheap");
    await page.getByLabel("Cohort 1 weight").fill("0");
    await page.getByLabel("Cohort 2 weight").fill("0");
    await page.getByText("At least one weight must be above 0.").waitFor();
    await page.getByLabel("Cohort 1 weight").fill("1");
    await page.getByLabel("Cohort 2 weight").fill("1");
    await page.getByRole("button", { name: "Add a metric" }).click();
    await page.getByLabel("Key").fill("buyers");
    await page.getByLabel("Event name").fill("purchase");
    await assertAccessible(page, "the new experiment form");
    await page.getByRole("button", { name: "Create experiment" }).click();
    await page.getByRole("heading", { name: /Checkout flow/ }).waitFor();
    const stored = await api(adminKey, `{ experiment(id: "checkout_flow") { cohorts { name weight } metrics { key } } }`);
    assert.deepEqual(stored.experiment.cohorts, [{ name: "cheap", weight: 1 }, { name: "control", weight: 1 }]);
    assert.deepEqual(stored.experiment.metrics, [{ key: "buyers" }]);

    // A config per cohort, reviewed as a diff before saving.
    for (const [cohort, price] of [["control", 100], ["cheap", 80]]) {
      const section = page.getByTestId(`config-${cohort}`);
      await typeConfig(page, cohort, `{"price": ${price}}`);
      await section.getByRole("button", { name: "Review changes" }).click();
      await section.locator(".cm-mergeView").waitFor();
      await section.getByRole("button", { name: "Save as version 1" }).click();
      await section.getByText("Saved as version 1.").waitFor();
    }
    const control = await api(httpKey, `{ remoteConfig(userId: "anyone", experimentId: "checkout_flow") { cohort config } }`);
    assert.equal(control.remoteConfig.config.price, control.remoteConfig.cohort === "control" ? 100 : 80);
    await shoot(page, "experiment");
    await assertAccessible(page, "the experiment page");

    // Invalid JSON is marked while typing, and cannot be saved.
    const controlSection = page.getByTestId("config-control");
    await typeConfig(page, "control", `{"price": }`);
    await controlSection.getByText("Not valid JSON").waitFor();
    assert.equal(await controlSection.getByRole("button", { name: "Review changes" }).isDisabled(), true);

    // Someone else saves version 2 while the designer edits: the save is refused, saying so.
    await typeConfig(page, "control", `{"price": 120}`);
    await api(adminKey, `mutation { updateRemoteConfig(experimentId: "checkout_flow", cohort: "control", config: {price: 90}) { version } }`);
    await controlSection.getByRole("button", { name: "Review changes" }).click();
    // The page still knows version 1 as the stored one.
    await controlSection.getByRole("button", { name: "Save as version 2" }).click();
    await controlSection.getByText("Someone else changed this config").waitFor();
    await controlSection.getByRole("button", { name: "Reload the stored version" }).click();
    await controlSection.getByText(/version 2, /).waitFor();
    const afterConflict = await api(adminKey, `{ configHistory(experimentId: "checkout_flow", cohort: "control", first: 1) { nodes { version config } } }`);
    assert.deepEqual(afterConflict.configHistory.nodes[0], { version: 2, config: { price: 90 } }, "the refused save wrote nothing");

    // Roll back to version 1 in one click.
    await controlSection.getByRole("button", { name: /^History/ }).click();
    await controlSection.getByRole("button", { name: "Roll back to 1" }).click();
    await controlSection.getByText("Version 1 is live again, as version 3.").waitFor();
    const rolledBack = await api(adminKey, `{ configHistory(experimentId: "checkout_flow", cohort: "control", first: 1) { nodes { version config rolledBackFrom } } }`);
    assert.deepEqual(rolledBack.configHistory.nodes[0], { version: 3, config: { price: 100 }, rolledBackFrom: 1 });

    // Events posted through the API arrive in the live tail.
    await page.getByRole("link", { name: "Live events", exact: true }).click();
    await page.getByText("Listening for new events").waitFor();
    const players = Array.from({ length: 30 }, (_, index) => `player-${index}`);
    const assigned = {};
    for (const player of players) {
      const { experimentAssignment } = await api(httpKey, `query($u: String!) { experimentAssignment(userId: $u, experimentId: "checkout_flow") { cohort } }`, { u: player });
      assigned[player] = experimentAssignment.cohort;
    }
    // Buyers: every third player.
    const purchases = players
      .filter((_, index) => index % 3 === 0)
      .map((player) => ({ userId: player, eventName: "purchase", experimentId: "checkout_flow", properties: { amount: 5 } }));
    await api(httpKey, `mutation($events: [EventInput!]!) { collectEvents(events: $events) { accepted } }`, { events: purchases });
    await page.getByTestId("live-event").nth(purchases.length - 1).waitFor({ timeout: 10000 });
    const shownPlayers = await page.getByTestId("live-event").locator("td:nth-child(2)").allTextContents();
    assert.deepEqual(new Set(shownPlayers), new Set(purchases.map((event) => event.userId)));
    await shoot(page, "live");
    await assertAccessible(page, "the live events");

    // The results page shows what the API computes.
    await page.goto(`${origin}/console#/experiment/checkout_flow/results`);
    const buyers = page.getByTestId("metric-buyers");
    await buyers.waitFor();
    const { experimentResults: results } = await api(adminKey, `{ experimentResults(experimentId: "checkout_flow") {
      users metrics { cohorts { cohort users mean pValue } } } }`);
    await page.getByText(`${results.users} players analysed`).waitFor();
    for (const cohort of results.metrics[0].cohorts) {
      const row = buyers.getByRole("row").filter({ has: page.getByRole("rowheader", { name: new RegExp(`^${cohort.cohort}`) }) });
      const cells = await row.locator("td").allTextContents();
      assert.equal(cells[0], String(cohort.users), `${cohort.cohort} players`);
      assert.equal(cells[1], mean.format(cohort.mean), `${cohort.cohort} mean`);
      if (cohort.pValue != null) assert.equal(cells[4], cohort.pValue < 0.0001 ? cohort.pValue.toExponential(1) : cohort.pValue.toFixed(4));
    }
    assert.equal(await page.getByText("Sample ratio mismatch").count(), 0, "an even split raises no alarm");
    await shoot(page, "results");
    await assertAccessible(page, "the results");

    // The skewed experiment: the banner comes first.
    await page.goto(`${origin}/console#/experiment/skewed/results`);
    const banner = page.getByRole("alert").filter({ hasText: "Sample ratio mismatch" });
    await banner.waitFor();
    const first = await page.locator("main section > :is(div, h1, h2, table)").first().textContent();
    assert.match(first, /Sample ratio mismatch/, "the warning stands above everything else");
    await shoot(page, "srm");
    await assertAccessible(page, "the results with the sample-ratio banner");

    // The list shows both experiments with their state; the audit log has every change.
    await page.getByRole("link", { name: "Experiments", exact: true }).click();
    await page.getByRole("link", { name: "Checkout flow" }).waitFor();
    await page.getByRole("link", { name: "Skewed" }).waitFor();
    await shoot(page, "experiments");
    await assertAccessible(page, "the experiments list");
    await page.getByRole("link", { name: "Audit log", exact: true }).click();
    await page.getByText("rollbackRemoteConfig").first().waitFor();
    await shoot(page, "audit");
    await assertAccessible(page, "the audit log");

    // Signing out forgets the key.
    await page.getByRole("button", { name: "Sign out" }).click();
    await page.getByLabel("Admin key").waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem("octp.console.adminKey")), null);

    assert.deepEqual(blocked, [], "the console must not reach beyond this machine");
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleErrors, []);
  } catch (error) {
    // What the page showed when the walk stopped, beside the other screenshots.
    await shoot(page, "failure").catch(() => {});
    throw error;
  } finally {
    await browser.close();
  }
});
