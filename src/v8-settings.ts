/**
 * Process-wide V8 settings for an agent. main.ts imports this module before any other, so that
 * they apply to the code of every module loaded after it.
 */
import { setFlagsFromString } from "node:v8";

// Bulk transfers allocate ArrayBuffers fast (every chunk, every grpc-js frame copy), and V8 kept
// starting incremental marking cycles of the whole heap, with concurrent marking threads: about
// 230 per 4 GiB copied (--trace-gc), which cost the source agent 7 of its 16 CPU seconds.
// Without incremental marking, external-memory pressure triggers a plain mark-compact of the
// (small) heap instead, about 60 per 4 GiB. Measured on the large benchmark tree:
// 4 GiB copy 22-24 s -> 17-18 s, source CPU 16 -> 9 s, destination 16-18 -> 14-15 s. The cost is
// longer single pauses when the heap is large: ~1 ms per MB of live heap (90 ms with a million
// listed files in memory).
// The flag is read at every marking decision, so setting it here, before any work, takes effect.
setFlagsFromString("--no-incremental-marking");

// TurboFan's inlining budget per optimized function (bytecode bytes; V8's default is 920).
// A destination agent compiles ~240 functions during its first copy, most of them run for a
// few ms or per file, and the compiles are CPU taken from the two agents: 760 ms of compile
// time per copy of the small benchmark tree (--trace-opt) with the default, 470 ms with 200.
// Copies into a fresh destination agent, four interleaved rounds: 1.68-1.80 s against
// 1.79-1.91 s, destination CPU 1.56-1.64 s against 1.74-1.84 s. Copies of the large tree,
// eight interleaved rounds: 4.84-5.35 s against 4.59-5.27 s (within noise; its hot path is
// Node's stream code per 16 KiB frame, which inlines less). Read at each compile.
setFlagsFromString("--max-inlined-bytecode-size-cumulative=200");

// The first time any ArrayBuffer of the process is detached, V8 drops its "array buffer
// detaching" protector and deoptimizes every function compiled to read typed arrays. Growing a
// WebAssembly.Memory detaches its old buffer, and both digest paths grow one (xxhash-wasm for
// its first input larger than its memory, each in-place digester once, digest/): a fresh agent
// did so in the middle of its first copy and of its first verification, and then recompiled the
// plane's codecs, Buffer's UTF-8 and base64 code and more, ~20 functions (--trace-deopt).
// Detaching one empty buffer now, before anything is compiled, spends the protector for nothing.
const spent = new ArrayBuffer(0);
structuredClone(spent, { transfer: [spent] });

