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

  it("goes async after a slow window, and reports errors either way", async () => {
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

  it("tries synchronous calls again after the async period, which doubles while windows stay slow", async () => {
    const budget = new SyncBudget({ asyncFirstMs: 40, asyncMaxMs: 80 });
    const slowWindow = async () => {
      for (let i = 0; i < 20; i++) await budget.charge(performance.now() - 5);
    };
    /** How long the budget stays async from now, in ms (polled every 5 ms). */
    const asyncFor = async () => {
      const started = performance.now();
      while (!budget.fast) await new Promise((resolve) => setTimeout(resolve, 5));
      return performance.now() - started;
    };
    await slowWindow();
    expect(budget.fast).toBe(false);
    expect(await asyncFor()).toBeGreaterThanOrEqual(35);
    // Synchronous again; another slow window: twice as long.
    await slowWindow();
    expect(await asyncFor()).toBeGreaterThanOrEqual(75);
    // Capped at asyncMaxMs.
    await slowWindow();
    const capped = await asyncFor();
    expect(capped).toBeGreaterThanOrEqual(75);
    expect(capped).toBeLessThan(160);
    // A fast window resets the period to the first one.
    for (let i = 0; i < 20; i++) await budget.charge(performance.now());
    await slowWindow();
    const reset = await asyncFor();
    expect(reset).toBeGreaterThanOrEqual(35);
    expect(reset).toBeLessThan(75);
  });
});
