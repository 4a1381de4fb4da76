import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parse } from 'yaml';
import { tomlString, writeMirrorFiles, type MirrorMapping } from '../src/push/mirror-files.js';
import { BundleError, UsageError } from '../src/util/errors.js';

const DA = `sha256:${'a'.repeat(64)}`;
const DB = `sha256:${'b'.repeat(64)}`;
const DC = `sha256:${'c'.repeat(64)}`;
const DST = 'mirror.example.com:5000/mirror';

const MAPPINGS: MirrorMapping[] = [
  {
    source: 'quay.io/ns/app:1.2',
    sourceRepository: 'quay.io/ns/app',
    destination: `${DST}/ns/app:1.2`,
    destinationRepository: `${DST}/ns/app`,
    digest: DA,
    tagged: true,
  },
  {
    // Same repository, pinned by digest, pushed under a sha256-<hex> tag.
    source: `quay.io/ns/app@${DB}`,
    sourceRepository: 'quay.io/ns/app',
    destination: `${DST}/ns/app:sha256-${'b'.repeat(64)}`,
    destinationRepository: `${DST}/ns/app`,
    digest: DB,
    tagged: false,
  },
  {
    source: `registry.access.redhat.com/ubi9/ubi@${DC}`,
    sourceRepository: 'registry.access.redhat.com/ubi9/ubi',
    destination: `${DST}/ubi9/ubi:sha256-${'c'.repeat(64)}`,
    destinationRepository: `${DST}/ubi9/ubi`,
    digest: DC,
    tagged: false,
  },
  {
    source: 'docker.io/library/alpine:3.20',
    sourceRepository: 'docker.io/library/alpine',
    destination: `${DST}/library/alpine:3.20`,
    destinationRepository: `${DST}/library/alpine`,
    digest: DC,
    tagged: true,
  },
];

let dir: string;
before(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'bundle-mirror-test-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Parse TOML with Python's tomllib, an independent parser. */
function tomllib(file: string): unknown {
  const out = execFileSync('python3', ['-c', 'import sys, json, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], "rb"))))', file], {
    encoding: 'utf8',
  });
  return JSON.parse(out);
}

/** What `oc image mirror -f` does with a mapping file: drop `#...`, split on spaces, SRC=DST. */
function ocParse(text: string): [string, string][] {
  const out: [string, string][] = [];
  const dests = new Set<string>();
  for (let line of text.split('\n')) {
    const hash = line.indexOf('#');
    if (hash >= 0) line = line.slice(0, hash);
    line = line.trim();
    if (!line) continue;
    for (const arg of line.split(' ')) {
      const eq = arg.indexOf('=');
      assert.ok(eq > 0 && eq < arg.length - 1, `not SRC=DST: ${arg}`);
      const dst = arg.slice(eq + 1);
      assert.ok(!dests.has(dst), `destination named twice: ${dst}`);
      dests.add(dst);
      out.push([arg.slice(0, eq), dst]);
    }
  }
  return out;
}

describe('mirror files', () => {
  let out: string;
  let files: string[];
  before(async () => {
    out = path.join(dir, 'out', 'nested');
    // Mappings repeated: the files must not repeat them.
    files = await writeMirrorFiles(out, [...MAPPINGS, ...MAPPINGS.slice(0, 2)]);
  });

  it('writes every file into the (created) output directory', () => {
    assert.deepEqual(
      files.map((f) => path.relative(out, f)),
      ['mapping.txt', 'idms.yaml', 'itms.yaml', 'icsp.yaml', 'registries.conf'],
    );
  });

  it('mapping.txt: sorted unique SRC@digest=DST:tag lines that oc image mirror accepts', async () => {
    const text = await readFile(path.join(out, 'mapping.txt'), 'utf8');
    assert.match(text, /^# .*oc image mirror/);
    const body = text.split('\n').filter((l) => l && !l.startsWith('#'));
    assert.deepEqual(body, [
      `docker.io/library/alpine@${DC}=${DST}/library/alpine:3.20`,
      `quay.io/ns/app@${DA}=${DST}/ns/app:1.2`,
      `quay.io/ns/app@${DB}=${DST}/ns/app:sha256-${'b'.repeat(64)}`,
      `registry.access.redhat.com/ubi9/ubi@${DC}=${DST}/ubi9/ubi:sha256-${'c'.repeat(64)}`,
    ]);
    assert.equal(ocParse(text).length, 4);
  });

  it('idms.yaml: one ImageDigestMirrorSet, one entry per source repository', async () => {
    const text = await readFile(path.join(out, 'idms.yaml'), 'utf8');
    assert.match(text, /^# ImageDigestMirrorSet.*\n# Apply with: oc apply -f idms\.yaml\n/);
    assert.deepEqual(parse(text), {
      apiVersion: 'config.openshift.io/v1',
      kind: 'ImageDigestMirrorSet',
      metadata: { name: 'airgap-bundle' },
      spec: {
        imageDigestMirrors: [
          { source: 'docker.io/library/alpine', mirrors: [`${DST}/library/alpine`] },
          { source: 'quay.io/ns/app', mirrors: [`${DST}/ns/app`] },
          { source: 'registry.access.redhat.com/ubi9/ubi', mirrors: [`${DST}/ubi9/ubi`] },
        ],
      },
    });
  });

  it('itms.yaml: ImageTagMirrorSet for repositories of images named by tag only', async () => {
    const doc = parse(await readFile(path.join(out, 'itms.yaml'), 'utf8')) as Record<string, unknown>;
    assert.equal(doc.apiVersion, 'config.openshift.io/v1');
    assert.equal(doc.kind, 'ImageTagMirrorSet');
    assert.deepEqual(doc.spec, {
      imageTagMirrors: [
        { source: 'docker.io/library/alpine', mirrors: [`${DST}/library/alpine`] },
        { source: 'quay.io/ns/app', mirrors: [`${DST}/ns/app`] },
      ],
    });
  });

  it('icsp.yaml: legacy ImageContentSourcePolicy', async () => {
    const text = await readFile(path.join(out, 'icsp.yaml'), 'utf8');
    assert.match(text, /^# ImageContentSourcePolicy/);
    const doc = parse(text) as { apiVersion: string; kind: string; spec: { repositoryDigestMirrors: { source: string; mirrors: string[] }[] } };
    assert.equal(doc.apiVersion, 'operator.openshift.io/v1alpha1');
    assert.equal(doc.kind, 'ImageContentSourcePolicy');
    assert.deepEqual(
      doc.spec.repositoryDigestMirrors.map((e) => e.source),
      ['docker.io/library/alpine', 'quay.io/ns/app', 'registry.access.redhat.com/ubi9/ubi'],
    );
  });

  it('registries.conf: a v2 drop-in that Python tomllib reads', async () => {
    const file = path.join(out, 'registries.conf');
    const text = await readFile(file, 'utf8');
    assert.match(text, /^# containers-registries\.conf.*\n# Install with: cp registries\.conf \/etc\/containers\/registries\.conf\.d\/99-airgap-bundle\.conf\n/);
    assert.deepEqual(tomllib(file), {
      registry: [
        { prefix: 'docker.io/library/alpine', location: 'docker.io/library/alpine', mirror: [{ location: `${DST}/library/alpine` }] },
        { prefix: 'quay.io/ns/app', location: 'quay.io/ns/app', mirror: [{ location: `${DST}/ns/app` }] },
        {
          prefix: 'registry.access.redhat.com/ubi9/ubi',
          location: 'registry.access.redhat.com/ubi9/ubi',
          mirror: [{ location: `${DST}/ubi9/ubi` }],
        },
      ],
    });
  });

  it('honours insecure and name, skips itms.yaml without tagged images, and lists several mirrors', async () => {
    const out2 = path.join(dir, 'out2');
    const digestOnly = MAPPINGS.filter((m) => !m.tagged);
    const second: MirrorMapping = { ...digestOnly[1]!, destination: `other.example.com/x/ubi:v`, destinationRepository: 'other.example.com/x/ubi' };
    const written = await writeMirrorFiles(out2, [...digestOnly, second], { insecure: true, name: 'my-mirror.v1' });
    assert.deepEqual(
      written.map((f) => path.basename(f)),
      ['mapping.txt', 'idms.yaml', 'icsp.yaml', 'registries.conf'],
    );
    await assert.rejects(stat(path.join(out2, 'itms.yaml')), { code: 'ENOENT' });
    const idms = parse(await readFile(path.join(out2, 'idms.yaml'), 'utf8')) as { metadata: { name: string }; spec: { imageDigestMirrors: unknown[] } };
    assert.equal(idms.metadata.name, 'my-mirror.v1');
    assert.deepEqual(idms.spec.imageDigestMirrors[1], {
      source: 'registry.access.redhat.com/ubi9/ubi',
      mirrors: [`${DST}/ubi9/ubi`, 'other.example.com/x/ubi'],
    });
    const conf = tomllib(path.join(out2, 'registries.conf')) as { registry: { mirror: { location: string; insecure?: boolean }[] }[] };
    assert.deepEqual(conf.registry[1]!.mirror, [
      { location: `${DST}/ubi9/ubi`, insecure: true },
      { location: 'other.example.com/x/ubi', insecure: true },
    ]);
    assert.match(await readFile(path.join(out2, 'registries.conf'), 'utf8'), /99-my-mirror\.v1\.conf/);
  });

  it('pushes by digest (bare repository) when the destination has no tag', async () => {
    const m: MirrorMapping = { ...MAPPINGS[2]!, destination: `${DST}/ubi9/ubi@${DC}` };
    const out3 = path.join(dir, 'out3');
    await writeMirrorFiles(out3, [m]);
    const pairs = ocParse(await readFile(path.join(out3, 'mapping.txt'), 'utf8'));
    assert.deepEqual(pairs, [[`registry.access.redhat.com/ubi9/ubi@${DC}`, `${DST}/ubi9/ubi`]]);
  });

  it('the same image from two sources under one destination tag: one mapping line, both sources mirrored', async () => {
    const fromHub: MirrorMapping = {
      ...MAPPINGS[0]!,
      source: 'docker.io/ns/app:1.2',
      sourceRepository: 'docker.io/ns/app',
    };
    for (const order of [[MAPPINGS[0]!, fromHub], [fromHub, MAPPINGS[0]!]]) {
      const out4 = path.join(dir, `same-image-${order[0]!.sourceRepository.split('/')[0]}`);
      await writeMirrorFiles(out4, order);
      const pairs = ocParse(await readFile(path.join(out4, 'mapping.txt'), 'utf8'));
      assert.deepEqual(pairs, [[`docker.io/ns/app@${DA}`, `${DST}/ns/app:1.2`]], 'one line, whatever the order');
      const idms = parse(await readFile(path.join(out4, 'idms.yaml'), 'utf8'));
      assert.deepEqual(idms.spec.imageDigestMirrors, [
        { source: 'docker.io/ns/app', mirrors: [`${DST}/ns/app`] },
        { source: 'quay.io/ns/app', mirrors: [`${DST}/ns/app`] },
      ]);
    }
  });

  it('refuses two images pushed to the same destination tag, and malformed mappings', async () => {
    const clash: MirrorMapping = { ...MAPPINGS[0]!, digest: DB };
    await assert.rejects(writeMirrorFiles(path.join(dir, 'x'), [MAPPINGS[0]!, clash]), (err: unknown) => {
      assert.ok(err instanceof BundleError);
      assert.match(err.message, /two images would be pushed to mirror\.example\.com:5000\/mirror\/ns\/app:1\.2/);
      return true;
    });
    const bad: [Partial<MirrorMapping>, RegExp][] = [
      [{ digest: 'sha256:123' }, /is not a sha256 digest/],
      [{ sourceRepository: 'quay.io/ns/app:1.2' }, /source repository .* must not carry a tag/],
      [{ destinationRepository: 'mirror/ns/app', destination: 'mirror/ns/app:1.2' }, /must start with the registry host/],
      [{ destination: `${DST}/elsewhere/app:1.2` }, /destination is not in repository/],
      [{ source: 'quay.io/other/app:1.2' }, /source is not in repository/],
      [{ source: `quay.io/ns/app@${DB}` }, /source is pinned to sha256:b+, not sha256:a+/],
      [{ destination: `${DST}/ns/app:bad tag!` }, /invalid tag/],
    ];
    for (const [patch, re] of bad) {
      await assert.rejects(writeMirrorFiles(path.join(dir, 'x'), [{ ...MAPPINGS[0]!, ...patch }]), (err: unknown) => {
        assert.ok(err instanceof BundleError, String(err));
        assert.match(err.message, re);
        return true;
      });
    }
    await assert.rejects(writeMirrorFiles(path.join(dir, 'x'), MAPPINGS, { name: 'Not_Valid' }), UsageError);
    // Nothing was written by any refused call.
    await assert.rejects(stat(path.join(dir, 'x')), { code: 'ENOENT' });
  });

  it('writes nothing for no mappings', async () => {
    assert.deepEqual(await writeMirrorFiles(path.join(dir, 'empty'), []), []);
    await assert.rejects(stat(path.join(dir, 'empty')), { code: 'ENOENT' });
  });

  it('escapes TOML strings so that tomllib reads them back exactly', async () => {
    const tricky = ['plain', 'quote " and \\ backslash', 'tab\tnew\nline\r', 'ctl \u0001\u001f\u007f', 'unicode é ☃ 𝄞'];
    const file = path.join(dir, 'escape.toml');
    await writeFile(file, tricky.map((s, i) => `k${i} = ${tomlString(s)}\n`).join(''));
    assert.deepEqual(tomllib(file), Object.fromEntries(tricky.map((s, i) => [`k${i}`, s])));
  });
});
