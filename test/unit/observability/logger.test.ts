import { describe, expect, it } from 'vitest';
import { MongoNetworkError } from 'mongodb';
import { BigQueryError } from '../../../src/errors.js';
import {
  createLogger,
  isSecretFieldName,
  mappingLogger,
  REDACTED,
  REDACTED_PRIVATE_KEY,
  scrubLogLine,
  scrubText,
  supervisorLog,
  type Logger,
} from '../../../src/observability/logger.js';

const PASSWORD = 'Sup3r-s3cret-pw';
const URI_PASSWORD = 'hunter2-in-uri';
const ACCESS_TOKEN = 'ya29.a0AfH6SMBx-access-token';
const KEY_BODY = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7';
const PRIVATE_KEY = `-----BEGIN PRIVATE KEY-----\n${KEY_BODY}\n-----END PRIVATE KEY-----\n`;
const URI = `mongodb://archiver:${URI_PASSWORD}@mongo-0.example:27017,mongo-1.example:27017/?replicaSet=rs0`;

const MAPPING = {
  mapping: 'shop.orders',
  database: 'shop',
  collection: 'orders',
  table: 'orders_history',
} as const;

/** A logger writing into memory, and its lines parsed back. */
function memoryLogger(level: 'info' | 'debug' = 'info'): {
  logger: Logger;
  raw: string[];
  lines: () => Record<string, unknown>[];
} {
  const raw: string[] = [];
  const logger = createLogger({ level, destination: { write: (line: string) => void raw.push(line) } });
  return { logger, raw, lines: () => raw.map((line) => JSON.parse(line) as Record<string, unknown>) };
}

function expectNoSecrets(output: string): void {
  for (const secret of [PASSWORD, URI_PASSWORD, ACCESS_TOKEN, KEY_BODY, 'BEGIN PRIVATE KEY']) {
    expect(output).not.toContain(secret);
  }
}

describe('createLogger', () => {
  it('never writes a URI password, a password field, a private key or an access token, and keeps the mapping context', () => {
    const { logger, raw, lines } = memoryLogger();
    const log = mappingLogger(logger, MAPPING);

    log.info(
      { uri: URI, password: PASSWORD, private_key: PRIVATE_KEY, access_token: ACCESS_TOKEN },
      'connecting',
    );
    log.warn('connecting to %s failed, key was %s', URI, PRIVATE_KEY);
    log.error({ detail: `credentials file contained ${PRIVATE_KEY}` }, `cannot reach ${URI}`);

    const output = raw.join('');
    expectNoSecrets(output);
    const [first, second, third] = lines();
    expect(first).toMatchObject({
      ...MAPPING,
      level: 'info',
      msg: 'connecting',
      uri: 'mongodb://archiver:***@mongo-0.example:27017,mongo-1.example:27017/?replicaSet=rs0',
      password: REDACTED,
      private_key: REDACTED,
      access_token: REDACTED,
    });
    expect(second).toMatchObject({
      ...MAPPING,
      level: 'warn',
      msg: `connecting to mongodb://archiver:***@mongo-0.example:27017,mongo-1.example:27017/?replicaSet=rs0 failed, key was ${REDACTED_PRIVATE_KEY}\n`,
    });
    expect(third).toMatchObject({
      ...MAPPING,
      detail: `credentials file contained ${REDACTED_PRIVATE_KEY}\n`,
    });
  });

  it('writes one JSON object per line with an ISO time and the level as a label', () => {
    const { logger, raw, lines } = memoryLogger();
    logger.info('started');
    logger.debug('not at this level');
    expect(raw).toHaveLength(1);
    expect(raw[0]?.endsWith('\n')).toBe(true);
    const [line] = lines();
    expect(line).toMatchObject({ level: 'info', msg: 'started' });
    expect(line?.time).toMatch(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  });

  it('redacts secret-named fields at any depth but keeps SERVICE_ACCOUNT_FILE, which is a path', () => {
    const { logger, raw, lines } = memoryLogger();
    logger.info(
      {
        config: {
          MONGO_CLIENT: URI,
          SERVICE_ACCOUNT_FILE: '/secrets/key.json',
          nested: {
            deeper: { clientSecret: PASSWORD, headers: { Authorization: `Bearer ${ACCESS_TOKEN}` } },
          },
        },
        serviceAccount: {
          client_email: 'archiver@project.iam.gserviceaccount.com',
          private_key: PRIVATE_KEY,
        },
        attempts: [{ MONGO_PASSWORD: PASSWORD }],
      },
      'configuration loaded',
    );
    expectNoSecrets(raw.join(''));
    expect(lines()[0]).toMatchObject({
      config: {
        MONGO_CLIENT: 'mongodb://archiver:***@mongo-0.example:27017,mongo-1.example:27017/?replicaSet=rs0',
        SERVICE_ACCOUNT_FILE: '/secrets/key.json',
        nested: { deeper: { clientSecret: REDACTED, headers: { Authorization: REDACTED } } },
      },
      serviceAccount: { client_email: 'archiver@project.iam.gserviceaccount.com', private_key: REDACTED },
      attempts: [{ MONGO_PASSWORD: REDACTED }],
    });
  });

  it('redacts connection strings in error messages, causes and stacks, keeping the error type', () => {
    const { logger, raw, lines } = memoryLogger();
    class MongoServerSelectionError extends Error {}
    const cause = new MongoServerSelectionError(`connection refused: ${URI}`);
    logger.error(new Error(`cannot open change stream on ${URI}`, { cause }));
    logger.warn({ failure: cause, attempt: 2 }, 'retrying');

    expectNoSecrets(raw.join(''));
    const [first, second] = lines();
    expect(first).toMatchObject({ err: { type: 'Error' } });
    expect(first?.msg).toContain('mongodb://archiver:***@mongo-0.example');
    expect(JSON.stringify(first?.err)).toMatch(
      /caused by: .*connection refused: mongodb:\/\/archiver:\*\*\*@/,
    );
    // pino alone writes an error under another key than `err` as `{}`.
    expect(second).toMatchObject({
      failure: {
        type: 'MongoServerSelectionError',
        message: expect.stringContaining('archiver:***@') as unknown,
      },
    });
  });

  it('redacts secrets bound to a child logger', () => {
    const { logger, raw, lines } = memoryLogger();
    logger.child({ password: PASSWORD, source: URI }).info('bound');
    expectNoSecrets(raw.join(''));
    expect(lines()[0]).toMatchObject({
      password: REDACTED,
      source: expect.stringContaining(':***@') as unknown,
    });
  });

  it('keeps resume and fencing tokens and cluster times, which an operator needs and which grant nothing', () => {
    const { logger, lines } = memoryLogger();
    logger.info(
      { resumeToken: '8265A1B2C3', fencingToken: 7, clusterTime: { t: 1_700_000_000, i: 3 } },
      'resumed',
    );
    expect(lines()[0]).toMatchObject({
      resumeToken: '8265A1B2C3',
      fencingToken: 7,
      clusterTime: { t: 1_700_000_000 },
    });
  });

  it('never writes the secret options of a connection string (TLS key password, AWS session token)', () => {
    const { logger, raw, lines } = memoryLogger();
    const uri =
      `mongodb://archiver:${URI_PASSWORD}@db1/?tls=true&tlsCertificateKeyFilePassword=${PASSWORD}` +
      `&authMechanismProperties=AWS_SESSION_TOKEN:${ACCESS_TOKEN}`;
    logger.info({ mongo: uri }, `connecting to ${uri}`);
    logger.error(new MongoNetworkError(`connection 3 to ${uri} closed`));
    expectNoSecrets(raw.join(''));
    const redacted =
      'mongodb://archiver:***@db1/?tls=true&tlsCertificateKeyFilePassword=***' +
      '&authMechanismProperties=AWS_SESSION_TOKEN:***';
    expect(lines()[0]).toMatchObject({ mongo: redacted, msg: `connecting to ${redacted}` });
    expect(lines()[1]).toMatchObject({ msg: `connection 3 to ${redacted} closed` });
  });

  it("the supervisor's failure line keeps the mapping and the error but no URI password or service-account key", () => {
    const { logger, raw, lines } = memoryLogger();
    const serviceAccount = {
      type: 'service_account',
      project_id: 'archiver-prod',
      private_key_id: '3f1e0c9a',
      private_key: PRIVATE_KEY,
      client_email: 'archiver@archiver-prod.iam.gserviceaccount.com',
    };
    // A driver error naming the connection string, and a library echoing the key file it could not use.
    const driver = new MongoNetworkError(`connection 7 to ${URI} closed`);
    const auth = new Error(`invalid service account key: ${JSON.stringify(serviceAccount)}`, {
      cause: driver,
    });
    // Exactly what the supervisor writes when a mapping fails (src/core/supervisor.ts), through the daemon's adapter.
    const log = supervisorLog(logger);
    log.error('mapping failed', {
      mapping: 'orders',
      err: driver,
      failures: 1,
      restartInMs: 1_000,
    });
    log.warn('could not write lastFailure', { mapping: 'orders', err: auth });
    logger.error({ mapping: 'orders', err: auth, credentials: serviceAccount }, 'mapping run failed');

    expectNoSecrets(raw.join(''));
    const [failed, warned, detailed] = lines();
    expect(failed).toMatchObject({
      level: 'error',
      msg: 'mapping failed',
      mapping: 'orders',
      err: {
        type: 'MongoNetworkError',
        message:
          'connection 7 to mongodb://archiver:***@mongo-0.example:27017,mongo-1.example:27017/?replicaSet=rs0 closed',
      },
      failures: 1,
    });
    const warnedErr = warned?.err as { message?: string } | undefined;
    expect(warnedErr?.message).toContain(`"private_key":"${REDACTED_PRIVATE_KEY}`);
    expect(warnedErr?.message).toContain('archiver@archiver-prod.iam.gserviceaccount.com');
    expect(detailed).toMatchObject({ credentials: REDACTED, err: { type: 'Error' } });
    expect(JSON.stringify(detailed?.err)).toContain(
      'caused by: MongoNetworkError: connection 7 to mongodb://archiver:***@',
    );
  });

  it("issue 13: a failure given to the supervisor's log under err is written with its type, message, causes, stack, code and disposition", () => {
    const { logger, lines } = memoryLogger();
    const cause = new MongoNetworkError('connection 2 to db1:27017 closed');
    const failure = new BigQueryError('fatal', 'Access Denied: Table shop.orders', { cause });
    supervisorLog(logger).error('mapping failed', { mapping: 'orders', err: failure, failures: 1 });
    const [line] = lines();
    expect(line).not.toHaveProperty('error');
    expect(line).toMatchObject({
      level: 'error',
      msg: 'mapping failed',
      mapping: 'orders',
      failures: 1,
      err: {
        type: 'BigQueryError',
        message: 'Access Denied: Table shop.orders: connection 2 to db1:27017 closed',
        code: 'BIGQUERY_FAILED',
        disposition: 'fatal',
        failureClass: 'fatal',
      },
    });
    const stack = (line?.err as { stack?: unknown } | undefined)?.stack;
    expect(stack).toMatch(/^BigQueryError: Access Denied: Table shop\.orders\n\s+at /);
    expect(stack).toContain('caused by: MongoNetworkError: connection 2 to db1:27017 closed');
  });

  it('issue 13: a thrown value that is not an Error still has a type and a message under err', () => {
    const { logger, lines } = memoryLogger();
    logger.warn({ err: 'socket hang up' }, 'could not close a change stream cursor');
    logger.warn({ err: 42 }, 'odd');
    expect(lines().map((line) => line.err)).toEqual([
      { type: 'string', message: 'socket hang up' },
      { type: 'number', message: '42' },
    ]);
  });

  it('still writes a line for an object with a circular reference', () => {
    const { logger, lines } = memoryLogger();
    const node: Record<string, unknown> = { name: 'a' };
    node.self = node;
    logger.info({ node }, 'cycle');
    expect(lines()[0]).toMatchObject({ node: { name: 'a', self: '[Circular]' } });
  });
});

describe('scrubLogLine', () => {
  // The driver takes unencoded spaces in a password and in option values, as it takes `@` and `"`.
  it('issue 10 item 19: redacts passwords and secret options holding spaces, in lines the logger writes', () => {
    const uri =
      'mongodb://archiver:s3 cr3t "x" @y@mongo-0.example:27017/?replicaSet=rs0&proxyHost=p&proxyUsername=a&proxyPassword=pr0 zq7';
    const { logger, raw, lines } = memoryLogger();
    logger.error({ err: new MongoNetworkError(`connection to ${uri} closed`) }, `cannot reach ${uri}`);
    const output = raw.join('');
    for (const secret of ['s3', 'cr3t', '"x"', '@y@', 'pr0', 'zq7']) expect(output).not.toContain(secret);
    expect(lines()[0]).toMatchObject({
      msg: 'cannot reach mongodb://archiver:***@mongo-0.example:27017/?replicaSet=rs0&proxyHost=p&proxyUsername=a&proxyPassword=***',
    });
  });

  it('issue 10 item 19: the plain-text scrubber is the same, for text that is not a JSON line', () => {
    const text =
      'first mongodb://u:a "b" c@h/db\nsecond mongodb+srv://v:d e@c.example.net/?proxyPassword=f g';
    expect(scrubText(text)).toBe(
      'first mongodb://u:***@h/db\nsecond mongodb+srv://v:***@c.example.net/?proxyPassword=***',
    );
  });

  it('redacts a URI password containing a JSON-escaped quote or backslash', () => {
    const line = JSON.stringify({ msg: 'mongodb://u:pa"ss\\word@host/db then text' });
    const scrubbed = scrubLogLine(line);
    expect(JSON.parse(scrubbed)).toEqual({ msg: 'mongodb://u:***@host/db then text' });
  });

  it('redacts an RSA private key cut short before its END line', () => {
    const line = JSON.stringify({ msg: `-----BEGIN RSA PRIVATE KEY-----\n${KEY_BODY}`, next: 'kept' });
    expect(JSON.parse(scrubLogLine(line))).toEqual({ msg: REDACTED_PRIVATE_KEY, next: 'kept' });
  });

  it('leaves URIs without credentials alone', () => {
    const line = JSON.stringify({ msg: 'mongodb://mongo-0:27017,mongo-1:27017/?replicaSet=rs0' });
    expect(scrubLogLine(line)).toBe(line);
  });
});

describe('isSecretFieldName', () => {
  it.each([
    'password',
    'MONGO_PASSWORD',
    'secret',
    'client-secret',
    'token',
    'accessToken',
    'refresh_token',
    'key',
    'private_key',
    'privateKeyId',
    'apiKey',
    'authorization',
    'credentials',
  ])('%s is secret', (name) => {
    expect(isSecretFieldName(name)).toBe(true);
  });

  it.each([
    'SERVICE_ACCOUNT_FILE',
    'mapping',
    'shardKey',
    'primary_key',
    'resumeToken',
    'fencingToken',
    'keys',
  ])('%s is not secret', (name) => {
    expect(isSecretFieldName(name)).toBe(false);
  });
});
