/** File-based catalog parsing and selection (src/openshift/fbc.ts). */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { addEntry, filteredEntry, JsonObjectSplitter, selectPackage, type PackageMeta } from '../src/openshift/fbc.js';
import { cacheOf } from '../src/sources/catalog.js';

describe('JsonObjectSplitter', () => {
  it('splits concatenated objects at any chunk boundary, braces and quotes inside strings included', () => {
    const objs = [{ a: '}{"', b: [1, { c: '\\"}' }] }, { schema: 'olm.package', name: 'x' }, { n: 'ünïcødé ✓' }];
    const text = Buffer.from(objs.map((o, i) => JSON.stringify(o, null, i)).join('\n'));
    for (const size of [1, 2, 3, 7, 64, text.length]) {
      const s = new JsonObjectSplitter('t');
      const out: unknown[] = [];
      for (let i = 0; i < text.length; i += size) for (const o of s.push(text.subarray(i, i + size))) out.push(JSON.parse(o));
      s.end();
      assert.deepEqual(out, objs, `chunks of ${size}`);
    }
  });

  it('refuses what is not a stream of objects, and a file ending inside one', () => {
    assert.throws(() => new JsonObjectSplitter('f.json').push(Buffer.from('{"a":1} x')), /f\.json: not a stream of JSON objects/);
    const s = new JsonObjectSplitter('g.json');
    s.push(Buffer.from('{"a":'));
    assert.throws(() => s.end(), /ends inside a JSON object/);
    assert.throws(() => new JsonObjectSplitter('h.json', 10).push(Buffer.from('{"a":"0123456789"')), /larger than 10 bytes/);
  });
});

function pkg(): PackageMeta {
  const packages = new Map<string, PackageMeta>();
  const entries: Record<string, unknown>[] = [
    { schema: 'olm.package', name: 'p', defaultChannel: 'stable' },
    { schema: 'olm.channel', package: 'p', name: 'stable', entries: [{ name: 'p.v1' }, { name: 'p.v2', replaces: 'p.v1' }, { name: 'p.v3', replaces: 'p.v2', skips: ['p.v1'] }] },
    { schema: 'olm.channel', package: 'p', name: 'fast', entries: [{ name: 'p.v3' }, { name: 'p.v4-rc', replaces: 'p.v3', skipRange: '<4.0.0-rc.1' }] },
    ...[['p.v1', '1.0.0'], ['p.v2', '2.0.0'], ['p.v3', '3.0.0'], ['p.v4-rc', '4.0.0-rc.1']].map(([name, version]) => ({
      schema: 'olm.bundle',
      package: 'p',
      name,
      image: `quay.io/p/bundle:${version}`,
      properties: [{ type: 'olm.package', value: { packageName: 'p', version } }],
      relatedImages: [{ image: `quay.io/p/op:${version}` }, { name: 'dup', image: `quay.io/p/op:${version}` }],
    })),
  ];
  for (const e of entries) addEntry(packages, e, 't');
  return packages.get('p')!;
}

describe('selectPackage', () => {
  it('keeps the default channel by default, and all its entries', () => {
    const s = selectPackage(pkg(), { name: 'p' }, 't');
    assert.equal(s.defaultChannel, 'stable');
    assert.deepEqual(s.bundles.map((b) => b.name), ['p.v1', 'p.v2', 'p.v3']);
    assert.deepEqual(s.bundles[0]!.relatedImages, ['quay.io/p/op:1.0.0']);
  });

  it('follows replaces and skips only within the bounds', () => {
    const s = selectPackage(pkg(), { name: 'p', channels: ['stable'], minVersion: '2.0.0', maxVersion: '3.0.0' }, 't');
    assert.deepEqual(s.channels, [{ name: 'stable', entries: [{ name: 'p.v2' }, { name: 'p.v3', replaces: 'p.v2' }] }]);
  });

  it('makes a selected channel the default when the catalog\'s default is not selected', () => {
    const s = selectPackage(pkg(), { name: 'p', channels: ['fast'] }, 't');
    assert.equal(s.defaultChannel, 'fast');
    assert.equal(s.originalDefaultChannel, 'stable');
    assert.deepEqual(filteredEntry({ schema: 'olm.package', name: 'p', defaultChannel: 'stable', icon: 'x' }, s), { schema: 'olm.package', name: 'p', defaultChannel: 'fast', icon: 'x' });
    assert.equal(filteredEntry({ schema: 'olm.channel', package: 'p', name: 'stable', entries: [] }, s), undefined);
    assert.equal(filteredEntry({ schema: 'olm.bundle', package: 'p', name: 'p.v1' }, s), undefined);
  });

  it('orders prereleases as semver does, and names what is wrong', () => {
    assert.deepEqual(selectPackage(pkg(), { name: 'p', channels: ['fast'], minVersion: '4.0.0-rc.0' }, 't').bundles.map((b) => b.name), ['p.v4-rc']);
    assert.throws(() => selectPackage(pkg(), { name: 'p', channels: ['beta'] }, 'catalog c'), /catalog c: package p has no channel beta \(it has fast, stable\)/);
    assert.throws(() => selectPackage(pkg(), { name: 'p', minVersion: '9.0.0' }, 'catalog c'), /no bundle of p in channel stable is within >= 9\.0\.0/);
  });
});

describe('cacheOf', () => {
  it('finds opm\'s cache folder and drops its flags', () => {
    assert.deepEqual(cacheOf(['serve', '/configs', '--cache-dir=/tmp/cache']), { dir: '/tmp/cache', args: ['serve', '/configs'] });
    assert.deepEqual(cacheOf(['serve', '/configs', '--cache-dir', '/c', '--cache-only', '--cache-enforce-integrity=true']), { dir: '/c', args: ['serve', '/configs'] });
    assert.deepEqual(cacheOf(['serve', '/configs']), {});
  });
});
