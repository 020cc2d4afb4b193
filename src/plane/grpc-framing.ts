/**
 * Server messages framed where they were encoded, instead of copied behind their gRPC header.
 *
 * grpc-js sends every server message through BaseServerInterceptingCall.serializeMessage, which
 * copies the serialized message into a new buffer behind the 5-byte gRPC message header. On the
 * data plane that is one more copy of every byte a source sends: 0.38 s of the source's main
 * thread in a copy of the 4 GiB benchmark tree (`--cpu-prof`). codec.ts encodes the plane's
 * bulky responses (ReadFile data, ReadFiles, ListFiles) with FRAME_HEADER_BYTES of memory of
 * their own in front (`framable`); for those, the method below writes the header there and
 * hands grpc-js the same memory. Every other message is framed exactly as grpc-js frames it.
 *
 * This replaces a method of a grpc-js class that the package does not export as API, so it is
 * applied only to the grpc-js version it was checked against (GRPC_JS_VERSION, which
 * package.json pins); with any other version nothing is replaced, messages are copied as
 * before, and test/unit/grpc-framing.test.ts fails, so that an upgrade reviews this file.
 * grpc-js 1.14.7 never compresses server messages, hence the flag byte 0, as it writes.
 */
import { createRequire } from "node:module";
import { FRAME_HEADER_BYTES, framable } from "./codec.js";

/** The grpc-js version whose BaseServerInterceptingCall.serializeMessage this replaces. */
export const GRPC_JS_VERSION = "1.14.7";

interface ServerCall {
  readonly handler: { serialize(value: unknown): Buffer };
}

/** A message framed as grpc-js 1.14.7 frames it: the header, then a copy of the message. */
function frameByCopy(message: Buffer): Buffer {
  const framed = Buffer.allocUnsafe(message.byteLength + FRAME_HEADER_BYTES);
  framed[0] = 0;
  framed.writeUInt32BE(message.byteLength, 1);
  message.copy(framed, FRAME_HEADER_BYTES);
  return framed;
}

/** The replacement serializeMessage: in place for a framable message, else as grpc-js does. */
export function serializeMessage(this: ServerCall, value: unknown): Buffer {
  const message = this.handler.serialize(value);
  if (!framable.has(message)) return frameByCopy(message);
  const framed = Buffer.from(message.buffer, message.byteOffset - FRAME_HEADER_BYTES, message.byteLength + FRAME_HEADER_BYTES);
  framed[0] = 0;
  framed.writeUInt32BE(message.byteLength, 1);
  return framed;
}

let installed: boolean | undefined;

/**
 * Installs serializeMessage on grpc-js's server calls, once per process. Returns whether it is
 * installed: false with any grpc-js but GRPC_JS_VERSION, or if the method is not where it was.
 */
export function installInPlaceFraming(): boolean {
  if (installed !== undefined) return installed;
  installed = false;
  const require = createRequire(import.meta.url);
  const { version } = require("@grpc/grpc-js/package.json") as { version: string };
  if (version !== GRPC_JS_VERSION) return false;
  const { BaseServerInterceptingCall } = require("@grpc/grpc-js/build/src/server-interceptors.js") as {
    BaseServerInterceptingCall?: { prototype: { serializeMessage?: unknown } };
  };
  const prototype = BaseServerInterceptingCall?.prototype;
  if (typeof prototype?.serializeMessage !== "function") return false;
  prototype.serializeMessage = serializeMessage;
  installed = true;
  return true;
}
