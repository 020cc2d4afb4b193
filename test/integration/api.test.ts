/**
 * The foundation's REST surface between two real agents: source 127.0.0.1, destination
 * 127.0.0.2, one shared port pair, a generated Cassandra-like tree on the source.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generateDataset } from "../../src/dataset/generate.js";
import { DEST_HOST, REPO_ROOT, SOURCE_HOST, sideLayout, startPair, type Pair } from "../helpers/agents.js";

const API = "/api/v1/live-migration";
let pair: Pair;

/** An independent walk of the source: every path below each root except <data>/<ks>/<table>/snapshots subtrees. */
async function independentListing(p: Pair) {
  const L = p.sourceLayout;
  const roots: [string, string][] = [
    ["hints/0", L.hintsDir],
    ["commitlog/0", L.commitlogDir],
    ["saved_caches/0", L.savedCachesDir],
    ["data/0", L.dataDirs[0]!],
    ["data/1", L.dataDirs[1]!],
  ];
  const out: { fileUrl: string; size: number; fileType: string; lastModifiedTime: number }[] = [];
  for (const [prefix, root] of roots) {
    const walk = async (dir: string, rel: string): Promise<void> => {
      for (const d of await readdir(dir, { withFileTypes: true })) {
        const r = rel ? `${rel}/${d.name}` : d.name;
        const abs = path.join(dir, d.name);
        const st = await stat(abs, { bigint: true });
        const isDir = d.isDirectory();
        if (isDir && prefix.startsWith("data/") && /^[^/]+\/[^/]+\/snapshots$/.test(r)) continue;
        out.push({
          fileUrl: `${API}/files/${prefix}/${r.split("/").map(encodeURIComponent).join("/")}`,
          size: isDir ? -1 : Number(st.size),
          fileType: isDir ? "DIRECTORY" : "FILE",
          lastModifiedTime: Number(st.mtimeNs / 1_000_000n),
        });
        if (isDir) await walk(abs, r);
      }
    };
    await walk(root, "");
  }
  return out;
}

beforeAll(async () => {
  pair = await startPair({
    populate: async (layout) => {
      await generateDataset(layout.root, { profile: "tiny" });
      // One file larger than the loopback socket buffers, so that an unread stream holds its permit.
      await writeFile(path.join(layout.commitlogDir, "CommitLog-7-1800000000000.log"), randomBytes(48 << 20));
    },
    source: {
      extraInstances: [{ host: "unrelated.test", layout: sideLayout("/nonexistent-lm", "unrelated") }],
      liveMigration: { max_concurrent_file_requests: 2 },
    },
    destination: { liveMigration: { max_concurrent_file_requests: 2 } },
  });
}, 120_000);

afterAll(async () => pair?.stop());

describe("routes by role", () => {
  // [method, path, body, source status, destination status, unrelated-host status]
  const table: [string, string, unknown, number, number, number][] = [
    ["GET", "/data-copy-tasks", undefined, 404, 200, 404],
    ["GET", "/data-copy-tasks/nope", undefined, 404, 404, 404],
    ["PATCH", "/data-copy-tasks/nope", undefined, 404, 404, 404],
    ["POST", "/data-copy-tasks", { maxIterations: 0, successThreshold: 1, maxConcurrency: 1 }, 404, 400, 404],
    ["GET", "/files-verification-tasks", undefined, 404, 200, 404],
    ["GET", "/files-verification-tasks/nope", undefined, 404, 404, 404],
    ["PATCH", "/files-verification-tasks/nope", undefined, 404, 404, 404],
    ["POST", "/files-verification-tasks", { maxConcurrency: 0, digestAlgorithm: "MD5" }, 404, 400, 404],
    ["GET", "/status", undefined, 200, 200, 404],
    ["DELETE", "/status", undefined, 403, 403, 400],
    ["GET", "/files", undefined, 200, 200, 404],
    ["GET", "/files/commitlog/0/CommitLog-7-1700000000000.log", undefined, 200, 404, 404],
    ["GET", "/files/commitlog/0/CommitLog-7-1700000000000.log?digestAlgorithm=MD5", undefined, 200, 404, 404],
  ];
  for (const [method, route, body, onSource, onDest, onUnrelated] of table) {
    it(`${method} ${route} → ${onSource} / ${onDest} / ${onUnrelated}`, async () => {
      const s = await pair.source.request(method, API + route, { body });
      const d = await pair.destination.request(method, API + route, { body });
      const u = await pair.source.request(method, API + route, { body, host: "unrelated.test" });
      expect([s.status, d.status, u.status], `${s.text} | ${d.text} | ${u.text}`).toEqual([onSource, onDest, onUnrelated]);
      for (const r of [s, d, u]) {
        expect(r.headers["content-type"]).toMatch(/^application\/(json|octet-stream)/);
        if (r.status >= 400) {
          expect(r.json).toMatchObject({ status: http.STATUS_CODES[r.status], code: r.status });
          expect(typeof r.json.message).toBe("string");
          expect(r.json.message.length).toBeGreaterThan(0);
        }
      }
    });
  }

  it("answers 404 with a message for a Host that names no instance", async () => {
    const r = await pair.source.request("GET", `${API}/status`, { host: "nobody.invalid:1" });
    expect(r.status).toBe(404);
    expect(r.json).toEqual({ status: "Not Found", code: 404, message: "No Cassandra instance is configured for host nobody.invalid" });
  });

  it("answers 405 for a wrong method on a known route", async () => {
    const r = await pair.source.request("PUT", `${API}/status`);
    expect(r.status).toBe(405);
    expect(r.headers["allow"]).toBe("GET, POST, DELETE");
  });
});

describe("GET /files", () => {
  it("equals an independent walk of the source, snapshots excluded", async () => {
    const r = await pair.source.request("GET", `${API}/files`);
    expect(r.status).toBe(200);
    const expected = await independentListing(pair);
    const byUrl = (a: { fileUrl: string }, b: { fileUrl: string }) => (a.fileUrl < b.fileUrl ? -1 : 1);
    expect([...r.json.files].sort(byUrl)).toEqual(expected.sort(byUrl));
    expect(r.json.totalSize).toBe(expected.filter((f) => f.fileType === "FILE").reduce((a, f) => a + f.size, 0));
    expect(r.json.files.some((f: { fileUrl: string }) => f.fileUrl.includes("/snapshots/"))).toBe(false);
    expect(expected.length).toBeGreaterThan(200);
  });

  it("lists the destination's own (empty) instance", async () => {
    const r = await pair.destination.request("GET", `${API}/files`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ files: [], totalSize: 0 });
  });
});

describe("GET /files/{dirType}/{dirIndex}/{path}", () => {
  let files: { fileUrl: string; size: number; fileType: string }[];
  const localPath = (fileUrl: string) => {
    const [, , , , , dirType, dirIndex, ...rest] = fileUrl.split("/");
    const L = pair.sourceLayout;
    const root =
      dirType === "data" ? L.dataDirs[Number(dirIndex)]! : dirType === "commitlog" ? L.commitlogDir : dirType === "hints" ? L.hintsDir : L.savedCachesDir;
    return path.join(root, ...rest.map(decodeURIComponent));
  };

  beforeAll(async () => {
    files = (await pair.source.request("GET", `${API}/files`)).json.files.filter((f: { fileType: string }) => f.fileType === "FILE");
  });

  it("streams every byte of a file", async () => {
    const largest = [...files].sort((a, b) => b.size - a.size).slice(0, 3);
    for (const f of largest) {
      const r = await pair.source.request("GET", f.fileUrl);
      expect(r.status).toBe(200);
      expect(r.headers["content-length"]).toBe(String(f.size));
      expect(r.body.equals(await readFile(localPath(f.fileUrl)))).toBe(true);
    }
  });

  it("honours a single Range", async () => {
    const f = files.find((x) => x.size > 10_000)!;
    const bytes = await readFile(localPath(f.fileUrl));
    const r = await pair.source.request("GET", f.fileUrl, { headers: { range: "bytes=100-1099" } });
    expect(r.status).toBe(206);
    expect(r.headers["content-range"]).toBe(`bytes 100-1099/${f.size}`);
    expect(r.body.equals(bytes.subarray(100, 1100))).toBe(true);
    const tail = await pair.source.request("GET", f.fileUrl, { headers: { range: "bytes=-10" } });
    expect(tail.body.equals(bytes.subarray(bytes.length - 10))).toBe(true);
    const bad = await pair.source.request("GET", f.fileUrl, { headers: { range: `bytes=${f.size + 5}-` } });
    expect(bad.status).toBe(416);
  });

  it("gives every file's digest as openssl (MD5, base64) and xxh32sum (XXHash32, unpadded hex) do", async () => {
    const paths = files.map((f) => localPath(f.fileUrl));
    const md5 = new Map(
      execFileSync("openssl", ["md5", "-r", ...paths], { encoding: "utf8", maxBuffer: 1 << 26 })
        .trim()
        .split("\n")
        .map((l) => [l.slice(l.indexOf(" ") + 2), Buffer.from(l.slice(0, 32), "hex").toString("base64")] as const),
    );
    const xxh32 = new Map(
      execFileSync("xxh32sum", paths, { encoding: "utf8", maxBuffer: 1 << 26 })
        .trim()
        .split("\n")
        .map((l) => [l.slice(l.indexOf(" ") + 2), l.slice(0, 8).replace(/^0+(?=.)/, "")] as const),
    );
    for (const f of files) {
      const p = localPath(f.fileUrl);
      const m = await pair.source.request("GET", `${f.fileUrl}?digestAlgorithm=MD5`);
      expect(m.json).toEqual({ digest: md5.get(p), digestAlgorithm: "MD5" });
      const x = await pair.source.request("GET", `${f.fileUrl}?digestAlgorithm=xxhash32`);
      expect(x.json).toEqual({ digest: xxh32.get(p), digestAlgorithm: "xxhash32" });
    }
  });

  it("rejects hostile and invalid paths with the documented statuses", async () => {
    const cases: [string, number, string][] = [
      [`${API}/files/data/0/..`, 400, "Tried to access file using relative path: .."],
      [`${API}/files/data/0/%2E%2E/%2E%2E/etc/passwd`, 400, "Tried to access file using relative path: ../../etc/passwd"],
      [`${API}/files/data/0/%252E%252E/x`, 404, "File not found"],
      [`${API}/files/data/0/a%00b`, 400, "Malformed request path"],
      [`${API}/files/bogus/0/x`, 400, "Invalid directory type: bogus"],
      [`${API}/files/data/-1/x`, 400, "Invalid directoryIndex: -1"],
      [`${API}/files/data/7/x`, 404, `File url ${API}/files/data/7/x is unknown.`],
      [`${API}/files/cdc_raw/0/x`, 404, `File url ${API}/files/cdc_raw/0/x is unknown.`],
      [`${API}/files/data/0/shop`, 400, "Cannot transfer directory"],
      [`${API}/files/commitlog/0/CommitLog-7-1700000000000.log?digestAlgorithm=`, 400, "Digest algorithm name cannot be null or empty"],
      [`${API}/files/commitlog/0/CommitLog-7-1700000000000.log?digestAlgorithm=sha1`, 400, "Unsupported digest algorithm sha1"],
    ];
    for (const [url, status, message] of cases) {
      const r = await pair.source.request("GET", url);
      expect([r.status, r.json?.message], url).toEqual([status, message]);
    }
  });

  it("answers 503 with the documented message above max_concurrent_file_requests", async () => {
    const big = [...files].sort((a, b) => b.size - a.size)[0]!;
    // Two streams that the client does not read hold both permits.
    const held = await Promise.all(
      [0, 1].map(
        () =>
          new Promise<http.ClientRequest>((resolve, reject) => {
            const req = http.get({ host: SOURCE_HOST, port: pair.gatewayPort, path: big.fileUrl, agent: false }, (res) => {
              res.pause();
              resolve(req);
            });
            req.on("error", reject);
          }),
      ),
    );
    const busy = await pair.source.request("GET", big.fileUrl);
    expect(busy.status).toBe(503);
    expect(busy.json).toEqual({
      status: "Service Unavailable",
      code: 503,
      message: "Server is busy processing live migration file requests, please try again later",
    });
    const digestBusy = await pair.source.request("GET", `${big.fileUrl}?digestAlgorithm=MD5`);
    expect(digestBusy.status).toBe(503);
    for (const req of held) req.destroy();
    let after = 0;
    for (let i = 0; i < 50 && after !== 200; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = (await pair.source.request("GET", `${big.fileUrl}?digestAlgorithm=MD5`)).status;
    }
    expect(after).toBe(200);
  });
});

describe("POST body validation", () => {
  const cases: [string, unknown, string][] = [
    ["malformed JSON", "{ not json", "Error while decoding values, please check your request body.: "],
    ["a non-object", "[1,2]", "Error while decoding values, please check your request body.: the body must be a JSON object"],
    ["a string number", { maxIterations: "3", successThreshold: 1, maxConcurrency: 1 }, 'maxIterations must be an integer, got "3"'],
    ["a fractional integer", { maxIterations: 1.5, successThreshold: 1, maxConcurrency: 1 }, "maxIterations must be an integer, got 1.5"],
    ["a missing field", { maxIterations: 1, maxConcurrency: 1 }, "successThreshold is required"],
  ];
  for (const [name, body, message] of cases) {
    it(`rejects ${name} with 400`, async () => {
      const r = await pair.destination.request("POST", `${API}/data-copy-tasks`, { body });
      expect(r.status).toBe(400);
      expect(r.json.message).toContain(message);
    });
  }
});

describe("the /status lifecycle", () => {
  it("goes NOT_COMPLETED → COMPLETED, refuses a second POST, and survives a restart", async () => {
    const before = await pair.destination.request("GET", `${API}/status`);
    expect(before.json).toEqual({ state: "NOT_COMPLETED", endTime: null });

    // Two concurrent POSTs: exactly one wins, the other gets the specific 400 (never 503).
    const [a, b] = await Promise.all([
      pair.destination.request("POST", `${API}/status`),
      pair.destination.request("POST", `${API}/status`),
    ]);
    expect([a.status, b.status].sort()).toEqual([200, 400]);
    const won = a.status === 200 ? a : b;
    const lost = a.status === 200 ? b : a;
    expect(won.json.state).toBe("COMPLETED");
    expect(Math.abs(won.json.endTime - Date.now())).toBeLessThan(60_000);
    expect(lost.json).toEqual({ status: "Bad Request", code: 400, message: "Live migration marked as COMPLETED earlier." });

    const file = path.join(pair.destLayout.stagingDir, "live_migration_status.json");
    expect(JSON.parse(await readFile(file, "utf8"))).toEqual({ state: "COMPLETED", endTime: won.json.endTime });

    // Completed: task creation is 400 on the destination; the source's file route is still open.
    const create = await pair.destination.request("POST", `${API}/data-copy-tasks`, {
      body: { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 },
    });
    expect(create.status).toBe(400);

    await pair.destination.restart();
    const after = await pair.destination.request("GET", `${API}/status`);
    expect(after.json).toEqual({ state: "COMPLETED", endTime: won.json.endTime });

    // DELETE needs the host out of migration_map: 403 now, then 200 after the map is cleared, then 400.
    expect((await pair.destination.request("DELETE", `${API}/status`)).status).toBe(403);
    await pair.destination.restart({ migrationMap: {} });
    expect((await pair.destination.request("GET", `${API}/status`)).status).toBe(404);
    const cleared = await pair.destination.request("DELETE", `${API}/status`);
    expect([cleared.status, cleared.json]).toEqual([200, { status: "OK" }]);
    const again = await pair.destination.request("DELETE", `${API}/status`);
    expect(again.status).toBe(400);
    expect(again.json.message).toBe(`Live Migration status file does not exist for instance ${DEST_HOST}`);
    await pair.destination.restart({ migrationMap: { [SOURCE_HOST]: DEST_HOST } });
    expect((await pair.destination.request("GET", `${API}/status`)).json).toEqual({ state: "NOT_COMPLETED", endTime: null });
  });

  it("blocks the source's file route once the source is COMPLETED", async () => {
    const url = `${API}/files/commitlog/0/CommitLog-7-1700000000000.log`;
    expect((await pair.source.request("GET", url)).status).toBe(200);
    expect((await pair.source.request("POST", `${API}/status`)).status).toBe(200);
    expect((await pair.source.request("GET", url)).status).toBe(400);
    expect((await pair.source.request("GET", `${API}/files`)).status).toBe(200);
    await pair.source.restart({ migrationMap: {} });
    expect((await pair.source.request("DELETE", `${API}/status`)).status).toBe(200);
    await pair.source.restart({ migrationMap: { [SOURCE_HOST]: DEST_HOST } });
  });
});

describe("Connect", () => {
  it("serves the same operations as Connect JSON", async () => {
    const r = await pair.source.request("POST", "/livemigration.v1.LiveMigrationService/GetMigrationStatus", { body: {} });
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ state: "MIGRATION_STATE_NOT_COMPLETED" });
    const files = await pair.source.request("POST", "/livemigration.v1.LiveMigrationService/ListFiles", { body: {} });
    expect(files.status).toBe(200);
    expect(files.json.files.length).toBeGreaterThan(200);
    const denied = await pair.source.request("POST", "/livemigration.v1.LiveMigrationService/ListDataCopyTasks", { body: {} });
    expect(denied.status).toBe(404);
    expect(denied.json).toEqual({ code: "not_found", message: `Live migration: ${SOURCE_HOST} is not a destination in migration_map` });
  });

  it("serves Connect binary", async () => {
    const r = await pair.destination.request("POST", "/livemigration.v1.LiveMigrationService/ListDataCopyTasks", {
      body: Buffer.alloc(0),
      headers: { "content-type": "application/proto" },
    });
    expect(r.status).toBe(200);
    expect(r.headers["content-type"]).toBe("application/proto");
    expect(r.body.length).toBe(0); // an empty ListDataCopyTasksResponse
  });
});

describe("gRPC on the agent's peer_port", () => {
  /** A client built from the .proto files alone (proto-loader), as a client in another language would be. */
  function liveMigrationClient(authority: string) {
    const definition = protoLoader.loadSync("livemigration/v1/live_migration.proto", {
      includeDirs: [path.join(REPO_ROOT, "proto")],
      keepCase: false,
      longs: Number,
      enums: String,
      defaults: true,
    });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      livemigration: { v1: { LiveMigrationService: new (address: string, creds: grpc.ChannelCredentials, options: object) => grpc.Client } };
    };
    return new pkg.livemigration.v1.LiveMigrationService(`${SOURCE_HOST}:${pair.peerPort}`, grpc.credentials.createInsecure(), {
      "grpc.default_authority": authority,
    }) as grpc.Client & Record<string, (request: object, callback: (err: grpc.ServiceError | null, response: any) => void) => void>;
  }

  const call = (client: ReturnType<typeof liveMigrationClient>, method: string, request: object = {}) =>
    new Promise<{ err: grpc.ServiceError | null; response: any }>((resolve) => client[method]!(request, (err, response) => resolve({ err, response })));

  it("serves LiveMigrationService to a client generated from the protos, picking the instance by :authority", async () => {
    const source = liveMigrationClient(SOURCE_HOST);
    const unrelated = liveMigrationClient("nobody.test");
    try {
      const status = await call(source, "getMigrationStatus");
      expect(status.err).toBeNull();
      const rest = (await (await fetch(`http://${SOURCE_HOST}:${pair.gatewayPort}${API}/status`)).json()) as { state: string };
      expect(status.response.state).toBe(`MIGRATION_STATE_${rest.state}`);
      const files = await call(source, "listFiles");
      expect(files.err).toBeNull();
      expect(files.response.files.length).toBe((await independentListing(pair)).length);
      const wrongRole = await call(source, "listDataCopyTasks");
      expect([wrongRole.err?.code, wrongRole.err?.details]).toEqual([grpc.status.NOT_FOUND, expect.any(String)]);
      const none = await call(unrelated, "getMigrationStatus");
      expect(none.err?.code).toBe(grpc.status.NOT_FOUND);
    } finally {
      source.close();
      unrelated.close();
    }
  });

  it("reports SERVING through grpc.health.v1.Health", async () => {
    const definition = protoLoader.loadSync(path.join(REPO_ROOT, "node_modules/grpc-health-check/proto/health/v1/health.proto"), { defaults: true, enums: String });
    const pkg = grpc.loadPackageDefinition(definition) as unknown as {
      grpc: { health: { v1: { Health: new (address: string, creds: grpc.ChannelCredentials) => grpc.Client & { check: Function } } } };
    };
    const client = new pkg.grpc.health.v1.Health(`${DEST_HOST}:${pair.peerPort}`, grpc.credentials.createInsecure());
    try {
      const reply = await new Promise<{ status: string }>((resolve, reject) =>
        client.check({ service: "" }, (err: Error | null, res: { status: string }) => (err ? reject(err) : resolve(res))),
      );
      expect(reply.status).toBe("SERVING");
    } finally {
      client.close();
    }
  });
});
