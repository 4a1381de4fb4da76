#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';

// undici parses HTTP with WebAssembly; V8's background optimisation of that module
// held every exit up by about 0.2 s (the process waits for the compile job). The
// baseline wasm compiler is quick enough for header parsing, so stay on it.
setFlagsFromString('--liftoff-only');
// V8's young generation grows (up to 16 MiB semi-spaces in Node 20) while a command makes
// garbage, and that memory stays committed: a long run over many images peaked 40 MB higher
// for it. The tool streams its data in Buffers (outside the V8 heap), so a young generation
// that stays at its initial size costs no measurable CPU (README, "Nothing lost").
setFlagsFromString('--semi-space-growth-factor=1');

// The CLI as one file (dist/bundle/cli.js, made by `npm run build`): less to load at start.
const { main } = await import('../dist/bundle/cli.js');

// Exit as soon as the command is done: idle keep-alive connections must not hold the
// process open (stdout and stderr are synchronous for files and pipes on Linux).
main(process.argv).then((code) => process.exit(code));
