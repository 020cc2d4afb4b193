/**
 * The per-iteration pre-check (Java: LiveMigrationFileDownloadPreCheck): the deployment's
 * PreCheck, then the optional `live_migration.pre_check_command`, run with `/bin/sh -c`.
 * The command sees LM_TASK_ID, LM_ITERATION, LM_SOURCE_HOST and LM_INSTANCE_HOST in its
 * environment; each line it prints goes to the task log; a non-zero exit fails the iteration.
 */
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { AgentError } from "../../errors.js";
import type { Logger } from "../../log.js";
import type { PreCheck, PreCheckContext } from "../task-deps.js";

/** Longest command output line quoted in a failure reason. */
const MAX_REASON_LINE = 300;

/**
 * Runs the hook and the command.
 * @throws AgentError FailedPrecondition with the reason when either refuses, Cancelled on abort.
 */
export async function runPreCheck(
  preCheck: PreCheck,
  command: string | undefined,
  context: PreCheckContext,
  logger: Logger,
): Promise<void> {
  try {
    await preCheck.check(context);
  } catch (err) {
    if (context.signal.aborted) throw new AgentError("Cancelled", "operation cancelled");
    throw new AgentError("FailedPrecondition", `Pre-check failed: ${(err as Error).message ?? String(err)}`, { cause: err });
  }
  if (command !== undefined && command.trim() !== "") await runCommand(command, context, logger);
}

function runCommand(command: string, context: PreCheckContext, logger: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    if (context.signal.aborted) return reject(new AgentError("Cancelled", "operation cancelled"));
    const child = spawn("/bin/sh", ["-c", command], {
      stdio: ["ignore", "pipe", "pipe"],
      // Own process group, so that a cancel stops the command's children too.
      detached: true,
      env: {
        ...process.env,
        LM_TASK_ID: context.taskId,
        LM_ITERATION: String(context.iteration),
        LM_SOURCE_HOST: context.sourceHost,
        LM_INSTANCE_HOST: context.instance.config.host,
      },
    });
    let lastLine = "";
    for (const [name, stream] of [["stdout", child.stdout], ["stderr", child.stderr]] as const) {
      createInterface({ input: stream }).on("line", (line) => {
        logger.info({ preCheckCommand: name }, line);
        if (line.trim() !== "") lastLine = line.trim().slice(0, MAX_REASON_LINE);
      });
    }
    const onAbort = () => {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // already gone
      }
    };
    context.signal.addEventListener("abort", onAbort, { once: true });
    child.on("error", (err) => {
      context.signal.removeEventListener("abort", onAbort);
      reject(new AgentError("FailedPrecondition", `Pre-check command could not start: ${err.message}`, { cause: err }));
    });
    child.on("close", (code, signal) => {
      context.signal.removeEventListener("abort", onAbort);
      if (context.signal.aborted) return reject(new AgentError("Cancelled", "operation cancelled"));
      if (code === 0) return resolve();
      const how = code !== null ? `exited with code ${code}` : `was killed by ${signal}`;
      reject(new AgentError("FailedPrecondition", `Pre-check command ${how}${lastLine ? `: ${lastLine}` : ""}`));
    });
  });
}
