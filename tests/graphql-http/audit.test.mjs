// The graphql-http audit of the GraphQL-over-HTTP spec against /graphql. Every MUST must pass, no
// SHOULD may warn, and the MAYs are met too. The server needs a key, so the audit's requests carry one as a bearer token.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { auditServer } from 'graphql-http';

const port = process.env.OCTP_PORT;
const key = process.env.OCTP_KEY ?? 'defaulthttpkey';

test('the GraphQL-over-HTTP audit passes with no warnings', async () => {
  const results = await auditServer({
    url: `http://127.0.0.1:${port}/graphql`,
    fetchFn: (input, init = {}) => {
      const headers = new Headers(init.headers);
      headers.set('authorization', `Bearer ${key}`);
      return fetch(input, { ...init, headers });
    },
  });
  const problems = [];
  for (const result of results) {
    if (result.status === 'ok') continue;
    let detail = result.reason;
    if (result.response) {
      const body = await result.response.text().catch(() => '');
      detail += ` — got ${result.response.status} ${result.response.headers.get('content-type')}: ${body.slice(0, 300)}`;
    }
    problems.push(`${result.status.toUpperCase()} ${result.id} ${result.name}: ${detail}`);
  }
  console.log(`${results.length} audits, ${problems.length} not ok`);
  for (const problem of problems) console.log(problem);
  assert.equal(problems.length, 0, problems.join('\n'));
});
