/**
 * The build step after `tsc` (`npm run build`):
 * 1. compiles the bundle manifest's JSON Schema (as written, and opened for newer
 *    minors) and the bundle config's into standalone validation code with ajv
 *    (dist/generated/), so verify, push and create do not load and compile ajv at
 *    every start (validate.ts and config.ts fall back to compiling when it is missing);
 * 2. bundles the CLI and the hashing worker into single files with esbuild
 *    (dist/bundle/), which bin/bundle.js runs: one file to load instead of
 *    hundreds of modules halves the start-up of a short command such as a
 *    re-push onto a complete registry.
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import standalone from 'ajv/dist/standalone/index.js';
import { build } from 'esbuild';
import { createAjv, loadSchemaFile } from './bundle/schema-problems.js';
import { MANIFEST_SCHEMA_URL, openSchema, VALIDATOR_FILES } from './bundle/validate.js';
import { CONFIG_SCHEMA_URL, CONFIG_VALIDATOR_FILE } from './config/config.js';
import { generatedFile, packageRoot } from './util/package-root.js';

const PACKAGE_ROOT = packageRoot();

// The manifest schema as written, and opened for manifests of a newer minor (validate.ts).
const manifestSchema = loadSchemaFile(MANIFEST_SCHEMA_URL);
for (const [which, file] of Object.entries(VALIDATOR_FILES)) {
  const ajv = createAjv({ code: { source: true } });
  const validate = ajv.compile((which === 'open' ? openSchema(manifestSchema) : manifestSchema) as Record<string, unknown>);
  const validatorFile = generatedFile(file);
  mkdirSync(dirname(validatorFile), { recursive: true });
  writeFileSync(validatorFile, `// Generated from spec/bundle-manifest.schema.json by src/build.ts: do not edit.\n${standalone.default(ajv, validate)}\n`);
}

// The bundle config's schema too: create validates every config with it.
{
  const ajv = createAjv({ code: { source: true } });
  const validate = ajv.compile(loadSchemaFile(CONFIG_SCHEMA_URL));
  writeFileSync(generatedFile(CONFIG_VALIDATOR_FILE), `// Generated from spec/bundle-config.schema.json by src/build.ts: do not edit.\n${standalone.default(ajv, validate)}\n`);
}

// A fresh folder: chunk names carry content hashes, so old ones would pile up.
rmSync(join(PACKAGE_ROOT, 'dist/bundle'), { recursive: true, force: true });
await build({
  entryPoints: [join(PACKAGE_ROOT, 'dist/src/cli.js'), join(PACKAGE_ROOT, 'dist/src/bundle/hash-worker.js')],
  entryNames: '[name]',
  // Each command's code (and ora, only on a terminal) in chunks of their own, loaded when used.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  outdir: join(PACKAGE_ROOT, 'dist/bundle'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // The native zstd binding and ajv (required lazily, by the generated validator too) stay in node_modules.
  external: ['zstd-napi', 'ajv', 'esbuild'],
  // Bundled CommonJS dependencies call require() for Node's built-ins.
  banner: { js: "import { createRequire as __bundleRequire } from 'node:module'; const require = __bundleRequire(import.meta.url);" },
  logLevel: 'warning',
  plugins: [
    {
      // undici's HTTP/2 client loads node:http2 (the slowest built-in to load) at start-up;
      // registries are spoken to over HTTP/1.1 here (allowH2 is never set), so leave it out.
      name: 'no-http2',
      setup(b) {
        b.onResolve({ filter: /^\.\/client-h2\.js$/ }, (args) =>
          args.importer.includes(`${join('undici', 'lib', 'dispatcher')}`) ? { path: 'client-h2', namespace: 'no-http2' } : undefined,
        );
        b.onLoad({ filter: /.*/, namespace: 'no-http2' }, () => ({
          contents: "module.exports = function connectH2 () { throw new Error('HTTP/2 is not used by airgap-bundle') }",
          loader: 'js',
        }));
      },
    },
  ],
});
