// Entry of ParallelChangeEncoder's worker threads: encodes change events for the config in workerData.
import { workerData } from 'node:worker_threads';
import { changeEncoderTask, type ChangeEncoderConfig } from './change-encoder.js';
import { serveTasks } from '../../src/workers/pool.js';

serveTasks(changeEncoderTask(workerData as ChangeEncoderConfig));
