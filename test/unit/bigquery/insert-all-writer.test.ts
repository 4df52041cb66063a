import { encodedBy, outgoing } from '../../support/outgoing-rows.js';
import { BigQuery } from '@google-cloud/bigquery';
import { OAuth2Client } from 'google-auth-library';
import { describe, expect, it } from 'vitest';
import { InsertAllWriter } from '../../../src/bigquery/insert-all-writer.js';

/** A client whose transport takes every request and never answers (a half-open connection). */
function silentBigQuery(): { client: BigQuery; sent: string[] } {
  const authClient = new OAuth2Client();
  authClient.setCredentials({ access_token: 'unit-test', expiry_date: Date.now() + 3_600_000 });
  const client = new BigQuery({
    projectId: 'p',
    apiEndpoint: 'http://127.0.0.1:9',
    authClient,
    autoRetry: false,
  });
  const sent: string[] = [];
  client.request = (options) => {
    sent.push(options.uri);
  };
  return { client, sent };
}

describe('InsertAllWriter', () => {
  it('issue 10 item 11: an aborted caller stops waiting for an unanswered insertAll', async () => {
    const { client, sent } = silentBigQuery();
    const writer = new InsertAllWriter(client.dataset('ds').table('t'));
    const controller = new AbortController();
    const append = writer.append(outgoing([{ _event_id: 'e1', _id: '1' }]), controller.signal);
    await new Promise((resolve) => setImmediate(resolve));
    expect(sent).toEqual([expect.stringMatching(/insertAll$/)]);
    const reason = new Error('stopping');
    controller.abort(reason);
    const outcome = await Promise.race([
      append.then(
        () => 'resolved',
        (error: unknown) => error,
      ),
      new Promise((resolve) =>
        setTimeout(() => {
          resolve('still waiting after 1 s');
        }, 1_000),
      ),
    ]);
    expect(outcome).toBe(reason);
  });

  it('names the field BigQuery refused a row for (its answer puts it in location, not in the message)', async () => {
    const { client } = silentBigQuery();
    client.request = (_options, callback) => {
      callback(null, {
        insertErrors: [
          {
            index: 1,
            errors: [{ reason: 'invalid', location: 'rec.sub', debugInfo: '', message: 'no such field.' }],
          },
        ],
      });
    };
    const writer = new InsertAllWriter(client.dataset('ds').table('t'));
    const outcome = await writer.append(
      outgoing([
        { _event_id: 'e1', _id: '1' },
        { _event_id: 'e2', _id: '2', rec: { sub: 1 } },
      ]),
    );
    expect(outcome.rejected).toEqual([{ index: 1, reason: 'invalid: no such field. (field rec.sub)' }]);
  });

  it('issue 11 item 4: two appends in flight on one writer, answered in reverse order, each get their own answer', async () => {
    const { client } = silentBigQuery();
    type Callback = Parameters<BigQuery['request']>[1];
    const held: { body: string; callback: Callback }[] = [];
    client.request = (options, callback) => {
      held.push({ body: typeof options.body === 'string' ? options.body : '', callback });
    };
    const writer = new InsertAllWriter(client.dataset('ds').table('t'));
    const first = [{ _event_id: 'e1', _id: '1' }];
    const second = [
      { _event_id: 'e2', _id: '2' },
      { _event_id: 'e3', _id: '3' },
    ];
    const appends = [writer.append(encodedBy(writer, first)), writer.append(encodedBy(writer, second))];
    await new Promise((resolve) => setImmediate(resolve));

    // Both requests are out at once, each with its own rows and insertIds.
    expect(held).toHaveLength(2);
    const ids = held.map((h) =>
      (JSON.parse(h.body) as { rows: { insertId: string }[] }).rows.map((r) => r.insertId),
    );
    expect(ids).toEqual([['e1'], ['e2', 'e3']]);
    held[1]?.callback(null, {
      insertErrors: [{ index: 1, errors: [{ reason: 'invalid', message: 'bad value' }] }],
    });
    held[0]?.callback(null, {});

    expect(await Promise.all(appends)).toEqual([
      { rejected: [] },
      { rejected: [{ index: 1, reason: 'invalid: bad value' }] },
    ]);
  });

  it('issue 11 build 6: an entry a worker made for rowEncoding().spec is sent as it is; one for another id column is built again', async () => {
    const { client } = silentBigQuery();
    const bodies: string[] = [];
    client.request = (options, callback) => {
      bodies.push(typeof options.body === 'string' ? options.body : '');
      callback(null, {}, undefined as never);
    };
    const writer = new InsertAllWriter(client.dataset('ds').table('t'));
    const encoding = writer.rowEncoding();
    expect(encoding.spec).toEqual({ format: 'insert-all', idColumn: '_event_id' });
    const kept = { _event_id: 'e1', _id: '1' };
    const entry = new TextEncoder().encode(`{"insertId":"e1","json":${JSON.stringify(kept)}}`);
    const other = new InsertAllWriter(client.dataset('ds').table('e'), 'event_id').rowEncoding();
    const rebuilt = { _event_id: 'e2', _id: '2' };
    const outcome = await writer.append([
      {
        encoded: encoding.wrap(entry, 13),
        row: () => {
          throw new Error('the row was built again');
        },
      },
      { encoded: other.wrap(new TextEncoder().encode('{"insertId":"x","json":{}}'), 2), row: () => rebuilt },
    ]);
    expect(outcome).toEqual({ rejected: [] });
    const body = JSON.parse(bodies[0] ?? '') as { rows: unknown };
    expect(body.rows).toEqual([
      { insertId: 'e1', json: kept },
      { insertId: 'e2', json: rebuilt },
    ]);
  });

  it('issue 11: sends the entries encoded at batching without building the rows again; others are built again', async () => {
    const { client } = silentBigQuery();
    const bodies: string[] = [];
    client.request = (options, callback) => {
      bodies.push(typeof options.body === 'string' ? options.body : '');
      callback(null, {}, undefined as never);
    };
    const writer = new InsertAllWriter(client.dataset('ds').table('t'));
    const kept = { _event_id: 'e1', _id: '1', s: 'a "quoted" é' };
    const encoded = writer.encode(kept);
    expect(encoded.size).toBe(Buffer.byteLength(JSON.stringify(kept), 'utf8'));
    const rebuilt = { _event_id: 'e2', _id: '2' };
    const outcome = await writer.append([
      {
        encoded,
        row: () => {
          throw new Error('the row was built again');
        },
      },
      // Encoded by a writer of another id column (the dead-letter table's): built again for this one.
      {
        encoded: new InsertAllWriter(client.dataset('ds').table('e'), 'event_id').encode(rebuilt),
        row: () => rebuilt,
      },
    ]);
    expect(outcome).toEqual({ rejected: [] });
    expect(JSON.parse(bodies[0] ?? '')).toEqual({
      kind: 'bigquery#tableDataInsertAllRequest',
      skipInvalidRows: true,
      ignoreUnknownValues: false,
      rows: [
        { insertId: 'e1', json: kept },
        { insertId: 'e2', json: rebuilt },
      ],
    });
  });
});
