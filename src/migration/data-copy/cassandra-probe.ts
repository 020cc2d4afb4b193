/**
 * The Cassandra-not-running check of data-copy creation (behaviour doc §6.3). Unlike the Java
 * Sidecar's cached health flags, it opens fresh TCP connections, in parallel, to the native
 * transport (`host:port`) and to JMX (`jmxHost:jmxPort`); either one connecting means running.
 */
import { connect } from "node:net";
import type { InstanceContext } from "../../instance/registry.js";

/** Per-connection limit. */
export const PROBE_TIMEOUT_MS = 1_000;

/** True when something accepts TCP connections on `host:port` within `timeoutMs`. */
export function canConnect(host: string, port: number, timeoutMs = PROBE_TIMEOUT_MS): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    const done = (up: boolean) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(up);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** True when the instance's native transport or JMX port accepts a connection (each probed for at most 1 s). */
export async function isCassandraRunning(
  instance: Pick<InstanceContext, "config">,
  timeoutMs = PROBE_TIMEOUT_MS,
): Promise<boolean> {
  const { host, port, jmxHost, jmxPort } = instance.config;
  const [native, jmx] = await Promise.all([canConnect(host, port, timeoutMs), canConnect(jmxHost, jmxPort, timeoutMs)]);
  return native || jmx;
}
