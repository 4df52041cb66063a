// Entry of EncoderPool's worker threads: decodes, maps and encodes the tasks the pool hands over.
import { CompiledConfigs, resultTransferables, runEncodeTask, type EncodeTask } from './encode-tasks.js';
import { serveTasks } from './pool.js';

const configs = new CompiledConfigs();

serveTasks((task: EncodeTask) => {
  const result = runEncodeTask(task, configs);
  return { value: result, transfer: resultTransferables(result) };
});
