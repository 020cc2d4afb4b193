/**
 * Writes one downloaded file front to back, around the page cache where the filesystem allows.
 *
 *   write(data) --copy--> staging block (4 MiB, page-aligned) --full--> pwrite O_DIRECT (async)
 *                         next block fills while the previous one is written; a third waits
 *   commit(mtime) --> last block padded to DIRECT_ALIGN, truncate to the length --> futimes --> fsync
 *
 * One write in flight per file is enough. In a copy of the large benchmark tree the destination
 * waits 4-6 s of 10-11.5 s for the write before (pwrite64 of 4 MiB: 6.1 ms on average with both
 * cores busy, p50 3.4 ms, 59 of 988 over 10 ms taking 2.7 s, `perf trace`); with three in flight
 * that wait fell to 1-2.2 s, but the destination then waited for the source instead and copies
 * took as long (9.5-11.4 s against 9.9-10.8 s, interleaved) with up to 50 MB more peak RSS.
 *
 * Why O_DIRECT for large files:
 * - A buffered write copies every byte into the page cache. In a 4 GiB copy on the reference VM
 *   that copy was 38 % of the destination agent's CPU samples (`dd` of 4 GiB: 10 s of system
 *   CPU buffered, 0.7 s direct, and 11.4 s vs 6.3 s of wall time with the fsync).
 * - The fsync before the rename then has no dirty pages to write back.
 * - Terabytes of SSTables streamed through the page cache would evict everything else on the
 *   host, for data that is read once (by verification) before Cassandra starts.
 *
 * O_DIRECT needs the memory address, file offset and length of every write aligned to the
 * device's logical block size; DIRECT_ALIGN (4096) is a multiple of every common one. Node's
 * Buffers have no alignment guarantee, but a WebAssembly.Memory is mapped at a page boundary,
 * so the staging blocks are slices of one such memory, shared by all writers (BlockPool). The
 * last, partial block is written padded with zeros and the file truncated to its length.
 *
 * Where O_DIRECT is refused (EINVAL at open or at the first write: tmpfs on older kernels,
 * some FUSE and network filesystems) or no aligned block is free, the same writer makes
 * ordinary writes. Either way the bytes are durable once commit() resolves.
 */
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { collectGarbage } from "../gc.js";
import { setHandleMtimeMs } from "./mtime.js";

/** Alignment of every O_DIRECT write: address, offset and length. */
export const DIRECT_ALIGN = 4096;
/**
 * One staging block, and the size of every write but a file's last. Each write is a hop to the
 * thread pool, and on the reference VM handing one over cost the event loop ~0.2 ms (a futex
 * wake that the woken thread preempts): with 1 MiB blocks the destination's main thread spent
 * 0.9 s of a 4 GiB copy just submitting writes. With 4 MiB, interleaved copies of the large
 * benchmark tree took 12.9-14.9 s instead of 16.2-16.6 s (destination CPU 9.5-11.0 s instead
 * of 12.5-13.0 s), for ~20 MB more peak RSS; 8 MiB was no better.
 */
export const BLOCK_BYTES = 4 << 20;
/**
 * Blocks in the shared pool: two per file being written, for 8 files at once (one large file
 * and the mid-sized ones beside it, download.ts); a writer that finds none free makes
 * ordinary writes.
 */
const POOL_BLOCKS = 16;
const WASM_PAGE_BYTES = 65536;

/**
 * After this long (ms) with every block back in the pool, the pool's memory is released, so
 * that an agent between passes or tasks does not hold the blocks it touched (24-28 MB after a
 * copy of the large benchmark tree). The next writer reserves it again and touches its blocks
 * afresh (~1 ms of page faults per MiB here), which a pass pays once, not per file: files
 * follow each other within milliseconds.
 */
const POOL_RELEASE_IDLE_MS = 2_000;

/**
 * Page-aligned blocks carved from one WebAssembly.Memory. The memory is reserved when a block is
 * first needed (POOL_BLOCKS × BLOCK_BYTES of address space); a block becomes resident when first
 * written, and stays so for reuse while writers keep coming. Never grown: growing would detach
 * the blocks in use. A WebAssembly.Memory cannot give pages back, so once idle the whole memory
 * is dropped and collected (collectGarbage: V8 alone would keep it until it next needs space).
 */
class BlockPool {
  private memory: WebAssembly.Memory | undefined;
  private readonly free: Uint8Array[] = [];
  private carved = 0;
  private releaseTimer: NodeJS.Timeout | undefined;

  /** A free block, or undefined when all POOL_BLOCKS are in use. */
  take(): Uint8Array | undefined {
    clearTimeout(this.releaseTimer);
    const reused = this.free.pop();
    if (reused) return reused;
    if (this.carved === POOL_BLOCKS) return undefined;
    this.memory ??= new WebAssembly.Memory({ initial: (POOL_BLOCKS * BLOCK_BYTES) / WASM_PAGE_BYTES });
    return new Uint8Array(this.memory.buffer, BLOCK_BYTES * this.carved++, BLOCK_BYTES);
  }

  give(block: Uint8Array): void {
    this.free.push(block);
    if (this.free.length < this.carved) return;
    clearTimeout(this.releaseTimer);
    this.releaseTimer = setTimeout(() => this.release(), POOL_RELEASE_IDLE_MS);
    this.releaseTimer.unref();
  }

  /** Whether `block` is one of this pool's (page-aligned) blocks. */
  owns(block: Uint8Array): boolean {
    return this.memory !== undefined && block.buffer === this.memory.buffer;
  }

  /** Bytes of memory the pool holds (reserved; resident once touched): 0 when released. */
  get reservedBytes(): number {
    return this.memory ? this.memory.buffer.byteLength : 0;
  }

  /** Drops the memory while no block is out: no view of it survives this. */
  private release(): void {
    if (!this.memory || this.free.length < this.carved) return;
    this.memory = undefined;
    this.free.length = 0;
    this.carved = 0;
    collectGarbage();
  }
}

const pool = new BlockPool();

/** Bytes of the shared staging memory reserved right now (for tests and diagnostics). */
export function stagingPoolBytes(): number {
  return pool.reservedBytes;
}

export interface SequentialWriter {
  /**
   * Where the next byte goes. Starts at the resume offset, which O_DIRECT rounds down to
   * DIRECT_ALIGN (the file is truncated there): callers hash and fetch from this position.
   */
  readonly position: number;
  /** Whether writes bypass the page cache (for logs and tests). */
  readonly direct: boolean;
  /**
   * Appends `data`; the caller may reuse it when the promise resolves. Resolves at once unless
   * both blocks are busy: that wait is the backpressure.
   * @throws the fs error of this or an earlier write.
   */
  write(data: Uint8Array): Promise<void>;
  /**
   * Writes every staged byte: the file then holds exactly `position` bytes (not yet durable).
   * For keeping the prefix of an interrupted download, and the first step of commit().
   */
  flush(): Promise<void>;
  /** flush(), then sets the mtime and fsyncs: content, size and mtime are durable. */
  commit(mtimeMs: number): Promise<void>;
  /** Closes the file and frees its blocks; after commit or to abandon the file. Call once, always. */
  close(): Promise<void>;
}

export interface OpenOptions {
  /** Bytes of the file to keep (a resumed prefix); 0 creates or truncates it. */
  readonly keepBytes: number;
  /** Whether to try O_DIRECT. */
  readonly direct: boolean;
}

/**
 * Opens `path` for writing from `keepBytes` (see SequentialWriter.position).
 * @throws the fs error of the open.
 */
export async function openSequentialWriter(path: string, options: OpenOptions): Promise<SequentialWriter> {
  const flags = constants.O_WRONLY | constants.O_CREAT | (options.keepBytes > 0 ? 0 : constants.O_TRUNC);
  const block = options.direct && constants.O_DIRECT !== undefined ? pool.take() : undefined;
  let handle: FileHandle | undefined;
  if (block) {
    try {
      handle = await open(path, flags | constants.O_DIRECT, 0o644);
    } catch (err) {
      pool.give(block);
      if ((err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
    }
  }
  if (handle && block) {
    const position = options.keepBytes - (options.keepBytes % DIRECT_ALIGN);
    try {
      if (position !== options.keepBytes) await handle.truncate(position);
    } catch (err) {
      pool.give(block);
      await handle.close();
      throw err;
    }
    return new BlockWriter(path, handle, block, position);
  }
  return new BlockWriter(path, await open(path, flags, 0o644), undefined, options.keepBytes);
}

class BlockWriter implements SequentialWriter {
  /** The block being filled; starts at file offset `blockStart`. */
  private block: Uint8Array | undefined;
  private fill = 0;
  private blockStart: number;
  /** Written blocks, to fill again; pool blocks go back to the pool on close. */
  private readonly spare: Uint8Array[] = [];
  /** The previous block's write, if still running; never rejects (see `failure`). */
  private inFlight: Promise<void> | undefined;
  private failure: Error | undefined;
  private closed = false;

  /** False from the start when O_DIRECT was not possible, or once it was refused. */
  direct: boolean;

  constructor(
    private readonly path: string,
    private handle: FileHandle,
    block: Uint8Array | undefined,
    start: number,
  ) {
    this.block = block;
    this.direct = block !== undefined;
    this.blockStart = start;
  }

  get position(): number {
    return this.blockStart + this.fill;
  }

  async write(data: Uint8Array): Promise<void> {
    if (this.closed) throw new Error(`writer of ${this.path} is closed`);
    this.throwIfFailed();
    for (let offset = 0; offset < data.byteLength; ) {
      const block = (this.block ??= this.takeBlock());
      const n = Math.min(block.byteLength - this.fill, data.byteLength - offset);
      block.set(data.subarray(offset, offset + n), this.fill);
      this.fill += n;
      offset += n;
      if (this.fill === block.byteLength) await this.sendBlock();
    }
  }

  async flush(): Promise<void> {
    await this.settle();
    if (!this.block || this.fill === 0) return;
    const length = this.fill;
    // O_DIRECT writes whole aligned blocks: pad with zeros, then cut the file back.
    const padded = this.direct ? Math.ceil(length / DIRECT_ALIGN) * DIRECT_ALIGN : length;
    this.block.fill(0, length, padded);
    await this.writeAt(this.block, padded, this.blockStart);
    if (padded !== length) await this.handle.truncate(this.blockStart + length);
    // The partial block stays current: later bytes are appended to it and it is written again.
  }

  async commit(mtimeMs: number): Promise<void> {
    await this.flush();
    await setHandleMtimeMs(this.handle, mtimeMs);
    await this.handle.sync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.inFlight;
    await this.handle.close();
    for (const block of [this.block, ...this.spare]) if (block && pool.owns(block)) pool.give(block);
    this.block = undefined;
    this.spare.length = 0;
  }

  /** A second block for this file: from the pool while direct, else plain memory. */
  private takeBlock(): Uint8Array {
    const spare = this.spare.pop();
    if (spare) return spare;
    if (this.direct) {
      const block = pool.take();
      if (block) return block;
      // Pool exhausted: the one block we hold keeps O_DIRECT writes going, one at a time.
    }
    return Buffer.allocUnsafeSlow(BLOCK_BYTES);
  }

  /** Starts writing the full current block; waits first for the previous one. */
  private async sendBlock(): Promise<void> {
    await this.settle();
    const block = this.block!;
    const at = this.blockStart;
    this.block = undefined;
    this.blockStart += block.byteLength;
    this.fill = 0;
    this.inFlight = this.writeAt(block, block.byteLength, at).then(
      () => {
        this.spare.push(block);
      },
      (err: unknown) => {
        this.spare.push(block);
        this.failure = err as Error;
      },
    );
  }

  /** Waits for the block in flight. @throws its error */
  private async settle(): Promise<void> {
    await this.inFlight;
    this.inFlight = undefined;
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  /** Writes `length` bytes of `block` at `position`; falls back to buffered writes if O_DIRECT is refused. */
  private async writeAt(block: Uint8Array, length: number, position: number): Promise<void> {
    for (let written = 0; written < length; ) {
      // A plain Buffer (pool exhausted) cannot be written with O_DIRECT.
      if (this.direct && !pool.owns(block)) await this.stopDirect();
      try {
        const { bytesWritten } = await this.handle.write(block, written, length - written, position + written);
        written += bytesWritten;
      } catch (err) {
        // Some filesystems accept O_DIRECT at open and refuse it on write (or refuse a length,
        // on a device with blocks larger than DIRECT_ALIGN): the same bytes go through the page cache.
        if (!this.direct || (err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
        await this.stopDirect();
      }
    }
  }

  /** Reopens the file for ordinary writes; blocks already taken stay usable (alignment no longer matters). */
  private async stopDirect(): Promise<void> {
    const buffered = await open(this.path, constants.O_WRONLY, 0o644);
    await this.handle.close();
    this.handle = buffered;
    this.direct = false;
  }
}
