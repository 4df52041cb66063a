import { MongoClient } from 'mongodb';
import { describe, expect, it } from 'vitest';
import {
  bookkeepingClientOptions,
  DEFAULT_BOOKKEEPING_POOL_SIZE,
  DEFAULT_MONGO_SOCKET_TIMEOUT_MS,
  dataClientOptions,
  dataPoolSize,
  mongoClientOptions,
} from '../../../src/app/archiver.js';

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

describe('issue 12: the data and bookkeeping clients', () => {
  it('sizes the data pool for the change streams: 100 plus 2 per settings document', () => {
    expect(dataPoolSize(0)).toBe(100);
    expect(dataPoolSize(300)).toBe(700);
    const uri = 'mongodb://127.0.0.1:1/';
    const data = new MongoClient(uri, dataClientOptions(uri, 150));
    expect(data.options.maxPoolSize).toBe(400);
    expect(data.options.appName).toBe('mongo-bigquery-archiver');
    expect(data.options.socketTimeoutMS).toBe(DEFAULT_MONGO_SOCKET_TIMEOUT_MS);
  });

  it('gives the bookkeeping client a small pool of its own and a name that tells it apart', () => {
    const uri = 'mongodb://127.0.0.1:1/?socketTimeoutMS=45000';
    const bookkeeping = new MongoClient(uri, bookkeepingClientOptions(uri));
    expect(bookkeeping.options.maxPoolSize).toBe(DEFAULT_BOOKKEEPING_POOL_SIZE);
    expect(DEFAULT_BOOKKEEPING_POOL_SIZE).toBe(10);
    expect(bookkeeping.options.appName).toBe('mongo-bigquery-archiver-bookkeeping');
    // Otherwise the same options as the data client.
    expect(bookkeeping.options.socketTimeoutMS).toBe(45_000);
  });

  it('leaves a maxPoolSize of the connection string as it is, for both clients', () => {
    const uri = 'mongodb://127.0.0.1:1/?MaxPoolSize=25';
    expect(new MongoClient(uri, dataClientOptions(uri, 300)).options.maxPoolSize).toBe(25);
    expect(new MongoClient(uri, bookkeepingClientOptions(uri)).options.maxPoolSize).toBe(25);
  });
});
