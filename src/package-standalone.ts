/**
 * `npm run package`: the standalone executable, configured by pkg.config.json.
 *
 * Uses Node.js's single executable application support with the node binary that
 * runs this script (nothing is downloaded): esbuild bundles the CLI and the hashing
 * thread into CommonJS (a single-executable's main script must be one CommonJS
 * file), `node --experimental-sea-config` turns the bundle and the assets into a
 * preparation blob, and postject injects the blob into a copy of node.
 * Run after `npm run build` (it bundles dist/src/).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { build, type Plugin } from 'esbuild';
import { VALIDATOR_FILES } from './bundle/validate.js';
import { generatedFile, packageRoot } from './util/package-root.js';
import { CONFIG_VALIDATOR_FILE } from './config/config.js';

interface PackageConfig {
  entry: string;
  worker: string;
  output: string;
  platform: string;
  strip?: boolean;
  assets: Record<string, string>;
}

const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
const root = packageRoot();
const require = createRequire(import.meta.url);
const config = JSON.parse(readFileSync(join(root, 'pkg.config.json'), 'utf8')) as PackageConfig;
const here = `${process.platform}-${process.arch}`;
if (config.platform !== here) throw new Error(`pkg.config.json builds for ${config.platform}, but this node is ${here}: the executable is a copy of the node running the build`);
const outDir = join(root, 'dist', 'standalone');
rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });

/**
 * Source rewrites for a CommonJS bundle with no node_modules beside it: the ESM
 * build loads a few things lazily through createRequire(import.meta.url) (ajv, the
 * precompiled validator, tar-stream's headers); here they must be plain require()
 * calls of fixed paths so that esbuild bundles them. Each rewrite must match, so a
 * change in those files fails the package build rather than the executable.
 */
const tarHeaders = join(dirname(require.resolve('tar-stream')), 'headers.js');
const rewrites: { file: string; from: string; to: string }[] = [
  { file: 'archive/tar.js', from: "require(path.join(path.dirname(require.resolve('tar-stream')), 'headers.js'))", to: `require(${JSON.stringify(tarHeaders)})` },
  {
    file: 'bundle/validate.js',
    from: 'createRequire(import.meta.url)(generatedFile(VALIDATOR_FILES[which]))',
    to: `(which === 'open' ? require(${JSON.stringify(generatedFile(VALIDATOR_FILES.open))}) : require(${JSON.stringify(generatedFile(VALIDATOR_FILES.strict))}))`,
  },
  { file: 'config/config.js', from: 'createRequire(import.meta.url)(generatedFile(CONFIG_VALIDATOR_FILE))', to: `require(${JSON.stringify(generatedFile(CONFIG_VALIDATOR_FILE))})` },
];
const standalonePlugin: Plugin = {
  name: 'standalone',
  setup(b) {
    // The zstd addon comes from the executable's embedded copy.
    b.onResolve({ filter: /^zstd-napi\/binding\.js$/ }, () => ({ path: join(root, 'dist/src/standalone/zstd-binding.js') }));
    b.onLoad({ filter: /dist\/src\/.*\.js$/ }, (args) => {
      let text = readFileSync(args.path, 'utf8');
      for (const r of rewrites.filter((x) => args.path.endsWith(`dist/src/${x.file}`))) {
        if (!text.includes(r.from)) throw new Error(`package build: ${r.file} no longer contains ${r.from}`);
        text = text.split(r.from).join(r.to);
      }
      text = text.split('createRequire(import.meta.url)(').join('require(');
      return { contents: text, loader: 'js' };
    });
  },
};

const common = {
  bundle: true,
  platform: 'node' as const,
  format: 'cjs' as const,
  target: 'node20',
  logLevel: 'warning' as const,
  define: { 'import.meta.url': '__bundleImportMetaUrl' },
  banner: { js: "var __bundleImportMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [standalonePlugin],
  // esbuild is the build tool, never loaded by the CLI
  external: ['esbuild'],
};
await build({ ...common, entryPoints: [join(root, config.entry)], outfile: join(outDir, 'main.cjs') });
await build({ ...common, entryPoints: [join(root, config.worker)], outfile: join(outDir, 'hash-worker.cjs') });

const assets: Record<string, string> = {};
for (const [key, file] of Object.entries(config.assets)) {
  const abs = resolve(root, file);
  if (!existsSync(abs)) throw new Error(`pkg.config.json: asset ${key} (${file}) does not exist`);
  assets[key] = abs;
}
const blob = join(outDir, 'sea-prep.blob');
const seaConfig = join(outDir, 'sea-config.json');
writeFileSync(seaConfig, JSON.stringify({ main: join(outDir, 'main.cjs'), output: blob, disableExperimentalSEAWarning: true, useCodeCache: false, assets }, null, 2));
execFileSync(process.execPath, ['--experimental-sea-config', seaConfig], { stdio: ['ignore', 'ignore', 'inherit'] });

const output = resolve(root, config.output);
mkdirSync(dirname(output), { recursive: true });
rmSync(output, { force: true });
copyFileSync(process.execPath, output);
chmodSync(output, 0o755);
if (config.strip) {
  // node ships with its symbols; they are not needed to run (about 13 MB less).
  try {
    execFileSync('strip', [output], { stdio: 'ignore' });
  } catch {
    process.stderr.write('package: strip not found; the executable keeps its symbols\n');
  }
}
const { inject } = require('postject') as { inject(file: string, name: string, data: Buffer, opts: { sentinelFuse: string }): Promise<void> };
// postject warns about ELF notes it does not parse; the injection is checked by running the result below.
const warn = console.warn;
console.warn = () => undefined;
try {
  await inject(output, 'NODE_SEA_BLOB', readFileSync(blob), { sentinelFuse: SEA_FUSE });
} finally {
  console.warn = warn;
}
const version = execFileSync(output, ['--version'], { encoding: 'utf8', env: { PATH: '/nonexistent' } });
const digest = createHash('sha256').update(readFileSync(output)).digest('hex');
process.stdout.write(`wrote ${output} (${(readFileSync(output).length / 1e6).toFixed(1)} MB, sha256 ${digest})\n${version}`);
