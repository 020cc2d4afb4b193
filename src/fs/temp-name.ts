/**
 * Names of in-progress downloads. A file is written beside its target as
 * `.lm-sidecar.<name>.partial` and renamed into place only when complete and verified, so no
 * half-written file ever carries a real SSTable name. A new table directory is filled the same
 * way, as a staging directory of that name (migration/data-copy/staging.ts). Cassandra never
 * creates such names, so listings skip them (and below them) everywhere.
 */
const PREFIX = ".lm-sidecar.";
const SUFFIX = ".partial";

/**
 * The temp path of a file's download. `targetPath` is a normalized file path (no trailing or
 * doubled slash), as every caller has; plain string work, because a small-tree pass asks for
 * tens of thousands of them and path.join re-normalizes the whole path each time.
 */
export function tempPathFor(targetPath: string): string {
  const slash = targetPath.lastIndexOf("/");
  return `${targetPath.slice(0, slash + 1)}${PREFIX}${targetPath.slice(slash + 1)}${SUFFIX}`;
}

export function isTempName(name: string): boolean {
  return name.startsWith(PREFIX) && name.endsWith(SUFFIX);
}

/** The target path a temp path (from tempPathFor) stands for. */
export function targetPathOf(tempPath: string): string {
  const slash = tempPath.lastIndexOf("/");
  return `${tempPath.slice(0, slash + 1)}${tempPath.slice(slash + 1 + PREFIX.length, tempPath.length - SUFFIX.length)}`;
}
