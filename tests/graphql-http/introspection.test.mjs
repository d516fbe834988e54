// Tools introspect /graphql with graphql-js's standard query (graphql-codegen, Rover, Postman,
// Altair…). Every variant of it must succeed, and its answer must build a client schema with the
// very types, fields and arguments of the committed schema.graphql.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { buildClientSchema, buildSchema, findBreakingChanges, findDangerousChanges, getIntrospectionQuery } from 'graphql';

const port = process.env.OCTP_PORT;
const key = process.env.OCTP_KEY ?? 'defaulthttpkey';

async function post(query) {
  const response = await fetch(`http://127.0.0.1:${port}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify({ query }),
  });
  return { status: response.status, body: await response.json() };
}

const variants = {
  plain: {},
  everything: { descriptions: true, specifiedByUrl: true, directiveIsRepeatable: true, schemaDescription: true, inputValueDeprecation: true, oneOf: true },
  'no descriptions': { descriptions: false },
};

for (const [name, options] of Object.entries(variants)) {
  test(`the standard introspection query (${name}) builds the committed schema`, async () => {
    const { status, body } = await post(getIntrospectionQuery(options));
    assert.equal(status, 200, JSON.stringify(body).slice(0, 500));
    assert.equal(body.errors, undefined, JSON.stringify(body.errors));
    const client = buildClientSchema(body.data);
    const committed = buildSchema(readFileSync(new URL('../../schema.graphql', import.meta.url), 'utf8'));
    // Types, fields, arguments and defaults the same both ways (descriptions may be left out).
    // Built-in directives are the engines' own (async-graphql also lets @deprecated mark directive
    // definitions; graphql-js's built-in does not), not part of our schema.
    const ours = (change) =>
      !(change.type.startsWith('DIRECTIVE_') && /\b(deprecated|skip|include|specifiedBy|oneOf)\.?$/.test(change.description));
    for (const [from, to] of [[committed, client], [client, committed]]) {
      const changes = [...findBreakingChanges(from, to), ...findDangerousChanges(from, to)].filter(ours);
      assert.deepEqual(changes, []);
    }
  });
}

test('absurdly deep introspection is still refused', async () => {
  const deep = `{ __schema { types { fields { type { ${'ofType { '.repeat(40)} name ${'} '.repeat(40)} } } } } }`;
  const { body } = await post(deep);
  assert.ok(body.errors?.length, JSON.stringify(body).slice(0, 300));
});
