/**
 * `npm run demo`: the whole job on content that ships in the repository.
 * Makes a key, bundles demo/content (an OCI layout with two small images
 * sharing a layer), inspects and verifies the bundle, starts a throw-away
 * Docker Distribution registry on loopback and pushes into it.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startRegistry } from '../test/helpers/registry.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const OUT = join(ROOT, 'demo-out');

function step(title: string): void {
  process.stdout.write(`\n=== ${title}\n`);
}

function bundle(args: string[]): Promise<void> {
  process.stdout.write(`$ bundle ${args.join(' ')}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'bundle.js'), ...args], { stdio: 'inherit', cwd: ROOT });
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`bundle ${args[0]} exited ${code}`))));
  });
}

function ensureRegistryBinary(): void {
  if (spawnSync('sh', ['-c', 'command -v docker-registry']).status === 0) return;
  if (process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v apt-get']).status === 0) {
    process.stdout.write('docker-registry (Docker Distribution) is not installed: installing it from Debian for the push step\n');
    const r = spawnSync('sh', ['-c', 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry'], { stdio: 'inherit' });
    if (r.status === 0) return;
  }
  throw new Error('the push step needs a registry: install Docker Distribution (apt-get install docker-registry) and run again');
}

async function main(): Promise<void> {
  await rm(OUT, { recursive: true, force: true });
  await mkdir(OUT, { recursive: true });
  const config = join(OUT, 'bundle.yaml');
  await writeFile(
    config,
    ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', 'ociLayouts:', `  - path: ${join(ROOT, 'demo', 'content')}`, ''].join('\n'),
  );
  const file = join(OUT, 'demo.airgap');

  step('internet side: a signing key, then one signed bundle');
  await bundle(['keygen', '--out', join(OUT, 'site')]);
  await bundle(['create', '-c', config, '-o', file, '--sign-key', join(OUT, 'site.key')]);

  step('secure zone: what is inside, and is it whole and signed by our key?');
  await bundle(['inspect', file]);
  await bundle(['verify', file, '--key', join(OUT, 'site.pub')]);

  step('secure zone: push into the local registry');
  ensureRegistryBinary();
  const registry = await startRegistry();
  try {
    await bundle(['push', file, '--to', `${registry.host}/mirror`, '--key', join(OUT, 'site.pub'), '--out-dir', join(OUT, 'push-out')]);
    step('where everything went');
    process.stdout.write(
      [
        `bundle:            ${file}`,
        `keys:              ${join(OUT, 'site.key')} (private), ${join(OUT, 'site.pub')} (public)`,
        `registry:          http://${registry.host}/v2/_catalog (stopped when the demo ends)`,
        `mirror config:     ${join(OUT, 'push-out')} (mapping.txt, idms.yaml, itms.yaml, icsp.yaml, registries.conf)`,
        `stock tools read it too:  zstd -dc ${file} | tar t`,
        '',
      ].join('\n'),
    );
  } finally {
    await registry.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
