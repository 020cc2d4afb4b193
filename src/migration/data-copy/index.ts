/** The data-copy task of a destination instance: what the agent and the gateway use. */
export { DataCopyManager, validateDataCopyRequest, CONFLICT_MESSAGE, CASSANDRA_RUNNING_MESSAGE } from "./manager.js";
export type { DataCopyManagerOptions } from "./manager.js";
export { isCassandraRunning, canConnect, PROBE_TIMEOUT_MS } from "./cassandra-probe.js";
