import { expect, it } from "vitest";
import { BULK_WINDOW_MAX_BYTES, bulkWindowBytes, CLIENT_FLOW_CONTROL_WINDOW_BYTES } from "../../src/plane/client.js";

const MiB = 1024 * 1024;

it("keeps the default window up to a 5 ms round trip, grows it in whole MiB to the 20 MiB cap at 6.25 ms", () => {
  expect(CLIENT_FLOW_CONTROL_WINDOW_BYTES).toBe(16 * MiB);
  expect(BULK_WINDOW_MAX_BYTES).toBe(20 * MiB);
  for (const rttMs of [0, 0.2, 1, 4, 5]) expect(bulkWindowBytes(rttMs)).toBe(16 * MiB);
  expect(bulkWindowBytes(5.5)).toBe(18 * MiB); // 17.6 rounded up
  expect(bulkWindowBytes(6)).toBe(20 * MiB); // 19.2 rounded up
  for (const rttMs of [6.25, 10, 50, Number.POSITIVE_INFINITY]) expect(bulkWindowBytes(rttMs)).toBe(20 * MiB);
});
