/** A signed bundle made by the real CLI: keys `site` (signer) and `other` (a stranger) in `work`. */
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runBundle } from './cli.js';

/** Write `config` (lines of YAML) to `work/bundle.yaml`, make the keys, create `work/july.airgap` signed by site.key. */
export async function createSignedBundle(work: string, config: string[]): Promise<string> {
  await writeFile(join(work, 'bundle.yaml'), ['apiVersion: airgap.bundle/v1alpha1', 'kind: BundleConfig', ...config, ''].join('\n'));
  for (const k of ['site', 'other']) {
    const r = await runBundle(['keygen', '--out', join(work, k)]);
    assert.equal(r.code, 0, r.stderr);
  }
  const bundle = join(work, 'july.airgap');
  const r = await runBundle(['create', '-c', join(work, 'bundle.yaml'), '-o', bundle, '--sign-key', join(work, 'site.key')]);
  assert.equal(r.code, 0, `create failed: ${r.stderr}`);
  return bundle;
}
