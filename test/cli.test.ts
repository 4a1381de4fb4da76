/** The CLI teaches: every command's --help has an example; bad usage is exit 2 with a hint. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { FORMAT_VERSION } from '../src/bundle/manifest.js';
import { assertNoStack, BIN, ROOT, runBundle, runProgram } from './helpers/cli.js';

describe('CLI', () => {
  for (const cmd of ['keygen', 'create', 'inspect', 'verify', 'push', 'version', 'extract-tool']) {
    it(`bundle ${cmd} --help shows an example`, async () => {
      const r = await runBundle([cmd, '--help']);
      assert.equal(r.code, 0);
      assert.match(r.stdout, new RegExp(`Example[^\\n]*:\\n(.*\\n)*\\s+\\$ bundle ${cmd}|Example config`));
      assert.match(r.stdout, /Exit status: 0 success/);
    });
  }

  it('an unknown option is a usage error (exit 2) that points at --help', async () => {
    const r = await runBundle(['push', 'x.airgap', '--to', 'r:5000', '--frobnicate']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown option '--frobnicate'/);
    assert.match(r.stderr, /--help/);
    assertNoStack(r);
  });

  it('--concurrency must be a whole number', async () => {
    const r = await runBundle(['create', '-c', 'x.yaml', '-o', 'x.airgap', '--concurrency', 'lots']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /whole number/);
  });

  it('--version prints the package version and the format versions', async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const r = await runBundle(['--version']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.split('\n')[0], `airgap-bundle ${pkg.version}`);
    assert.match(r.stdout, new RegExp(`format: writes ${FORMAT_VERSION.replace('.', '\\.')}, reads 1\\.x`));
  });

  it('output piped into a reader that stops early ends quietly', async () => {
    // `true` exits at once, so every write of --help meets a closed pipe
    const r = await runProgram('sh', ['-c', `'${process.execPath}' '${BIN}' --help | true`], { env: process.env });
    assert.equal(r.code, 0);
    assertNoStack(r);
    assert.doesNotMatch(r.stderr, /EPIPE/);
  });
});
