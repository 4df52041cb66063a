import { deserialize, serialize, Timestamp, type Document } from 'bson';
import {
  cursorReply,
  RAW_BATCH_OPTIONS,
  type ChangeStreamCommands,
  type CursorReply,
} from '../../../src/mongodb/raw-change-source.js';

/** One command the cursor ran, as the server would have received it. */
export type CommandCall =
  | { readonly name: 'aggregate'; readonly pipeline: readonly Document[]; readonly batchSize: number }
  | {
      readonly name: 'getMore';
      readonly id: bigint;
      readonly batchSize: number;
      readonly maxTimeMS: number;
    }
  | { readonly name: 'killCursors'; readonly id: bigint };

/**
 * What the server answers one aggregate or getMore: a reply document (as MongoDB sends it), an error (as
 * the driver throws it), or a wait for the command's signal (a getMore the server holds, then abandoned).
 */
export type ScriptedAnswer = Document | Error | 'wait-for-abort';

/**
 * The reply of MongoDB 7.0 to an aggregate (`first`) or getMore on a change stream: the batch's events as
 * BSON, the post-batch resume token (always sent since 4.0.7), the cursor id (an int64 beyond 2^53 in
 * practice), `operationTime` and `$clusterTime`.
 */
export function serverReply(
  kind: 'first' | 'next',
  events: readonly Document[],
  options: { readonly id?: bigint; readonly postBatchResumeToken?: string } = {},
): Document {
  const batch = kind === 'first' ? 'firstBatch' : 'nextBatch';
  return {
    cursor: {
      [batch]: events,
      ...(options.postBatchResumeToken === undefined
        ? {}
        : { postBatchResumeToken: { _data: options.postBatchResumeToken } }),
      id: options.id ?? 7_265_347_382_745_463_811n,
      ns: 'bidding.ad_cpta',
    },
    ok: 1,
    $clusterTime: { clusterTime: new Timestamp({ t: 1_705_095_880, i: 1 }) },
    operationTime: new Timestamp({ t: 1_705_095_880, i: 1 }),
  };
}

/**
 * The commands of one raw change stream answered from a script, in order, and recorded. A reply document
 * goes over the wire as the driver's `db.command` reads it: serialised, then deserialised with
 * RAW_BATCH_OPTIONS, so the cursor sees each event as the slice of the reply bson hands over. Once the
 * script is used up, every getMore answers an empty batch (an idle stream without a post-batch token).
 */
export class ScriptedCommands implements ChangeStreamCommands {
  readonly calls: CommandCall[] = [];
  ended = false;
  readonly #script: ScriptedAnswer[];

  constructor(script: readonly ScriptedAnswer[]) {
    this.#script = [...script];
  }

  aggregate(pipeline: readonly Document[], batchSize: number, signal: AbortSignal): Promise<CursorReply> {
    this.calls.push({ name: 'aggregate', pipeline, batchSize });
    return this.#answer(signal, () => serverReply('first', []));
  }

  getMore(id: bigint, batchSize: number, maxTimeMS: number, signal: AbortSignal): Promise<CursorReply> {
    this.calls.push({ name: 'getMore', id, batchSize, maxTimeMS });
    return this.#answer(signal, () => serverReply('next', [], { id }));
  }

  killCursors(id: bigint): Promise<void> {
    this.calls.push({ name: 'killCursors', id });
    return Promise.resolve();
  }

  end(): Promise<void> {
    this.ended = true;
    return Promise.resolve();
  }

  /** The `$changeStream` stages of the aggregates run so far. */
  changeStreamStages(): Document[] {
    return this.calls.flatMap((call) =>
      call.name === 'aggregate' ? [(call.pipeline[0] as { $changeStream: Document }).$changeStream] : [],
    );
  }

  async #answer(signal: AbortSignal, idle: () => Document): Promise<CursorReply> {
    const answer = this.#script.shift() ?? idle();
    if (answer instanceof Error) throw answer;
    if (answer === 'wait-for-abort') {
      await new Promise((_, reject) => {
        signal.addEventListener('abort', () => {
          reject(signal.reason as Error);
        });
      });
    }
    return cursorReply(deserialize(serialize(answer as Document), RAW_BATCH_OPTIONS));
  }
}
