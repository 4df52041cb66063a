import { MongoClient } from 'mongodb';
import { describe, expect, it } from 'vitest';
import { DEFAULT_MONGO_SOCKET_TIMEOUT_MS, mongoClientOptions } from '../../../src/app/archiver.js';

const LONGEST_CHANGE_STREAM_AWAIT_MS = 1_000;

describe('the MongoDB client of the daemon', () => {
  it('issue 10 item 11: bounds every wait on a socket, well above the change streams’ maxAwaitTimeMS', () => {
    const uri = 'mongodb://127.0.0.1:1/';
    const client = new MongoClient(uri, mongoClientOptions(uri));
    expect(client.options.socketTimeoutMS).toBe(DEFAULT_MONGO_SOCKET_TIMEOUT_MS);
    expect(client.options.socketTimeoutMS).toBeGreaterThan(60 * LONGEST_CHANGE_STREAM_AWAIT_MS);
  });

  it('leaves a socketTimeoutMS of the connection string as it is', () => {
    const uri = 'mongodb://127.0.0.1:1/?appName=x&socketTimeoutMS=45000';
    const client = new MongoClient(uri, mongoClientOptions(uri));
    expect(client.options.socketTimeoutMS).toBe(45_000);
    expect(client.options.appName).toBe('mongo-bigquery-archiver');
  });
});
