/**
 * Runs a task one at a time, coalescing the requests made while it runs into one more run after it: the way
 * checkpoints are saved while acknowledgements come in faster than a store answers (each run saves the newest
 * state, so the requests in between need no run of their own). After the task fails, nothing runs again.
 */
export class CoalescedTask {
  readonly #task: () => Promise<void>;
  readonly #onError: (error: unknown) => void;
  #running: Promise<void> | undefined;
  #pending = false;
  #failed = false;

  /** `onError`: told of the task's failure (then no more runs). */
  constructor(task: () => Promise<void>, onError: (error: unknown) => void) {
    this.#task = task;
    this.#onError = onError;
  }

  /** The task runs now, or once more after the run under way. */
  request(): void {
    if (this.#failed) return;
    this.#pending = true;
    if (this.#running) return;
    this.#running = this.#run();
  }

  /** The run under way, and any it was asked for, are over (resolves at once when none is). */
  async settled(): Promise<void> {
    while (this.#running) await this.#running;
  }

  /** The run under way, if any (to wait for it within a deadline). */
  get running(): Promise<void> | undefined {
    return this.#running;
  }

  async #run(): Promise<void> {
    try {
      while (this.#pending && !this.#failed) {
        this.#pending = false;
        await this.#task();
      }
    } catch (error) {
      this.#failed = true;
      this.#onError(error);
    } finally {
      this.#running = undefined;
    }
  }
}
