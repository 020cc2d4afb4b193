/**
 * The part of the WebAssembly global this project uses: tsconfig's lib (ES2023, no DOM) has no
 * WebAssembly types, and Node's own typings do not declare them.
 */
declare namespace WebAssembly {
  class Memory {
    constructor(descriptor: { initial: number; maximum?: number });
    readonly buffer: ArrayBuffer;
    /** Adds `pages` 64 KiB pages; returns the previous size in pages. */
    grow(pages: number): number;
  }
  class Module {
    constructor(bytes: Uint8Array);
  }
  class Instance {
    constructor(module: Module, imports?: Record<string, unknown>);
    readonly exports: Record<string, unknown>;
  }
}
