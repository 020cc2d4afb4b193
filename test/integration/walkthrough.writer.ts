/**
 * The live source of the walkthrough test, as a separate process: adds and retires SSTable sets
 * under the given data dirs every 100 ms until SIGTERM, then prints {"added":N,"removed":M}.
 * usage: node --import tsx test/integration/walkthrough.writer.ts DATA_DIR...
 */
import { SourceWriter, userTableDirs } from "../../src/dataset/live-writer.js";

const writer = new SourceWriter(await userTableDirs(process.argv.slice(2)));
writer.start(100);
process.stdout.write("started\n");
process.once("SIGTERM", () => {
  void writer.stop().then(() => {
    process.stdout.write(JSON.stringify({ added: writer.added, removed: writer.removed }) + "\n");
    process.exit(0);
  });
});
