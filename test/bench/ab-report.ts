/**
 * What `npm run ab` (ab.ts) takes from its command line and what it reports: pure functions,
 * unit-tested in ab-report.test.ts.
 */

/** One build under test: a checkout with dist/ built, and environment for its agents. */
export interface Variant {
  readonly name: string;
  /** The checkout's root (its launcher is src/cli/lm-sidecar.sh). */
  readonly checkout: string;
  readonly env: Record<string, string>;
}

const NAME = /^[A-Za-z][\w.-]*$/;

/** `NAME=CHECKOUT` → a variant without environment. @throws Error naming the expected form */
export function parseVariant(arg: string): Variant {
  const at = arg.indexOf("=");
  const name = at < 0 ? "" : arg.slice(0, at);
  const checkout = at < 0 ? "" : arg.slice(at + 1);
  if (!NAME.test(name) || checkout === "") throw new Error(`variant ${JSON.stringify(arg)}: expected NAME=CHECKOUT (a name, then the path of a built checkout)`);
  return { name, checkout, env: {} };
}

/** `NAME:KEY=VALUE` (--env) → the variant's name and one environment variable. @throws Error naming the expected form */
export function parseEnvOption(arg: string): { name: string; key: string; value: string } {
  const m = /^([A-Za-z][\w.-]*):([A-Za-z_]\w*)=(.*)$/s.exec(arg);
  if (!m) throw new Error(`--env ${JSON.stringify(arg)}: expected NAME:KEY=VALUE`);
  return { name: m[1]!, key: m[2]!, value: m[3]! };
}

/**
 * The order of the variants in round `round` (from 0): as given in even rounds, reversed in odd
 * ones, so that no variant always runs right after another one's copy (its writeback, its
 * freed memory).
 */
export function roundOrder<T>(variants: readonly T[], round: number): T[] {
  return round % 2 === 0 ? [...variants] : [...variants].reverse();
}

/** One copy of one variant. */
export interface AbRound {
  readonly round: number;
  readonly variant: string;
  /** POST to the destination's log line for SUCCESS. */
  readonly seconds: number;
  /** CPU of the destination agent during the task (user + system). */
  readonly destinationCpuSeconds: number;
  /** CPU of the variant's source agent during the task. */
  readonly sourceCpuSeconds: number;
  /** VmHWM of the destination agent, a fresh process, at the task's end. */
  readonly destinationPeakRssBytes: number;
}

export interface Spread {
  readonly median: number;
  readonly min: number;
  readonly max: number;
}

export interface VariantSummary {
  readonly variant: string;
  readonly rounds: number;
  readonly seconds: Spread;
  readonly destinationCpuSeconds: Spread;
  readonly sourceCpuSeconds: Spread;
  readonly destinationPeakRssBytes: Spread;
  /** Rounds in which this variant's copy was faster than the first variant's, of the rounds both finished. */
  readonly fasterThanFirst?: { readonly wins: number; readonly of: number };
}

/** Median (the mean of the middle two for an even count), min and max; NaN for none. */
export function spread(values: readonly number[]): Spread {
  const xs = [...values].sort((a, b) => a - b);
  if (xs.length === 0) return { median: Number.NaN, min: Number.NaN, max: Number.NaN };
  const mid = Math.floor(xs.length / 2);
  return { median: xs.length % 2 === 1 ? xs[mid]! : (xs[mid - 1]! + xs[mid]!) / 2, min: xs[0]!, max: xs.at(-1)! };
}

/** Per variant, in the order given: spreads of every figure, and the rounds won against the first variant. */
export function summarize(rounds: readonly AbRound[], variants: readonly string[]): VariantSummary[] {
  const first = variants[0];
  const firstByRound = new Map(rounds.filter((r) => r.variant === first).map((r) => [r.round, r.seconds]));
  return variants.map((variant) => {
    const own = rounds.filter((r) => r.variant === variant);
    const paired = own.filter((r) => firstByRound.has(r.round));
    return {
      variant,
      rounds: own.length,
      seconds: spread(own.map((r) => r.seconds)),
      destinationCpuSeconds: spread(own.map((r) => r.destinationCpuSeconds)),
      sourceCpuSeconds: spread(own.map((r) => r.sourceCpuSeconds)),
      destinationPeakRssBytes: spread(own.map((r) => r.destinationPeakRssBytes)),
      ...(variant === first ? {} : { fasterThanFirst: { wins: paired.filter((r) => r.seconds < firstByRound.get(r.round)!).length, of: paired.length } }),
    };
  });
}

function show(s: Spread, digits: number, scale = 1): string {
  const f = (x: number) => (x / scale).toFixed(digits);
  return `${f(s.median)} (${f(s.min)}–${f(s.max)})`;
}

/** The summary as text lines: medians with their ranges; peak RSS in MB of 10⁶ bytes. */
export function renderSummary(summaries: readonly VariantSummary[]): string {
  const first = summaries[0]?.variant;
  return summaries
    .map((s) => {
      const wins = s.fasterThanFirst ? `; faster than ${first} in ${s.fasterThanFirst.wins} of ${s.fasterThanFirst.of} rounds` : "";
      return (
        `${s.variant}: ${s.rounds} ${s.rounds === 1 ? "copy" : "copies"}, ${show(s.seconds, 3)} s; destination CPU ${show(s.destinationCpuSeconds, 2)} s, ` +
        `source CPU ${show(s.sourceCpuSeconds, 2)} s, destination peak RSS ${show(s.destinationPeakRssBytes, 0, 1e6)} MB${wins}`
      );
    })
    .join("\n");
}
