import { generateKeyPair } from '../sign/keys.js';
import { printJson, type OutputOptions } from './common.js';

export async function keygenCommand(opts: OutputOptions & { out: string }): Promise<number> {
  const r = await generateKeyPair(opts.out);
  if (opts.json) printJson(r);
  else if (!opts.quiet) {
    process.stdout.write(`private key ${r.privatePath} (mode 0600: keep it on the internet side)\npublic key  ${r.publicPath} (carry it to the secure zone)\nkey id      ${r.keyid}\n`);
  }
  return 0;
}
