#!/usr/bin/env node
/** Process entry: process-wide settings, then argv → command → exit code. */
// First, so that V8's settings apply to every module loaded after it (imports run in order).
import "./v8-settings.js";
import { setDefaultHighWaterMark } from "node:stream";
import { run } from "./cli/run.js";

// grpc-js buffers up to highWaterMark messages per call on each side, beyond HTTP/2 flow
// control: with 1 MiB messages and Node's default of 16, ten parallel transfers could hold
// 160 MiB per agent. Two messages keep the pipe full (the 16 MiB window holds the rest in
// flight) and memory flat.
setDefaultHighWaterMark(true, 2);

process.exitCode = await run(process.argv.slice(2));
