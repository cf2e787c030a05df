// Where the node service reports: an injected logger (the agent passes its
// own), by default one JSON object per line on stderr. Callers pass chosen
// fields only: never a request's secrets, never a key byte.
export type LogFields = Record<string, unknown>;

export interface CsiLog {
  info(fields: LogFields, message: string): void;
  warn(fields: LogFields, message: string): void;
  error(fields: LogFields, message: string): void;
}

/** JSON lines: { level, time, msg, ...fields }, as pino writes them. */
export function jsonLinesLog(write: (line: string) => void = (line) => process.stderr.write(line)): CsiLog {
  const at =
    (level: 'info' | 'warn' | 'error') =>
    (fields: LogFields, message: string): void => {
      write(`${JSON.stringify({ level, time: new Date().toISOString(), ...fields, msg: message })}\n`);
    };
  return { info: at('info'), warn: at('warn'), error: at('error') };
}

/** A logger that cannot break the service: a throwing one is ignored. */
export function safeLog(log: CsiLog): CsiLog {
  const guard =
    (fn: (fields: LogFields, message: string) => void) =>
    (fields: LogFields, message: string): void => {
      try {
        fn.call(log, fields, message);
      } catch {
        // A log line lost is better than an RPC failed.
      }
    };
  return { info: guard(log.info), warn: guard(log.warn), error: guard(log.error) };
}
