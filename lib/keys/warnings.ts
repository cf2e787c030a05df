// Warnings from lib/keys: things that do not stop an operation but that an
// admin should fix (a KEK file every user can read, a protector made with a
// text KEK, an entry in a shared metadata directory that another user made
// and that was ignored). They never contain key material.
//
// A SlotKeys takes a handler ({ onWarning }); without one, a warning becomes
// a Node process warning (printed once per process on stderr, or delivered
// to process.on('warning') listeners), so a caller that wires nothing, such
// as lib/volume's initSlot, still says it.

export type KeysWarningCode =
  /** A KEK or passphrase file that other users can read. */
  | 'FSCRYPT_LOCAL_SECRET_FILE_READABLE'
  /** A KEK file holding text: an existing protector opened with it (new ones are refused). */
  | 'FSCRYPT_LOCAL_TEXT_KEK'
  /** A metadata entry not ours (another user's, not a regular file, hard-linked) that was skipped. */
  | 'FSCRYPT_LOCAL_IGNORED_ENTRY';

export interface KeysWarning {
  code: KeysWarningCode;
  /** What was found and what to do about it. */
  message: string;
  /** The file concerned. */
  path: string;
}

export type KeysWarningHandler = (warning: KeysWarning) => void;

// Each distinct message once per process: an agent opens the same protector
// for every unlock and would repeat it for ever. Bounded, so that a stream
// of distinct entries cannot grow it without limit.
const emitted = new Set<string>();
const MAX_REMEMBERED = 1000;

/** The default handler: a deduplicated process warning. */
export const processWarning: KeysWarningHandler = (warning) => {
  if (emitted.has(warning.message)) return;
  if (emitted.size < MAX_REMEMBERED) emitted.add(warning.message);
  process.emitWarning(warning.message, { type: 'FscryptLocalWarning', code: warning.code });
};
