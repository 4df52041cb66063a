import { prepareInThread, type StreamLoopOptions } from '../core/stream-loop.js';
import { type Prepare } from '../core/prepared.js';
import { type RawChangeBatch } from '../core/ports.js';
import { decodeChange } from './encode-tasks.js';

/**
 * Prepares raw pulls on this thread, for a stream that is read raw without worker threads (a database-level
 * stream shared by the mappings, on one core): each change is decoded as a worker decodes it (`decodeChange`:
 * no loss, fragments put together, normalised), then prepared as decoded events are (`prepareInThread`: the
 * schema evolves first, then each writable change becomes its record with its row encoded). The records are
 * the ones the decoded stream gives for the same events.
 */
export function prepareRawInThread(
  options: Pick<StreamLoopOptions, 'mapper' | 'beforeMap' | 'encode'>,
): Prepare<RawChangeBatch> {
  const prepare = prepareInThread(options);
  return async (batch, now, signal) =>
    prepare({ events: batch.changes.map(decodeChange), position: batch.position }, now, signal);
}
