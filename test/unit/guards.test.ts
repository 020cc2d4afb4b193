import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseConfig } from "../../src/config/load.js";
import type { AgentError } from "../../src/errors.js";
import { ACCESS, type Operation } from "../../src/gateway/service.js";
import { hostOfHeader, InstanceRegistry, type InstanceContext } from "../../src/instance/registry.js";

let base: string;
let registry: InstanceRegistry;

beforeAll(async () => {
  base = await mkdtemp(path.join(os.tmpdir(), "lm-guards-"));
  const yaml = ["src", "dst", "other", "done"]
    .map((h, i) => `  - id: ${i + 1}\n    host: ${h}\n    data_dirs: [${base}/${h}/data]\n    staging_dir: ${base}/${h}-staging\n`)
    .join("");
  registry = new InstanceRegistry(
    parseConfig(`cassandra_instances:\n${yaml}live_migration:\n  migration_map:\n    src: dst\n    done: done-dst\n`).config,
  );
  await (await registry.resolve("done")).status.markCompleted();
});

afterAll(async () => rm(base, { recursive: true, force: true }));

async function outcome(op: Operation, host: string): Promise<string> {
  const instance: InstanceContext = await registry.resolve(host);
  try {
    await ACCESS[op](instance);
    return "pass";
  } catch (err) {
    return (err as AgentError).code;
  }
}

describe("role guards", () => {
  it("derive roles from migration_map", async () => {
    expect((await registry.resolve("src:9043")).role).toBe("source");
    expect((await registry.resolve("dst")).role).toBe("destination");
    expect((await registry.resolve("other")).role).toBe("none");
  });

  // operation → [source, destination, neither, completed source]
  const matrix: Record<Operation, [string, string, string, string]> = {
    createDataCopyTask: ["NotFound", "pass", "NotFound", "NotFound"],
    listDataCopyTasks: ["NotFound", "pass", "NotFound", "NotFound"],
    getDataCopyTask: ["NotFound", "pass", "NotFound", "NotFound"],
    cancelDataCopyTask: ["NotFound", "pass", "NotFound", "NotFound"],
    createFilesVerificationTask: ["NotFound", "pass", "NotFound", "NotFound"],
    listFilesVerificationTasks: ["NotFound", "pass", "NotFound", "NotFound"],
    getFilesVerificationTask: ["NotFound", "pass", "NotFound", "NotFound"],
    cancelFilesVerificationTask: ["NotFound", "pass", "NotFound", "NotFound"],
    getMigrationStatus: ["pass", "pass", "NotFound", "pass"],
    markMigrationCompleted: ["pass", "pass", "NotFound", "pass"],
    clearMigrationStatus: ["PermissionDenied", "PermissionDenied", "pass", "PermissionDenied"],
    listFiles: ["pass", "pass", "NotFound", "pass"],
  };
  for (const [op, expected] of Object.entries(matrix) as [Operation, [string, string, string, string]][]) {
    it(`guards ${op}`, async () => {
      expect([await outcome(op, "src"), await outcome(op, "dst"), await outcome(op, "other"), await outcome(op, "done")]).toEqual(expected);
    });
  }

  it("blocks task creation on a COMPLETED destination with 400", async () => {
    const yaml = `cassandra_instances:\n  - id: 1\n    host: d\n    data_dirs: [${base}/d/data]\n    staging_dir: ${base}/d-staging\nlive_migration:\n  migration_map:\n    s: d\n`;
    const r = new InstanceRegistry(parseConfig(yaml).config);
    const d = await r.resolve("d");
    await d.status.markCompleted();
    await expect(ACCESS.createDataCopyTask(d)).rejects.toMatchObject({ code: "FailedPrecondition" });
    await expect(ACCESS.createFilesVerificationTask(d)).rejects.toMatchObject({ code: "FailedPrecondition" });
    await expect(Promise.resolve(ACCESS.getDataCopyTask(d))).resolves.toBeUndefined();
  });

  it("answers NotFound for a Host that names no instance", async () => {
    await expect(registry.resolve("nobody.invalid")).rejects.toMatchObject({ code: "NotFound" });
  });

  it("strips ports and IPv6 brackets from Host headers", () => {
    expect(hostOfHeader("a.example:9043")).toBe("a.example");
    expect(hostOfHeader("[::1]:9043")).toBe("::1");
    expect(hostOfHeader("::1")).toBe("::1");
    expect(hostOfHeader("127.0.0.2")).toBe("127.0.0.2");
  });
});
