import { MongoNetworkError, MongoServerError } from 'mongodb';
import { describe, expect, it } from 'vitest';
import {
  describeMongoConnectFailure,
  describeMongoRefusal,
  mongoHosts,
} from '../../../src/mongodb/connectivity.js';

describe('mongoHosts (issue 13: lines name the server, never the password)', () => {
  it.each([
    ['mongodb://127.0.0.1:1', '127.0.0.1:1'],
    ['mongodb://u:pw@mongo-0:27017,mongo-1:27017/db?replicaSet=rs0', 'mongo-0:27017,mongo-1:27017'],
    ['mongodb+srv://u:pw@cluster0.example.net/?retryWrites=true', 'cluster0.example.net'],
    ['mongodb://u:p@ss@w0rd@h:1/?appName=a@b', 'h:1'],
    ['mongodb://h:1/?authMechanismProperties=x@y', 'h:1'],
    ['mongodb://u:pw@[::1]:27017', '[::1]:27017'],
    ['mongodb://archiver:s3 cr3t "x"@mongo-0.example:27017/?replicaSet=rs0', 'mongo-0.example:27017'],
  ])('%s -> %s', (uri, hosts) => {
    expect(mongoHosts(uri)).toBe(hosts);
  });
});

describe('describeMongoConnectFailure (issue 13: run and validate name MongoDB and the fix)', () => {
  const uri = 'mongodb://archiver:pw@127.0.0.1:1/?directConnection=true';

  it('a refused connection, as the driver words it (its text only)', () => {
    const error = new MongoNetworkError('connect ECONNREFUSED 127.0.0.1:1');
    expect(describeMongoConnectFailure(error, uri, 10_000)).toBe(
      'MongoDB at 127.0.0.1:1 unreachable (connection refused): check MONGO_CLIENT and that the server is running and reachable from here',
    );
  });

  it('an unknown host, from the cause of a network error', () => {
    const error = new MongoNetworkError('failed', {
      cause: Object.assign(new Error('getaddrinfo ENOTFOUND mongo-0'), { code: 'ENOTFOUND' }),
    });
    expect(describeMongoConnectFailure(error, uri, 10_000)).toMatch(
      /^MongoDB at 127\.0\.0\.1:1 unreachable \(host not found\): check MONGO_CLIENT/,
    );
  });

  it('a server that never answered, with the bound', () => {
    const error = new Error('Server selection timed out after 2000 ms');
    expect(describeMongoConnectFailure(error, uri, 2_000)).toMatch(
      /^MongoDB at 127\.0\.0\.1:1 did not answer within 2 s: check MONGO_CLIENT/,
    );
  });

  it('wrong credentials, without printing them', () => {
    const error = new MongoServerError({ message: 'Authentication failed.', code: 18 });
    const line = describeMongoConnectFailure(error, uri, 10_000);
    expect(line).toMatch(/refused the credentials \(authentication failed\): check the user, password/);
    expect(line).not.toContain('pw');
  });
});

describe('describeMongoRefusal', () => {
  it('a missing privilege names what to grant', () => {
    const error = new MongoServerError({
      message: 'not authorized on shop to execute command { aggregate: "ads" }',
      code: 13,
    });
    expect(
      describeMongoRefusal(
        error,
        'open a change stream on shop.ads',
        'the changeStream and find actions on shop.ads',
      ),
    ).toBe(
      'MongoDB refused to open a change stream on shop.ads (not authorized): grant the user of MONGO_CLIENT the changeStream and find actions on shop.ads',
    );
  });

  it('a standalone server cannot open change streams', () => {
    const error = new MongoServerError({
      message: 'The $changeStream stage is only supported on replica sets',
      code: 40_573,
    });
    expect(describeMongoRefusal(error, 'open a change stream on shop.ads', 'x')).toMatch(
      /^MongoDB cannot open a change stream on shop\.ads: change streams need a replica set or a sharded cluster/,
    );
  });
});
