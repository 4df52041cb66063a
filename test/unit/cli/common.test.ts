import { MongoNetworkError, MongoServerError } from 'mongodb';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EXIT, reportFatal } from '../../../src/cli/common.js';
import { BigQueryError, ConfigError, IdentifierError, SettingsError } from '../../../src/errors.js';
import { HistoryLostError, toMongoError } from '../../../src/mongodb/error-mapping.js';

const URI = 'mongodb://archiver:hunter2-in-uri@mongo-0.example:27017/?replicaSet=rs0';

afterEach(() => {
  vi.restoreAllMocks();
});

describe('reportFatal', () => {
  it('writes one line without the password of a connection string the error names, and picks the exit code', () => {
    const lines: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((line: string) => lines.push(line));
    expect(reportFatal(new MongoNetworkError(`connection 1 to ${URI} closed`))).toBe(EXIT.failure);
    expect(reportFatal(new ConfigError(`cannot use ${URI}`))).toBe(EXIT.config);
    expect(lines).toEqual([
      'error: connection 1 to mongodb://archiver:***@mongo-0.example:27017/?replicaSet=rs0 closed',
      'configuration error: cannot use mongodb://archiver:***@mongo-0.example:27017/?replicaSet=rs0',
    ]);
  });

  it('issue 11: picks the exit code from the disposition only: 2 for an invalid configuration or name, 1 otherwise', () => {
    const lines: string[] = [];
    vi.spyOn(console, 'error').mockImplementation((line: string) => lines.push(line));
    expect(reportFatal(new IdentifierError('"a-b" is not a legal dataset name'))).toBe(EXIT.config);
    expect(reportFatal(new SettingsError(['columns.0.type: unknown type']))).toBe(EXIT.failure);
    expect(reportFatal(new BigQueryError('fatal', 'Access Denied'))).toBe(EXIT.failure);
    expect(reportFatal(new HistoryLostError('the resume point is gone'))).toBe(EXIT.failure);
    const denied = toMongoError(
      new MongoServerError({ ok: 0, code: 13, codeName: 'Unauthorized', errmsg: 'not authorized' }),
    );
    expect(reportFatal(denied)).toBe(EXIT.failure);
    expect(reportFatal(new Error('boom'))).toBe(EXIT.failure);
    expect(lines[0]).toBe('configuration error: "a-b" is not a legal dataset name');
    expect(lines.slice(1)).toEqual([
      'error: columns.0.type: unknown type',
      'error: Access Denied',
      'error: the resume point is gone',
      'error: not authorized',
      'error: boom',
    ]);
  });
});
