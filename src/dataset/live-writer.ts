/**
 * A stand-in for a live Cassandra node writing to its data directories: it adds SSTable sets
 * (as flushes do) and retires older ones (as compactions do). The demo and the walkthrough
 * test run it on the source during phase 1.
 */
import { readdir } from "node:fs/promises";
import path from "node:path";
import { removeSstableSet, writeSstableSet } from "./generate.js";

/** Up to `limit` table directories of non-system keyspaces under the data dirs. */
export async function userTableDirs(dataDirs: readonly string[], limit = 8): Promise<string[]> {
  const dirs: string[] = [];
  for (const dataDir of dataDirs) {
    for (const ks of await readdir(dataDir, { withFileTypes: true })) {
      if (!ks.isDirectory() || ks.name.startsWith("system")) continue;
      for (const table of await readdir(path.join(dataDir, ks.name), { withFileTypes: true })) {
        if (table.isDirectory()) dirs.push(path.join(dataDir, ks.name, table.name));
      }
    }
  }
  return dirs.slice(0, limit);
}

/** Adds and removes SSTable sets on the live source, as flushes and compactions would. */
export class SourceWriter {
  private timer: NodeJS.Timeout | undefined;
  private gen = 900_000;
  private readonly written: number[] = [];
  private busy = false;
  added = 0;
  removed = 0;

  constructor(private readonly tableDirs: string[]) {}

  start(intervalMs: number): void {
    this.timer = setInterval(() => void this.tick(), intervalMs);
  }

  private async tick(): Promise<void> {
    if (this.busy || this.tableDirs.length === 0) return;
    this.busy = true;
    try {
      const dir = this.tableDirs[this.gen % this.tableDirs.length]!;
      await writeSstableSet(dir, this.gen, 256 * 1024 + (this.gen % 7) * 64 * 1024, this.gen);
      this.written.push(this.gen++);
      this.added++;
      if (this.written.length > 3) {
        const old = this.written.shift()!;
        await removeSstableSet(this.tableDirs[old % this.tableDirs.length]!, old);
        this.removed++;
      }
    } finally {
      this.busy = false;
    }
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    while (this.busy) await new Promise((r) => setTimeout(r, 10));
  }
}
