/**
 * Logging: pino JSON on stdout. Components take a child of the root logger; tasks take a child
 * that carries their id as `liveMigrationRequest`, so operators can grep one task across hosts.
 */
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
    options.destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A logger that writes nothing; the default in unit tests. */
export const silentLogger: Logger = pino({ level: "silent" });

/** The child logger of one data-copy or verification task. */
export function taskLogger(parent: Logger, taskId: string, kind: "data-copy" | "files-verification"): Logger {
  return parent.child({ liveMigrationRequest: taskId, task: kind });
}
