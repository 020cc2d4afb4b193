/**
 * The composition root: one agent process fronting one or more Cassandra instances.
 *
 *   gateway (sidecar.port, HTTP/1.1)        plane (sidecar.peer_port, HTTP/2 gRPC)
 *     REST + Connect ─┐                        PeerService, LiveMigrationService,
 *                     ├─ LiveMigrationService ─ Health, reflection
 *                     │        │
 *                     │   InstanceRegistry ── per instance: roots, exclusions, status record,
 *                     │                        task slot, data-copy + verification managers
 *   file route ───────┴── RequestLimiter (max_concurrent_file_requests, shared with the plane)
 *
 * Lifecycle: create() builds everything without I/O; start() restores persisted tasks and
 * binds both ports; stop() is idempotent: health NOT_SERVING, cancel tasks and wait for their
 * writers, drain both servers for the grace period, then cut what is left.
 */
import type { Config } from "../config/schema.js";
import { GatewayServer } from "../gateway/server.js";
import { createLiveMigrationService } from "../gateway/service.js";
import { InstanceRegistry } from "../instance/registry.js";
import { createRootLogger, type Logger } from "../log.js";
import { DataCopyManager } from "../migration/data-copy/manager.js";
import { RequestLimiter } from "../migration/request-limiter.js";
import { NO_PRE_CHECK, type PreCheck, type TaskDeps } from "../migration/task-deps.js";
import { VerificationManager } from "../migration/verification/manager.js";
import { connectSourcePeer } from "../plane/client.js";
import { createPlaneServer, type PlaneServer } from "../plane/server.js";

export interface AgentOptions {
  readonly logger?: Logger;
  /** A deployment's per-iteration data-copy check (default: none). */
  readonly preCheck?: PreCheck;
}

export interface AgentPorts {
  readonly gatewayPort: number;
  readonly peerPort: number;
}

type AgentState = "created" | "started" | "stopping" | "stopped";

export class Agent {
  readonly logger: Logger;
  readonly registry: InstanceRegistry;
  private readonly limiter: RequestLimiter;
  private readonly shutdown = new AbortController();
  private readonly gateway: GatewayServer;
  private readonly plane: PlaneServer;
  private state: AgentState = "created";
  private stopping: Promise<void> | undefined;
  private boundPorts: AgentPorts | undefined;

  private constructor(
    readonly config: Config,
    private readonly options: AgentOptions,
  ) {
    this.logger = options.logger ?? createRootLogger();
    this.registry = new InstanceRegistry(config);
    this.limiter = new RequestLimiter(config.liveMigration.maxConcurrentFileRequests);
    const service = createLiveMigrationService(this.registry);
    this.gateway = new GatewayServer({
      registry: this.registry,
      limiter: this.limiter,
      logger: this.logger.child({ component: "gateway" }),
      service,
      shutdownSignal: this.shutdown.signal,
    });
    this.plane = createPlaneServer({
      registry: this.registry,
      limiter: this.limiter,
      logger: this.logger.child({ component: "plane" }),
      liveMigrationService: service,
    });
  }

  static create(config: Config, options: AgentOptions = {}): Agent {
    return new Agent(config, options);
  }

  get ports(): AgentPorts {
    if (!this.boundPorts) throw new Error("agent not started");
    return this.boundPorts;
  }

  /** Restores persisted tasks, then binds the gateway and the plane. */
  async start(): Promise<AgentPorts> {
    if (this.state !== "created") throw new Error(`agent cannot start from state ${this.state}`);
    this.state = "started";
    const { host, port, peerPort } = this.config.sidecar;
    const boundPeer = await this.plane.listen(host, peerPort);
    const boundGateway = await this.gateway.listen(host, port);
    this.boundPorts = { gatewayPort: boundGateway, peerPort: boundPeer };
    for (const instance of this.registry.all()) {
      if (instance.role !== "destination" || instance.sourceHost === undefined) continue;
      const sourceHost = instance.sourceHost;
      const deps: TaskDeps = {
        instance,
        connectSource: (logger) => connectSourcePeer({ host: sourceHost, port: boundPeer, logger: logger ?? this.logger }),
        logger: this.logger.child({ instance: instance.config.host }),
        retry: this.config.sidecarClient,
        gatewayPort: boundGateway,
        maxConcurrentFileRequests: this.config.liveMigration.maxConcurrentFileRequests,
      };
      const dataCopy = new DataCopyManager(deps, {
        preCheck: this.options.preCheck ?? NO_PRE_CHECK,
        preCheckCommand: this.config.liveMigration.preCheckCommand,
      });
      await dataCopy.init();
      instance.dataCopy = dataCopy;
      const verification = new VerificationManager(deps);
      await verification.init();
      instance.verification = verification;
    }
    this.logger.info(
      {
        gateway: `${host}:${boundGateway}`,
        plane: `${host}:${boundPeer}`,
        instances: this.registry.all().map((i) => ({ id: i.config.id, host: i.config.host, role: i.role })),
      },
      "lm-sidecar started",
    );
    return this.boundPorts;
  }

  /** Stops gracefully; in-flight streams get `graceMs` to finish. Idempotent. */
  stop(graceMs = 5_000): Promise<void> {
    this.stopping ??= this.doStop(graceMs);
    return this.stopping;
  }

  private async doStop(graceMs: number): Promise<void> {
    if (this.state === "created") {
      this.state = "stopped";
      return;
    }
    this.state = "stopping";
    this.plane.setServing(false);
    this.shutdown.abort();
    await Promise.all(
      this.registry.all().flatMap((i) => [i.dataCopy?.close(), i.verification?.close()].filter((p) => p !== undefined)),
    );
    await Promise.all([this.gateway.close(graceMs), this.plane.shutdown(graceMs)]);
    this.state = "stopped";
    this.logger.info("lm-sidecar stopped");
  }
}
