/**
 * The live source of the walkthrough test, as a separate process: every INTERVAL_MS it adds an
 * SSTable set (8 components, one generation) under the given data dirs' user tables and, once
 * more than three are live, retires the oldest, until SIGTERM. It prints "started", then
 * {"added":N,"removed":M} whenever either count changes, and the final counts before it exits.
 * usage: node --import tsx test/integration/walkthrough.writer.ts INTERVAL_MS DATA_DIR...
 */
import { SourceWriter, userTableDirs } from "../../src/dataset/live-writer.js";

const [intervalArg, ...dataDirs] = process.argv.slice(2);
const tableDirs = await userTableDirs(dataDirs);
if (tableDirs.length === 0) throw new Error(`no user table directories under ${dataDirs.join(", ")}`);
const writer = new SourceWriter(tableDirs);

let reported = "";
const report = () => {
  const line = JSON.stringify({ added: writer.added, removed: writer.removed });
  if (line !== reported) process.stdout.write(`${line}\n`);
  reported = line;
};

writer.start(Number(intervalArg));
const reporter = setInterval(report, 10);
process.stdout.write("started\n");
process.once("SIGTERM", () => {
  void writer.stop().then(() => {
    clearInterval(reporter);
    report();
    process.exit(0);
  });
});
