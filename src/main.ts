#!/usr/bin/env node
/** Process entry: argv → command → exit code. */
import { run } from "./cli/run.js";

process.exitCode = await run(process.argv.slice(2));
