import { describe, expect, it } from 'vitest';
import { resolveLogFormat } from '../../../src/observability/log-format.js';
import { createLogger, REDACTED, REDACTED_PRIVATE_KEY } from '../../../src/observability/logger.js';
import { BigQueryError } from '../../../src/errors.js';

const URI_PASSWORD = 'hunter2-in-uri';
const KEY_BODY = 'MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7';
const PRIVATE_KEY = `-----BEGIN PRIVATE KEY-----\n${KEY_BODY}\n-----END PRIVATE KEY-----\n`;
const URI = `mongodb://archiver:${URI_PASSWORD}@mongo-0.example:27017/?replicaSet=rs0`;

/** A destination in memory that says whether it is a terminal, as `process.stdout` does. */
function memory(isTTY: boolean): {
  destination: { write: (line: string) => void; isTTY: boolean };
  raw: string[];
} {
  const raw: string[] = [];
  return { destination: { write: (line: string) => void raw.push(line), isTTY }, raw };
}

function isJson(line: string): boolean {
  try {
    JSON.parse(line);
    return true;
  } catch {
    return false;
  }
}

describe('issue 13: log format', () => {
  it.each([
    ['auto', true, 'pretty'],
    ['auto', false, 'json'],
    ['json', true, 'json'],
    ['pretty', false, 'pretty'],
  ] as const)('%s with a terminal: %s is %s', (format, isTTY, expected) => {
    expect(resolveLogFormat(format, { isTTY })).toBe(expected);
  });

  it('an absent isTTY (a file, a pipe, a custom stream) is no terminal', () => {
    expect(resolveLogFormat('auto', {})).toBe('json');
  });

  it('writes human lines to a terminal by default: time of day, level, message, context on the same line', () => {
    const { destination, raw } = memory(true);
    const logger = createLogger({ level: 'info', destination });
    logger.child({ mapping: 'orders' }).info({ copied: 12 }, 'backfill done');
    expect(raw).toHaveLength(1);
    const [line = ''] = raw;
    expect(isJson(line)).toBe(false);
    expect(line).toMatch(/^\[\d{2}:\d{2}:\d{2}\.\d{3}\] INFO: backfill done \{.*"mapping":"orders".*\}\n$/);
    expect(line).toContain('"copied":12');
    expect(line).not.toContain('pid');
    // No colours unless asked: a test's destination is no real terminal.
    expect(line).not.toContain('\u001b[');
  });

  it('writes JSON lines to what is not a terminal by default, and as asked either way', () => {
    const pipe = memory(false);
    createLogger({ level: 'info', destination: pipe.destination }).info('started');
    expect(JSON.parse(pipe.raw[0] ?? '')).toMatchObject({ level: 'info', msg: 'started' });

    const terminal = memory(true);
    createLogger({ level: 'info', format: 'json', destination: terminal.destination }).info('started');
    expect(isJson(terminal.raw[0] ?? '')).toBe(true);

    const file = memory(false);
    createLogger({ level: 'info', format: 'pretty', destination: file.destination }).info('started');
    expect(file.raw[0]).toMatch(/ INFO: started\n$/);
  });

  it('colours human lines only when asked', () => {
    const { destination, raw } = memory(true);
    createLogger({ level: 'info', destination, colour: true }).warn('slow');
    expect(raw[0]).toContain('\u001b[');
  });

  it('redacts in human lines as in JSON lines, and shows a failure with its type, stack and disposition', () => {
    const { destination, raw } = memory(true);
    const logger = createLogger({ level: 'info', destination });
    const failure = new BigQueryError('fatal', `Access Denied while connecting through ${URI}`, {
      cause: new Error(`key was ${PRIVATE_KEY}`),
    });
    logger.error({ mapping: 'orders', err: failure, password: 'pw-123456' }, 'mapping failed');
    const output = raw.join('');
    for (const secret of [URI_PASSWORD, KEY_BODY, 'pw-123456']) expect(output).not.toContain(secret);
    expect(output).toContain(REDACTED);
    expect(output).toContain(REDACTED_PRIVATE_KEY);
    expect(output).toMatch(/ERROR: mapping failed \{.*"mapping":"orders"/);
    expect(output).toContain('"type": "BigQueryError"');
    expect(output).toContain('"disposition": "fatal"');
    expect(output).toMatch(
      /BigQueryError: Access Denied while connecting through mongodb:\/\/archiver:\*\*\*@/,
    );
    expect(output).toMatch(/\n\s+at /);
  });
});
