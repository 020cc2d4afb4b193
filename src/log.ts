/**
 * Logging: pino JSON on stdout. Components take a child of the root logger; tasks take a child
 * that carries their id as `liveMigrationRequest`, so operators can grep one task across hosts.
 */
import { writeSync } from "node:fs";
import { pino, type Logger } from "pino";

export type { Logger };

export interface LogOptions {
  /** pino level; default "info", or LOG_LEVEL. */
  level?: string;
  /** Fixed bindings on every line (e.g. the agent's host). */
  base?: Record<string, unknown>;
  /** Destination stream; default stdout. Tests pass a sink. */
  destination?: pino.DestinationStream;
}

/** Creates the root logger of one agent. */
export function createRootLogger(options: LogOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? process.env["LOG_LEVEL"] ?? "info",
      base: { svc: "lm-sidecar", ...options.base },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination ?? stdoutDestination(),
  );
}

/** Log bytes held while stdout cannot be written; lines beyond are dropped. */
const LOG_BACKLOG_MAX_BYTES = 16 << 20;

/**
 * stdout for pino, made safe for when it cannot be written: a log file on a full disk (ENOSPC),
 * a quota, an I/O error. A full log volume must not stop a migration, nor its agent's shutdown.
 * - pino's stream re-emits such a write error with no listener, which ends the process: it now
 *   has one, which reports the first failure on stderr, best effort (nothing can be logged
 *   about the log).
 * - The stream keeps the unwritten lines (at most LOG_BACKLOG_MAX_BYTES, newer ones dropped
 *   beyond) and tries again with the next line, so logging resumes once there is room.
 * - While writes fail, flush() and flushSync() do nothing: pino flushes at `beforeExit` and
 *   `exit`, and sonic-boom 4 retries a failed flushSync forever and re-arms `beforeExit` with
 *   every failed flush, so the process would never exit.
 */
function stdoutDestination(): pino.DestinationStream {
  const stream = pino.destination({ dest: 1, sync: false, maxLength: LOG_BACKLOG_MAX_BYTES });
  let failing = false;
  let reported = false;
  stream.on("error", (err: NodeJS.ErrnoException) => {
    failing = true;
    if (reported) return;
    reported = true;
    try {
      writeSync(2, `lm-sidecar: cannot write the log to stdout (${err.code ?? err.message}); log lines are held, then dropped, until it can\n`);
    } catch {
      // stderr is gone too: nothing else to tell
    }
  });
  stream.on("write", () => {
    failing = false;
  });
  const flush = stream.flush.bind(stream);
  const flushSync = stream.flushSync.bind(stream);
  stream.flush = (cb?: (err?: Error) => unknown) => (failing ? cb?.() : flush(cb));
  stream.flushSync = () => {
    if (!failing) flushSync();
  };
  return stream;
}

/** A logger that writes nothing; the default in unit tests. */
export const silentLogger: Logger = pino({ level: "silent" });

/** The child logger of one data-copy or verification task. */
export function taskLogger(parent: Logger, taskId: string, kind: "data-copy" | "files-verification"): Logger {
  return parent.child({ liveMigrationRequest: taskId, task: kind });
}
