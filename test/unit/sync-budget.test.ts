import { describe, expect, it } from "vitest";
import { SyncBudget } from "../../src/fs/sync-budget.js";

function busyWait(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

describe("SyncBudget", () => {
  it("runs cheap calls synchronously and gives the event loop a turn every slice", async () => {
    const budget = new SyncBudget();
    let immediates = 0;
    const tick = () => {
      immediates++;
      if (!stop) setImmediate(tick);
    };
    let stop = false;
    setImmediate(tick);
    let sync = 0;
    const started = performance.now();
    while (performance.now() - started < 60) {
      await budget.run(
        () => {
          sync++;
          busyWait(0.02);
        },
        async () => expect.unreachable("a cheap call went async"),
      );
    }
    stop = true;
    expect(budget.fast).toBe(true);
    expect(sync).toBeGreaterThan(500);
    // 60 ms of synchronous work in 10 ms slices: the loop ran in between.
    expect(immediates).toBeGreaterThanOrEqual(4);
  });

  it("goes async for good once a slice shows slow calls, and reports errors either way", async () => {
    const budget = new SyncBudget();
    let syncCalls = 0;
    let asyncCalls = 0;
    for (let i = 0; i < 40; i++) {
      await budget.run(
        () => {
          syncCalls++;
          busyWait(1.5);
        },
        async () => {
          asyncCalls++;
        },
      );
    }
    expect(budget.fast).toBe(false);
    expect(syncCalls).toBe(20);
    expect(asyncCalls).toBe(40 - syncCalls);
    await expect(budget.run(() => 1, () => Promise.reject(new Error("async failure")))).rejects.toThrow("async failure");
    const fresh = new SyncBudget();
    await expect(fresh.run(() => { throw new Error("sync failure"); }, async () => 1)).rejects.toThrow("sync failure");
  });
});
