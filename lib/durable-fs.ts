// Durability helpers shared by the key metadata store and the slot state:
// a rename or a new name is only durable once its directory is fsynced.
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';

export async function fsyncDirectory(path: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
