/**
 * A TCP proxy that delays every byte by a fixed one-way latency in each direction, so that a
 * loopback connection behaves like a link with RTT = 2 × oneWayDelayMs (bandwidth unlimited).
 *
 *   client ──► [read] → ring buffer (due = t_read + delay) → [write at due] ──► target
 *   client ◄── [write at due] ← ring buffer ← [read, up to 1 MiB at a time] ◄── target
 *
 * Bytes keep their order (one FIFO per direction, due times never decrease). Backpressure: a
 * direction stops reading while its ring holds more than `maxQueueBytes` (bytes waiting for
 * their time, or written but not yet taken by the kernel) or the writing socket reports a full
 * buffer, and resumes once both have drained (the ring below half of `maxQueueBytes`).
 * Half-closes (FIN) are forwarded after the delayed bytes before them; a reset closes both
 * sides at once.
 *
 * The proxy stands for a network link, and a link costs the hosts no CPU, while this proxy
 * shares the benchmark machine's cores with the agents and rsync. So it copies as little as it
 * can: every direction keeps its bytes in one ring allocated up front instead of a fresh buffer
 * per read, the target's side (the bulk of a copy: file data flows from the source) is read
 * straight into that ring, up to 1 MiB at a time, and due bytes go out corked, several per
 * system call. Relaying 2 GiB from a target to a client took the proxy 3.6–3.9 CPU seconds and
 * 224–245 MB of peak RSS with a fresh 64 KiB buffer per read and one write each, 1.3–1.5 s and
 * 100 MB with reads into one reused 1 MiB buffer copied into the ring, and 0.79–0.94 s (median
 * 0.85, against 0.90 in the same runs; user 0.12 s against 0.28) reading into the ring
 * (test/bench/delay-proxy.test.ts checks order, content, delays and backpressure).
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
  /** Bytes held per direction above which reading pauses; default 16 MiB (≈ 3 GiB/s at 5 ms). */
  maxQueueBytes?: number;
}

export interface DelayProxy {
  /** The port actually listened on. */
  readonly port: number;
  /** Stops listening and destroys every open connection. */
  close(): Promise<void>;
}

/** Largest single read from the target (the size of its reused read buffer). */
const READ_BYTES = 1 << 20;
/** Largest chunk a socket's 'data' event delivers (libuv reads 64 KiB at a time). */
const DATA_EVENT_MAX_BYTES = 64 << 10;

/** One direction: bytes pushed in are written to `to` `delayMs` later, in order. */
class DelayedPipe {
  private readonly ring: Buffer;
  /** Where the next byte goes in the ring. */
  private head = 0;
  /** Bytes in the ring: waiting for their time, or handed to `to` and not yet written. */
  private held = 0;
  /** Spans of the ring waiting for their time, oldest first (from index `next`). */
  private readonly queue: { start: number; length: number; dueMs: number }[] = [];
  private next = 0;
  private timer: NodeJS.Timeout | undefined;
  private ended = false;
  private paused = false;
  /** `to` reported a full buffer: due bytes wait in the ring until it drains. */
  private waitingDrain = false;

  constructor(
    private readonly to: net.Socket,
    private readonly delayMs: number,
    private readonly maxQueueBytes: number,
    /** Stops and restarts reading from the source of the bytes. */
    private readonly reading: { pause(): void; resume(): void },
  ) {
    // Reading pauses once more than maxQueueBytes are held, so one more read always fits.
    this.ring = Buffer.allocUnsafeSlow(maxQueueBytes + READ_BYTES + DATA_EVENT_MAX_BYTES);
    to.on("drain", () => {
      this.waitingDrain = false;
      this.flush();
      this.maybeResume();
    });
  }

  /** Takes a copy of `bytes` to send later; false when reading should pause. */
  push(bytes: Uint8Array): boolean {
    if (bytes.byteLength > this.ring.length - this.held) throw new Error(`delay proxy ring overflow (${bytes.byteLength} bytes)`);
    const dueMs = performance.now() + this.delayMs;
    let from = 0;
    while (from < bytes.byteLength) {
      const length = Math.min(bytes.byteLength - from, this.ring.length - this.head);
      this.ring.set(bytes.subarray(from, from + length), this.head);
      this.queue.push({ start: this.head, length, dueMs });
      this.head = (this.head + length) % this.ring.length;
      from += length;
    }
    this.held += bytes.byteLength;
    return this.queued();
  }

  /**
   * Where the next read may put its bytes: the ring's free space from `head` on, at most
   * READ_BYTES and never across the ring's end (the read after wraps to its start). Never empty:
   * reading pauses while more than maxQueueBytes are held, and the ring has READ_BYTES +
   * DATA_EVENT_MAX_BYTES more than that.
   */
  readRegion(): Buffer {
    const tail = (this.head - this.held + this.ring.length) % this.ring.length;
    const end = this.held > 0 && tail > this.head ? tail : this.ring.length;
    return this.ring.subarray(this.head, Math.min(end, this.head + READ_BYTES));
  }

  /** `length` bytes were read into the region readRegion gave: they go out later, uncopied. False when reading should pause. */
  pushRead(length: number): boolean {
    this.queue.push({ start: this.head, length, dueMs: performance.now() + this.delayMs });
    this.head = (this.head + length) % this.ring.length;
    this.held += length;
    return this.queued();
  }

  private queued(): boolean {
    this.arm();
    if (this.held > this.maxQueueBytes || this.waitingDrain) this.paused = true;
    return !this.paused;
  }

  /** The source ended: `to` ends after the bytes still queued. */
  end(): void {
    this.ended = true;
    if (this.next >= this.queue.length && !this.waitingDrain) this.to.end();
    else this.arm();
  }

  private arm(): void {
    if (this.timer || this.next >= this.queue.length) return;
    this.timer = setTimeout(() => this.flush(), Math.max(0, this.queue[this.next]!.dueMs - performance.now()));
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.to.destroyed || this.waitingDrain) return;
    const now = performance.now();
    this.to.cork();
    // setTimeout may fire up to ~1 ms early on some platforms; treat that as due.
    while (!this.waitingDrain && this.next < this.queue.length && this.queue[this.next]!.dueMs <= now + 0.5) {
      const { start, length } = this.queue[this.next++]!;
      if (!this.to.write(this.ring.subarray(start, start + length), () => this.release(length))) this.waitingDrain = true;
    }
    this.to.uncork();
    if (this.next > 1024 && this.next * 2 > this.queue.length) {
      this.queue.splice(0, this.next);
      this.next = 0;
    }
    if (this.waitingDrain) return; // 'drain' flushes again
    if (this.next < this.queue.length) this.arm();
    else if (this.ended) this.to.end();
  }

  /** `length` bytes were written (write callbacks come in order): their ring space is free. */
  private release(length: number): void {
    this.held -= length;
    this.maybeResume();
  }

  private maybeResume(): void {
    if (this.paused && !this.waitingDrain && this.held <= this.maxQueueBytes / 2) {
      this.paused = false;
      this.reading.resume();
    }
  }
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
    // Target → client: each read lands straight in the ring (onread asks for a buffer before
    // every read, after the callback of the one before); returning false pauses the socket.
    const upstreamReading = {
      socket: undefined as net.Socket | undefined,
      pause: () => upstreamReading.socket?.pause(),
      resume: () => upstreamReading.socket?.resume(),
    };
    const toClient = new DelayedPipe(client, oneWayDelayMs, maxQueueBytes, upstreamReading);
    const upstream = net.connect({
      host: targetHost,
      port: targetPort,
      allowHalfOpen: true,
      noDelay: true,
      onread: { buffer: () => toClient.readRegion(), callback: (bytes) => toClient.pushRead(bytes) },
    });
    upstreamReading.socket = upstream;
    upstream.on("end", () => toClient.end());
    // Client → target: 'data' events.
    const toTarget = new DelayedPipe(upstream, oneWayDelayMs, maxQueueBytes, client);
    client.on("data", (chunk: Buffer) => {
      if (!toTarget.push(chunk)) client.pause();
    });
    client.on("end", () => toTarget.end());

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
