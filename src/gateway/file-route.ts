/**
 * GET /api/v1/live-migration/files/{dirType}/{dirIndex}/{path}: streams a source file (one
 * Range honoured) or, with ?digestAlgorithm=, answers its DigestResponse. The checks run in
 * the Java Sidecar's order (behaviour doc §1.8): isSource → not COMPLETED → concurrency cap →
 * path checks (fs/safe-path.ts) → digest or stream. The permit is held until the response
 * ends or the connection closes.
 */
import { createReadStream } from "node:fs";
import type { IncomingMessage, ServerResponse } from "node:http";
import { pipeline } from "node:stream/promises";
import { digestFile, parseDigestAlgorithm } from "../digest/digest.js";
import { AgentError } from "../errors.js";
import { resolveFileUrl, resolveReadableFile } from "../fs/safe-path.js";
import type { InstanceRegistry } from "../instance/registry.js";
import type { Logger } from "../log.js";
import { requireNotCompleted, requireSource } from "../migration/guards.js";
import type { RequestLimiter } from "../migration/request-limiter.js";
import { sendError, sendJson } from "./http-status.js";

const CHUNK_BYTES = 1 << 20;

export interface FileRouteDeps {
  readonly registry: InstanceRegistry;
  readonly limiter: RequestLimiter;
  readonly logger: Logger;
}

/** Serves one request to the file route; never throws. `rawPath` is the URL path as received. */
export async function serveFileRoute(deps: FileRouteDeps, req: IncomingMessage, res: ServerResponse, rawPath: string, query: URLSearchParams): Promise<void> {
  try {
    const instance = await deps.registry.resolve(req.headers.host);
    requireSource(instance);
    await requireNotCompleted(instance);
    res.once("close", deps.limiter.acquire()); // 'close' follows both a finished response and a dropped connection
    const file = await resolveReadableFile(resolveFileUrl(instance.roots, rawPath), instance.exclusions);

    if (query.has("digestAlgorithm")) {
      const requested = query.get("digestAlgorithm") ?? "";
      if (requested.trim() === "") throw new AgentError("InvalidArgument", "Digest algorithm name cannot be null or empty");
      const algorithm = parseDigestAlgorithm(requested);
      if (!algorithm) throw new AgentError("InvalidArgument", `Unsupported digest algorithm ${requested}`);
      const abort = new AbortController();
      res.once("close", () => abort.abort());
      const digest = await digestFile(file.realPath, algorithm, { signal: abort.signal });
      sendJson(res, 200, { digest, digestAlgorithm: requested });
      return;
    }

    if (file.size === 0) throw new AgentError("OutOfRange", "The requested file is empty");
    const range = parseRange(req.headers.range, file.size);
    const headers: Record<string, string | number> = {
      "content-type": "application/octet-stream",
      "accept-ranges": "bytes",
      "last-modified": new Date(file.lastModifiedTime).toUTCString(),
      "content-length": range.end - range.start + 1,
    };
    if (range.partial) headers["content-range"] = `bytes ${range.start}-${range.end}/${file.size}`;
    res.writeHead(range.partial ? 206 : 200, headers);
    await pipeline(createReadStream(file.realPath, { start: range.start, end: range.end, highWaterMark: CHUNK_BYTES }), res);
  } catch (err) {
    const error = AgentError.from(err);
    if (res.headersSent) {
      // The client went away or the file broke mid-stream: cut the connection so the
      // short body cannot pass for a complete file.
      deps.logger.debug({ err: error, url: rawPath }, "file stream ended early");
      res.destroy();
      return;
    }
    if (error.code === "Internal") deps.logger.error({ err: error, url: rawPath }, "file route failed");
    sendError(res, error);
  }
}

interface ByteRange {
  readonly start: number;
  /** Inclusive. */
  readonly end: number;
  readonly partial: boolean;
}

/** Parses a single `bytes=` range; no header means the whole file. @throws OutOfRange (416). */
export function parseRange(header: string | undefined, size: number): ByteRange {
  if (header === undefined) return { start: 0, end: size - 1, partial: false };
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m || (m[1] === "" && m[2] === "")) throw new AgentError("OutOfRange", `Unsupported or malformed Range: ${header}`);
  let start: number;
  let end: number;
  if (m[1] === "") {
    const suffix = Number(m[2]);
    if (suffix === 0) throw new AgentError("OutOfRange", `Range not satisfiable: ${header}`);
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === "" ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) throw new AgentError("OutOfRange", `Range not satisfiable: ${header} (file size ${size})`);
  return { start, end, partial: true };
}
