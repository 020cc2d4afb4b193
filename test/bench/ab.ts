/**
 * `npm run ab` — interleaved copies of one generated tree by two or more builds of the agent:
 * how test/bench/FINDINGS.md's A/B figures are taken. The benchmark (bench.ts) compares
 * lm-sidecar with its peers; this compares lm-sidecar with itself, with enough rounds to see
 * through this machine's ±10–20 % swings.
 *
 * Each variant NAME=CHECKOUT is a checkout with dist/ built (a `git worktree` of another
 * commit, with node_modules linked, then `npm run build` there); its agents run through that
 * checkout's launcher, each variant on its own port pair. Per variant one source agent serves
 * the tree for every round, warm like a source that has served earlier passes. Per round, the
 * variants' order alternating: the source tree is read (the kernel pages out what was idle for
 * a minute, README "Benchmark"), then a fresh destination agent copies the tree into an empty
 * destination, through the REST API (maxIterations 3, successThreshold 1.0, maxConcurrency 10,
 * as the benchmark does), and the figure runs from the POST to the destination's log line for
 * SUCCESS: the files are then durable, so no `sync` follows.
 *
 * --dest-fs loop (as root, the default then) puts each copy on an ext4 without a journal made
 * afresh over a preallocated image: no copy meets the filesystem's memory of an earlier one's
 * deletions (settle.ts), and `mkfs -E nodiscard` frees no block of the host's filesystem that
 * would slow the next. --dest-fs dir uses a directory under --work instead, emptied per round:
 * large trees only (few files), or expect the first rounds after a deletion to be slow.
 */
import { execFileSync } from "node:child_process";
import { existsSync, openSync, closeSync, readSync, readdirSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { generateDataset, type DatasetProfile } from "../../src/dataset/generate.js";
import { parseEnvOption, parseVariant, renderSummary, roundOrder, summarize, type AbRound, type Variant } from "./ab-report.js";
import {
  AgentMeter,
  AgentProcess,
  agentConfigYaml,
  builtEntryOf,
  DEST_HOST,
  DestinationApi,
  freePort,
  makeAgentDirs,
  PROXIED_SOURCE_HOST,
  SOURCE_HOST,
  type AgentPorts,
  type Side,
} from "./agents.js";
import { startDelayProxy, type DelayProxy } from "./delay-proxy.js";

const USAGE = `usage: npm run ab -- [options] NAME=CHECKOUT NAME=CHECKOUT [...]

  --profile small|large|tiny   dataset (default small)
  --rounds N                   copies per variant (default 10)
  --work DIR                   dataset, logs and destinations (default $TMPDIR/lm-ab-<profile>)
  --dest-fs loop|dir           destination on a fresh ext4 per copy (needs root; the default as root) or in --work
  --env NAME:KEY=VALUE         environment for NAME's agents (repeatable), e.g. exp:GLIBC_TUNABLES=...
  --rtt-ms N                   copy through the benchmark's delay proxy, N ms round trip (default 0: none)
  --out FILE                   every round as JSON
  -h, --help

Each CHECKOUT needs dist/ built (npm run build). Example, this checkout against its last commit:
  git worktree add /tmp/wt-head HEAD && ln -s "$PWD/node_modules" /tmp/wt-head/ && (cd /tmp/wt-head && npm run build)
  npm run ab -- --rounds 10 head=/tmp/wt-head work=.`;

interface AbOptions {
  readonly profile: DatasetProfile;
  readonly rounds: number;
  readonly workDir: string;
  readonly loopFs: boolean;
  readonly variants: Variant[];
  readonly rttMs: number;
  readonly out?: string;
}

function parseOptions(argv: string[]): AbOptions | undefined {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      profile: { type: "string", default: "small" },
      rounds: { type: "string", default: "10" },
      work: { type: "string" },
      "dest-fs": { type: "string" },
      env: { type: "string", multiple: true, default: [] },
      "rtt-ms": { type: "string", default: "0" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return undefined;
  }
  const profile = values.profile as DatasetProfile;
  if (!["large", "small", "tiny"].includes(profile)) throw new Error(`unknown profile ${profile}`);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error("--rounds must be an integer >= 1");
  const destFs = values["dest-fs"] ?? (process.getuid?.() === 0 ? "loop" : "dir");
  if (destFs !== "loop" && destFs !== "dir") throw new Error("--dest-fs must be loop or dir");
  const rttMs = Number(values["rtt-ms"]);
  if (!(rttMs >= 0)) throw new Error("--rtt-ms must be a number >= 0");
  const variants = positionals.map(parseVariant).map((v) => ({ ...v, checkout: path.resolve(v.checkout) }));
  if (variants.length === 0) throw new Error("name at least one variant: NAME=CHECKOUT");
  if (new Set(variants.map((v) => v.name)).size !== variants.length) throw new Error("variant names must differ");
  for (const option of values.env) {
    const { name, key, value } = parseEnvOption(option);
    const variant = variants.find((v) => v.name === name);
    if (!variant) throw new Error(`--env ${option}: no variant named ${name}`);
    variant.env[key] = value;
  }
  return {
    profile,
    rounds,
    workDir: path.resolve(values.work ?? path.join(os.tmpdir(), `lm-ab-${profile}`)),
    loopFs: destFs === "loop",
    variants,
    rttMs,
    out: values.out,
  };
}

const log = (msg: string) => process.stderr.write(`[ab ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);

/** The dataset under `root`, generated unless a previous run left one of this profile. @returns its bytes */
async function prepareDataset(workDir: string, root: string, profile: DatasetProfile): Promise<number> {
  const stampFile = path.join(workDir, "source.stamp.json");
  try {
    const stamp = JSON.parse(await readFile(stampFile, "utf8")) as { profile: string; uniqueBytes: number };
    if (stamp.profile === profile && existsSync(root)) return stamp.uniqueBytes;
  } catch {
    // no usable stamp: generate
  }
  await rm(root, { recursive: true, force: true });
  log(`generating the ${profile} dataset in ${root}`);
  const summary = await generateDataset(root, { profile });
  await writeFile(stampFile, JSON.stringify({ profile, uniqueBytes: summary.uniqueBytes }));
  return summary.uniqueBytes;
}

/** Reads every file under `root` once (the page cache's copy is what every copy reads). */
function readTree(root: string, buffer = Buffer.allocUnsafe(1 << 20)): void {
  for (const entry of readdirSync(root, { withFileTypes: true })) {
    const p = path.join(root, entry.name);
    if (entry.isDirectory()) readTree(p, buffer);
    else if (entry.isFile()) {
      const fd = openSync(p, "r");
      try {
        while (readSync(fd, buffer, 0, buffer.length, null) > 0);
      } finally {
        closeSync(fd);
      }
    }
  }
}

/** Where each copy lands: a fresh ext4 per copy over one preallocated image, or a directory emptied per copy. */
class DestinationFs {
  private readonly image: string;
  readonly mountPoint: string;

  constructor(
    workDir: string,
    private readonly loop: boolean,
    private readonly imageBytes: number,
  ) {
    this.image = path.join(workDir, "dest.img");
    this.mountPoint = path.join(workDir, loop ? "dest-mnt" : "dest-dir");
  }

  /** An empty filesystem (or directory) at mountPoint. */
  async fresh(): Promise<void> {
    if (!this.loop) {
      await rm(this.mountPoint, { recursive: true, force: true });
      await mkdir(this.mountPoint, { recursive: true });
      return;
    }
    this.unmount();
    await mkdir(this.mountPoint, { recursive: true });
    if (!existsSync(this.image)) execFileSync("fallocate", ["-l", String(this.imageBytes), this.image]);
    execFileSync("mkfs.ext4", ["-q", "-F", "-E", "nodiscard", "-O", "^has_journal", this.image]);
    execFileSync("mount", ["-o", "loop", this.image, this.mountPoint]);
  }

  unmount(): void {
    if (this.loop) execFileSync("sh", ["-c", `umount ${JSON.stringify(this.mountPoint)} 2>/dev/null || true`]);
  }

  async remove(): Promise<void> {
    this.unmount();
    await rm(this.loop ? this.image : this.mountPoint, { recursive: true, force: true });
  }
}

async function main(argv: string[]): Promise<number> {
  let o: AbOptions | undefined;
  try {
    o = parseOptions(argv);
  } catch (err) {
    process.stderr.write(`ab: ${(err as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  if (!o) return 0;
  if (process.platform !== "linux") {
    process.stderr.write("ab: needs Linux (/proc for CPU and memory, 127.0.0.2 on loopback)\n");
    return 2;
  }
  for (const v of o.variants) {
    const built = builtEntryOf(path.join(v.checkout, "src/cli/lm-sidecar.sh"));
    if (!existsSync(built)) {
      process.stderr.write(`ab: ${v.name}: ${built} is missing; run \`npm run build\` in ${v.checkout}\n`);
      return 2;
    }
  }
  await mkdir(o.workDir, { recursive: true });
  const sourceRoot = path.join(o.workDir, "source");
  const datasetBytes = await prepareDataset(o.workDir, sourceRoot, o.profile);
  // Room for the copy, its staging and ext4's own metadata.
  const destFs = new DestinationFs(o.workDir, o.loopFs, Math.max(3 * 2 ** 30, Math.ceil((datasetBytes * 1.5) / 2 ** 30) * 2 ** 30));
  const destSide: Side = { name: "dest", root: path.join(destFs.mountPoint, "dest"), stagingDir: path.join(destFs.mountPoint, "staging") };
  // Behind the delay proxy the destination reaches its source at PROXIED_SOURCE_HOST, as in the benchmark.
  const sourceInstanceHost = o.rttMs > 0 ? PROXIED_SOURCE_HOST : SOURCE_HOST;
  const migrationMap = { [sourceInstanceHost]: DEST_HOST };
  const addresses = o.rttMs > 0 ? [SOURCE_HOST, DEST_HOST, PROXIED_SOURCE_HOST] : [SOURCE_HOST, DEST_HOST];
  const proxies: DelayProxy[] = [];

  interface Running {
    readonly variant: Variant;
    readonly ports: AgentPorts;
    readonly source: AgentProcess;
  }
  const running: Running[] = [];
  const rounds: AbRound[] = [];
  try {
    const used: number[] = [];
    for (const variant of o.variants) {
      const gateway = await freePort(addresses, used);
      const peer = await freePort(addresses, [...used, gateway]);
      used.push(gateway, peer);
      const ports = { gateway, peer };
      const side: Side = { name: "source", root: sourceRoot, stagingDir: path.join(o.workDir, `source-staging-${variant.name}`) };
      await mkdir(side.stagingDir, { recursive: true });
      const source = new AgentProcess({
        label: `${variant.name} source`,
        agentMain: path.join(variant.checkout, "src/cli/lm-sidecar.sh"),
        configFile: path.join(o.workDir, `source-${variant.name}.yaml`),
        logFile: path.join(o.workDir, `source-${variant.name}.log`),
        bindHost: SOURCE_HOST,
        ports,
        logLevel: "info",
        env: variant.env,
      });
      await source.start(agentConfigYaml(side, sourceInstanceHost, SOURCE_HOST, ports, migrationMap));
      running.push({ variant, ports, source });
      if (o.rttMs > 0) {
        for (const port of [gateway, peer]) {
          proxies.push(await startDelayProxy({ listenHost: PROXIED_SOURCE_HOST, listenPort: port, targetHost: SOURCE_HOST, targetPort: port, oneWayDelayMs: o.rttMs / 2 }));
        }
      }
    }
    log(`source agents up${o.rttMs > 0 ? `, behind ${o.rttMs} ms of round trip` : ""}; ${o.rounds} round(s) of ${o.variants.map((v) => v.name).join(", ")}`);

    for (let round = 0; round < o.rounds; round++) {
      for (const { variant, ports, source } of roundOrder(running, round)) {
        await destFs.fresh();
        await makeAgentDirs(destSide);
        readTree(sourceRoot);
        const logFile = path.join(o.workDir, `dest-${variant.name}-${round}.log`);
        const dest = new AgentProcess({
          label: `${variant.name} destination`,
          agentMain: path.join(variant.checkout, "src/cli/lm-sidecar.sh"),
          configFile: path.join(o.workDir, `dest-${variant.name}.yaml`),
          logFile,
          bindHost: DEST_HOST,
          ports,
          logLevel: "info",
          env: variant.env,
        });
        await dest.start(agentConfigYaml(destSide, DEST_HOST, DEST_HOST, ports, migrationMap));
        try {
          const meters = [new AgentMeter(source), new AgentMeter(dest)] as const;
          await Promise.all(meters.map((m) => m.begin()));
          const startedAt = Date.now(); // the wall clock, as in the agent's log
          const outcome = await new DestinationApi(`http://${DEST_HOST}:${ports.gateway}`, logFile).dataCopy(600_000);
          const endedAt = await outcome.endedAt();
          if (endedAt === undefined) throw new Error(`no SUCCESS line in ${logFile}`);
          const [sourceUse, destUse] = await Promise.all(meters.map((m) => m.end()));
          const r: AbRound = {
            round,
            variant: variant.name,
            seconds: (endedAt - startedAt) / 1000,
            destinationCpuSeconds: destUse?.cpuSeconds ?? Number.NaN,
            sourceCpuSeconds: sourceUse?.cpuSeconds ?? Number.NaN,
            destinationPeakRssBytes: destUse?.peakRssBytes ?? Number.NaN,
          };
          rounds.push(r);
          log(
            `round ${round} ${variant.name}: ${r.seconds.toFixed(3)} s, destination CPU ${r.destinationCpuSeconds.toFixed(2)} s, ` +
              `source CPU ${r.sourceCpuSeconds.toFixed(2)} s, destination peak ${(r.destinationPeakRssBytes / 1e6).toFixed(0)} MB`,
          );
        } catch (err) {
          log(`round ${round} ${variant.name}: FAILED: ${(err as Error).message}`);
        } finally {
          await dest.stop();
        }
      }
    }
  } finally {
    await Promise.all(proxies.map((p) => p.close()));
    await Promise.all(running.map((r) => r.source.stop()));
    await destFs.remove();
  }
  const summary = summarize(rounds, o.variants.map((v) => v.name));
  process.stdout.write(`${renderSummary(summary)}\n`);
  if (o.out) {
    await writeFile(o.out, JSON.stringify({ profile: o.profile, loopFs: o.loopFs, rttMs: o.rttMs, variants: o.variants, rounds, summary }, null, 2));
    log(`wrote ${o.out}`);
  }
  return rounds.length === o.rounds * o.variants.length ? 0 : 1;
}

process.exitCode = await main(process.argv.slice(2));
