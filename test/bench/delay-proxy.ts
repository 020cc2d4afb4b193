/**
 * A TCP proxy that delays every byte by a fixed one-way latency in each direction, so that a
 * loopback connection behaves like a link with RTT = 2 × oneWayDelayMs (bandwidth unlimited).
 *
 *   client ──► [read] → FIFO queue (due = t_read + delay) → [write at due] ──► target
 *   client ◄── [write at due] ← FIFO queue ← [read] ◄──────────────────────── target
 *
 * Bytes keep their order (one FIFO per direction, due times never decrease). Backpressure: a
 * direction stops reading (socket.pause) while its queue holds more than `maxQueueBytes` or
 * the writing socket reports a full buffer, and resumes when both have drained. Half-closes
 * (FIN) are forwarded after the delayed bytes before them; a reset closes both sides at once.
 */
import net from "node:net";

export interface DelayProxyOptions {
  /** Address to listen on, e.g. "127.0.0.3". */
  listenHost: string;
  /** Port to listen on; default 0 (any free port, see `port` of the result). */
  listenPort?: number;
  targetHost: string;
  targetPort: number;
  /** Delay added to each direction, in milliseconds (RTT / 2). */
  oneWayDelayMs: number;
  /** Queue size per direction above which reading pauses; default 16 MiB (≈ 3 GiB/s at 5 ms). */
  maxQueueBytes?: number;
}

export interface DelayProxy {
  /** The port actually listened on. */
  readonly port: number;
  /** Stops listening and destroys every open connection. */
  close(): Promise<void>;
}

interface Pending {
  chunk: Buffer;
  dueMs: number;
}

/** One direction: reads `from`, writes to `to` `delayMs` later. */
function pipeDelayed(from: net.Socket, to: net.Socket, delayMs: number, maxQueueBytes: number): void {
  const queue: Pending[] = [];
  let head = 0;
  let queuedBytes = 0;
  let timer: NodeJS.Timeout | undefined;
  let waitingDrain = false;
  let ended = false;
  let paused = false;

  const updateReading = () => {
    const full = queuedBytes > maxQueueBytes || waitingDrain;
    if (full && !paused) {
      paused = true;
      from.pause();
    } else if (!full && paused && queuedBytes <= maxQueueBytes / 2) {
      paused = false;
      from.resume();
    }
  };

  const flush = () => {
    timer = undefined;
    if (to.destroyed) return;
    const now = performance.now();
    while (head < queue.length && !waitingDrain) {
      const item = queue[head]!;
      // setTimeout may fire up to ~1 ms early on some platforms; treat that as due.
      if (item.dueMs > now + 0.5) break;
      head++;
      queuedBytes -= item.chunk.length;
      if (!to.write(item.chunk)) waitingDrain = true;
    }
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    if (head < queue.length) {
      if (!waitingDrain) arm();
    } else if (ended) {
      to.end();
    }
    updateReading();
  };

  const arm = () => {
    if (timer || head >= queue.length) return;
    timer = setTimeout(flush, Math.max(0, queue[head]!.dueMs - performance.now()));
  };

  to.on("drain", () => {
    waitingDrain = false;
    flush();
  });
  from.on("data", (chunk: Buffer) => {
    queue.push({ chunk, dueMs: performance.now() + delayMs });
    queuedBytes += chunk.length;
    arm();
    updateReading();
  });
  from.on("end", () => {
    ended = true;
    if (head >= queue.length && !waitingDrain) to.end();
    else arm();
  });
}

/**
 * Starts a delay proxy listening on `listenHost:listenPort` and forwarding every connection to
 * `targetHost:targetPort` with `oneWayDelayMs` added each way. Rejects when the listen fails
 * (e.g. EADDRINUSE). Connections the target refuses are closed at once.
 */
export async function startDelayProxy(options: DelayProxyOptions): Promise<DelayProxy> {
  const { listenHost, listenPort = 0, targetHost, targetPort, oneWayDelayMs } = options;
  const maxQueueBytes = options.maxQueueBytes ?? 16 * 1024 * 1024;
  if (!(oneWayDelayMs >= 0)) throw new Error(`oneWayDelayMs must be >= 0, got ${oneWayDelayMs}`);
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once("close", () => sockets.delete(s));
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    const upstream = net.connect({ host: targetHost, port: targetPort, allowHalfOpen: true, noDelay: true });
    track(client);
    track(upstream);
    const teardown = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", teardown);
    upstream.on("error", teardown);
    // A socket that has finished both ways closes; close its peer once it too is done.
    client.on("close", () => {
      if (upstream.writableFinished || upstream.destroyed) upstream.destroy();
    });
    upstream.on("close", () => {
      if (client.writableFinished || client.destroyed) client.destroy();
    });
    pipeDelayed(client, upstream, oneWayDelayMs, maxQueueBytes);
    pipeDelayed(upstream, client, oneWayDelayMs, maxQueueBytes);
  });

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenPort, listenHost, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
