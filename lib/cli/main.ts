#!/usr/bin/env node
// The fscrypt-local executable (package.json "bin"). Exits explicitly: a
// command must not hang on a handle it forgot, and on Linux stdout/stderr
// writes to pipes, files and terminals are synchronous, so nothing is lost.
import { runCli } from './program.js';

process.exit(await runCli(process.argv));
