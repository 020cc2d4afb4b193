import { describe, expect, it } from "vitest";
import {
  IllegalStateTransitionError,
  isTerminal,
  nextState,
  OperationStatus,
} from "../../../src/migration/data-copy/operation-status.js";
import { DATA_COPY_STATES, type DataCopyState } from "../../../src/migration/task-api.js";

const ALLOWED: Record<DataCopyState, DataCopyState[]> = {
  STARTING: ["CLEANING", "FAILED", "CANCELLED"],
  CLEANING: ["PREPARING", "FAILED", "CANCELLED"],
  PREPARING: ["DOWNLOADING", "SUCCESS", "FAILED", "CANCELLED"],
  DOWNLOADING: ["DOWNLOAD_COMPLETE", "FAILED", "CANCELLED"],
  DOWNLOAD_COMPLETE: [],
  SUCCESS: [],
  FAILED: [],
  CANCELLED: [],
};

/** A status driven to `state` through allowed moves. */
function statusIn(state: DataCopyState, clock?: () => number): OperationStatus {
  const s = new OperationStatus(0, clock);
  const path: Record<DataCopyState, (s: OperationStatus) => void> = {
    STARTING: () => {},
    CLEANING: (x) => x.toCleaning(100, 5),
    PREPARING: (x) => (x.toCleaning(100, 5), x.toPreparing()),
    DOWNLOADING: (x) => (x.toCleaning(100, 5), x.toPreparing(), x.toDownloading(50, 2)),
    DOWNLOAD_COMPLETE: (x) => (x.toCleaning(100, 5), x.toPreparing(), x.toDownloading(50, 2), x.toDownloadComplete()),
    SUCCESS: (x) => (x.toCleaning(100, 5), x.toPreparing(), x.toSuccess()),
    FAILED: (x) => x.toFailed("boom"),
    CANCELLED: (x) => x.cancel(),
  };
  path[state](s);
  expect(s.state).toBe(state);
  return s;
}

function move(s: OperationStatus, to: DataCopyState): void {
  switch (to) {
    case "STARTING":
      throw new Error("no method moves to STARTING");
    case "CLEANING":
      return s.toCleaning(1, 1);
    case "PREPARING":
      return s.toPreparing();
    case "DOWNLOADING":
      return s.toDownloading(1, 1);
    case "DOWNLOAD_COMPLETE":
      return s.toDownloadComplete();
    case "SUCCESS":
      return s.toSuccess();
    case "FAILED":
      return s.toFailed("x");
    case "CANCELLED":
      return s.cancel();
  }
}

describe("OperationStatus state machine (§3.8)", () => {
  for (const from of DATA_COPY_STATES) {
    for (const to of DATA_COPY_STATES) {
      const allowed = ALLOWED[from].includes(to);
      const tolerated = from === "CANCELLED" && to === "FAILED";
      it(`${from} -> ${to}: ${allowed ? "allowed" : tolerated ? "tolerated, stays CANCELLED" : "rejected"}`, () => {
        if (allowed) expect(nextState(from, to)).toBe(to);
        else if (tolerated) expect(nextState(from, to)).toBe("CANCELLED");
        else {
          expect(() => nextState(from, to)).toThrow(IllegalStateTransitionError);
          expect(() => nextState(from, to)).toThrow(`Cannot move from ${from} state to ${to} state.`);
        }
        if (to !== "STARTING") {
          const s = statusIn(from);
          if (allowed || tolerated) {
            move(s, to);
            expect(s.state).toBe(tolerated ? "CANCELLED" : to);
          } else {
            expect(() => move(s, to)).toThrow(`Cannot move from ${from} state to ${to} state.`);
            expect(s.state).toBe(from);
          }
        }
      });
    }
  }

  it("terminal states are exactly those without moves", () => {
    expect(DATA_COPY_STATES.filter(isTerminal)).toEqual(["DOWNLOAD_COMPLETE", "SUCCESS", "FAILED", "CANCELLED"]);
  });

  it("starts with -1 sizes and 0 counters", () => {
    const v = new OperationStatus(3).view();
    expect(v).toEqual({
      iteration: 3,
      state: "STARTING",
      totalSize: -1,
      totalFiles: -1,
      bytesToDownload: -1,
      filesToDownload: -1,
      filesDownloaded: 0,
      downloadFailures: 0,
      bytesDownloaded: 0,
      bytesTransferred: 0,
      bytesPerSecond: 0,
      etaSeconds: -1,
    });
  });

  it("keeps bytesToDownload/filesToDownload at -1 on a no-op SUCCESS", () => {
    const v = statusIn("SUCCESS").view();
    expect(v).toMatchObject({ totalSize: 100, totalFiles: 5, bytesToDownload: -1, filesToDownload: -1, etaSeconds: 0 });
  });

  it("counts only in DOWNLOADING or CANCELLED, with the Java messages", () => {
    for (const state of DATA_COPY_STATES) {
      const s = statusIn(state);
      const ok = state === "DOWNLOADING" || state === "CANCELLED";
      const calls: [() => void, string][] = [
        [() => s.incrementFilesDownloaded(), "files downloaded"],
        [() => s.incrementDownloadFailures(), "download failures"],
        [() => s.addBytesDownloaded(10), "bytes downloaded"],
      ];
      for (const [call, name] of calls) {
        if (ok) expect(call).not.toThrow();
        else expect(call).toThrow(`Cannot increment ${name} when operation is in state ${state}`);
      }
    }
  });

  it("late completions after a cancel still count", () => {
    const s = statusIn("DOWNLOADING");
    s.cancel();
    s.incrementFilesDownloaded();
    s.addBytesDownloaded(7);
    s.toFailed("late failure");
    expect(s.view()).toMatchObject({ state: "CANCELLED", filesDownloaded: 1, bytesDownloaded: 7 });
    expect(s.view().failureReason).toBeUndefined();
  });

  it("entering DOWNLOADING sets the plan and resets counters", () => {
    const s = statusIn("PREPARING");
    s.toDownloading(50, 2);
    expect(s.view()).toMatchObject({ bytesToDownload: 50, filesToDownload: 2, filesDownloaded: 0, downloadFailures: 0, bytesDownloaded: 0 });
  });

  it("keeps the failure reason on FAILED only", () => {
    const s = statusIn("CLEANING");
    s.toFailed("listing exploded");
    expect(s.view().failureReason).toBe("listing exploded");
    expect(statusIn("SUCCESS").view().failureReason).toBeUndefined();
  });

  it("reports bytesTransferred, bytesPerSecond and etaSeconds", () => {
    let now = 1_000_000;
    const s = statusIn("PREPARING", () => now);
    s.toDownloading(10_000, 2);
    expect(s.view()).toMatchObject({ bytesTransferred: 0, bytesPerSecond: 0, etaSeconds: -1 });
    now += 1000;
    s.addTransferred(1000);
    // 1000 B/s; 9000 bytes left
    expect(s.view()).toMatchObject({ bytesTransferred: 1000, bytesPerSecond: 1000, etaSeconds: 9 });
    now += 1000;
    s.addTransferred(3000);
    s.adjustInFlight(-4000);
    s.incrementFilesDownloaded();
    s.addBytesDownloaded(4000);
    expect(s.view()).toMatchObject({ bytesTransferred: 4000, bytesDownloaded: 4000, bytesPerSecond: 2000, etaSeconds: 3 });
    // A resumed prefix is on disk without being transferred: it shortens the ETA, not the rate.
    s.adjustInFlight(2000);
    expect(s.view()).toMatchObject({ bytesTransferred: 4000, etaSeconds: 2 });
    now += 2000;
    s.toDownloadComplete();
    now += 10_000;
    // Phase average, frozen when the phase ended.
    expect(s.view()).toMatchObject({ bytesPerSecond: 1000, etaSeconds: 0 });
  });

  it("measures the rate over the last seconds only", () => {
    let now = 0;
    const s = statusIn("PREPARING", () => now);
    s.toDownloading(1e12, 1);
    for (let i = 0; i < 40; i++) {
      now += 250;
      s.addTransferred(i < 20 ? 250 : 2500); // 1 kB/s for 5 s, then 10 kB/s
    }
    expect(s.view().bytesPerSecond).toBeGreaterThan(9000);
  });
});
