// Integration tests need the endpoints that `npm test` (scripts/peers/cli.ts run) puts in the environment.
// `MBA_PEER_KINDS` may start only some kinds of peer: a kind counts as started when its `*_PEER` variable is
// set, and then all of its variables must be. A test of a kind that was not started fails in its support
// helper (test/integration/support/), which names the missing variable.
const PEER_ENV: Readonly<Record<string, readonly string[]>> = {
  MBA_TEST_MONGODB_PEER: ['MBA_TEST_MONGODB_URI'],
  MBA_TEST_BIGQUERY_PEER: [
    'MBA_TEST_BIGQUERY_PROJECT',
    'MBA_TEST_BIGQUERY_API_ENDPOINT',
    'MBA_TEST_BIGQUERY_GRPC_HOST',
    'MBA_TEST_BIGQUERY_GRPC_PORT',
  ],
};

const started = Object.keys(PEER_ENV).filter((key) => process.env[key]);
const missing = started.flatMap((key) => (PEER_ENV[key] ?? []).filter((variable) => !process.env[variable]));
if (started.length === 0 || missing.length > 0) {
  throw new Error(
    `integration tests need running test peers (missing ${missing.length > 0 ? missing.join(', ') : Object.keys(PEER_ENV).join(' or ')}); ` +
      'run them through `npm test` or `npm run test:integration`, which start and stop the peers',
  );
}
