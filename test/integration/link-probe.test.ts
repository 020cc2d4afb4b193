/**
 * pingRoundTripMs (src/plane/link-probe.ts) against real sockets on loopback: an HTTP/2 server
 * that counts the PINGs it answers, a delay proxy in front of it, and peers that refuse, hang up
 * or never answer.
 */
import { createServer as createHttp2Server, type Http2Server } from "node:http2";
import { createServer as createTcpServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { AgentError } from "../../src/errors.js";
import { pingRoundTripMs } from "../../src/plane/link-probe.js";
import { startDelayProxy } from "../bench/delay-proxy.js";
import { freePort, SOURCE_HOST } from "../helpers/agents.js";

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

async function listen(server: Server | Http2Server): Promise<number> {
  const port = await freePort([SOURCE_HOST]);
  await new Promise<void>((resolve) => server.listen(port, SOURCE_HOST, resolve));
  const sockets = new Set<Socket>();
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return port;
}

/** An HTTP/2 server that counts the PINGs it receives. */
async function pingCountingServer(): Promise<{ port: number; pings: () => number }> {
  let pings = 0;
  const server = createHttp2Server();
  server.on("session", (session) => session.on("ping", () => pings++));
  return { port: await listen(server), pings: () => pings };
}

async function expectCode(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AgentError);
  expect((err as AgentError).code).toBe(code);
  expect((err as AgentError).message).toMatch(message);
}

describe("pingRoundTripMs", () => {
  it("on loopback: a fast link after one PING", async () => {
    const server = await pingCountingServer();
    const ms = await pingRoundTripMs(`${SOURCE_HOST}:${server.port}`, 3, 5, 5_000);
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThan(5);
    // The first was fast enough: no more were sent.
    expect(server.pings()).toBe(1);
  });

  it("behind a 10 ms delay proxy: the least of every PING, each at least the added delay", async () => {
    const server = await pingCountingServer();
    const proxy = await startDelayProxy({ listenHost: SOURCE_HOST, targetHost: SOURCE_HOST, targetPort: server.port, oneWayDelayMs: 5 });
    closers.push(() => proxy.close());
    const ms = await pingRoundTripMs(`${SOURCE_HOST}:${proxy.port}`, 3, 5, 5_000);
    expect(ms).toBeGreaterThanOrEqual(10);
    expect(ms).toBeLessThan(1_000);
    expect(server.pings()).toBe(3);
  });

  it("a port nobody listens on: Unavailable, at once", async () => {
    const port = await freePort([SOURCE_HOST]);
    await expectCode(pingRoundTripMs(`${SOURCE_HOST}:${port}`, 3, 5, 5_000), "Unavailable", /cannot time the link: .*ECONNREFUSED/);
  });

  it("a peer that hangs up on connect: Unavailable, not a hang", async () => {
    const server = createTcpServer((socket) => socket.destroy());
    const port = await listen(server);
    await expectCode(pingRoundTripMs(`${SOURCE_HOST}:${port}`, 3, 5, 5_000), "Unavailable", /cannot time the link/);
  });

  it("a peer that accepts and never speaks HTTP/2: DeadlineExceeded after the deadline", async () => {
    const server = createTcpServer(() => {});
    const port = await listen(server);
    const started = performance.now();
    await expectCode(pingRoundTripMs(`${SOURCE_HOST}:${port}`, 3, 5, 200), "DeadlineExceeded", /no answer to the link probe within 200 ms/);
    expect(performance.now() - started).toBeGreaterThanOrEqual(190);
  });

  it("an abort while waiting: the signal's AgentError, or Cancelled", async () => {
    const server = createTcpServer(() => {});
    const port = await listen(server);
    const controller = new AbortController();
    setTimeout(() => controller.abort(new AgentError("Cancelled", "task cancelled by the operator")), 50);
    await expectCode(pingRoundTripMs(`${SOURCE_HOST}:${port}`, 3, 5, 5_000, controller.signal), "Cancelled", /^task cancelled by the operator$/);
    await expectCode(pingRoundTripMs(`${SOURCE_HOST}:${port}`, 3, 5, 5_000, AbortSignal.abort()), "Cancelled", /^operation cancelled$/);
  });
});
