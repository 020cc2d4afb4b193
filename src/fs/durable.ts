/**
 * Durability for many small files, or many directories, at once.
 *
 * One fsync per file costs a journal commit each: on the reference machine ~1.3 ms per small
 * file, more than writing it. syncFiles makes a whole batch of just-written files durable with
 * one syncfs(2) of their filesystem instead. syncfs writes back and waits for every dirty page
 * and inode of the filesystem and flushes the device cache, so each file is exactly as durable
 * as after its own fsync. syncDirectories does the same for the renames into many directories.
 * Where syncfs cannot run, every path is fsynced instead.
 *
 * Node has no syncfs binding, so coreutils' `sync -f` does it, run by one long-lived `/bin/sh`
 * (SyncfsShell): forking the agent itself for every call costs ~20 ms of main-thread CPU at a
 * few hundred MB of RSS (its page tables are copied), forking a small shell well under 1 ms.
 * Calls that arrive while a syncfs runs are merged into the next one (group commit).
 */
import { spawn, type ChildProcessByStdio } from "node:child_process";
import { statSync } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import type { Readable, Writable } from "node:stream";
import pLimit from "p-limit";
import { ParentCache } from "./parent-dir.js";

/** fsyncs per fallback batch at once (the thread pool has 4 threads). */
const FSYNC_PARALLELISM = 4;

/** A syncfs that takes longer than this is given up (the helper is killed) and files are fsynced one by one. */
const SYNCFS_TIMEOUT_MS = 120_000;

/**
 * Reads directories, one per line, up to an empty line; runs one `sync -f` over them and
 * answers `ok` or `fail` on its own line. POSIX sh (dash on Debian).
 */
const SYNCFS_LOOP =
  'while IFS= read -r d; do if [ -z "$d" ]; then if sync -f -- "$@"; then echo ok; else echo fail; fi; set --; ' +
  'else set -- "$@" "$d"; fi; done';

interface SyncWaiter {
  readonly dirs: readonly string[];
  readonly resolve: (ok: boolean) => void;
}

/** The long-lived shell that runs `sync -f` for this process, with group commit. */
class SyncfsShell {
  private child: ChildProcessByStdio<Writable, Readable, null> | undefined;
  /** False once the shell could not start or died: every later call answers false. */
  private usable = true;
  private waiting: SyncWaiter[] = [];
  private inFlight: SyncWaiter[] = [];
  private timer: NodeJS.Timeout | undefined;
  private output = "";

  /** syncfs of the filesystems holding `dirs`; false when that could not be done. */
  sync(dirs: readonly string[]): Promise<boolean> {
    if (!this.usable) return Promise.resolve(false);
    return new Promise((resolve) => {
      this.waiting.push({ dirs, resolve });
      if (this.inFlight.length === 0) this.sendWaiting();
    });
  }

  private start(): ChildProcessByStdio<Writable, Readable, null> | undefined {
    if (this.child) return this.child;
    try {
      const child = spawn("/bin/sh", ["-c", SYNCFS_LOOP], { stdio: ["pipe", "pipe", "ignore"] });
      child.on("error", () => this.fail());
      child.on("exit", () => this.fail());
      child.stdin.on("error", () => this.fail());
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (text: string) => this.onOutput(text));
      child.unref();
      this.child = child;
      this.setReferenced(false);
      return child;
    } catch {
      this.fail();
      return undefined;
    }
  }

  /** Sends every waiting call as one syncfs. */
  private sendWaiting(): void {
    if (this.waiting.length === 0) return;
    const child = this.start();
    if (!child) return;
    this.inFlight = this.waiting;
    this.waiting = [];
    const dirs = new Set(this.inFlight.flatMap((waiter) => waiter.dirs.map((dir) => path.resolve(dir))));
    this.setReferenced(true);
    this.timer = setTimeout(() => this.fail(), SYNCFS_TIMEOUT_MS);
    child.stdin.write(`${[...dirs].join("\n")}\n\n`);
  }

  private onOutput(text: string): void {
    this.output += text;
    for (let newline = this.output.indexOf("\n"); newline >= 0; newline = this.output.indexOf("\n")) {
      const answer = this.output.slice(0, newline);
      this.output = this.output.slice(newline + 1);
      this.settle(answer === "ok");
    }
  }

  private settle(ok: boolean): void {
    clearTimeout(this.timer);
    const done = this.inFlight;
    this.inFlight = [];
    for (const waiter of done) waiter.resolve(ok);
    if (this.waiting.length > 0) this.sendWaiting();
    else this.setReferenced(false);
  }

  /** The shell is gone or hung: everything pending and every later call answers false. */
  private fail(): void {
    if (!this.usable) return;
    this.usable = false;
    clearTimeout(this.timer);
    this.child?.kill("SIGKILL");
    for (const waiter of [...this.inFlight, ...this.waiting]) waiter.resolve(false);
    this.inFlight = [];
    this.waiting = [];
  }

  /** Keeps the process alive only while a syncfs is awaited. */
  private setReferenced(referenced: boolean): void {
    for (const stream of [this.child?.stdin, this.child?.stdout] as ({ ref?(): void; unref?(): void } | undefined)[]) {
      if (referenced) stream?.ref?.();
      else stream?.unref?.();
    }
  }
}

/**
 * One of `dirs` per filesystem: `sync -f` calls syncfs once per argument, and a group of files
 * spans dozens of table directories, usually of one filesystem. Empty when the paths must be
 * fsynced one by one instead.
 */
function oneDirPerFileSystem(dirs: Iterable<string>): string[] {
  const byDevice = new Map<number, string>();
  for (const dir of dirs) {
    // The shell reads one directory per line: a name with a newline cannot be sent (never the case for Cassandra dirs).
    if (dir.includes("\n")) return [];
    let device: number;
    try {
      device = statSync(dir).dev;
    } catch {
      return []; // a directory went away: the paths cannot all be synced, let fsync say which
    }
    if (!byDevice.has(device)) byDevice.set(device, dir);
  }
  return [...byDevice.values()];
}

let shell: SyncfsShell | undefined;

/** Whether syncfs worked so far: undefined until tried, false after a failure. */
let syncfsWorks: boolean | undefined;

/**
 * Makes `files` durable: data, size and times, as fsync would.
 * @throws the fs error when a fallback fsync fails.
 */
export function syncFiles(files: readonly string[]): Promise<void> {
  return syncPaths(files, () => {
    const parents = new ParentCache();
    return new Set(files.map((file) => parents.of(file)));
  });
}

/**
 * Makes the entries of `dirs` durable (renames and unlinks in them), as an fsync of each
 * directory would: one syncfs per filesystem instead of three thread-pool calls and a disk
 * write per directory (a small-tree copy renames into ~500 directories: 0.2-0.26 s of fsyncs).
 * @throws the fs error when a fallback fsync fails.
 */
export function syncDirectories(dirs: readonly string[]): Promise<void> {
  return syncPaths(dirs, () => dirs);
}

/** syncfs of the filesystems of `syncfsDirs()`, or else an fsync of each of `paths`. */
async function syncPaths(paths: readonly string[], syncfsDirs: () => Iterable<string>): Promise<void> {
  if (paths.length === 0) return;
  const dirs = syncfsWorks === false ? [] : oneDirPerFileSystem(syncfsDirs());
  if (dirs.length > 0) {
    shell ??= new SyncfsShell();
    const ok = await shell.sync(dirs);
    if (syncfsWorks === undefined) syncfsWorks = ok;
    if (ok) return;
  }
  const limit = pLimit(FSYNC_PARALLELISM);
  await Promise.all(
    paths.map((file) =>
      limit(async () => {
        const handle = await open(file, "r");
        try {
          await handle.sync();
        } finally {
          await handle.close();
        }
      }),
    ),
  );
}
