/**
 * On a far-away registry every round trip before the first layer moves is
 * time the link stands idle (issue 9, WAN). A proxy in front of a real
 * registry holds every request a while, so requests that depend on each other
 * fall into separate waves; from the order of arrivals and answers at the
 * proxy (no clock), each request's wave is one more than the latest wave it
 * arrived after. Today's chains: the manifest by tag (beside the scheme
 * probe), then the layers of an image given by one manifest (beside the cosign
 * look-ups and an index's platform manifests), then the index's layers; a
 * cosign companion found in the second wave is read in the third and its
 * blobs come after, while nothing else waits for it.
 */
import { createHash } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRegistry, type RunningRegistry } from './helpers/registry.js';
import { startProxy, type RecordedRequest } from './helpers/proxy.js';
import { buildTestImages, LayoutBuilder, skopeoCopy, skopeoInspectRaw, type TestImageSet } from './helpers/images.js';
import { runBundle } from './helpers/cli.js';

let work: string;
let src: RunningRegistry;
let set: TestImageSet;
/** The cosign signature of app-one: its manifest digest, config and payload. */
let sig: { digest: string; blobs: string[] };

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'bundle-rtt-'));
  src = await startRegistry();
  set = await buildTestImages(join(work, 'layout'));
  await skopeoCopy(set.layoutDir, 'app-one', `${src.host}/rtt/app-one:1`);
  await skopeoCopy(set.layoutDir, 'multi', `${src.host}/rtt/multi:1`);
  // A cosign signature next to app-one (sha256-<hex>.sig).
  const subject = `sha256:${createHash('sha256').update(await skopeoInspectRaw(`docker://${src.host}/rtt/app-one:1`)).digest('hex')}`;
  const b = await new LayoutBuilder(join(work, 'sig')).init();
  const payload = await b.blob(Buffer.from(JSON.stringify({ critical: { image: { 'docker-manifest-digest': subject } } })), 'application/vnd.dev.cosign.simplesigning.v1+json');
  const cfg = await b.blob(Buffer.from('{"sig":1}'), 'application/vnd.oci.image.config.v1+json');
  const m = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: cfg, layers: [payload] };
  const top = await b.blob(Buffer.from(JSON.stringify(m)), m.mediaType);
  b.tag('sig', top);
  await b.save();
  await skopeoCopy(join(work, 'sig'), 'sig', `${src.host}/rtt/app-one:sha256-${subject.slice(7)}.sig`);
  sig = { digest: top.digest, blobs: [cfg.digest, payload.digest] };
});

after(async () => {
  await src?.stop();
  if (work && !process.env['KEEP_TEST_DIR']) await rm(work, { recursive: true, force: true });
});

/** Each request's wave: 1 + the highest wave among the requests answered before it arrived. */
function waves(requests: readonly RecordedRequest[]): Map<RecordedRequest, number> {
  const wave = new Map<RecordedRequest, number>();
  for (const r of [...requests].sort((a, b) => a.arrived - b.arrived)) {
    let w = 1;
    for (const [q, qw] of wave) if (q.done !== undefined && q.done < r.arrived) w = Math.max(w, qw + 1);
    wave.set(r, w);
  }
  return wave;
}

const json = async (digest: string) =>
  JSON.parse(await readFile(join(set.layoutDir, 'blobs', 'sha256', digest.slice(7)), 'utf8')) as { config?: { digest: string }; layers?: { digest: string }[]; manifests?: { digest: string }[] };

describe('create: round trips before the first layer', () => {
  it("an image's layers are asked for in the second wave, an index's in the third, a signature's after, each waiting for nothing else; every manifest and config is fetched once", async () => {
    // Held long enough that nothing the tool does between two requests could merge two waves.
    const proxy = await startProxy(src.host, { faults: [{ match: () => true, times: 100_000, kind: 'delay', delayMs: 250 }] });
    try {
      const cfg = join(work, 'c.yaml');
      await writeFile(cfg, `apiVersion: airgap.bundle/v1alpha1\nkind: BundleConfig\nimages:\n  - ${proxy.host}/rtt/app-one:1\n  - ${proxy.host}/rtt/multi:1\n`);
      const r = await runBundle(['create', '-c', cfg, '-o', join(work, 'out.airgap'), '--json']);
      assert.equal(r.code, 0, r.stderr);
      const wave = waves(proxy.requests);
      const show = [...wave].map(([q, w]) => `${w} ${q.method} ${q.path}`).join('\n');

      const one = await json(set.images['app-one']!.digest);
      const platforms = (await json(set.images.multi!.digest)).manifests!.map((m) => m.digest);
      const children = await Promise.all(platforms.map(json));
      const ofOne = new Set(one.layers!.map((l) => l.digest));
      const ofMulti = new Set(children.flatMap((m) => m.layers!.map((l) => l.digest)).filter((d) => !ofOne.has(d)));
      const configs = new Set([one, ...children].map((m) => m.config!.digest));
      /** The first wave in which a GET for one of `digests` (as a blob) came. */
      const firstWave = (digests: Set<string>): number => {
        const gets = proxy.requests.filter((q) => q.method === 'GET' && q.path.includes('/blobs/') && digests.has(q.path.split('/').pop()!));
        assert.ok(gets.length >= digests.size, show);
        return Math.min(...gets.map((q) => wave.get(q)!));
      };
      assert.equal(firstWave(ofOne), 2, show);
      assert.equal(firstWave(ofMulti), 3, show);
      // The signature: found in the second wave, read in the third, its blobs later; the bundle has it.
      const sigGets = proxy.requests.filter((q) => q.method === 'GET' && q.path === `/v2/rtt/app-one/manifests/${sig.digest}`);
      assert.deepEqual(sigGets.map((q) => wave.get(q)), [3], show);
      assert.ok(firstWave(new Set(sig.blobs)) >= 4, show);

      // The tag is read with one GET (no HEAD first), in the first wave.
      for (const repo of ['app-one', 'multi']) {
        const byTag = proxy.requests.filter((q) => q.path === `/v2/rtt/${repo}/manifests/1`);
        assert.deepEqual(byTag.map((q) => `${q.method} ${wave.get(q)}`), ['GET 1'], show);
      }
      // The platform manifests of the index come in the second wave, beside the cosign look-ups.
      for (const d of platforms) {
        const gets = proxy.requests.filter((q) => q.path === `/v2/rtt/multi/manifests/${d}`);
        assert.deepEqual(gets.map((q) => `${q.method} ${wave.get(q)}`), ['GET 2'], show);
      }
      const cosign = proxy.requests.filter((q) => /\/manifests\/sha256-[0-9a-f]{64}\.(sig|att|sbom)$/.test(q.path));
      assert.equal(cosign.length, 6, show);
      assert.ok(cosign.every((q) => wave.get(q) === 2), show);
      // A config is read once: the read that gives the image's platform is the one stored.
      for (const c of [...configs, sig.blobs[0]!]) assert.equal(proxy.requests.filter((q) => q.method === 'GET' && q.path.endsWith(`/blobs/${c}`)).length, 1, `${c}\n${show}`);
      // And the bundle is whole.
      const v = await runBundle(['verify', join(work, 'out.airgap'), '--json']);
      assert.equal(v.code, 0, v.stdout + v.stderr);
      const images = (JSON.parse(r.stdout) as { images: number }).images;
      assert.equal(images, 3);
    } finally {
      await proxy.stop();
    }
  });
});
