/**
 * `lm-sidecar check-config --config FILE`: validates the file and prints, per instance, its
 * role, its resolved directories (and whether they exist), the expanded exclusion patterns,
 * and what they exclude on this disk right now.
 */
import { readdir, stat } from "node:fs/promises";
import path from "node:path";
import { loadConfigFile } from "../config/load.js";
import { InstanceRegistry } from "../instance/registry.js";

const SHOWN_PER_ROOT = 10;

export async function checkConfig(configFile: string): Promise<number> {
  const { config, warnings } = await loadConfigFile(configFile);
  const out: string[] = [];
  for (const w of warnings) out.push(`warning: ${w}`);
  out.push(`config ${configFile}: OK`);
  out.push(`gateway ${config.sidecar.host}:${config.sidecar.port}  peer plane ${config.sidecar.host}:${config.sidecar.peerPort}`);
  out.push(`max_concurrent_file_requests ${config.liveMigration.maxConcurrentFileRequests}`);
  const registry = new InstanceRegistry(config);
  for (const instance of registry.all()) {
    const c = instance.config;
    const peer =
      instance.role === "source"
        ? ` → destination ${instance.destinationHost}`
        : instance.role === "destination"
          ? ` ← source ${instance.sourceHost} (plane ${instance.sourceHost}:${config.sidecar.peerPort})`
          : " (not in migration_map: Live Migration routes answer 404)";
    out.push("");
    out.push(`instance ${c.id} ${c.host}: role ${instance.role}${peer}`);
    out.push(`  native ${c.host}:${c.port}  jmx ${c.jmxHost}:${c.jmxPort}`);
    out.push(`  staging_dir ${c.stagingDir}`);
    for (const root of instance.roots) {
      const exists = await stat(root.path).then((s) => s.isDirectory(), () => false);
      out.push(`  ${`${root.dirType}/${root.dirIndex}`.padEnd(20)} ${root.path}${exists ? "" : "  (missing: skipped)"}`);
    }
    const patterns = instance.exclusions.describe();
    if (patterns.length === 0) out.push("  exclusions: none");
    for (const p of patterns) out.push(`  exclude ${p.kind.padEnd(4)} ${p.pattern}`);
    for (const root of instance.roots) {
      const excluded: string[] = [];
      const walk = async (dir: string): Promise<void> => {
        const names = await readdir(dir, { withFileTypes: true }).catch(() => []);
        for (const d of names) {
          const abs = path.join(dir, d.name);
          if (d.isDirectory()) {
            if (instance.exclusions.isDirExcluded(root, abs)) excluded.push(abs + "/");
            else await walk(abs);
          } else if (instance.exclusions.isFileExcluded(root, abs)) excluded.push(abs);
        }
      };
      await walk(root.path);
      if (excluded.length === 0) continue;
      out.push(`  ${root.dirType}/${root.dirIndex}: ${excluded.length} excluded path(s)`);
      for (const p of excluded.slice(0, SHOWN_PER_ROOT)) out.push(`    - ${p}`);
      if (excluded.length > SHOWN_PER_ROOT) out.push(`    … and ${excluded.length - SHOWN_PER_ROOT} more`);
    }
  }
  process.stdout.write(out.join("\n") + "\n");
  return 0;
}
