// Every ready-made tab of the playground, sent as the playground would send it: the document must
// parse and validate against the server's schema, with the tab's variables and key. Errors raised
// while running (NOT_FOUND for an example id that does not exist here, CONFLICT, …) are fine; a
// request error (no `path`: the document or its variables were refused) is not.
// Subscription tabs run over /graphql/ws as GraphiQL runs them (the Headers pane as connection_init's
// payload), through the `ws` package (Node 20 has no WebSocket without a flag).
// OCTP_PORT: a running server with the default keys.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import vm from "node:vm";
import WebSocket from "ws";

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
    location: { protocol: "http:", host: `127.0.0.1:${port}` },
    JSON,
  };
  const source = readFileSync(new URL("../../playground/dist/playground.js", import.meta.url), "utf8");
  vm.runInNewContext(source, context);
  assert.ok(Array.isArray(tabs) && tabs.length > 10, "the playground defines its tabs");
  return tabs;
}

// The first message of a subscription, or null when nothing comes within a second (a valid
// `liveEvents` waits for events; a refused document is answered at once).
function firstSubscriptionMessage(tab) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/graphql/ws`, "graphql-transport-ws");
    const timer = setTimeout(() => { socket.close(); resolve(null); }, 1000);
    socket.onerror = (event) => { clearTimeout(timer); reject(new Error(`WebSocket error: ${event.message}`)); };
    socket.onclose = (event) => { clearTimeout(timer); reject(new Error(`closed with ${event.code} ${event.reason}`)); };
    socket.onopen = () => socket.send(JSON.stringify({ type: "connection_init", payload: JSON.parse(tab.headers) }));
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (message.type === "connection_ack") {
        socket.send(JSON.stringify({
          type: "subscribe", id: "tab",
          payload: { query: tab.query, variables: tab.variables ? JSON.parse(tab.variables) : {} },
        }));
      } else {
        clearTimeout(timer);
        socket.onclose = null;
        socket.close();
        resolve(message);
      }
    };
  });
}

const isSubscription = (query) => /^\s*subscription\b/m.test(query.replace(/^#.*$/gm, ""));

test("every playground example is a valid operation of the server's schema", async () => {
  const tabs = playgroundTabs();
  assert.ok(tabs.some((tab) => isSubscription(tab.query)), "the playground has subscription tabs");
  for (const [index, tab] of tabs.entries()) {
    if (isSubscription(tab.query)) {
      const message = await firstSubscriptionMessage(tab);
      const refused = (message?.payload?.errors ?? []).filter((error) => !error.path);
      assert.deepEqual(refused, [], `subscription tab ${index}`);
      continue;
    }
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
