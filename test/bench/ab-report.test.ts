import { describe, expect, it } from "vitest";
import { parseEnvOption, parseVariant, renderSummary, roundOrder, spread, summarize, type AbRound } from "./ab-report.js";

describe("ab command line", () => {
  it("reads NAME=CHECKOUT, the path kept whole", () => {
    expect(parseVariant("base=/tmp/wt=odd")).toEqual({ name: "base", checkout: "/tmp/wt=odd", env: {} });
  });

  it.each(["base", "=/tmp/x", "base=", "1st=/tmp/x", "a b=/tmp/x"])("refuses %j with the expected form", (arg) => {
    expect(() => parseVariant(arg)).toThrow(`variant ${JSON.stringify(arg)}: expected NAME=CHECKOUT`);
  });

  it("reads NAME:KEY=VALUE, the value kept whole", () => {
    expect(parseEnvOption("exp:GLIBC_TUNABLES=glibc.malloc.trim_threshold=33554432")).toEqual({
      name: "exp",
      key: "GLIBC_TUNABLES",
      value: "glibc.malloc.trim_threshold=33554432",
    });
    expect(parseEnvOption("exp:EMPTY=")).toEqual({ name: "exp", key: "EMPTY", value: "" });
    expect(() => parseEnvOption("exp=KEY=1")).toThrow('--env "exp=KEY=1": expected NAME:KEY=VALUE');
  });

  it("alternates the order of the variants from round to round", () => {
    expect([0, 1, 2, 3].map((r) => roundOrder(["a", "b", "c"], r).join(""))).toEqual(["abc", "cba", "abc", "cba"]);
  });
});

describe("ab summary", () => {
  const round = (round: number, variant: string, seconds: number, rssMB = 170): AbRound => ({
    round,
    variant,
    seconds,
    destinationCpuSeconds: seconds * 0.9,
    sourceCpuSeconds: seconds / 2,
    destinationPeakRssBytes: rssMB * 1e6,
  });

  it("gives medians (even counts: the mean of the middle two), minima and maxima", () => {
    expect(spread([3, 1, 2])).toEqual({ median: 2, min: 1, max: 3 });
    expect(spread([4, 1, 3, 2])).toEqual({ median: 2.5, min: 1, max: 4 });
    expect(spread([])).toEqual({ median: Number.NaN, min: Number.NaN, max: Number.NaN });
  });

  it("counts the rounds each variant won against the first, paired by round", () => {
    // Round 2 of "exp" has no "base" copy to pair with (it failed): not counted either way.
    const rounds = [round(0, "base", 2.5), round(0, "exp", 2.4), round(1, "exp", 2.6), round(1, "base", 2.5), round(2, "exp", 2.0)];
    const [base, exp] = summarize(rounds, ["base", "exp"]);
    expect(base).toMatchObject({ variant: "base", rounds: 2, seconds: { median: 2.5, min: 2.5, max: 2.5 } });
    expect(base!.fasterThanFirst).toBeUndefined();
    expect(exp).toMatchObject({ variant: "exp", rounds: 3, seconds: { median: 2.4, min: 2.0, max: 2.6 }, fasterThanFirst: { wins: 1, of: 2 } });
    expect(exp!.sourceCpuSeconds.median).toBeCloseTo(1.2);
  });

  it("renders one line per variant, RSS in MB", () => {
    const text = renderSummary(summarize([round(0, "base", 2.5, 180), round(0, "exp", 2.25, 160)], ["base", "exp"]));
    expect(text.split("\n")).toEqual([
      "base: 1 copy, 2.500 (2.500–2.500) s; destination CPU 2.25 (2.25–2.25) s, source CPU 1.25 (1.25–1.25) s, destination peak RSS 180 (180–180) MB",
      "exp: 1 copy, 2.250 (2.250–2.250) s; destination CPU 2.02 (2.02–2.02) s, source CPU 1.13 (1.13–1.13) s, destination peak RSS 160 (160–160) MB; faster than base in 1 of 1 rounds",
    ]);
  });
});
