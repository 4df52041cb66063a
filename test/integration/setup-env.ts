// Integration tests need the endpoints that `npm test` (scripts/peers/cli.ts run) puts in the environment.
const required = ['MBA_TEST_MONGODB_URI'];
const missing = required.filter((key) => !process.env[key]);
if (missing.length > 0) {
  throw new Error(
    `integration tests need running test peers (missing ${missing.join(', ')}); ` +
      'run them through `npm test` or `npm run test:integration`, which start and stop the peers',
  );
}
