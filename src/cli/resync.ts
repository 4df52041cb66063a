import { connectMongo, connectNamingMongo } from '../app/archiver.js';
import { requestResync } from '../app/resync.js';
import { EXIT, loadConfig, type GlobalOptions } from './common.js';

/** `resync <mapping>`: the running archiver copies that collection again from a fresh start point. */
export async function resyncCommand(mapping: string, options: GlobalOptions): Promise<number> {
  const config = loadConfig(options);
  const mongo = connectMongo(config);
  try {
    await connectNamingMongo(mongo, config.MONGO_CLIENT);
    const at = await requestResync(mongo, config, mapping);
    console.log(
      `resync of ${mapping} requested at ${at.toISOString()}; the running archiver restarts that mapping and copies the collection again`,
    );
    return EXIT.ok;
  } finally {
    await mongo.close();
  }
}
