import { mkdir, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { makeTempDir, removeTempDirs } from "../helpers/tree.js";
import { describeProactiveReclaim } from "./report.js";

afterAll(removeTempDirs);

describe("describeProactiveReclaim", () => {
  let root: string;
  beforeEach(async () => {
    root = await makeTempDir("lm-damon-");
  });

  /** Lays out kdamond 0, context 0, scheme 0 as the kernel's sysfs interface does. */
  async function kdamond(state: string, action: string, minAge: number, aggregationUs: number): Promise<void> {
    const context = path.join(root, "0/contexts/0");
    const scheme = path.join(context, "schemes/0");
    await mkdir(path.join(context, "monitoring_attrs/intervals"), { recursive: true });
    await mkdir(path.join(scheme, "access_pattern/age"), { recursive: true });
    await writeFile(path.join(root, "nr_kdamonds"), "1\n");
    await writeFile(path.join(root, "0/state"), `${state}\n`);
    await writeFile(path.join(context, "monitoring_attrs/intervals/aggr_us"), `${aggregationUs}\n`);
    await writeFile(path.join(scheme, "action"), `${action}\n`);
    await writeFile(path.join(scheme, "access_pattern/age/min"), `${minAge}\n`);
  }

  it("names the idle time after which a running pageout scheme evicts memory", async () => {
    await kdamond("on", "pageout", 12, 5_000_000);
    expect(describeProactiveReclaim(root)).toBe("DAMON pages out memory idle for 60 s");
  });

  it("says nothing when DAMON is off, pages nothing out, or is not there", async () => {
    await kdamond("off", "pageout", 12, 5_000_000);
    expect(describeProactiveReclaim(root)).toBeUndefined();
    await kdamond("on", "stat", 12, 5_000_000);
    expect(describeProactiveReclaim(root)).toBeUndefined();
    expect(describeProactiveReclaim(path.join(root, "absent"))).toBeUndefined();
  });
});
