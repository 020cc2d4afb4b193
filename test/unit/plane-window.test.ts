import { expect, it } from "vitest";
import { BULK_WINDOW_MAX_BYTES, bulkWindowBytes, CLIENT_FLOW_CONTROL_WINDOW_BYTES } from "../../src/plane/client.js";

const MiB = 1024 * 1024;

it("keeps the default window up to a 5 ms round trip, grows it in whole MiB to the cap at 10 ms", () => {
  expect(CLIENT_FLOW_CONTROL_WINDOW_BYTES).toBe(16 * MiB);
  expect(BULK_WINDOW_MAX_BYTES).toBe(32 * MiB);
  for (const rttMs of [0, 0.2, 1, 4, 5]) expect(bulkWindowBytes(rttMs)).toBe(16 * MiB);
  expect(bulkWindowBytes(6)).toBe(20 * MiB); // 19.2 rounded up
  expect(bulkWindowBytes(7.5)).toBe(24 * MiB);
  for (const rttMs of [10, 50, Number.POSITIVE_INFINITY]) expect(bulkWindowBytes(rttMs)).toBe(32 * MiB);
});
