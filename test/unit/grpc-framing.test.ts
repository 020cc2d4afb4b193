/**
 * In-place framing of the plane's bulky server messages (src/plane/grpc-framing.ts): installed
 * on the pinned grpc-js, the same bytes as grpc-js's own framing, and no copy for a message that
 * codec.ts encoded with room in front. The plane's integration tests then send real ReadFile,
 * ReadFiles and ListFiles streams through it.
 */
import { createRequire } from "node:module";
import { expect, it } from "vitest";
import { allocChunk, encodeReadFileResponse, FRAME_HEADER_BYTES, trimChunk } from "../../src/plane/codec.js";
import { GRPC_JS_VERSION, installInPlaceFraming, serializeMessage } from "../../src/plane/grpc-framing.js";
import { toReadFileData } from "../../src/plane/wire.js";

const require = createRequire(import.meta.url);

it("is installed on grpc-js's server calls: an upgrade of grpc-js must review grpc-framing.ts", () => {
  expect((require("@grpc/grpc-js/package.json") as { version: string }).version).toBe(GRPC_JS_VERSION);
  expect(installInPlaceFraming()).toBe(true);
  const { BaseServerInterceptingCall } = require("@grpc/grpc-js/build/src/server-interceptors.js");
  expect(BaseServerInterceptingCall.prototype.serializeMessage).toBe(serializeMessage);
});

/** grpc-js 1.14.7's own framing, for comparison. */
function grpcFrame(message: Buffer): Buffer {
  const output = Buffer.allocUnsafe(message.byteLength + 5);
  output.writeUInt8(0, 0);
  output.writeUInt32BE(message.byteLength, 1);
  message.copy(output, 5);
  return output;
}

it("frames a ReadFile chunk in its own memory, with grpc-js's bytes", () => {
  const chunk = allocChunk(300_000);
  chunk.fill(7);
  const data = trimChunk(chunk, 200_000);
  const message = encodeReadFileResponse(toReadFileData(data))!;
  const framed = serializeMessage.call({ handler: { serialize: () => message } }, undefined);
  expect(framed.buffer).toBe(chunk.buffer); // no copy
  expect(framed.byteOffset).toBe(message.byteOffset - FRAME_HEADER_BYTES);
  expect(framed.equals(grpcFrame(message))).toBe(true);
});

it("frames any other message by copy, with grpc-js's bytes", () => {
  const message = Buffer.alloc(10_000, 3); // its own memory, none in front
  const framed = serializeMessage.call({ handler: { serialize: () => message } }, undefined);
  expect(framed.buffer).not.toBe(message.buffer);
  expect(framed.equals(grpcFrame(message))).toBe(true);
});
