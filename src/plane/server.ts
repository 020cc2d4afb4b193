/**
 * The peer plane server (sidecar.peer_port, gRPC over h2c on @grpc/grpc-js). It serves:
 * - livemigration.v1.PeerService (peer-service.ts): listing, file reads, batch digests;
 * - livemigration.v1.LiveMigrationService: the gateway's implementation, through the adapter;
 * - grpc.health.v1.Health: "" and both services SERVING until setServing(false);
 * - server reflection v1 and v1alpha built from the generated descriptors (grpcurl list/describe).
 */
import { toBinary, type DescFile } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import * as grpc from "@grpc/grpc-js";
import { ReflectionService } from "@grpc/reflection";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import { file_livemigration_v1_common } from "../../gen/livemigration/v1/common_pb.js";
import { file_livemigration_v1_live_migration, LiveMigrationService } from "../../gen/livemigration/v1/live_migration_pb.js";
import { file_livemigration_v1_peer, PeerService } from "../../gen/livemigration/v1/peer_pb.js";
import type { InstanceRegistry } from "../instance/registry.js";
import type { Logger } from "../log.js";
import type { RequestLimiter } from "../migration/request-limiter.js";
import { addConnectService, PLANE_MAX_MESSAGE_BYTES } from "./definition.js";
import { installInPlaceFraming } from "./grpc-framing.js";
import { createPeerService } from "./peer-service.js";

const HEALTH_SERVICE = "grpc.health.v1.Health";
/** Services announced by health and reflection. */
export const PLANE_SERVICES = [LiveMigrationService.typeName, PeerService.typeName] as const;

export interface PlaneServerOptions {
  readonly registry: InstanceRegistry;
  /** Shared with the gateway's file route (max_concurrent_file_requests). */
  readonly limiter: RequestLimiter;
  readonly logger: Logger;
  /** The gateway's LiveMigrationService implementation; it throws AgentError or ConnectError. */
  readonly liveMigrationService: ServiceImpl<typeof LiveMigrationService>;
  /** Bounded wait for a limiter permit per DigestFiles file, in ms (default 5000). */
  readonly digestPermitWaitMs?: number;
}

export interface PlaneServer {
  /**
   * Binds h2c on host:port (port 0 picks a free one) and starts serving.
   * @returns the bound port. Rejects when the address is taken or listen() was already called.
   */
  listen(host: string, port: number): Promise<number>;
  /** Health of "" and every plane service: SERVING (true) or NOT_SERVING (false). */
  setServing(serving: boolean): void;
  /**
   * Stops accepting calls, lets in-flight calls finish for up to `graceMs`, then cancels the
   * rest and closes every connection. Idempotent; resolves when the server is down.
   */
  shutdown(graceMs: number): Promise<void>;
}

/** Serialized FileDescriptorProtos of `files` and their imports, dependencies first. */
function fileDescriptorProtos(files: readonly DescFile[]): Buffer[] {
  const seen = new Set<string>();
  const out: Buffer[] = [];
  const visit = (file: DescFile) => {
    if (seen.has(file.proto.name)) return;
    seen.add(file.proto.name);
    file.dependencies.forEach(visit);
    out.push(Buffer.from(toBinary(FileDescriptorProtoSchema, file.proto)));
  };
  files.forEach(visit);
  return out;
}

type ReflectionPackage = ConstructorParameters<typeof ReflectionService>[0];

/** Builds the plane server; nothing is bound until listen(). */
export function createPlaneServer(options: PlaneServerOptions): PlaneServer {
  const { logger } = options;
  if (!installInPlaceFraming()) logger.debug("grpc-js is not the version grpc-framing.ts was checked against: messages are framed by copy");
  const shutdownController = new AbortController();
  const server = new grpc.Server({
    "grpc.max_receive_message_length": PLANE_MAX_MESSAGE_BYTES,
    "grpc.max_send_message_length": PLANE_MAX_MESSAGE_BYTES,
    // Ping idle clients so that half-open connections (NAT, firewall) are noticed within ~1.5 min.
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
  });

  const adapterOptions = { logger, shutdownSignal: shutdownController.signal };
  addConnectService(
    server,
    PeerService,
    createPeerService({
      registry: options.registry,
      limiter: options.limiter,
      digestPermitWaitMs: options.digestPermitWaitMs,
    }),
    adapterOptions,
  );
  addConnectService(server, LiveMigrationService, options.liveMigrationService, adapterOptions);

  const health = new HealthImplementation(
    Object.fromEntries(["", ...PLANE_SERVICES, HEALTH_SERVICE].map((name) => [name, "SERVING" satisfies ServingStatus])),
  );
  health.addToServer(server);

  // @grpc/reflection reads only `fileDescriptorProtos` of each package-definition entry.
  const reflectionPackage = {
    livemigration: {
      fileDescriptorProtos: fileDescriptorProtos([
        file_livemigration_v1_common,
        file_livemigration_v1_peer,
        file_livemigration_v1_live_migration,
        file_grpc_health_v1_health,
      ]),
    },
  } as unknown as ReflectionPackage;
  new ReflectionService(reflectionPackage, { services: [...PLANE_SERVICES, HEALTH_SERVICE] }).addToServer(server);

  let listening = false;
  let stopping: Promise<void> | undefined;
  const setServing = (serving: boolean) => {
    const status: ServingStatus = serving ? "SERVING" : "NOT_SERVING";
    for (const name of ["", ...PLANE_SERVICES, HEALTH_SERVICE]) health.setStatus(name, status);
  };

  return {
    listen(host, port) {
      if (listening) return Promise.reject(new Error("plane server is already listening"));
      listening = true;
      const address = host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
      return new Promise<number>((resolve, reject) => {
        server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (err, boundPort) => {
          if (err) {
            reject(err);
            return;
          }
          logger.debug({ address, port: boundPort }, "plane listening");
          resolve(boundPort);
        });
      });
    },

    setServing,

    shutdown(graceMs) {
      stopping ??= new Promise<void>((resolve) => {
        setServing(false);
        let forced = false;
        const timer = setTimeout(() => {
          forced = true;
          logger.info({ graceMs }, "plane grace period over; cancelling in-flight calls");
          shutdownController.abort();
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown((err) => {
          clearTimeout(timer);
          if (err) logger.warn({ err }, "plane shutdown error");
          if (!forced) resolve();
        });
      });
      return stopping;
    },
  };
}
