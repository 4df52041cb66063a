// The in-process end of the pipeline benchmark: the real writers and sink (src/bigquery), with the network
// replaced by a counter of the bytes each request would put on the wire, and BigQuery's answer given after a
// simulated round trip (a timer, so that waiting costs no CPU, as waiting for a remote BigQuery does not).
import { setTimeout as sleep } from 'node:timers/promises';
import { type Table } from '@google-cloud/bigquery';
import { managedwriter, protos } from '@google-cloud/bigquery-storage';
import { InsertAllWriter } from '../src/bigquery/insert-all-writer.js';
import { BigQuerySink } from '../src/bigquery/sink.js';
import { type DescriptorProto } from '../src/bigquery/proto-encoder.js';
import { StorageWriteWriter } from '../src/bigquery/storage-write-writer.js';
import { type EncodedRow, type HistoryRow, type TableWriter } from '../src/bigquery/writer.js';
import { type WriterKind } from '../src/core/settings.js';
import { type BatchLimits } from '../src/core/batcher.js';
import { type RowEncoding } from '../src/core/prepared.js';
import { type TableField } from '../src/schema/types.js';

type AppendRowsRequest = protos.google.cloud.bigquery.storage.v1.IAppendRowsRequest;
const AppendRowsRequestType = protos.google.cloud.bigquery.storage.v1.AppendRowsRequest;

export interface WireCounter {
  requests: number;
  bytes: number;
}

export function wireCounter(): WireCounter {
  return { requests: 0, bytes: 0 };
}

export interface SimulatedNetwork {
  /**
   * Milliseconds between sending a request and its answer (0: answered at once, as before round trips were
   * simulated). Each request's timer starts when it is sent, so requests in flight together are answered
   * together, as a remote BigQuery answers them.
   */
  readonly rttMs: number;
}

const NO_NETWORK: SimulatedNetwork = { rttMs: 0 };

/**
 * `value` once the round trip has passed since the request was sent (now): a real timer, so the wait costs
 * no CPU and cannot be told apart from an instant answer only by what it returns.
 */
export function answerAfter<T>(network: SimulatedNetwork, value: T): Promise<T> {
  return network.rttMs > 0 ? sleep(network.rttMs, value) : Promise.resolve(value);
}

/** Stands in for `Table.request`: the body (JSON text) becomes its UTF-8 bytes, as the HTTP client sends it. */
function countingTable(counter: WireCounter, network: SimulatedNetwork): Table {
  const table = {
    id: 'history',
    request(options: { body: string }): Promise<unknown> {
      counter.requests++;
      counter.bytes += Buffer.from(options.body, 'utf8').length;
      return answerAfter(network, [{}]);
    },
  };
  return table as unknown as Table;
}

/**
 * Stands in for the library's StreamConnection: each request is serialised as gRPC serialises it
 * (@grpc/proto-loader: `fromObject`, then `encode`) and counted; BigQuery's answer is an empty success, a
 * round trip after the write (whenever the caller asks for it).
 */
function countingConnection(counter: WireCounter, network: SimulatedNetwork) {
  return {
    getStreamId: () => 'projects/bench/datasets/bench/tables/history/streams/_default',
    write(request: AppendRowsRequest) {
      counter.requests++;
      counter.bytes += AppendRowsRequestType.encode(
        AppendRowsRequestType.fromObject(request),
      ).finish().length;
      // The answer's timer starts at the write, not when `getResult` is first called.
      const answer = answerAfter(network, {});
      return { getResult: () => answer };
    },
    reconnect: () => undefined,
    close: () => undefined,
    onConnectionError: () => ({ off: () => undefined }),
  };
}

function countingWriterClient(counter: WireCounter, network: SimulatedNetwork): managedwriter.WriterClient {
  const connection = countingConnection(counter, network);
  const client = {
    getWriteStream: () => Promise.resolve([{}]),
    createStreamConnection: () => Promise.resolve(connection),
  };
  return client as unknown as managedwriter.WriterClient;
}

/**
 * The production sink (batching, retries, dead letters) over the production writer of `kind`, and the
 * row encoding the daemon batches with it (BigQueryDestination.encode: the writer's own), also as the
 * plain-data spec worker threads encode with (BigQueryDestination.rowEncoding).
 * Every request of the writer and of the dead-letter writer is answered after `network.rttMs`.
 */
export function countingSink(
  kind: WriterKind,
  schema: readonly TableField[],
  counter: WireCounter,
  network: SimulatedNetwork = NO_NETWORK,
  limits?: BatchLimits,
): { sink: BigQuerySink; encode: (row: HistoryRow) => EncodedRow; rowEncoding: () => RowEncoding } {
  const writer: TableWriter =
    kind === 'insert-all'
      ? new InsertAllWriter(countingTable(counter, network))
      : new StorageWriteWriter({
          clients: { projectId: 'bench', writerClient: countingWriterClient(counter, network) },
          datasetId: 'bench',
          tableId: 'history',
          schema,
        });
  const encode = (row: HistoryRow) => writer.encode(row);
  const sink = new BigQuerySink({
    mappingId: 'bench',
    writer,
    deadLetterWriter: new InsertAllWriter(countingTable(wireCounter(), network), 'event_id'),
    encode,
    ...(limits && { limits }),
  });
  const rowEncoding = (): RowEncoding => {
    if (!writer.rowEncoding) throw new Error('the production writers have a row encoding');
    return writer.rowEncoding();
  };
  return { sink, encode, rowEncoding };
}

/**
 * The client library's Writer over the counting connection: what StorageWriteWriter appends through, for
 * rows that are already serialized.
 */
export function countingAppender(
  descriptor: DescriptorProto,
  counter: WireCounter,
  network: SimulatedNetwork = NO_NETWORK,
): managedwriter.Writer {
  const connection = countingConnection(counter, network) as unknown as ConstructorParameters<
    typeof managedwriter.Writer
  >[0]['connection'];
  return new managedwriter.Writer({
    connection,
    protoDescriptor: descriptor,
    traceId: 'mongo-bigquery-archiver',
  });
}
