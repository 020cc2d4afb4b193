/**
 * The installed command `lm-sidecar` (src/cli/lm-sidecar.sh) as an operator or systemd runs it.
 * It starts the built agent (dist/src/main.js: `npm ci` builds it through `prepare`).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterEach, expect, it } from "vitest";
import { agentYaml, DEST_HOST, freePort, REPO_ROOT, SOURCE_HOST, sideLayout } from "../helpers/agents.js";
import { makeTempDir, removeTempDirs } from "../helpers/tree.js";

const LAUNCHER = path.join(REPO_ROOT, "src/cli/lm-sidecar.sh");
const OUR_TUNABLES = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864";

/** Agents started by a test: killed afterwards if the test failed before stopping them. */
const started: ChildProcess[] = [];
afterEach(async () => {
  for (const child of started.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await removeTempDirs();
});

it("lm-sidecar execs the agent under its own PID with the malloc tunables (the operator's come last), and SIGTERM stops it cleanly", async () => {
  expect(existsSync(path.join(REPO_ROOT, "dist/src/main.js")), "run npm run build first").toBe(true);
  const base = await makeTempDir("lm-launcher-");
  const layout = sideLayout(base, "source");
  for (const dir of [...layout.dataDirs, layout.commitlogDir, layout.hintsDir, layout.savedCachesDir]) await mkdir(dir, { recursive: true });
  const gatewayPort = await freePort();
  const peerPort = await freePort([SOURCE_HOST, DEST_HOST], [gatewayPort]);
  const configFile = path.join(base, "sidecar.yaml");
  await writeFile(configFile, agentYaml({ host: SOURCE_HOST, layout, gatewayPort, peerPort, migrationMap: { [SOURCE_HOST]: DEST_HOST } }));

  // A `node` first on PATH that records the environment it was given, then becomes the real node
  // (glibc rewrites GLIBC_TUNABLES in /proc/<pid>/environ while parsing it, so that cannot tell).
  const bin = path.join(base, "bin");
  const record = path.join(base, "tunables.txt");
  await mkdir(bin);
  await writeFile(path.join(bin, "node"), `#!/bin/sh\nprintf '%s' "$GLIBC_TUNABLES" > '${record}'\nexec '${process.execPath}' "$@"\n`, { mode: 0o755 });
  const child = spawn(LAUNCHER, ["serve", "--config", configFile], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, PATH: `${bin}:${process.env["PATH"] ?? ""}`, LOG_LEVEL: "info", GLIBC_TUNABLES: "glibc.malloc.arena_max=2" },
  });
  started.push(child);
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no "lm-sidecar started" within 20 s:\n${output}`)), 20_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes('"lm-sidecar started"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    void exited.then(({ code }) => reject(new Error(`exited with ${code} while starting:\n${output}`)));
  });

  // exec all the way: the PID the caller holds is the agent (node) itself, not a wrapping shell.
  expect(readFileSync(`/proc/${child.pid}/comm`, "utf8").trim()).toBe("node");
  expect(readFileSync(record, "utf8")).toBe(`${OUR_TUNABLES}:glibc.malloc.arena_max=2`);
  const status = await fetch(`http://${SOURCE_HOST}:${gatewayPort}/api/v1/live-migration/status`);
  expect(status.status).toBe(200);
  expect(await status.json()).toMatchObject({ state: "NOT_COMPLETED" });

  child.kill("SIGTERM");
  expect(await exited).toEqual({ code: 0, signal: null });
});

it("an agent whose stdout cannot be written (a log file on a full disk: /dev/full, ENOSPC) keeps serving, says so once on stderr, and stops cleanly", async () => {
  expect(existsSync(path.join(REPO_ROOT, "dist/src/main.js")), "run npm run build first").toBe(true);
  const base = await makeTempDir("lm-fulllog-");
  const layout = sideLayout(base, "source");
  for (const dir of [...layout.dataDirs, layout.commitlogDir, layout.hintsDir, layout.savedCachesDir]) await mkdir(dir, { recursive: true });
  const gatewayPort = await freePort();
  const peerPort = await freePort([SOURCE_HOST, DEST_HOST], [gatewayPort]);
  const configFile = path.join(base, "sidecar.yaml");
  await writeFile(configFile, agentYaml({ host: SOURCE_HOST, layout, gatewayPort, peerPort, migrationMap: { [SOURCE_HOST]: DEST_HOST } }));

  const full = openSync("/dev/full", "w");
  const child = spawn(LAUNCHER, ["serve", "--config", configFile], { stdio: ["ignore", full, "pipe"], env: { ...process.env, LOG_LEVEL: "debug" } });
  started.push(child);
  closeSync(full);
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  let stderr = "";
  if (!child.stderr) throw new Error("stderr is not piped");
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));

  // Up when it answers; every request below logs (debug), and every line fails to be written.
  const url = `http://${SOURCE_HOST}:${gatewayPort}/api/v1/live-migration/status`;
  const deadline = Date.now() + 20_000;
  let status: Response | undefined;
  while (!status) {
    status = await fetch(url).catch(() => undefined);
    if (!status) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error(`agent not up within 20 s (exit ${child.exitCode}):\n${stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  expect(status.status).toBe(200);
  for (let i = 0; i < 20; i++) {
    const again = await fetch(url);
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ state: "NOT_COMPLETED" });
  }
  expect(child.exitCode).toBeNull();
  expect(stderr.match(/cannot write the log to stdout \(ENOSPC\)/g)).toHaveLength(1);

  child.kill("SIGTERM");
  expect(await exited).toEqual({ code: 0, signal: null });
});
