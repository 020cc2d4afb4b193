/**
 * The peer plane server (sidecar.peer_port, gRPC over h2c on @grpc/grpc-js). It serves:
 * - livemigration.v1.PeerService (peer-service.ts): listing, file reads, batch digests;
 * - livemigration.v1.LiveMigrationService: the gateway's implementation, through the adapter;
 * - grpc.health.v1.Health: "" and both services SERVING until setServing(false);
 * - server reflection v1 and v1alpha built from the generated descriptors (grpcurl list/describe).
 */
import type { Http2Server, ServerHttp2Session } from "node:http2";
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

/**
 * The HTTP/2 connection-level receive window of the plane server, for what clients send.
 * A ReadFiles request carries ~100 bytes per file, ~50 KB for a destination's batch of 512
 * files, and a destination has several in flight on one connection. grpc-js leaves Node's
 * default of 65,535 bytes, so the requests after the first waited for the source's
 * WINDOW_UPDATE frames, each a round trip behind the source's own writes: behind 10 ms of RTT a
 * batch's first bytes came 91 ms (median) after its request instead of 38 ms, and the small
 * benchmark tree's download phase took 1.67 s instead of 1.41 s. Streams keep Node's initial
 * window of 65,535 bytes, which one request of 512 files fits.
 */
export const SERVER_CONNECTION_WINDOW_BYTES = 1 << 20;

/** What raiseConnectionWindows needs of grpc-js's Server (private in grpc-js 1.14). */
interface Http2ServersOf {
  readonly http2Servers?: Map<Http2Server, { readonly sessions?: Set<ServerHttp2Session> }>;
}

/**
 * Gives every HTTP/2 session of `server`, current and future, a connection receive window of
 * `bytes`. grpc-js has no option for it, so this reaches for the http2 servers it keeps; if they
 * are not where grpc-js 1.14 keeps them, it does nothing and returns false
 * (test/integration/plane.test.ts checks the window a client sees).
 */
function raiseConnectionWindows(server: grpc.Server, bytes: number): boolean {
  const servers = (server as unknown as Http2ServersOf).http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const [http2Server, info] of servers) {
    http2Server.on("session", (session: ServerHttp2Session) => session.setLocalWindowSize(bytes));
    for (const session of info.sessions ?? []) if (!session.destroyed) session.setLocalWindowSize(bytes);
  }
  return servers.size > 0;
}

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
          if (!raiseConnectionWindows(server, SERVER_CONNECTION_WINDOW_BYTES)) {
            logger.debug("grpc-js keeps its http2 servers elsewhere: clients' requests keep the default 64 KiB window");
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
