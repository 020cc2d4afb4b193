import { describe, expect, it, vi } from "vitest";
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
    vi.useFakeTimers({ toFake: ["performance"] });
    try {
      const budget = new SyncBudget({ asyncFirstMs: 500, asyncMaxMs: 1000 });
      // Twenty calls that each took 5 ms: a slow window.
      const slowWindow = async () => {
        for (let i = 0; i < 20; i++) await budget.charge(performance.now() - 5);
      };
      const expectAsyncFor = (ms: number) => {
        expect(budget.fast).toBe(false);
        vi.advanceTimersByTime(ms - 1);
        expect(budget.fast).toBe(false);
        vi.advanceTimersByTime(1);
        expect(budget.fast).toBe(true);
      };
      await slowWindow();
      expectAsyncFor(500);
      await slowWindow();
      expectAsyncFor(1000);
      await slowWindow();
      expectAsyncFor(1000); // capped at asyncMaxMs
      // A fast window resets the period.
      for (let i = 0; i < 20; i++) await budget.charge(performance.now());
      expect(budget.fast).toBe(true);
      await slowWindow();
      expectAsyncFor(500);
    } finally {
      vi.useRealTimers();
    }
  });
});
