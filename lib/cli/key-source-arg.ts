// --key-source / --new-key-source from the command line. A malformed value
// is a usage error; the message is parseKeySource's, which never repeats the
// text (a passphrase pasted by mistake must not be echoed to a terminal or
// a log).
import { isFscryptError } from '../kernel/index.js';
import { parseKeySource, type KeySourceSpec } from '../keys/index.js';
import { UsageError } from './exit-codes.js';

export const KEY_SOURCE_HELP = "where the slot's key comes from: file:PATH (32-byte KEK file), passphrase:PATH (passphrase file) or kms:SOCKET (KMS v2 plugin)";

export function keySourceArg(text: string | undefined, option = '--key-source'): KeySourceSpec {
  if (text === undefined) throw new UsageError(`${option} SOURCE is required: file:PATH, passphrase:PATH or kms:SOCKET`);
  try {
    return parseKeySource(text);
  } catch (error) {
    if (isFscryptError(error, 'ERR_INVALID_ARG')) throw new UsageError(`${option}: ${error.message}`);
    throw error;
  }
}
