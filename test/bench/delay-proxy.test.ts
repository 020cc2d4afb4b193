import { createHash, randomBytes } from "node:crypto";
import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { startDelayProxy, type DelayProxy } from "./delay-proxy.js";

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function listen(handler: (s: net.Socket) => void): Promise<number> {
  const server = net.createServer(handler);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return (server.address() as net.AddressInfo).port;
}

async function proxyTo(targetPort: number, oneWayDelayMs: number, maxQueueBytes?: number): Promise<DelayProxy> {
  const proxy = await startDelayProxy({ listenHost: "127.0.0.1", targetHost: "127.0.0.1", targetPort, oneWayDelayMs, maxQueueBytes });
  cleanups.push(() => proxy.close());
  return proxy;
}

async function connect(port: number): Promise<net.Socket> {
  const s = net.connect({ host: "127.0.0.1", port, noDelay: true });
  await new Promise<void>((resolve, reject) => s.once("connect", resolve).once("error", reject));
  cleanups.push(() => void s.destroy());
  return s;
}

describe("startDelayProxy", () => {
  it("adds the delay each way: an echo round trip takes about 2 × oneWayDelayMs", async () => {
    const port = await listen((s) => s.pipe(s));
    const proxy = await proxyTo(port, 20);
    const client = await connect(proxy.port);
    const rtts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      const echoed = new Promise<void>((r) => client.once("data", () => r()));
      client.write(`ping ${i}`);
      await echoed;
      rtts.push(performance.now() - t0);
    }
    rtts.sort((a, b) => a - b);
    expect(rtts[0]).toBeGreaterThanOrEqual(39);
    expect(rtts[2]).toBeLessThan(80);
  });

  it("keeps byte order and content of a bulk transfer and forwards the half-close", async () => {
    const payload = randomBytes(8 * 1024 * 1024 + 123);
    // The target hashes what it receives and answers with the digest after the client's FIN.
    const port = await listen((s) => {
      const hash = createHash("sha256");
      s.on("data", (c: Buffer) => hash.update(c));
      s.on("end", () => s.end(hash.digest("hex")));
    });
    const proxy = await proxyTo(port, 2);
    const client = await connect(proxy.port);
    let answer = "";
    client.on("data", (c: Buffer) => (answer += c.toString()));
    const closed = new Promise<void>((r) => client.once("end", () => r()));
    for (let off = 0; off < payload.length; off += 65_536) client.write(payload.subarray(off, off + 65_536));
    client.end();
    await closed;
    expect(answer).toBe(createHash("sha256").update(payload).digest("hex"));
  });

  it("relays a bulk transfer from the target byte for byte through a ring smaller than the data", async () => {
    const payload = randomBytes(8 * 1024 * 1024 + 321);
    const port = await listen((s) => {
      for (let off = 0; off < payload.length; off += 300_000) s.write(payload.subarray(off, off + 300_000));
      s.end();
    });
    // A 256 KiB queue cap: the ring (cap + one read) wraps around many times, and reading pauses often.
    const proxy = await proxyTo(port, 2, 256 * 1024);
    const client = await connect(proxy.port);
    const received: Buffer[] = [];
    client.on("data", (c: Buffer) => received.push(c));
    await new Promise<void>((r) => client.once("end", () => r()));
    expect(Buffer.concat(received).equals(payload)).toBe(true);
  });

  /**
   * Writes 64 MiB from the target towards the client through the proxy and returns how much of
   * it is still queued at the writer after 300 ms (or, with `untilBelowMiB`, as soon as the
   * backlog falls below that, waiting at most 2 s).
   */
  async function writerBacklogMiB(opts: { oneWayDelayMs: number; maxQueueBytes: number; readerPaused: boolean; untilBelowMiB?: number }): Promise<number> {
    let serverSide: net.Socket | undefined;
    const port = await listen((s) => {
      serverSide = s;
    });
    const proxy = await proxyTo(port, opts.oneWayDelayMs, opts.maxQueueBytes);
    const client = await connect(proxy.port);
    if (opts.readerPaused) client.pause();
    else client.resume();
    while (!serverSide) await new Promise((r) => setTimeout(r, 5));
    const chunk = Buffer.alloc(1024 * 1024);
    for (let i = 0; i < 64; i++) serverSide.write(chunk);
    const backlogMiB = () => serverSide!.writableLength / 2 ** 20;
    if (opts.untilBelowMiB === undefined) await new Promise((r) => setTimeout(r, 300));
    else for (const end = Date.now() + 2000; backlogMiB() >= opts.untilBelowMiB && Date.now() < end; ) await new Promise((r) => setTimeout(r, 20));
    const backlog = backlogMiB();
    serverSide.destroy();
    return backlog;
  }

  it("applies backpressure: a full delay queue stops the proxy from reading the writer", async () => {
    // 64 MiB written, delay 2 s: only the queue cap (256 KiB) plus kernel buffers leave the writer.
    expect(await writerBacklogMiB({ oneWayDelayMs: 2000, maxQueueBytes: 256 * 1024, readerPaused: false })).toBeGreaterThan(32);
    // With an unbounded queue the proxy would swallow it all.
    expect(await writerBacklogMiB({ oneWayDelayMs: 2000, maxQueueBytes: 2 ** 30, readerPaused: false, untilBelowMiB: 8 })).toBeLessThan(8);
  });

  it("applies backpressure: a stalled reader stops the proxy from reading the writer", async () => {
    // Waits up to 2 s for the proxy to take the backlog: with the reader stalled it never does.
    expect(await writerBacklogMiB({ oneWayDelayMs: 1, maxQueueBytes: 2 ** 30, readerPaused: true, untilBelowMiB: 32 })).toBeGreaterThan(32);
  });
});
