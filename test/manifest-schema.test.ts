import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { FORMAT_VERSION, type BundleManifest } from '../src/bundle/manifest.js';
import { MANIFEST_SCHEMA_URL, unknownFields, validateManifest } from '../src/bundle/validate.js';
import { BundleError } from '../src/util/errors.js';
import { loadSchemaFile } from '../src/bundle/schema-problems.js';

const D1 = `sha256:${'a'.repeat(64)}`;
const D2 = `sha256:${'b'.repeat(64)}`;

function valid(): BundleManifest {
  return {
    schemaVersion: 1,
    kind: 'AirgapBundleManifest',
    formatVersion: FORMAT_VERSION,
    created: '2024-05-01T12:00:00.123Z',
    tool: { name: 'bundle', version: '0.1.0' },
    members: [
      { path: 'oci-layout', digest: D1, size: 30, mediaType: 'application/json', offset: 512 },
      { path: `blobs/sha256/${'b'.repeat(64)}`, digest: D2, size: 0, mediaType: 'application/vnd.oci.image.index.v1+json', offset: 1536 },
    ],
    images: [
      {
        source: 'docker.io/library/alpine:3.20',
        refName: 'docker.io/library/alpine:3.20',
        digest: D2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        size: 0,
        platforms: ['linux/amd64', 'linux/arm/v7'],
        tags: ['3.20'],
        origin: 'registry',
      },
    ],
  };
}

function fails(mutate: (m: Record<string, unknown>) => void, ...expect: RegExp[]): void {
  const m = valid() as unknown as Record<string, unknown>;
  mutate(m);
  assert.throws(
    () => validateManifest(m),
    (err: unknown) => {
      assert.ok(err instanceof BundleError, String(err));
      assert.equal(err.exitCode, 1);
      for (const re of expect) assert.match(err.message, re);
      return true;
    },
  );
}

type Rec = Record<string, unknown>;
const member = (m: Rec, i: number): Rec => (m.members as Rec[])[i]!;
const image = (m: Rec, i: number): Rec => (m.images as Rec[])[i]!;

describe('bundle manifest schema', () => {
  it('is a draft-07 schema file in spec/', () => {
    const schema = loadSchemaFile(MANIFEST_SCHEMA_URL) as Rec;
    assert.equal(schema.$schema, 'http://json-schema.org/draft-07/schema#');
    assert.equal(schema.additionalProperties, false);
  });

  it('accepts a valid manifest (repeatedly: the compiled validator is cached)', () => {
    const m = valid();
    assert.equal(validateManifest(m), m);
    assert.equal(validateManifest(JSON.parse(JSON.stringify(m))).images[0]!.source, 'docker.io/library/alpine:3.20');
    const filtered = valid();
    filtered.images[0]!.filteredFrom = D1;
    assert.equal(validateManifest(filtered), filtered);
    const empty = { ...valid(), members: [], images: [] };
    assert.equal(validateManifest(empty), empty);
  });

  it('rejects a bad digest with its path', () => {
    fails((m) => (member(m, 1).digest = 'sha256:XYZ'), /members\[1\]\.digest: "sha256:XYZ" is not a sha256 digest/);
    fails((m) => (image(m, 0).digest = `sha512:${'a'.repeat(128)}`), /images\[0\]\.digest: .* is not a sha256 digest/);
    fails((m) => (member(m, 0).digest = `sha256:${'A'.repeat(64)}`), /members\[0\]\.digest/);
    fails((m) => (image(m, 0).filteredFrom = 'sha256:0'), /images\[0\]\.filteredFrom: "sha256:0" is not a sha256 digest/);
  });

  it('rejects unknown keys at every level with their paths', () => {
    fails((m) => (m.extra = 1), /unknown key "extra" at the top level/);
    fails((m) => (member(m, 0).compressed = true), /members\[0\]: unknown key "compressed"/);
    fails((m) => (image(m, 0).annotations = {}), /images\[0\]: unknown key "annotations"/);
    fails((m) => ((m.tool as Rec).commit = 'abc'), /tool: unknown key "commit"/);
  });

  it('rejects missing keys, wrong constants and wrong types', () => {
    fails((m) => delete m.created, /missing required key "created"/);
    fails((m) => delete member(m, 0).offset, /members\[0\]: missing required key "offset"/);
    fails((m) => (m.schemaVersion = 2), /schemaVersion: expected 1, got a number \(2\)/);
    fails((m) => (m.kind = 'Other'), /kind: expected "AirgapBundleManifest"/);
    fails((m) => (m.members = {}), /members: expected a list/);
    fails((m) => (image(m, 0).origin = 'disk'), /images\[0\]\.origin: expected one of "registry", "oci-layout"/);
    fails((m) => (m.created = 'yesterday'), /created: "yesterday" is not an RFC 3339 time/);
    fails((m) => (m.formatVersion = '1'), /formatVersion/);
  });

  it('requires sizes and offsets to be non-negative integers', () => {
    fails((m) => (member(m, 0).size = -1), /members\[0\]\.size: must be >= 0/);
    fails((m) => (member(m, 0).offset = 1.5), /members\[0\]\.offset: expected a whole number/);
    fails((m) => (image(m, 0).size = '10'), /images\[0\]\.size: expected a whole number/);
  });

  it('requires member paths to be relative, without . or .. segments, and not the control files', () => {
    for (const bad of ['/etc/passwd', '../x', 'a/../../b', 'a/..', './a', 'a//b', 'a/', 'a\\b', '', 'airgap/manifest.json', 'airgap/manifest.dsse.json']) {
      fails((m) => (member(m, 0).path = bad), /members\[0\]\.path: .* is not a member path/);
    }
    for (const ok of ['index.json', '.hidden', 'a/..b', 'airgap/other.json']) {
      const m = valid();
      m.members[0]!.path = ok;
      assert.equal(validateManifest(m), m, ok);
    }
  });

  it('rejects bad platforms and tags', () => {
    fails((m) => (image(m, 0).platforms = ['linux']), /images\[0\]\.platforms\[0\]: "linux" is not a platform/);
    fails((m) => (image(m, 0).tags = ['-bad']), /images\[0\]\.tags\[0\]: "-bad" is not a tag/);
  });

  it('rejects a member path listed twice', () => {
    fails((m) => (member(m, 1).path = 'oci-layout'), /members\[1\]\.path: "oci-layout" is listed twice \(also members\[0\]\)/);
  });

  it('lists at most five problems, then how many more', () => {
    fails(
      (m) => {
        for (let i = 0; i < 8; i++) (m as Rec)[`x${i}`] = i;
      },
      /^invalid bundle manifest:\n/,
      /\.\.\. and 3 more$/,
    );
  });

  it('a newer minor: unknown keys at every level and unknown extensible values are accepted, carried and listed', () => {
    const m = valid() as unknown as Rec;
    m.formatVersion = `1.${Number(FORMAT_VERSION.split('.')[1]) + 1}`;
    m.laterField = { devfile: [{ name: 'java' }] };
    m.sources = { helmCharts: [{ name: 'nginx' }] }; // a kind a later minor adds
    (m.tool as Rec).commit = 'abc';
    member(m, 0).compressed = true;
    image(m, 0).origin = 'devfile-registry';
    image(m, 0).annotations = { a: 'b' };
    assert.equal(validateManifest(m), m);
    assert.deepEqual(unknownFields(m).sort(), [
      '"laterField"',
      'images[0]."annotations"',
      'images[0].origin = "devfile-registry"',
      'members[0]."compressed"',
      'sources."helmCharts"',
      'tool."commit"',
    ]);
    assert.deepEqual(unknownFields(valid()), []);
  });

  it('a newer minor is still checked strictly on every field this version knows', () => {
    const newer = (mutate: (m: Rec) => void) => (m: Rec) => {
      m.formatVersion = '1.7';
      m.extra = 1;
      mutate(m);
    };
    fails(newer((m) => (member(m, 1).digest = 'sha256:XYZ')), /members\[1\]\.digest: "sha256:XYZ" is not a sha256 digest/);
    fails(newer((m) => (image(m, 0).origin = '')), /images\[0\]\.origin: must not be empty/);
    fails(newer((m) => (image(m, 0).origin = 7)), /images\[0\]\.origin: expected a string/);
    fails(newer((m) => delete image(m, 0).refName), /images\[0\]: missing required key "refName"/);
    fails(newer((m) => (member(m, 0).path = '../x')), /members\[0\]\.path: .* is not a member path/);
    fails(newer((m) => (m.kind = 'Other')), /kind: expected "AirgapBundleManifest"/);
  });

  it('refuses another major', () => {
    fails((m) => (m.formatVersion = '2.0'), /formatVersion: "2\.0" is not a format 1\.x version/);
    fails((m) => (m.formatVersion = '01.0'), /formatVersion/);
  });

  it('rejects things that are not objects', () => {
    fails((m) => Object.keys(m).forEach((k) => delete m[k]), /missing required key "schemaVersion"/);
    assert.throws(() => validateManifest([]), /expected a JSON object \(the bundle manifest\), got a list/);
    assert.throws(() => validateManifest(null), BundleError);
  });
});
