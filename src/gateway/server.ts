/**
 * The gateway on sidecar.port (HTTP/1.1): the REST API under /api/v1/live-migration and the
 * same LiveMigrationService over Connect (JSON and binary) at /livemigration.v1.LiveMigrationService/*.
 */
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { ServiceImpl } from "@connectrpc/connect";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { LiveMigrationService } from "../../gen/livemigration/v1/live_migration_pb.js";
import { AgentError } from "../errors.js";
import type { InstanceRegistry } from "../instance/registry.js";
import type { Logger } from "../log.js";
import type { RequestLimiter } from "../migration/request-limiter.js";
import { sendError } from "./http-status.js";
import { API_PREFIX, handleRest } from "./rest.js";

export interface GatewayOptions {
  readonly registry: InstanceRegistry;
  readonly limiter: RequestLimiter;
  readonly logger: Logger;
  readonly service: ServiceImpl<typeof LiveMigrationService>;
  /** Aborted when the agent shuts down; Connect handlers see it as their context signal. */
  readonly shutdownSignal: AbortSignal;
}

export class GatewayServer {
  private readonly server: http.Server;

  constructor(options: GatewayOptions) {
    // Connect builds every handler context, REST ones included, with the WHATWG Headers class,
    // which Node loads on first use together with the rest of its fetch implementation: the
    // agent's first request (often the POST that starts a migration pass) took 27 ms instead of
    // ~1 ms. Loaded here, while the agent starts.
    void new Headers();
    const deps = { ...options };
    const connect = connectNodeAdapter({
      routes: (router) => router.service(LiveMigrationService, options.service),
      shutdownSignal: options.shutdownSignal,
      fallback: (_req, res) => sendError(res as http.ServerResponse, new AgentError("NotFound", "No such route")),
    });
    this.server = http.createServer((req, res) => {
      const url = req.url ?? "/";
      if (url === API_PREFIX || url.startsWith(API_PREFIX + "/") || url.startsWith(API_PREFIX + "?")) {
        void handleRest(deps, req, res);
      } else {
        connect(req, res);
      }
    });
    this.server.keepAliveTimeout = 65_000;
  }

  /** Binds and returns the bound port (0 picks a free one). */
  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve((this.server.address() as AddressInfo).port);
      });
    });
  }

  /** Stops accepting, lets in-flight requests finish for `graceMs`, then cuts the rest. */
  async close(graceMs: number): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    const timer = setTimeout(() => this.server.closeAllConnections(), graceMs);
    await closed;
    clearTimeout(timer);
  }
}
