/**
 * A TCP proxy for the data-copy integration tests, placed between the destination's plane
 * client and the source's plane server. It can cap the source → destination rate (to make a
 * copy last long enough to cancel or kill it), flip one byte deep inside the HTTP/2 DATA
 * payload of that direction (corruption in transit that TCP checksums would not catch), and
 * cut every connection (a source that vanished).
 */
import net from "node:net";

export interface ProxyOptions {
  readonly listenHost: string;
  readonly listenPort: number;
  readonly targetHost: string;
  readonly targetPort: number;
  /** Cap on source → destination bytes per second over all connections; 0: none. */
  bytesPerSecond?: number;
  /** Flip one bit of the HTTP/2 DATA payload byte at this offset (source → destination, all connections). */
  flipAtDataByte?: number;
}

/** Follows HTTP/2 frames in one direction and finds DATA payload bytes. */
class FrameCursor {
  private header = Buffer.alloc(9);
  private headerFill = 0;
  private remaining = 0;
  private type = -1;

  /** Calls `onData(chunk, start, end)` for every DATA payload range inside `chunk`. */
  scan(chunk: Buffer, onData: (start: number, end: number) => void): void {
    let i = 0;
    while (i < chunk.length) {
      if (this.remaining === 0) {
        const take = Math.min(9 - this.headerFill, chunk.length - i);
        chunk.copy(this.header, this.headerFill, i, i + take);
        this.headerFill += take;
        i += take;
        if (this.headerFill === 9) {
          this.remaining = this.header.readUIntBE(0, 3);
          this.type = this.header[3]!;
          this.headerFill = 0;
        }
        continue;
      }
      const n = Math.min(this.remaining, chunk.length - i);
      if (this.type === 0) onData(i, i + n);
      this.remaining -= n;
      i += n;
    }
  }
}

export class TcpProxy {
  private server: net.Server | undefined;
  private readonly sockets = new Set<net.Socket>();
  private dataSeen = 0;
  private started = Date.now();
  /** Source → destination bytes forwarded. */
  bytesDown = 0;
  /** Whether the byte was flipped. */
  flipped = false;
  connections = 0;

  constructor(readonly options: ProxyOptions) {}

  async start(): Promise<void> {
    this.server = net.createServer((client) => this.handle(client));
    await new Promise<void>((resolve, reject) => {
      this.server!.once("error", reject);
      this.server!.listen(this.options.listenPort, this.options.listenHost, () => resolve());
    });
  }

  /** Destroys every open connection (new ones are still accepted). */
  cutAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  setRate(bytesPerSecond: number): void {
    this.options.bytesPerSecond = bytesPerSecond;
    this.started = Date.now();
    this.bytesDown = 0;
  }

  private handle(client: net.Socket): void {
    this.connections++;
    const upstream = net.connect({ host: this.options.targetHost, port: this.options.targetPort });
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on("close", () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
      s.on("error", () => undefined);
    }
    client.pipe(upstream);
    const cursor = new FrameCursor();
    upstream.on("data", (chunk: Buffer) => {
      const flipAt = this.options.flipAtDataByte;
      if (flipAt !== undefined && !this.flipped) {
        cursor.scan(chunk, (start, end) => {
          const n = end - start;
          if (!this.flipped && this.dataSeen + n > flipAt) {
            chunk[start + (flipAt - this.dataSeen)]! ^= 0x20;
            this.flipped = true;
          }
          this.dataSeen += n;
        });
      }
      this.bytesDown += chunk.length;
      if (!client.write(chunk)) {
        upstream.pause();
        client.once("drain", () => upstream.resume());
      }
      const rate = this.options.bytesPerSecond ?? 0;
      if (rate > 0) {
        const aheadMs = (this.bytesDown / rate) * 1000 - (Date.now() - this.started);
        if (aheadMs > 1) {
          upstream.pause();
          setTimeout(() => upstream.resume(), aheadMs);
        }
      }
    });
  }
}
