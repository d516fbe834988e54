// The standard graphql-ws client (what GraphiQL, Apollo and urql use for subscriptions) against
// /graphql/ws: the key in connectionParams, the current config at once and then a change, 4403 on
// a bad key, and live events in storage order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const port = process.env.OCTP_PORT;
assert.ok(port, 'OCTP_PORT names the server port');
const HTTP_KEY = 'defaulthttpkey';
const ADMIN_KEY = 'defaultadminkey';
const wsUrl = `ws://127.0.0.1:${port}/graphql/ws`;
const DEADLINE_MS = 5000;

function client(key, extra = {}) {
  return createClient({
    url: wsUrl,
    webSocketImpl: WebSocket,
    connectionParams: { Authorization: `Bearer ${key}` },
    retryAttempts: 0,
    lazy: true,
    ...extra,
  });
}

async function admin(query, variables = {}) {
  const response = await fetch(`http://127.0.0.1:${port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  assert.equal(body.errors, undefined, JSON.stringify(body.errors));
  return body.data;
}

function within(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${DEADLINE_MS} ms`)), DEADLINE_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

test('remoteConfigChanged sends the current config, then the change', async () => {
  await admin('mutation { updateRemoteConfig(config: {node: 1}) { version } }');
  const ws = client(HTTP_KEY);
  const answers = ws.iterate({
    query: 'subscription { remoteConfigChanged(userId: "node-player") { source config } }',
  });
  const first = await within(answers.next(), 'first answer');
  assert.deepEqual(first.value.data.remoteConfigChanged, { source: 'GLOBAL', config: { node: 1 } });
  await admin('mutation { updateRemoteConfig(config: {node: 2}) { version } }');
  const second = await within(answers.next(), 'changed answer');
  assert.deepEqual(second.value.data.remoteConfigChanged.config, { node: 2 });
  await answers.return();
  await ws.dispose();
});

test('a wrong key closes the socket with 4403', async () => {
  let closedWith;
  const ws = client('not-a-key', { on: { closed: (event) => { closedWith = event.code; } } });
  const answers = ws.iterate({ query: 'subscription { remoteConfigChanged(userId: "x") { version } }' });
  await assert.rejects(within(answers.next(), 'refusal'));
  assert.equal(closedWith, 4403);
  await ws.dispose();
});

test('liveEvents streams a batch in storage order', async () => {
  const ws = client(ADMIN_KEY);
  const events = ws.iterate({
    query: 'subscription { liveEvents(userId: "node-live") { eventId eventName } }',
  });
  const collect = (batch) =>
    admin('mutation($events: [EventInput!]!) { collectEvents(events: $events) { accepted } }', {
      events: batch.map(([eventId, eventName]) => ({ eventId, eventName, userId: 'node-live' })),
    });
  // The subscription starts when the server has read its first message: send markers until one
  // comes through, then the batch under test.
  const first = events.next();
  const started = Date.now();
  let marker = 0;
  let arrived = false;
  first.then(() => { arrived = true; });
  while (!arrived) {
    assert.ok(Date.now() - started < DEADLINE_MS, 'no marker event arrived');
    await collect([[`marker-${marker++}`, 'marker']]);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const seen = [(await first).value.data.liveEvents];
  await collect([['node-b', 'purchase'], ['node-a', 'level_up'], ['node-c', 'purchase']]);
  const wanted = ['node-a', 'node-b', 'node-c'];
  while (!wanted.every((id) => seen.some((event) => event.eventId === id))) {
    seen.push((await within(events.next(), 'batch event')).value.data.liveEvents);
  }
  const batch = seen.filter((event) => !event.eventId.startsWith('marker-'));
  // Storage order: one batch is stored sorted by eventId.
  assert.deepEqual(batch.map((event) => event.eventId), wanted);
  await events.return();
  await ws.dispose();
});
