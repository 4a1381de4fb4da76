/** Regenerates demo/content, the small OCI layout `npm run demo` bundles. Run: node dist/demo/make-content.js */
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { LayoutBuilder } from '../test/helpers/images.js';

const dir = fileURLToPath(new URL('../../demo/content', import.meta.url));
await rm(dir, { recursive: true, force: true });
const b = await new LayoutBuilder(dir).init();
const base = await b.layer({ 'etc/os-release': 'ID=demo\nNAME="airgap bundle demo base"\n', 'usr/share/demo/README': 'a shared base layer, stored once in the bundle\n' });
const hello = await b.image([base, await b.layer({ 'app/hello.sh': '#!/bin/sh\necho hello from the secure zone\n' })], undefined, 'hello');
const world = await b.image([base, await b.layer({ 'app/world.sh': '#!/bin/sh\necho the world, carried across\n' })], undefined, 'world');
b.tag('example.com/demo/hello:1.0', hello);
b.tag('example.com/demo/world:1.0', world);
await b.save();
process.stdout.write(`wrote ${dir}\n`);
