import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { createHasher, createReadDigester, digestFile, parseDigestAlgorithm } from "../../src/digest/digest.js";
import { XxhInPlace } from "../../src/digest/xxh-in-place.js";

describe("digests", () => {
  const dirs: string[] = [];
  afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

  it("encodes the empty input like the Java Sidecar", () => {
    const md5 = createHasher("MD5");
    expect(md5.digest()).toBe("1B2M2Y8AsgTpgAmY7PhCfg==");
    const xxh32 = createHasher("XXHash32");
    expect(xxh32.digest()).toBe("2cc5d05");
    const xxh64 = createHasher("XXH64");
    expect(xxh64.digest()).toBe("ef46db3751d8e999");
  });

  it("matches known vectors for non-empty input", () => {
    const text = new TextEncoder().encode("abc");
    const md5 = createHasher("MD5");
    md5.update(text);
    expect(md5.digest()).toBe(Buffer.from("900150983cd24fb0d6963f7d28e17f72", "hex").toString("base64"));
    const xxh32 = createHasher("XXHash32");
    xxh32.update(text);
    expect(xxh32.digest()).toBe("32d153ff");
    const xxh64 = createHasher("XXH64");
    xxh64.update(text);
    expect(xxh64.digest()).toBe("44bc2cf5ad770999");
  });

  it("gives the same digest for one update or many", async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "lm-digest-"));
    dirs.push(dir);
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 17, 7);
    const file = path.join(dir, "f");
    await writeFile(file, bytes);
    for (const alg of ["MD5", "XXHash32", "XXH64"] as const) {
      const h = createHasher(alg);
      h.update(bytes);
      expect(await digestFile(file, alg)).toBe(h.digest());
    }
  });

  it("read digesters hash XXHash32 and XXH64 in place, file after file, like the streaming hashers, by update or finish", () => {
    // An odd capacity, so that updates split the input at offsets that are not multiples of the
    // hash's 16/32-byte stripes; inputs of different lengths one after the other, so that a state
    // left by the previous file would show.
    const capacity = 1000;
    const inputs = [5000, 0, 31, 1000, 2999].map((size, seed) => Buffer.from(Array.from({ length: size }, (_, i) => (i * 131 + seed) & 0xff)));
    for (const alg of ["MD5", "XXHash32", "XXH64"] as const) {
      const digester = createReadDigester(alg, capacity);
      expect(digester instanceof XxhInPlace).toBe(alg !== "MD5");
      for (const input of inputs) {
        digester.begin();
        for (let at = 0; at < input.length; at += capacity) {
          const piece = input.subarray(at, at + capacity);
          digester.buffer.set(piece);
          digester.update(piece.length);
        }
        const h = createHasher(alg);
        h.update(input);
        expect(digester.digest(), `${alg} of ${input.length} bytes`).toBe(h.digest());
      }
      // finish(): the last bytes and the digest at once (MD5: one crypto.hash call when it is the only one).
      for (const input of inputs) {
        digester.begin();
        let at = 0;
        for (; input.length - at > capacity; at += capacity) {
          digester.buffer.set(input.subarray(at, at + capacity));
          digester.update(capacity);
        }
        digester.buffer.set(input.subarray(at));
        const h = createHasher(alg);
        h.update(input);
        expect(digester.finish(input.length - at), `${alg} of ${input.length} bytes, finished`).toBe(h.digest());
      }
    }
  });

  it("parses algorithm names case-insensitively and keeps XXH64 internal", () => {
    expect(parseDigestAlgorithm("md5")).toBe("MD5");
    expect(parseDigestAlgorithm("XXHASH32")).toBe("XXHash32");
    expect(parseDigestAlgorithm("xXhAsH32")).toBe("XXHash32");
    expect(parseDigestAlgorithm("sha1")).toBeUndefined();
    expect(parseDigestAlgorithm("xxh64")).toBeUndefined();
    expect(parseDigestAlgorithm("xxh64", true)).toBe("XXH64");
  });
});
