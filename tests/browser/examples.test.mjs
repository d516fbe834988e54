// Every ready-made tab of the playground, sent as the playground would send it: the document must
// parse and validate against the server's schema, with the tab's variables and key. Errors raised
// while running (NOT_FOUND for an example id that does not exist here, CONFLICT, …) are fine; a
// request error (no `path`: the document or its variables were refused) is not.
// OCTP_PORT: a running server with the default keys.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";

const port = process.env.OCTP_PORT;
assert.ok(port, "set OCTP_PORT to the server's port");

// The page script with the browser parts stubbed out, to catch the tabs it hands to GraphiQL.
function playgroundTabs() {
  let tabs;
  const context = {
    GraphiQL: { createFetcher: () => () => undefined },
    React: { createElement: (_component, props) => { tabs = props.defaultTabs; return null; } },
    ReactDOM: { createRoot: () => ({ render: () => undefined }) },
    document: { getElementById: () => ({}) },
    JSON,
  };
  const source = readFileSync(new URL("../../playground/dist/playground.js", import.meta.url), "utf8");
  vm.runInNewContext(source, context);
  assert.ok(Array.isArray(tabs) && tabs.length > 10, "the playground defines its tabs");
  return tabs;
}

test("every playground example is a valid operation of the server's schema", async () => {
  const tabs = playgroundTabs();
  for (const [index, tab] of tabs.entries()) {
    const response = await fetch(`http://127.0.0.1:${port}/graphql`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...JSON.parse(tab.headers) },
      body: JSON.stringify({ query: tab.query, variables: tab.variables ? JSON.parse(tab.variables) : {} }),
    });
    const body = await response.json();
    const refused = (body.errors ?? []).filter((error) => !error.path);
    assert.deepEqual(refused, [], `tab ${index} (${tab.query.split("\n").find((line) => !line.startsWith("#"))})`);
    assert.ok("data" in body, `tab ${index} answered without data: ${JSON.stringify(body)}`);
  }
});
