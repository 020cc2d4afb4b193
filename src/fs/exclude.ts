/**
 * `files_to_exclude` / `dirs_to_exclude`: Java PathMatcher specs (`glob:` or `regex:`) matched
 * against absolute paths, with path placeholders expanded per migrated root.
 *
 * Placeholder rule (Java Sidecar): the first `${NAME}` in an entry is its placeholder. An entry
 * without one applies to every root as written; an entry whose placeholder names this root is
 * expanded with the root's absolute path; an entry naming another root is ignored for this one.
 * Unlike the Java Sidecar, the substituted path is escaped, so a root containing glob or regex
 * metacharacters still matches literally.
 */
import path from "node:path";
import picomatch from "picomatch";
import { AgentError } from "../errors.js";
import type { MigrationRoot } from "../instance/directories.js";

/** Every placeholder the guide documents; DATA_FILE_DIR_<i> is matched by pattern. */
export const PLACEHOLDERS = [
  "DATA_FILE_DIR",
  "COMMITLOG_DIR",
  "HINTS_DIR",
  "SAVED_CACHES_DIR",
  "CDC_RAW_DIR",
  "LOCAL_SYSTEM_DATA_FILE_DIR",
] as const;

const PLACEHOLDER_RE = /\$\{(\w+)\}/;

type Matcher = (absPath: string) => boolean;

interface RootMatchers {
  readonly files: Matcher[];
  readonly dirs: Matcher[];
  readonly patterns: { kind: "file" | "dir"; spec: string }[];
  /**
   * Directories below the root already judged by isPathExcluded: true when the directory or one
   * of its ancestors below the root is excluded. A source serving a pass judges every file it
   * sends, and files come by the dozen from each directory.
   */
  readonly judgedDirs: Map<string, boolean>;
}

/** Directories remembered per root (judgedDirs) before the memory starts afresh. */
const JUDGED_DIRS_MAX = 65_536;

/** Checks an exclusion spec's syntax and placeholder; returns an error text or undefined. */
export function checkExclusionSpec(spec: string): string | undefined {
  const m = /^(glob|regex):(.*)$/s.exec(spec);
  if (!m) return `must start with "glob:" or "regex:", got ${JSON.stringify(spec)}`;
  const name = PLACEHOLDER_RE.exec(m[2]!)?.[1];
  if (name !== undefined && !(PLACEHOLDERS as readonly string[]).includes(name) && !/^DATA_FILE_DIR_\d+$/.test(name)) {
    return `unknown placeholder \${${name}} in ${JSON.stringify(spec)}`;
  }
  if (m[1] === "regex") {
    try {
      new RegExp(m[2]!);
    } catch (err) {
      return `invalid regex in ${JSON.stringify(spec)}: ${(err as Error).message}`;
    }
  }
  return undefined;
}

function escapeGlob(text: string): string {
  return text.replace(/[\\*?[\]{}()!+@]/g, "\\$&");
}

function escapeRegex(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Expands `spec` for `root`, or returns undefined when the spec belongs to another root. */
function expandFor(spec: string, root: MigrationRoot): { kind: "glob" | "regex"; pattern: string } | undefined {
  const m = /^(glob|regex):(.*)$/s.exec(spec);
  if (!m) throw new AgentError("InvalidArgument", checkExclusionSpec(spec)!);
  const kind = m[1] as "glob" | "regex";
  let pattern = m[2]!;
  const name = PLACEHOLDER_RE.exec(pattern)?.[1];
  if (name !== undefined) {
    if (!root.placeholders.includes(name)) return undefined;
    const replacement = kind === "glob" ? escapeGlob(root.path) : escapeRegex(root.path);
    pattern = pattern.split("${" + name + "}").join(replacement);
  }
  return { kind, pattern };
}

function compileMatcher(kind: "glob" | "regex", pattern: string): Matcher {
  if (kind === "regex") {
    // Java's PathMatcher regex must match the whole path.
    const re = new RegExp(`^(?:${pattern})$`);
    return (p) => re.test(p);
  }
  return picomatch(pattern, { dot: true, nonegate: true, noextglob: true });
}

/** Compiled exclusions of one instance: a matcher set per migrated root. */
export class Exclusions {
  private constructor(private readonly byRoot: Map<MigrationRoot, RootMatchers>) {}

  /** Compiles the specs for each root; throws InvalidArgument on a malformed spec. */
  static compile(roots: readonly MigrationRoot[], filesToExclude: readonly string[], dirsToExclude: readonly string[]): Exclusions {
    for (const spec of [...filesToExclude, ...dirsToExclude]) {
      const problem = checkExclusionSpec(spec);
      if (problem) throw new AgentError("InvalidArgument", problem);
    }
    const byRoot = new Map<MigrationRoot, RootMatchers>();
    for (const root of roots) {
      const set: RootMatchers = { files: [], dirs: [], patterns: [], judgedDirs: new Map() };
      for (const [kind, specs] of [["file", filesToExclude], ["dir", dirsToExclude]] as const) {
        for (const spec of specs) {
          const expanded = expandFor(spec, root);
          if (!expanded) continue;
          (kind === "file" ? set.files : set.dirs).push(compileMatcher(expanded.kind, expanded.pattern));
          set.patterns.push({ kind, spec: `${expanded.kind}:${expanded.pattern}` });
        }
      }
      byRoot.set(root, set);
    }
    return new Exclusions(byRoot);
  }

  /** True if a dirs_to_exclude matcher of `root` matches the absolute directory path. */
  isDirExcluded(root: MigrationRoot, absDir: string): boolean {
    return this.byRoot.get(root)?.dirs.some((m) => m(absDir)) ?? false;
  }

  /** True if a files_to_exclude matcher of `root` matches the absolute file path. */
  isFileExcluded(root: MigrationRoot, absFile: string): boolean {
    return this.byRoot.get(root)?.files.some((m) => m(absFile)) ?? false;
  }

  /**
   * True if the path is excluded itself or lies below an excluded directory of `root`
   * (ancestors are checked up to, not including, the root).
   */
  isPathExcluded(root: MigrationRoot, absPath: string, isDir: boolean): boolean {
    const set = this.byRoot.get(root);
    if (!set) return false;
    if ((isDir ? set.dirs : set.files).some((m) => m(absPath))) return true;
    if (set.dirs.length === 0) return false;
    return isInExcludedDir(set, root.path + path.sep, path.dirname(absPath));
  }

  /** The expanded patterns per root, for `check-config`. */
  describe(): { root: MigrationRoot; kind: "file" | "dir"; pattern: string }[] {
    return [...this.byRoot].flatMap(([root, set]) => set.patterns.map((p) => ({ root, kind: p.kind, pattern: p.spec })));
  }
}

/** True when `dir` or an ancestor of it that lies below the root (`below`: the root path and a separator) is excluded. */
function isInExcludedDir(set: RootMatchers, below: string, dir: string): boolean {
  if (!dir.startsWith(below)) return false;
  let excluded = set.judgedDirs.get(dir);
  if (excluded === undefined) {
    excluded = set.dirs.some((m) => m(dir)) || isInExcludedDir(set, below, path.dirname(dir));
    if (set.judgedDirs.size >= JUDGED_DIRS_MAX) set.judgedDirs.clear();
    set.judgedDirs.set(dir, excluded);
  }
  return excluded;
}
