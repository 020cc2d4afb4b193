/**
 * Names of in-progress downloads. A file is written beside its target as
 * `.lm-sidecar.<name>.partial` and renamed into place only when complete and verified, so no
 * half-written file ever carries a real SSTable name. Cassandra never creates such names, so
 * listings skip them everywhere.
 */
import path from "node:path";

const PREFIX = ".lm-sidecar.";
const SUFFIX = ".partial";

export function tempPathFor(targetPath: string): string {
  return path.join(path.dirname(targetPath), `${PREFIX}${path.basename(targetPath)}${SUFFIX}`);
}

export function isTempName(name: string): boolean {
  return name.startsWith(PREFIX) && name.endsWith(SUFFIX);
}

/** The target path a temp path stands for. */
export function targetPathOf(tempPath: string): string {
  const name = path.basename(tempPath);
  return path.join(path.dirname(tempPath), name.slice(PREFIX.length, name.length - SUFFIX.length));
}
