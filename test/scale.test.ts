/**
 * Scale: 2,000 small images (generated here into an OCI layout: a shared base layer and one
 * small layer of their own each, 4,001 blobs and 2,000 manifests) through create, verify and
 * push into a real registry, each under GNU time: peak RSS under 200 MB in each, and the
 * registry (its own API) then lists all 2,000 tags.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '../src/sign/keys.js';
import { runBundleRss } from './helpers/cli.js';
import { buildManyImages } from './helpers/images.js';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';

const IMAGES = 2000;
const RSS_LIMIT_MIB = 200;

let work: string;
let reg: RunningRegistry;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-scale-'));
  reg = await startRegistry();
});

after(async () => {
  await reg?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe(`${IMAGES} images`, () => {
  it(`create, verify and push ${IMAGES} images, each under ${RSS_LIMIT_MIB} MB peak RSS; the registry lists every tag`, async (t) => {
    await buildManyImages(join(work, 'layout'), IMAGES);
    await writeFile(join(work, 'bundle.yaml'), 'apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nociLayouts:\n  - path: ./layout\n');
    const keys = await generateKeyPair(join(work, 'site'));
    const file = join(work, 'scale.airgap');

    const c = await runBundleRss(['create', '-c', join(work, 'bundle.yaml'), '-o', file, '--sign-key', keys.privatePath, '--quiet']);
    assert.equal(c.code, 0, c.stderr);
    const v = await runBundleRss(['verify', file, '--key', keys.publicPath, '--json']);
    assert.equal(v.code, 0, v.stderr);
    const report = JSON.parse(v.stdout) as { images: number; members: number };
    assert.equal(report.images, IMAGES);
    assert.equal(report.members, 2 + 3 * IMAGES + 1);
    const p = await runBundleRss(['push', file, '--to', `${reg.host}/mirror`, '--key', keys.publicPath, '--out-dir', join(work, 'out'), '--quiet', '--concurrency', '16']);
    assert.equal(p.code, 0, p.stdout + p.stderr);
    t.diagnostic(`peak RSS: create ${c.rssMiB.toFixed(0)} MiB, verify ${v.rssMiB.toFixed(0)} MiB, push ${p.rssMiB.toFixed(0)} MiB`);
    t.diagnostic(`wall time (information only): create ${c.seconds} s, verify ${v.seconds} s, push ${p.seconds} s`);
    for (const [what, r] of [
      ['create', c],
      ['verify', v],
      ['push', p],
    ] as const) {
      assert.ok(r.rssMiB < RSS_LIMIT_MIB, `${what}: peak RSS ${r.rssMiB.toFixed(0)} MiB`);
    }
    const tags = ((await (await fetch(`http://${reg.host}/v2/mirror/scale/app/tags/list`)).json()) as { tags: string[] }).tags;
    assert.equal(new Set(tags).size, IMAGES);
  });
});
