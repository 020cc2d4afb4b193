/**
 * The one error type of lm-sidecar. Everything below the edges throws AgentError with a code
 * from a closed set; only the edges translate it: gateway/http-status.ts to REST statuses and
 * plane/wire.ts to gRPC status codes. The `cause` is for logs and is never sent to a client.
 */

/** Closed set of error codes. Names and meanings follow gRPC status codes. */
export type ErrorCode =
  | "InvalidArgument" // bad request body, bad path, bad parameter (REST 400)
  | "FailedPrecondition" // state forbids it: migration COMPLETED, status never completed (REST 400)
  | "OutOfRange" // unsatisfiable Range header, empty file streamed (REST 416)
  | "NotFound" // role guard, unknown task, missing or excluded file (REST 404)
  | "PermissionDenied" // inverse role guard, symlink escaping a data dir (REST 403)
  | "AlreadyExists" // another task holds the instance's slot (REST 409)
  | "Aborted" // a file changed at the source while it was read; retry from a fresh listing
  | "Unavailable" // peer unreachable, connection reset, source busy (REST 503); retryable
  | "Cancelled" // the operation was cancelled by an operator or shutdown
  | "DeadlineExceeded" // a peer did not answer in time; retryable
  | "DataLoss" // bytes arrived corrupted (digest mismatch on the wire); retryable
  | "ResourceExhausted" // local disk full, message too large
  | "Unimplemented"
  | "Internal"; // anything unexpected (REST 500)

/** Codes for which a retry of the same operation may succeed. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["Unavailable", "DeadlineExceeded", "DataLoss", "Aborted"]);

export class AgentError extends Error {
  override readonly name = "AgentError";

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** True when retrying the failed operation may succeed (transient network, busy source, corrupted chunk). */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }

  /**
   * The only normalizer: AgentError passes through; Node system errors map by errno; anything
   * else becomes Internal with its message.
   */
  static from(err: unknown, fallback: ErrorCode = "Internal"): AgentError {
    if (err instanceof AgentError) return err;
    if (err instanceof Error) {
      const code = codeFromErrno((err as NodeJS.ErrnoException).code);
      if (err.name === "AbortError") return new AgentError("Cancelled", err.message, { cause: err });
      return new AgentError(code ?? fallback, err.message, { cause: err });
    }
    return new AgentError(fallback, String(err));
  }
}

/** Maps a Node errno string to a code, or undefined when the errno has no specific meaning here. */
export function codeFromErrno(errno: string | undefined): ErrorCode | undefined {
  switch (errno) {
    case "ENOENT":
      return "NotFound";
    case "EACCES":
    case "EPERM":
      return "PermissionDenied";
    case "ENOSPC":
    case "EDQUOT":
    case "EMFILE":
      return "ResourceExhausted";
    case "ECONNREFUSED":
    case "ECONNRESET":
    case "EPIPE":
    case "ETIMEDOUT":
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "Unavailable";
    default:
      return undefined;
  }
}

/** The error for work stopped by an aborted signal: its reason when that is an AgentError, else Cancelled. */
export function abortError(signal: AbortSignal, cause?: unknown): AgentError {
  const reason: unknown = signal.reason;
  return reason instanceof AgentError ? reason : new AgentError("Cancelled", "operation cancelled", cause === undefined ? {} : { cause });
}

/** Throws abortError if the signal is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}
