/**
 * The one retry loop for transient faults (peer unavailable, connection reset, source busy,
 * corrupted transfer): exponential backoff with full jitter, following `sidecar_client`.
 */
import type { SidecarClientConfig } from "../config/schema.js";
import { AgentError, throwIfAborted } from "../errors.js";

/** Delay before retry `attempt` (1-based): uniform in [0, min(max, base * 2^(attempt-1))], at least 1/4 of it. */
export function backoffDelayMs(attempt: number, policy: SidecarClientConfig, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxRetryDelayMs, policy.retryDelayMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(ceiling * (0.25 + 0.75 * random()));
}

/** Sleeps `ms`, rejecting with Cancelled as soon as the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AgentError("Cancelled", "operation cancelled"));
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AgentError("Cancelled", "operation cancelled"));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Runs `op` until it succeeds, fails with a non-retryable error, or `policy.maxRetries`
 * retries are spent. `onRetry` sees each retryable failure before the wait (for debug logs).
 */
export async function withRetries<T>(
  op: (attempt: number) => Promise<T>,
  policy: SidecarClientConfig,
  options: { signal?: AbortSignal; onRetry?: (err: AgentError, attempt: number, delayMs: number) => void } = {},
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    throwIfAborted(options.signal);
    try {
      return await op(attempt);
    } catch (err) {
      const error = AgentError.from(err);
      if (options.signal?.aborted) throw new AgentError("Cancelled", "operation cancelled", { cause: error });
      if (!error.retryable || attempt >= policy.maxRetries) throw error;
      const delay = backoffDelayMs(attempt + 1, policy);
      options.onRetry?.(error, attempt + 1, delay);
      await sleep(delay, options.signal);
    }
  }
}
