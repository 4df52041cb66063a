import { extname } from 'node:path';
import { parentPort, Worker, type Transferable } from 'node:worker_threads';

/** A task's input or output and the buffers that move with it (transferred, not copied). */
export interface Transfer<T> {
  readonly value: T;
  readonly transfer?: readonly Transferable[];
}

interface Request {
  readonly id: number;
  readonly input: unknown;
}
type Reply =
  | { readonly id: number; readonly ok: true; readonly output: unknown }
  | {
      readonly id: number;
      readonly ok: false;
      readonly error: RemoteError;
    };
/** Posted once by `serveTasks`: the worker's module has loaded and it takes tasks. */
interface Ready {
  readonly ready: true;
}
type WorkerMessage = Reply | Ready;

/** An error as it crosses from a worker: what describes it, its `code` and `disposition` (see errors.ts). */
interface RemoteError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  disposition?: string;
}

/**
 * A task failed inside a worker thread; the worker's error name, message, stack, `code` and `disposition`
 * (an ArchiverError's, see errors.ts) are kept.
 */
export class WorkerTaskError extends Error {
  readonly code: string | undefined;
  readonly disposition: string | undefined;
  /** The error's own message, without its name. */
  readonly remoteMessage: string;

  constructor(remote: RemoteError) {
    super(`${remote.name}: ${remote.message}`);
    this.name = 'WorkerTaskError';
    this.code = remote.code;
    this.disposition = remote.disposition;
    this.remoteMessage = remote.message;
    if (remote.stack !== undefined)
      this.stack = `${this.name}: ${this.message}\n(in a worker) ${remote.stack}`;
  }
}

/**
 * A worker thread died while it held the task: the task may well succeed on another worker (retryable, as
 * any error that is not an ArchiverError, see errors.ts). The message names the exit code and, when the
 * thread died of an uncaught error (out of heap: ERR_WORKER_OUT_OF_MEMORY), that error, also its `cause`.
 */
export class WorkerExitError extends Error {
  /** The thread's exit code. */
  readonly exitCode: number;

  constructor(exitCode: number, cause?: Error) {
    const why = cause === undefined ? '' : `: ${cause.name}: ${cause.message}`;
    super(`a worker thread exited (code ${exitCode})${why}`, cause === undefined ? undefined : { cause });
    this.name = 'WorkerExitError';
    this.exitCode = exitCode;
  }
}

/**
 * The URL of a module next to the caller's, with the caller's extension: `.ts` when running from sources
 * (tsx, vitest), `.js` when compiled. For naming the module a pool's workers run.
 */
export function siblingModule(callerUrl: string, name: string): URL {
  return new URL(`./${name}${extname(new URL(callerUrl).pathname)}`, callerUrl);
}

function startWorker(module: URL, workerData: unknown): Worker {
  if (extname(module.pathname) !== '.ts') return new Worker(module, { workerData });
  // From sources: Node 20 does not pass loader hooks (tsx's --import) on to worker threads, so the worker
  // registers tsx itself before importing the module.
  const tsx = import.meta.resolve('tsx/esm/api');
  const code =
    `import(${JSON.stringify(tsx)}).then((tsx) => { tsx.register(); ` +
    `return import(${JSON.stringify(module.href)}); });`;
  return new Worker(code, { eval: true, workerData });
}

interface Pending {
  resolve(output: unknown): void;
  reject(error: unknown): void;
}

interface Slot {
  worker: Worker;
  readonly pending: Map<number, Pending>;
  /**
   * Whether the worker running now said it is ready (its module loaded): only a worker that was is started
   * again when it dies; one that dies before means the module cannot start, and fails the pool.
   */
  ready: boolean;
}

export interface WorkerPoolOptions {
  /** The module each worker runs; it calls `serveTasks` when loaded. */
  readonly module: URL;
  /** Worker threads (at least 1). */
  readonly threads: number;
  /** Given to every worker as `workerData` (structured-cloned). */
  readonly workerData?: unknown;
  /**
   * A worker thread that dies after it was ready (its module loaded and called `serveTasks`) is started
   * again, however often that happens: only the tasks it held reject (WorkerExitError), and the pool goes on
   * (default false: the death fails the pool). A worker that dies before it was ready still fails the pool,
   * so that a module that cannot start is not started forever.
   */
  readonly restart?: boolean;
}

/**
 * A fixed set of worker threads running one task function (see `serveTasks`). A task goes to the worker
 * with the fewest outstanding tasks; each `run` resolves with its own task's output. A worker that dies
 * fails the pool: its tasks and every later one reject (with `restart`, only its own tasks, see
 * WorkerPoolOptions). A reply that cannot be read here (`messageerror`) rejects every task its worker
 * held, since which one it answered is unknown. Idle workers do not keep the process alive.
 */
export class WorkerPool<In, Out> {
  readonly #options: WorkerPoolOptions;
  readonly #slots: Slot[];
  #nextId = 0;
  #failure: Error | undefined;
  #closed = false;
  #restarts = 0;

  constructor(options: WorkerPoolOptions) {
    if (!Number.isInteger(options.threads) || options.threads < 1) {
      throw new RangeError(`a worker pool needs at least one thread (got ${options.threads})`);
    }
    this.#options = options;
    this.#slots = Array.from({ length: options.threads }, () => {
      const slot: Slot = { worker: this.#start(), pending: new Map(), ready: false };
      this.#watch(slot);
      return slot;
    });
  }

  get threads(): number {
    return this.#slots.length;
  }

  /** Workers started again after they died (see WorkerPoolOptions' `restart`). */
  get restarts(): number {
    return this.#restarts;
  }

  /**
   * Why the pool fails every task, once it does (a worker died; with `restart`, only one that died before it
   * was ready, see WorkerPoolOptions).
   */
  get failure(): Error | undefined {
    return this.#failure;
  }

  #start(): Worker {
    const worker = startWorker(this.#options.module, this.#options.workerData);
    worker.unref();
    return worker;
  }

  #watch(slot: Slot): void {
    const worker = slot.worker;
    let cause: Error | undefined;
    worker.on('message', (message: WorkerMessage) => {
      if ('ready' in message) slot.ready = true;
      else this.#settle(slot, message);
    });
    // A reply that cannot be deserialised here: which task it answered is unknown, so every task this worker
    // holds rejects (retryable). The worker goes on; its later replies to those tasks are dropped (#settle).
    worker.on('messageerror', (error) => {
      if (slot.worker !== worker) return;
      this.#rejectSlot(
        slot,
        new Error(`a worker thread's reply could not be read: ${error.message}`, { cause: error }),
      );
    });
    // An uncaught error ends the thread: 'exit' follows, and the error is what its tasks reject with.
    worker.on('error', (error) => {
      cause ??= error;
    });
    // Messages the thread posted before it ended ('ready' among them) are delivered before 'exit'.
    worker.on('exit', (code) => {
      if (this.#closed || slot.worker !== worker) return;
      // Before it was ready, the thread failed to start: the error is what its module threw, if it threw.
      if (!slot.ready) {
        this.#fail(cause ?? new WorkerExitError(code));
        return;
      }
      const error = new WorkerExitError(code, cause);
      if (this.#options.restart !== true || this.#failure !== undefined) {
        this.#fail(error);
        return;
      }
      this.#rejectSlot(slot, error);
      slot.worker = this.#start();
      slot.ready = false;
      this.#restarts++;
      this.#watch(slot);
    });
  }

  /** Runs one task; buffers in `input.transfer` move to the worker (they are unusable here afterwards). */
  run(input: Transfer<In>): Promise<Out> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    if (this.#closed) return Promise.reject(new Error('the worker pool is closed'));
    let slot = this.#slots[0];
    for (const candidate of this.#slots) {
      if (slot === undefined || candidate.pending.size < slot.pending.size) slot = candidate;
    }
    if (slot === undefined) return Promise.reject(new Error('unreachable: a pool has threads'));
    const id = this.#nextId++;
    const target = slot;
    return new Promise<Out>((resolve, reject) => {
      if (target.pending.size === 0) target.worker.ref();
      target.pending.set(id, {
        resolve: (output) => {
          resolve(output as Out);
        },
        reject,
      });
      const request: Request = { id, input: input.value };
      try {
        target.worker.postMessage(request, input.transfer ?? []);
      } catch (error) {
        // Not sent (an input that cannot be cloned, a buffer already transferred): the task was never there.
        target.pending.delete(id);
        if (target.pending.size === 0) target.worker.unref();
        reject(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  /** Stops the workers; tasks still running reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#rejectAll(new Error('the worker pool was closed'));
    await Promise.all(this.#slots.map((slot) => slot.worker.terminate()));
  }

  #settle(slot: Slot, reply: Reply): void {
    const pending = slot.pending.get(reply.id);
    if (!pending) return;
    slot.pending.delete(reply.id);
    if (slot.pending.size === 0) slot.worker.unref();
    if (reply.ok) pending.resolve(reply.output);
    else pending.reject(new WorkerTaskError(reply.error));
  }

  #fail(error: Error): void {
    this.#failure ??= error;
    this.#rejectAll(this.#failure);
  }

  #rejectAll(error: unknown): void {
    for (const slot of this.#slots) this.#rejectSlot(slot, error);
  }

  #rejectSlot(slot: Slot, error: unknown): void {
    const held = [...slot.pending.values()];
    slot.pending.clear();
    slot.worker.unref();
    for (const pending of held) pending.reject(error);
  }
}

/**
 * The worker side of a pool: answers each task with `handle`'s output, transferring the buffers it names.
 * Call once, at the top level of the module the pool was given, after whatever the module needs to load:
 * it tells the pool the worker is ready (see WorkerPoolOptions' `restart`).
 */
export function serveTasks(handle: (input: never) => Transfer<unknown> | Promise<Transfer<unknown>>): void {
  const port = parentPort;
  if (!port) throw new Error('serveTasks runs in a worker thread');
  port.on('message', (request: Request) => {
    void (async () => {
      let reply: Reply;
      let transfer: readonly Transferable[] = [];
      try {
        const result = await handle(request.input as never);
        reply = { id: request.id, ok: true, output: result.value };
        transfer = result.transfer ?? [];
      } catch (error) {
        reply = { id: request.id, ok: false, error: describeError(error) };
      }
      port.postMessage(reply, transfer);
    })();
  });
  const ready: Ready = { ready: true };
  port.postMessage(ready);
}

function describeError(error: unknown): RemoteError {
  if (!(error instanceof Error)) return { name: 'Error', message: String(error) };
  const { code, disposition } = error as { code?: unknown; disposition?: unknown };
  return {
    name: error.name,
    message: error.message,
    ...(error.stack !== undefined && { stack: error.stack }),
    ...(typeof code === 'string' && { code }),
    ...(typeof disposition === 'string' && { disposition }),
  };
}

/**
 * Applies `fn` to each input with up to `window` calls in flight, yielding the outputs in input order (a
 * slow call holds back the outputs after it, never reorders them). Inputs are read only as the window
 * frees up, so a slow consumer slows the producer.
 */
export async function* mapOrdered<In, Out>(
  inputs: Iterable<In> | AsyncIterable<In>,
  fn: (input: In) => Promise<Out>,
  window: number,
): AsyncGenerator<Out> {
  if (!Number.isInteger(window) || window < 1)
    throw new RangeError(`window must be at least 1 (got ${window})`);
  const inFlight: Promise<Out>[] = [];
  try {
    for await (const input of inputs) {
      const call = fn(input);
      // Rejections are seen when their turn comes; until then they must not count as unhandled.
      call.catch(() => undefined);
      inFlight.push(call);
      const due = inFlight.length >= window ? inFlight.shift() : undefined;
      if (due) yield await due;
    }
    for (let due = inFlight.shift(); due; due = inFlight.shift()) yield await due;
  } finally {
    // Stopped early (break, or a failed call): the calls still running are awaited and their results dropped.
    await Promise.allSettled(inFlight);
  }
}
