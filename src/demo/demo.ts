/**
 * `lm-sidecar demo`: the guide's walkthrough, phases 1–4 and 6, between two real agents on
 * this machine (source 127.0.0.1, destination 127.0.0.2), driven through the REST API exactly
 * as an operator's curl commands would drive it.
 */
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { Agent } from "../agent/agent.js";
import { loadConfigFile } from "../config/load.js";
import { datasetLayout, generateDataset } from "../dataset/generate.js";
import { SourceWriter, userTableDirs } from "../dataset/live-writer.js";
import { createRootLogger } from "../log.js";
import { pino } from "pino";

export interface DemoOptions {
  /** Dataset size like "200M" or "1G" (default 200M). */
  readonly size: string | undefined;
  /** Keep directories and agents' configs, and print curl commands. */
  readonly keep: boolean;
}

const SOURCE = "127.0.0.1";
const DESTINATION = "127.0.0.2";
const API = "/api/v1/live-migration";

function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new Error(`--size must look like 200M or 1G, got ${text}`);
  const unit = { "": 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }[m[2]!.toUpperCase() as "" | "K" | "M" | "G" | "T"];
  return Math.round(Number(m[1]) * unit);
}

function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

interface Reply {
  status: number;
  json: any;
  text: string;
}

function call(host: string, port: number, method: string, route: string, body?: unknown): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(
      {
        host,
        port,
        method,
        path: API + route,
        agent: false,
        headers: payload === undefined ? {} : { "content-type": "application/json", "content-length": Buffer.byteLength(payload) },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (c: string) => (text += c));
        res.on("end", () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode ?? 0, json, text });
        });
      },
    );
    req.on("error", reject);
    if (payload !== undefined) req.write(payload);
    req.end();
  });
}

function expectStatus(reply: Reply, status: number, what: string): Reply {
  if (reply.status !== status) throw new Error(`${what}: expected HTTP ${status}, got ${reply.status} ${reply.text}`);
  return reply;
}

async function freePortOnBoth(avoid: number[] = []): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer().once("error", reject);
      s.listen(0, SOURCE, () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    if (avoid.includes(port)) continue;
    const free = await new Promise<boolean>((resolve) => {
      const s = net.createServer().once("error", () => resolve(false));
      s.listen(port, DESTINATION, () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error("no free port on both 127.0.0.1 and 127.0.0.2");
}

/** A progress line: rewritten in place on a terminal, a plain line every few seconds otherwise. */
class Progress {
  private lastPlain = 0;
  private readonly tty = process.stderr.isTTY === true;

  update(text: string): void {
    if (this.tty) {
      process.stderr.write(`\r\x1b[K${text}`);
    } else if (Date.now() - this.lastPlain > 3_000) {
      this.lastPlain = Date.now();
      process.stderr.write(`${text}\n`);
    }
  }

  done(text: string): void {
    if (this.tty) process.stderr.write("\r\x1b[K");
    process.stderr.write(`${text}\n`);
  }
}

interface PhaseRow {
  phase: string;
  seconds: number;
  detail: string;
  bytes?: number;
  files?: number;
}

export async function runDemo(options: DemoOptions): Promise<number> {
  const sizeBytes = parseSize(options.size ?? "200M");
  const base = await mkdtemp(path.join(os.tmpdir(), "lm-sidecar-demo-"));
  const out = (line = "") => process.stdout.write(line + "\n");
  const progress = new Progress();
  const rows: PhaseRow[] = [];
  const agents: Agent[] = [];
  const logStreams: pino.DestinationStream[] = [];
  let writer: SourceWriter | undefined;
  try {
    out(`lm-sidecar demo: source ${SOURCE}, destination ${DESTINATION}, work dir ${base}`);
    let t0 = Date.now();
    const sourceRoot = path.join(base, "source");
    const destRoot = path.join(base, "destination");
    const summary = await generateDataset(sourceRoot, { profile: "large", sizeBytes });
    await mkdir(destRoot, { recursive: true });
    rows.push({
      phase: "0 dataset",
      seconds: (Date.now() - t0) / 1000,
      detail: `${summary.uniqueFiles} files + ${summary.hardlinkEntries} snapshot links, ${summary.dirs} dirs`,
      bytes: summary.uniqueBytes,
      files: summary.entries,
    });
    out(`dataset: ${formatBytes(summary.uniqueBytes)} in ${summary.entries} files (snapshot hard links included)`);

    const gatewayPort = await freePortOnBoth();
    const peerPort = await freePortOnBoth([gatewayPort]);
    const configFor = (host: string, root: string, name: string, map: Record<string, string>) => {
      const layout = datasetLayout(root);
      return stringify({
        cassandra_instances: [
          {
            id: 1,
            host,
            port: 1, // nothing listens: Cassandra is "stopped" on both hosts
            jmx_host: host,
            jmx_port: 1,
            data_dirs: layout.dataDirs,
            commitlog_dir: layout.commitlogDir,
            hints_dir: layout.hintsDir,
            saved_caches_dir: layout.savedCachesDir,
            staging_dir: path.join(base, `${name}-staging`),
          },
        ],
        sidecar: { host, port: gatewayPort, peer_port: peerPort },
        live_migration: {
          migration_map: map,
          files_to_exclude: [],
          dirs_to_exclude: ["glob:${DATA_FILE_DIR}/*/*/snapshots"],
          max_concurrent_file_requests: 20,
        },
      });
    };
    const startAgent = async (host: string, root: string, name: string, map: Record<string, string>) => {
      const file = path.join(base, `${name}.yaml`);
      await writeFile(file, configFor(host, root, name, map));
      const { config } = await loadConfigFile(file);
      const dest = pino.destination({ dest: path.join(base, `${name}.log`), append: true, sync: false, mkdir: true });
      logStreams.push(dest);
      const agent = Agent.create(config, { logger: createRootLogger({ destination: dest, base: { host } }) });
      await agent.start();
      agents.push(agent);
      return agent;
    };
    const map = { [SOURCE]: DESTINATION };
    let source = await startAgent(SOURCE, sourceRoot, "source", map);
    let destination = await startAgent(DESTINATION, destRoot, "destination", map);
    out(`agents: gateway port ${gatewayPort}, peer plane port ${peerPort} on both hosts; logs in ${base}/{source,destination}.log`);

    const dest = (method: string, route: string, body?: unknown) => call(DESTINATION, gatewayPort, method, route, body);
    const src = (method: string, route: string, body?: unknown) => call(SOURCE, gatewayPort, method, route, body);

    const runCopy = async (phase: string, successThreshold: number): Promise<string> => {
      const started = Date.now();
      const created = expectStatus(
        await dest("POST", "/data-copy-tasks", { maxIterations: 3, successThreshold, maxConcurrency: 10 }),
        202,
        `${phase}: POST /data-copy-tasks`,
      ).json as { taskId: string; statusUrl: string };
      let task: any;
      for (;;) {
        task = expectStatus(await dest("GET", `/data-copy-tasks/${created.taskId}`), 200, `${phase}: GET task`).json;
        const last = task.status.at(-1);
        if (last) {
          const rate = last.bytesPerSecond > 0 ? `${formatBytes(last.bytesPerSecond)}/s` : "-";
          const eta = last.etaSeconds >= 0 ? `${Math.ceil(last.etaSeconds)}s` : "-";
          const toGo = last.bytesToDownload >= 0 ? formatBytes(last.bytesToDownload) : "?";
          const files = last.filesToDownload >= 0 ? `${last.filesDownloaded}/${last.filesToDownload}` : "-";
          progress.update(
            `${phase} iteration ${last.iteration} ${last.state.padEnd(17)} ${formatBytes(last.bytesTransferred)} of ${toGo}, files ${files}, ${rate}, ETA ${eta}`,
          );
          if (["SUCCESS", "FAILED", "CANCELLED"].includes(last.state)) break;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
      const iterations = task.status as any[];
      const moved = iterations.reduce((a, s) => a + Math.max(0, s.bytesDownloaded), 0);
      const files = iterations.reduce((a, s) => a + Math.max(0, s.filesDownloaded), 0);
      const state = iterations.at(-1).state as string;
      const seconds = (Date.now() - started) / 1000;
      progress.done(
        `${phase}: ${state} after ${iterations.length} iteration(s), ${formatBytes(moved)} in ${files} entries, ${seconds.toFixed(1)} s` +
          (state === "FAILED" ? ` (${iterations.at(-1).failureReason ?? "see logs"})` : ""),
      );
      rows.push({
        phase,
        seconds,
        detail: `${state}, ${iterations.length} iteration(s), threshold ${successThreshold}`,
        bytes: moved,
        files,
      });
      return state;
    };

    // Phase 1: initial copy while the source keeps writing.
    const tableDirs = await userTableDirs(datasetLayout(sourceRoot).dataDirs);
    writer = new SourceWriter(tableDirs);
    writer.start(150);
    await runCopy("1 initial copy", 0.9);
    await writer.stop();
    out(`writer: added ${writer.added} and removed ${writer.removed} SSTable sets on the source during phase 1`);
    writer = undefined;

    // Phase 2: the source is "stopped" (the writer stopped); the final sync must be exact.
    const finalState = await runCopy("2 final sync", 1.0);
    if (finalState !== "SUCCESS") throw new Error(`phase 2 ended ${finalState}; see ${base}/destination.log`);

    // Phase 3: verification, MD5 then XXHash32.
    let verification: any;
    for (const algorithm of ["MD5", "XXHash32"]) {
      t0 = Date.now();
      const created = expectStatus(
        await dest("POST", "/files-verification-tasks", { maxConcurrency: 10, digestAlgorithm: algorithm }),
        202,
        "POST /files-verification-tasks",
      ).json as { taskId: string };
      for (;;) {
        verification = expectStatus(await dest("GET", `/files-verification-tasks/${created.taskId}`), 200, "GET verification").json;
        progress.update(`3 verify ${algorithm}: ${verification.state} metadata ${verification.metadataMatched}, files ${verification.filesMatched}`);
        if (["COMPLETED", "FAILED", "CANCELLED"].includes(verification.state)) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      const v = verification;
      const failures = v.filesNotFoundAtSource + v.filesNotFoundAtDestination + v.metadataMismatches + v.digestMismatches + v.digestVerificationFailures;
      progress.done(`3 verify ${algorithm}: ${v.state}, ${v.metadataMatched} metadata matched, ${v.filesMatched} files matched, ${failures} failures`);
      rows.push({
        phase: `3 verify ${algorithm}`,
        seconds: (Date.now() - t0) / 1000,
        detail: `${v.state}: metadataMatched ${v.metadataMatched}, filesMatched ${v.filesMatched}, mismatches ${v.metadataMismatches}/${v.digestMismatches}, not found ${v.filesNotFoundAtSource}/${v.filesNotFoundAtDestination}, failures ${v.digestVerificationFailures}`,
        files: v.filesMatched,
      });
      if (v.state !== "COMPLETED" || failures !== 0) throw new Error(`verification ${algorithm} ended ${v.state}: ${JSON.stringify(v)}`);
    }

    // Phase 4: mark the migration complete on both hosts; further tasks are refused.
    t0 = Date.now();
    const srcDone = expectStatus(await src("POST", "/status"), 200, "POST /status on the source").json;
    expectStatus(await dest("POST", "/status"), 200, "POST /status on the destination");
    expectStatus(await dest("POST", "/data-copy-tasks", { maxIterations: 1, successThreshold: 1, maxConcurrency: 1 }), 400, "data copy after completion");
    expectStatus(await dest("POST", "/status"), 400, "second POST /status");
    rows.push({ phase: "4 mark complete", seconds: (Date.now() - t0) / 1000, detail: `COMPLETED at ${new Date(srcDone.endTime).toISOString()}; new tasks get 400` });
    out("4 mark complete: both hosts COMPLETED; a new data-copy task now gets 400");
    out("5 start the destination Cassandra: not ours (lm-sidecar manages no Cassandra process)");

    // Phase 6: decommission: restart both agents with an empty migration_map, clear the status.
    t0 = Date.now();
    for (const agent of agents.splice(0)) await agent.stop(1_000);
    source = await startAgent(SOURCE, sourceRoot, "source", {});
    destination = await startAgent(DESTINATION, destRoot, "destination", {});
    expectStatus(await dest("GET", "/data-copy-tasks"), 404, "data-copy route after decommission");
    expectStatus(await src("DELETE", "/status"), 200, "DELETE /status on the source");
    expectStatus(await dest("DELETE", "/status"), 200, "DELETE /status on the destination");
    expectStatus(await dest("DELETE", "/status"), 400, "second DELETE /status");
    rows.push({ phase: "6 decommission", seconds: (Date.now() - t0) / 1000, detail: "migration_map emptied: routes 404, status cleared" });
    out("6 decommission: migration_map emptied, Live Migration routes answer 404, status cleared on both hosts");

    out();
    out(renderTable(rows));
    if (options.keep) {
      out();
      out(`kept ${base}. The agents are stopped; restart them with:`);
      out(`  npx lm-sidecar serve --config ${base}/source.yaml &`);
      out(`  npx lm-sidecar serve --config ${base}/destination.yaml &`);
      out(`then explore (the migration_map is empty now; put "${SOURCE}": "${DESTINATION}" back in both files first):`);
      out(`  curl -s http://${SOURCE}:${gatewayPort}${API}/files | head -c 600`);
      out(`  curl -s http://${DESTINATION}:${gatewayPort}${API}/status`);
      out(`  curl -s -X POST http://${DESTINATION}:${gatewayPort}${API}/data-copy-tasks -H 'Content-Type: application/json' -d '{"maxIterations":3,"successThreshold":1.0,"maxConcurrency":10}'`);
      out(`  diff -r ${sourceRoot} ${destRoot}   # differs only by the excluded snapshots`);
    }
    void source;
    void destination;
    return 0;
  } catch (err) {
    progress.done(`demo failed: ${(err as Error).message}`);
    return 1;
  } finally {
    await writer?.stop();
    for (const agent of agents) await agent.stop(1_000);
    for (const s of logStreams) (s as { end?: () => void }).end?.();
    if (!options.keep) await rm(base, { recursive: true, force: true });
  }
}

function renderTable(rows: PhaseRow[]): string {
  const header = ["phase", "time", "bytes", "entries", "throughput", "result"];
  const body = rows.map((r) => [
    r.phase,
    `${r.seconds.toFixed(1)} s`,
    r.bytes === undefined ? "" : formatBytes(r.bytes),
    r.files === undefined ? "" : String(r.files),
    r.bytes === undefined || r.seconds === 0 || r.phase.startsWith("0") ? "" : `${formatBytes(r.bytes / r.seconds)}/s`,
    r.detail,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => "| " + cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ") + " |";
  return [line(header), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...body.map(line)].join("\n");
}
