/**
 * The `lm-sidecar` command line. Exit codes: 0 success, 1 runtime failure, 2 usage error,
 * 3 invalid configuration.
 */
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { AgentError } from "../errors.js";
import { checkConfig } from "./check-config.js";
import { serve } from "./serve.js";

export const EXIT = { ok: 0, failure: 1, usage: 2, config: 3 } as const;

const USAGE = `lm-sidecar — Cassandra Live Migration (CEP-40) agent

Usage:
  lm-sidecar serve --config FILE          run the agent (REST + Connect gateway, gRPC peer plane)
  lm-sidecar check-config --config FILE   print each instance's directories, role and exclusions
  lm-sidecar demo [--size SIZE] [--keep]  run a complete local migration between two agents
  lm-sidecar --help | --version

Options:
  -c, --config FILE   a Cassandra-Sidecar-style sidecar.yaml
      --size SIZE     demo dataset size, e.g. 200M, 1G (default 200M)
      --keep          demo: keep the directories and agents' configs, print curl commands

Logs are pino JSON lines on stdout. SIGTERM/SIGINT stop the agent gracefully.`;

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../../package.json", import.meta.url), "utf8")) as { version: string };
  return pkg.version;
}

export async function run(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        size: { type: "string" },
        keep: { type: "boolean" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
      },
    });
  } catch (err) {
    process.stderr.write(`lm-sidecar: ${(err as Error).message}\n\n${USAGE}\n`);
    return EXIT.usage;
  }
  const { values, positionals } = parsed;
  if (values.version) {
    process.stdout.write(`lm-sidecar ${version()}\n`);
    return EXIT.ok;
  }
  const [command, ...rest] = positionals;
  if (values.help || command === undefined || command === "help") {
    process.stdout.write(`${USAGE}\n`);
    return command === undefined && !values.help ? EXIT.usage : EXIT.ok;
  }
  if (rest.length > 0) {
    process.stderr.write(`lm-sidecar: unexpected argument ${rest[0]}\n`);
    return EXIT.usage;
  }
  try {
    switch (command) {
      case "serve":
      case "check-config": {
        if (!values.config) {
          process.stderr.write(`lm-sidecar ${command}: --config FILE is required\n`);
          return EXIT.usage;
        }
        return command === "serve" ? await serve(values.config) : await checkConfig(values.config);
      }
      case "demo": {
        const { runDemo } = await import("../demo/demo.js");
        return await runDemo({ size: values.size, keep: values.keep ?? false });
      }
      default:
        process.stderr.write(`lm-sidecar: unknown command ${command}\n\n${USAGE}\n`);
        return EXIT.usage;
    }
  } catch (err) {
    const error = AgentError.from(err);
    process.stderr.write(`lm-sidecar ${command}: ${error.message}\n`);
    return error.code === "InvalidArgument" ? EXIT.config : EXIT.failure;
  }
}
