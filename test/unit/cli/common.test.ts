import { MongoNetworkError } from 'mongodb';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { EXIT, reportFatal } from '../../../src/cli/common.js';
import { ConfigError } from '../../../src/errors.js';

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
});
