/**
 * The round trip of the link to a source's plane, timed with HTTP/2 PING frames on a connection
 * of its own (plane/client.ts measureLink sizes large files' window by it).
 *
 * A PING is answered by the source's HTTP/2 layer (nghttp2, in Node's C++), so its round trip is
 * the link's plus the source's event-loop latency, without the gRPC stacks of either side. A
 * unary call is not: a fresh agent's first calls run cold code on both sides, and on the
 * reference VM loopback calls took 2.4-10.6 ms each, so that two and then five of them took
 * loopback for a link slower than 5 ms (twenty-seventh session). PINGs on loopback took
 * 0.1-2.1 ms, the least of three under 0.6 ms.
 */
import { connect, type ClientHttp2Session } from "node:http2";
import { abortError, AgentError } from "../errors.js";

/**
 * The least of `pings` PING round trips to `authority` (host:port, IPv6 bracketed), in ms;
 * stops early once one is at most `enoughMs`. Each step (connecting, every PING) must complete
 * within `deadlineMs`.
 * @throws AgentError Unavailable when the source cannot be reached, DeadlineExceeded on a
 * timeout, Cancelled when `signal` aborts.
 */
export async function pingRoundTripMs(
  authority: string,
  pings: number,
  enoughMs: number,
  deadlineMs: number,
  signal?: AbortSignal,
): Promise<number> {
  const session = connect(`http://${authority}`);
  // Errors are reported through the step that is waiting; this keeps a late one from being unhandled.
  session.on("error", () => {});
  try {
    await step(session, deadlineMs, signal, (done) => session.once("connect", () => done(undefined)));
    let best = Number.POSITIVE_INFINITY;
    for (let i = 0; i < pings && best > enoughMs; i++) {
      const ms = await step<number>(session, deadlineMs, signal, (done) => {
        const sent = session.ping((err, duration) => (err ? done(err) : done(undefined, duration)));
        if (!sent) done(new Error("too many unacknowledged PINGs"));
      });
      best = Math.min(best, ms);
    }
    return best;
  } finally {
    session.destroy();
  }
}

/** Waits for one step of the probe, failing on the session's error or close, the deadline or the signal. */
function step<T = undefined>(
  session: ClientHttp2Session,
  deadlineMs: number,
  signal: AbortSignal | undefined,
  start: (done: (err: Error | undefined, value?: T) => void) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const finish = (err: unknown, value?: T) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      session.off("error", onError);
      session.off("close", onClose);
      signal?.removeEventListener("abort", onAbort);
      if (err === undefined) resolve(value as T);
      else reject(err instanceof AgentError ? err : new AgentError("Unavailable", `cannot time the link: ${(err as Error).message}`, { cause: err }));
    };
    const onError = (err: Error) => finish(err);
    const onClose = () => finish(new Error("connection closed"));
    const onAbort = () => signal && finish(abortError(signal));
    const timer = setTimeout(() => finish(new AgentError("DeadlineExceeded", `no answer to the link probe within ${deadlineMs} ms`)), deadlineMs);
    session.on("error", onError);
    session.on("close", onClose);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    start((err, value) => finish(err, value));
  });
}
