/** The CLI teaches: every command's --help has an example; bad usage is exit 2 with a hint. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { assertNoStack, runBundle } from './helpers/cli.js';

describe('CLI', () => {
  for (const cmd of ['keygen', 'create', 'inspect', 'verify', 'push', 'serve', 'extract']) {
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

  it('--version prints the package version', async () => {
    const r = await runBundle(['--version']);
    assert.equal(r.code, 0);
    assert.match(r.stdout.trim(), /^\d+\.\d+\.\d+$/);
  });
});
