import {
  type BackfillCheckpointStore,
  type BackfillProgress,
  type Checkpoint,
} from '../../../src/core/ports.js';

/**
 * A checkpoint store in memory with the semantics of MongoCheckpointStore: `save` with backfill progress
 * replaces the whole checkpoint, without moves the position only; `saveBackfill` moves the progress only.
 * Every save is recorded; `saveDelayMs` makes saves slow, `failBackfillSave` makes the next one fail.
 */
export class MemoryCheckpointStore implements BackfillCheckpointStore {
  checkpoint: Checkpoint;
  readonly progressSaves: BackfillProgress[] = [];
  readonly positionSaves: Checkpoint[] = [];
  /** Saves under way, and the most at once. */
  saving = 0;
  maxSaving = 0;
  saveDelayMs = 0;
  failBackfillSave: Error | undefined;

  constructor(initial: Checkpoint = { position: undefined }) {
    this.checkpoint = initial;
  }

  get progress(): BackfillProgress | undefined {
    return this.checkpoint.backfill;
  }

  load(): Promise<Checkpoint> {
    return Promise.resolve(this.checkpoint);
  }

  async save(checkpoint: Checkpoint, signal: AbortSignal): Promise<void> {
    await this.#slow(signal);
    this.positionSaves.push(checkpoint);
    this.checkpoint = checkpoint.backfill
      ? { position: checkpoint.position, backfill: checkpoint.backfill }
      : { ...this.checkpoint, position: checkpoint.position };
  }

  async saveBackfill(progress: BackfillProgress, signal: AbortSignal): Promise<void> {
    await this.#slow(signal);
    const failure = this.failBackfillSave;
    this.failBackfillSave = undefined;
    if (failure) throw failure;
    this.progressSaves.push(progress);
    this.checkpoint = { ...this.checkpoint, backfill: progress };
  }

  async #slow(signal: AbortSignal): Promise<void> {
    signal.throwIfAborted();
    this.saving++;
    this.maxSaving = Math.max(this.maxSaving, this.saving);
    try {
      if (this.saveDelayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.saveDelayMs));
    } finally {
      this.saving--;
    }
  }
}
