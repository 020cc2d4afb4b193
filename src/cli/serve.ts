/** `lm-sidecar serve --config FILE`: runs the agent until SIGTERM/SIGINT. */
import { Agent } from "../agent/agent.js";
import { loadConfigFile } from "../config/load.js";
import { createRootLogger } from "../log.js";

/** Grace for in-flight streams after a signal, before they are cut. */
const SHUTDOWN_GRACE_MS = 5_000;

export async function serve(configFile: string): Promise<number> {
  const { config, warnings } = await loadConfigFile(configFile);
  const logger = createRootLogger();
  for (const warning of warnings) logger.warn(warning);
  const agent = Agent.create(config, { logger });
  await agent.start();
  const signal = await new Promise<NodeJS.Signals>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  logger.info({ signal }, "stopping");
  await agent.stop(SHUTDOWN_GRACE_MS);
  logger.flush();
  return 0;
}
