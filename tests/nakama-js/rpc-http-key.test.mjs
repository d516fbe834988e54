// End-to-end: the real nakama-js client (as shipped game builds use it) against our RPC aliases.
// OCTP_PORT names the port of a running server with the default keys.
import assert from "node:assert/strict";
import { test } from "node:test";

import { Client } from "@heroiclabs/nakama-js";

const port = process.env.OCTP_PORT;
assert.ok(port, "set OCTP_PORT to the server's port");
const HTTP_KEY = process.env.OCTP_HTTP_KEY ?? "defaulthttpkey";
const ADMIN_KEY = process.env.OCTP_ADMIN_KEY ?? "defaultadminkey";
const client = new Client("defaultkey", "127.0.0.1", port, false, 7000);

/** The rejection of a failing call: nakama-js rejects with the fetch Response. */
async function rejection(promise) {
  try {
    await promise;
  } catch (response) {
    return { status: response.status, body: await response.json() };
  }
  assert.fail("the call should have been refused");
}

test("HealthCheck answers with status, version and uptime, and no id", async () => {
  const reply = await client.rpcHttpKey(HTTP_KEY, "HealthCheck");
  assert.equal(reply.id, undefined);
  assert.equal(reply.payload.status, "ok");
  assert.equal(typeof reply.payload.version, "string");
  assert.equal(typeof reply.payload.uptimeSeconds, "number");
});

test("DetailedHealthCheck reports the database and the cache", async () => {
  const { payload } = await client.rpcHttpKey(HTTP_KEY, "DetailedHealthCheck");
  assert.equal(payload.database.ok, true);
  assert.equal(typeof payload.cache.ttlSeconds, "number");
});

test("config written with the admin key is fetched by a game client", async () => {
  const written = await client.rpcHttpKey(ADMIN_KEY, "UpdateRemoteConfig", { config: { coins: 5, theme: "dark" } });
  assert.equal(written.payload.experimentId, null);
  assert.ok(written.payload.version >= 1);

  const { payload } = await client.rpcHttpKey(HTTP_KEY, "FetchRemoteConfig", { userId: "js-user" });
  assert.deepEqual(payload.config, { coins: 5, theme: "dark" });
  assert.equal(payload.source, "GLOBAL");
});

test("the http key may not update config", async () => {
  const { status, body } = await rejection(client.rpcHttpKey(HTTP_KEY, "UpdateRemoteConfig", { config: {} }));
  assert.equal(status, 403);
  assert.equal(body.code, 7);
  assert.ok("error" in body);
});

test("events are collected once and read back", async () => {
  const batch = { events: [{ eventId: "js-1", userId: "js-user", eventName: "login", properties: { platform: "web", emoji: "🎮" } }] };
  const first = await client.rpcHttpKey(HTTP_KEY, "AnalyticsCollectEvents", batch);
  const retry = await client.rpcHttpKey(HTTP_KEY, "AnalyticsCollectEvents", batch);
  assert.deepEqual(first.payload, { accepted: 1, duplicates: 0, eventIds: ["js-1"] });
  assert.deepEqual(retry.payload, { accepted: 0, duplicates: 1, eventIds: ["js-1"] });

  const { payload } = await client.rpcHttpKey(HTTP_KEY, "AnalyticsGetUserEvents", { user_id: "js-user", limit: 10 });
  assert.equal(payload.events.length, 1);
  assert.equal(payload.events[0].eventId, "js-1");
  assert.deepEqual(payload.events[0].properties, { platform: "web", emoji: "🎮" });
  assert.equal(payload.nextCursor, null);
});

test("a bad batch is refused with per-event details", async () => {
  const { status, body } = await rejection(
    client.rpcHttpKey(HTTP_KEY, "AnalyticsCollectEvents", { events: [{ userId: "u", eventName: "ok" }, { userId: "", eventName: "bad name" }] }),
  );
  assert.equal(status, 400);
  assert.equal(body.code, 3);
  assert.deepEqual(
    body.error.errors.map((e) => [e.index, e.field]),
    [[1, "userId"], [1, "eventName"]],
  );
});

test("experiments: none active, unknown ones are not found", async () => {
  const { payload } = await client.rpcHttpKey(HTTP_KEY, "ListActiveExperiments");
  assert.deepEqual(payload, { experiments: [] });
  const { status, body } = await rejection(
    client.rpcHttpKey(HTTP_KEY, "GetExperimentAssignment", { userId: "js-user", experimentId: "nope" }),
  );
  assert.equal(status, 404);
  assert.equal(body.code, 5);
});

test("a wrong key is refused exactly as Nakama refuses it", async () => {
  const { status, body } = await rejection(client.rpcHttpKey("wrong", "HealthCheck"));
  assert.equal(status, 401);
  assert.deepEqual(body, { error: "HTTP key invalid", message: "HTTP key invalid", code: 16 });
});

test("ids match case-insensitively", async () => {
  const { payload } = await client.rpcHttpKey(HTTP_KEY, "healthcheck");
  assert.equal(payload.status, "ok");
});
