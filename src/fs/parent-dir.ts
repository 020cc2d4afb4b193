/** Parent directories of many paths, cheaply. */

/**
 * The directory of normalized absolute paths, for paths that come grouped by directory (a
 * listing's order): the same string as long as the directory stays the same, so that a Map
 * keyed by directory hashes each directory once rather than a fresh copy per file. path.dirname
 * would also re-normalize every path.
 */
export class ParentCache {
  private last = "";

  /** path.dirname(p) for a normalized absolute path. */
  of(p: string): string {
    const slash = p.lastIndexOf("/");
    if (slash === 0) return "/";
    const last = this.last;
    if (slash === last.length && p.startsWith(last)) return last;
    return (this.last = p.slice(0, slash));
  }
}
