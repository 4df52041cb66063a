import { BSONError, deserialize, type Document } from 'bson';
import { type Collection, type MongoClient } from 'mongodb';
import { driverDecode } from './raw-bson.js';

interface Opened {
  readonly pipeline: readonly Document[];
  readonly options: Document;
}

/** A server error as the driver reports it (a `code` and a message). */
class FakeServerError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

function tokenOf(bytes: Uint8Array): string {
  const id = deserialize(bytes, { validation: { utf8: false } })._id as { _data: string };
  return id._data;
}

/**
 * The change events of one collection as BSON bytes, served the way the Node driver serves them: `watch`
 * decodes each event as it hands it out (an event that is not valid UTF-8 throws bson's error and closes
 * the stream, past that event), resumes after a token (`resumeAfter`/`startAfter`), and `aggregate` with a
 * `$changeStream` stage hands events out as bytes with `raw: true`. A server that lacks
 * `$changeStreamSplitLargeEvent` refuses it as MongoDB does (code 40324) on the first pull.
 */
export class FakeChangeCollection {
  readonly watches: Opened[] = [];
  readonly aggregates: Opened[] = [];

  constructor(
    readonly events: readonly Uint8Array[],
    private readonly server: {
      readonly hasSplitStage: boolean;
      /**
       * After handing out the event with this token, the next pull fails once with this code: what the
       * driver reports when its own resume (after a network error) is refused.
       */
      readonly failAfter?: { readonly token: string; readonly code: number };
    } = { hasSplitStage: true },
  ) {}

  #failed = false;

  #startIndex(options: Document): number {
    const after = (options.resumeAfter ?? options.startAfter) as { _data?: string } | undefined;
    if (after?._data === undefined) return 0;
    const at = this.events.findIndex((bytes) => tokenOf(bytes) === after._data);
    if (at < 0) throw new FakeServerError('resume token not found', 286);
    return at + 1;
  }

  #refuses(pipeline: readonly Document[]): FakeServerError | undefined {
    return !this.server.hasSplitStage && pipeline.some((stage) => '$changeStreamSplitLargeEvent' in stage)
      ? new FakeServerError("Unrecognized pipeline stage name: '$changeStreamSplitLargeEvent'", 40_324)
      : undefined;
  }

  watch(pipeline: Document[] = [], options: Document = {}) {
    this.watches.push({ pipeline, options });
    const refusal = this.#refuses(pipeline);
    let index = this.#startIndex(options);
    let closed = false;
    let resumeToken: unknown = (options.resumeAfter ?? options.startAfter) as unknown;
    return {
      tryNext: (): Promise<Document | null> => {
        if (closed) return Promise.reject(new Error('ChangeStream is closed'));
        if (refusal) {
          closed = true;
          return Promise.reject(refusal);
        }
        const fail = this.server.failAfter;
        const previous = this.events[index - 1];
        if (fail && !this.#failed && previous !== undefined && tokenOf(previous) === fail.token) {
          this.#failed = true;
          closed = true;
          return Promise.reject(
            new FakeServerError('cannot resume from this split event fragment', fail.code),
          );
        }
        const bytes = this.events[index];
        if (bytes === undefined) return Promise.resolve(null);
        index++;
        try {
          const event = driverDecode(bytes);
          resumeToken = event._id;
          return Promise.resolve(event);
        } catch (error) {
          closed = true;
          return Promise.reject(error instanceof BSONError ? error : new Error(String(error)));
        }
      },
      bufferedCount: () => (closed ? 0 : this.events.length - index),
      get resumeToken() {
        return resumeToken;
      },
      close: () => {
        closed = true;
        return Promise.resolve();
      },
    };
  }

  aggregate(pipeline: Document[], options: Document = {}) {
    this.aggregates.push({ pipeline, options });
    const [first, ...rest] = pipeline;
    const stage = (first?.$changeStream ?? {}) as Document;
    const refusal = this.#refuses(rest);
    let index = this.#startIndex(stage);
    return {
      tryNext: (): Promise<unknown> => {
        if (refusal) return Promise.reject(refusal);
        const bytes = this.events[index];
        if (bytes === undefined) return Promise.resolve(null);
        index++;
        return Promise.resolve(options.raw === true ? Buffer.from(bytes) : driverDecode(bytes));
      },
      close: () => Promise.resolve(),
    };
  }

  asCollection(): Collection {
    return this as unknown as Collection;
  }
}

/** A client whose `buildInfo` reports `version`. */
export function fakeClient(version: string): MongoClient {
  const info = { version, versionArray: version.split('.').map(Number), ok: 1 };
  return { db: () => ({ command: () => Promise.resolve(info) }) } as unknown as MongoClient;
}
