/**
 * The source's cap on concurrent file reads and digests (`max_concurrent_file_requests`),
 * shared by the REST file route and the peer plane. It rejects instead of queueing, like the
 * Java Sidecar, so callers see 503 / UNAVAILABLE and retry with backoff.
 */
import { AgentError } from "../errors.js";

export const BUSY_MESSAGE = "Server is busy processing live migration file requests, please try again later";

export class RequestLimiter {
  private inFlight = 0;

  constructor(readonly limit: number) {}

  /** Takes a permit or throws Unavailable with the documented message. Returns the release function (idempotent). */
  acquire(): () => void {
    if (this.inFlight >= this.limit) throw new AgentError("Unavailable", BUSY_MESSAGE);
    this.inFlight++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.inFlight--;
    };
  }

  get active(): number {
    return this.inFlight;
  }
}
