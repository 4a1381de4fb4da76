/** `npm run demo` works end to end on the content that ships in the repository. */
import { it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ROOT } from './helpers/cli.js';

it('the demo creates, verifies and pushes, and says where everything went', async () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'demo', 'demo.js')], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, CI: 'true' } });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /OK .*demo\.airgap: 2 images/);
  assert.match(r.stdout, /pushed 2 of 2 images/);
  assert.match(r.stdout, /where everything went/);
  const out = join(ROOT, 'demo-out');
  assert.ok((await stat(join(out, 'demo.airgap'))).size > 0);
  assert.match(await readFile(join(out, 'push-out', 'mapping.txt'), 'utf8'), /example\.com\/demo\/hello@sha256:[a-f0-9]{64}=127\.0\.0\.1:\d+\/mirror\/demo\/hello:1\.0/);
});
