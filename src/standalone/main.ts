/** Entry point of the standalone executable (see pkg.config.json and `npm run package`). */
import { setFlagsFromString } from 'node:v8';
import { main } from '../cli.js';

// As bin/bundle.js: stay on V8's baseline wasm compiler so exits are not held up.
setFlagsFromString('--liftoff-only');
// As bin/bundle.js: a young generation that does not grow (memory flat as the image count grows).
setFlagsFromString('--semi-space-growth-factor=1');
void main(process.argv).then((code) => process.exit(code));
