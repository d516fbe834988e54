// The playground in a real browser: headless Chromium with all non-localhost traffic blocked runs
// `{ health { status } }` through the GraphiQL UI and the answer must show on the page.
// OCTP_PORT: a running server with the default keys. SCREENSHOT: where to save the picture.
import assert from "node:assert/strict";
import { test } from "node:test";

import { openOffline } from "./offline.mjs";

const port = process.env.OCTP_PORT;
assert.ok(port, "set OCTP_PORT to the server's port");
const origin = `http://127.0.0.1:${port}`;

test("a designer runs { health { status } } in the playground with the network cut off", async () => {
  const { browser, page, blocked, pageErrors } = await openOffline();
  try {
    await page.goto(`${origin}/playground`);
    await page.waitForSelector(".graphiql-container", { timeout: 20000 });

    // Replace the first tab's query with the one under test by typing, as a designer would.
    await page.locator(".graphiql-query-editor .CodeMirror").first().click();
    await page.keyboard.press("Control+A");
    await page.keyboard.press("Delete");
    await page.keyboard.type("{ health { status ");
    await page.locator(".graphiql-execute-button").click();

    const result = page.locator(".graphiql-response .CodeMirror");
    await page.waitForFunction(
      () => (document.querySelector(".graphiql-response .CodeMirror")?.CodeMirror?.getValue() ?? "").includes("status"),
      null,
      { timeout: 20000 },
    );
    const text = await result.evaluate((element) => element.CodeMirror.getValue());
    assert.deepEqual(JSON.parse(text), { data: { health: { status: "ok" } } });

    // The docs explorer has the schema (introspection went through with the prefilled key).
    await page.locator('button[aria-label="Show Documentation Explorer"]').click();
    await page.getByText("Query", { exact: true }).first().waitFor({ timeout: 10000 });

    if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
    assert.deepEqual(blocked, [], "the page must not reach beyond this machine");
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser.close();
  }
});
