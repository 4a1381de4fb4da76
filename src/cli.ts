import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { collect, parseBool, parsePositiveInt } from './commands/common.js';
import { BundleError, errorMessage } from './util/errors.js';

const EXIT_DOC = `
Exit status: 0 success, 1 the work failed (verification failed, a registry refused),
2 usage or input error (bad flags, bad config, not an .airgap file).`;

const RETRIES_DOC =
  'attempts per registry request, the first included (1: no retry); a download that breaks off resumes, and a failed upload starts over from its source, within the same count; backoff between attempts, Retry-After honoured';

const TIMEOUT_DOC =
  'seconds without any answer or byte on a registry connection (a stalled one) before that attempt fails and is retried';

/** How long a registry that stays down can hold a command (create and push --help). */
const DOWN_DOC = `A registry that stays down or keeps failing: each request is tried --retries times
(default 5), waiting 0.25 s, 0.5 s, 1 s, 2 s... between attempts (at most 10 s each, or
the registry's Retry-After up to 60 s), so with the defaults it gives up after about 4 s
of waiting plus up to --timeout (default 120 s) for each attempt nobody answers; the
error names the request that failed (method and URL).`;

function parseSeconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 1 || n > 86_400) throw new InvalidArgumentError('expected seconds, from 1 to 86400');
  return n;
}

/** Every command that reads a bundle finds its volumes beside the one named, or in these folders. */
function volumesDirOption(): Option {
  return new Option('--volumes-dir <dir>', 'a folder holding more volumes of a bundle written in volumes (repeatable, one per disk); the others are found beside the one named').argParser(collect);
}

function outputOptions(cmd: Command): Command {
  return cmd
    .option('-q, --quiet', 'print nothing but warnings and errors')
    .option('--json', 'print one JSON document on stdout for machines (no progress)');
}

// Each command's modules are imported only when it runs: start-up time is most of a no-op push.
function buildProgram(setCode: (c: number) => void): Command {
  const program = new Command();
  program
    .name('bundle')
    .description('Carry container images across an air gap in one signed, seekable .airgap file.')
    .option('-V, --version', 'print the tool version, the bundle format versions it reads and writes, and the sha256 of the executable')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText(
      'after',
      `
Internet side:
  $ bundle keygen --out site
  $ bundle create -c bundle.yaml -o july.airgap --sign-key site.key
Secure zone (carry july.airgap and site.pub across):
  $ bundle inspect july.airgap
  $ bundle verify july.airgap --key site.pub
  $ bundle push july.airgap --to registry.corp:5000/mirror --key site.pub
Or, with no registry yet:
  $ bundle serve july.airgap --key site.pub --listen 127.0.0.1:5000
  $ bundle extract july.airgap --key site.pub --oci-layout ./layout
${EXIT_DOC}`,
    );

  outputOptions(
    program
      .command('keygen')
      .description('Make an Ed25519 key pair for signing bundles: PREFIX.key (mode 0600) and PREFIX.pub, PEM.')
      .requiredOption('--out <prefix>', 'path prefix of the two key files')
      .addHelpText('after', `\nExample:\n  $ bundle keygen --out site     # writes site.key and site.pub\n${EXIT_DOC}`),
  ).action(async (opts) => setCode(await (await import('./commands/keygen.js')).keygenCommand(opts)));

  outputOptions(
    program
      .command('create')
      .description('Pull everything a config names into one .airgap file (content-addressed, zstd, signed).')
      .requiredOption('-c, --config <file>', 'bundle config, YAML or JSON (see spec/bundle-config.schema.json)')
      .requiredOption('-o, --output <file>', 'the .airgap file to write (written under a temporary name, renamed when complete)')
      .option('--sign-key <file>', 'Ed25519 private key (from bundle keygen) to sign the manifest with')
      .option('-f, --force', 'replace the output file if it exists')
      .option('--no-signatures', 'leave out cosign signatures, attestations and SBOMs (tags sha256-<digest>.sig/.att/.sbom), carried by default')
      .option('--continue-on-error', 'bundle what can be fetched; list the images that failed and exit 1 (default: stop at the first failure)')
      .option('--skip-missing', "record an image a source needs (a devfile stack's, a release's, a catalog's, an image stream's) that its registry no longer has as skipped, listed by create and push, instead of failing")
      .addOption(new Option('--concurrency <n>', 'downloads in flight at once, over all registries (a large layer is fetched as several range requests)').argParser(parsePositiveInt).default(16))
      .addOption(new Option('--max-connections-per-registry <n>', 'connections open to one registry at most, so a public registry is not hammered').argParser(parsePositiveInt).default(16))
      .addOption(new Option('--retries <n>', RETRIES_DOC).argParser(parsePositiveInt).default(5))
      .addOption(new Option('--timeout <seconds>', TIMEOUT_DOC).argParser(parseSeconds).default(120))
      .addOption(new Option('--level <n>', 'zstd level for content that is not already compressed (1-19)').argParser(parsePositiveInt).default(3))
      .addOption(new Option('--src-tls-verify [bool]', 'verify source registries\' TLS; false also allows plain HTTP').argParser(parseBool).default(true))
      .option('--src-cert-dir <dir>', 'CA certificates (*.crt) and client certificate (*.cert, *.key) for source registries')
      .option('--ca-file <file>', 'an extra CA certificate to trust (repeatable)', collect)
      .option('--authfile <file>', 'registry credentials (auth.json / Docker config / OpenShift pull secret)')
      .option('--src-authfile <file>', 'credentials for the source registries (overrides --authfile)')
      .option('--registries-conf <file>', 'containers-registries.conf(5) for pulls: mirrors, rewritten locations, insecure and blocked registries (default: ~/.config/containers/registries.conf, else /etc/containers/registries.conf, when present)')
      .option('--volume-size <size>', 'write volumes NAME.001, NAME.002, ... of at most this size (4GiB, 700MB, 5MiB; fat32 = 4 GiB - 1 byte) for small or FAT32 media; cat joins them into the single file')
      .option('--since <bundle>', 'make an update bundle: leave out every blob this earlier bundle (or its manifest, saved by inspect --manifest-out) carried')
      .option('--include-tool [executable]', 'carry the standalone executable in the bundle, signed with it (default: this executable, or the one npm run package built); bundle extract-tool writes it out')
      .addHelpText(
        'after',
        `
Example config (bundle.yaml):
  apiVersion: airgap.bundle/v1alpha1
  kind: BundleConfig
  images:
    - quay.io/ns/app:1.2
    - name: docker.io/library/alpine:3.20
      platforms: [linux/amd64]
  ociLayouts:
    - path: ./some-oci-layout
  devfile:                              # a devfile registry, its images and starter projects
    registries: [{path: ./registry}]    # a checkout of github.com/devfile/registry
    stacks: [nodejs, go@2.6.0]          # default: every stack
    indexBase: quay.io/devfile/devfile-index-base:next
  releases:                       # OpenShift: payload, components, signatures
    - image: quay.io/openshift-release-dev/ocp-release:4.15.0-x86_64
  operators:                      # a catalog filtered to what is asked
    - catalog: registry.redhat.io/redhat/redhat-operator-index:v4.15
      packages: [{ name: web-terminal, channels: [fast], minVersion: 1.8.0 }]
  repositories:                   # whole repositories (/v2/_catalog + tags/list)
    - registry: registry.example.com:5000
      include: ["openshift/*"]
      tags: '^(latest|5\\..*)$'
  imageStreams:                   # oc get is -n openshift -o yaml > is.yaml
    - path: ./is.yaml

Example:
  $ bundle create -c bundle.yaml -o july.airgap --sign-key site.key
  $ SOURCE_DATE_EPOCH=1767225600 bundle create -c bundle.yaml -o july.airgap --concurrency 32
Every manifest is read first, then every blob downloads at once (large layers as several
range requests) into its planned place in the file: the same inputs and SOURCE_DATE_EPOCH
(the creation time; default now) give the same bytes.
Credentials come from --authfile, $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json
or ~/.docker/config.json, in that order. Loopback registries may be plain HTTP.

Pulling through a mirror (Artifactory, Nexus): a registries.conf, as podman reads it:
  [[registry]]
  prefix = "registry.access.redhat.com"
  location = "artifactory.corp/redhat-remote"
  [[registry.mirror]]
  location = "nexus.corp:8443/redhat"
  $ bundle create -c bundle.yaml -o july.airgap --registries-conf ./registries.conf
The bundle names images as the config does (registry.access.redhat.com/...).

${DOWN_DOC} Nothing is left under -o when create fails or is interrupted.
${EXIT_DOC}`,
      ),
  ).action(async (opts) => setCode(await (await import('./commands/create.js')).createCommand(opts)));

  outputOptions(
    program
      .command('inspect')
      .description('Show what a bundle holds (images, sizes, signer, and any manifest fields this version does not know, from a newer 1.x format) from its manifest, instantly. Checks nothing: use verify.')
      .argument('<file>', 'the .airgap file (or any volume of one: july.airgap.001)')
      .addOption(volumesDirOption())
      .option('--manifest-out <file>', 'save the bundle manifest (small): create --since takes it in place of the whole bundle')
      .addHelpText('after', `\nExample:\n  $ bundle inspect july.airgap\n  $ bundle inspect july.airgap --manifest-out july.manifest.json   # keep it for next month's --since\n${EXIT_DOC}`),
  ).action(async (file, opts) => setCode(await (await import('./commands/inspect.js')).inspectCommand(file, opts)));

  outputOptions(
    program
      .command('verify')
      .description('Prove a bundle is complete, untampered and signed by a trusted key, without unpacking it.')
      .argument('<file>', 'the .airgap file (or any volume of one: july.airgap.001)')
      .addOption(volumesDirOption())
      .option('--key <file-or-dir>', 'trusted public key, or a directory of them (repeatable)', collect)
      .option('--base <bundle>', 'for an update bundle (create --since): the base bundle; verify both and that the base carries what the update leaves out')
      .addHelpText(
        'after',
        `
Checks the signature, every member's size and sha256, that nothing unlisted is present,
and that every image's graph is complete; reports every problem with the images it hurts.
Without --key only integrity is checked, and it says so loudly.

Example:
  $ bundle verify july.airgap --key site.pub
${EXIT_DOC}`,
      ),
  ).action(async (file, opts) => setCode(await (await import('./commands/verify.js')).verifyCommand(file, opts)));

  outputOptions(
    program
      .command('push')
      .description('Push every image of a bundle into a registry, straight from the file, and write mirror configuration.')
      .argument('<file>', 'the .airgap file (or any volume of one: july.airgap.001)')
      .addOption(volumesDirOption())
      .requiredOption('--to <host[:port][/prefix]>', 'destination; quay.io/ns/app:1.2 lands at HOST/PREFIX/ns/app:1.2')
      .option('--key <file-or-dir>', 'trusted public key, or a directory of them (repeatable)', collect)
      .option('--insecure-skip-signature', 'push even though nobody\'s signature is checked')
      .option('--keep-registry-host', 'keep the source host in the path: quay.io/ns/app:1.2 lands at HOST/PREFIX/quay.io/ns/app:1.2 (a port joins with -)')
      .option('--dry-run', 'print the plan and push nothing')
      .option('--recheck', 'check every blob even of images whose tags already point at the same digest')
      .option('--out-dir <dir>', 'where mapping.txt, idms.yaml, itms.yaml, icsp.yaml, registries.conf (and the OpenShift files) go', './airgap-push-out')
      .option('--release-repo <repo>', 'repository (under the --to prefix) for OpenShift release payloads and their components', 'openshift/release')
      .option('--devfile-out <dir>', 'devfile registries: also write the offline registry folder (index.json, stacks/, samples/) into this new or empty folder (checked before anything is sent)')
      .option('--devfile-index-tag <tag>', 'devfile registries: the tag of the devfile-index image built at <to>/devfile-index', 'latest')
      .addOption(new Option('--concurrency <n>', 'blobs uploaded at once').argParser(parsePositiveInt).default(6))
      .addOption(new Option('--retries <n>', RETRIES_DOC).argParser(parsePositiveInt).default(5))
      .addOption(new Option('--timeout <seconds>', TIMEOUT_DOC).argParser(parseSeconds).default(120))
      .addOption(new Option('--chunk-size <MiB>', 'upload blobs in chunks of this many MiB (for proxies that limit request size); default: one request per blob').argParser(parsePositiveInt))
      .addOption(new Option('--dest-tls-verify [bool]', 'verify the destination\'s TLS; false also allows plain HTTP').argParser(parseBool).default(true))
      .option('--dest-cert-dir <dir>', 'CA certificates (*.crt) and client certificate (*.cert, *.key) for the destination')
      .option('--ca-file <file>', 'an extra CA certificate to trust (repeatable)', collect)
      .option('--authfile <file>', 'registry credentials (auth.json / Docker config)')
      .option('--dest-authfile <file>', 'credentials for the destination (overrides --authfile)')
      .addHelpText(
        'after',
        `
Blobs the registry already has are skipped, so running it again after an interruption
finishes the job; an image whose tags already point at its digest is skipped whole
(a registry accepts a manifest only when all it needs is there; --recheck looks anyway).
Every byte is checked against its digest before it is sent on. Two different images
that would land on the same tag (quay.io/ns/app:1 and docker.io/ns/app:1) are refused
before anything is sent; --keep-registry-host keeps them apart.

A bundle with a devfile registry also gets: every stack version rewritten for the target
(images, starter projects as <name>-offline.zip) at <to>/devfile-catalog/<stack>:<version>,
a devfile-index image at <to>/devfile-index:<tag>, and with --devfile-out the folder.
OpenShift content also gets install-config-mirrors.yaml (imageContentSources /
imageDigestSources), release-signatures.yaml, catalogsource-*.yaml and
samples-operator-patch.yaml in --out-dir (see README, "For OpenShift administrators").

Example:
  $ bundle push july.airgap --to registry.corp:5000/mirror --key site.pub
  $ oc apply -f airgap-push-out/idms.yaml
  $ bundle push devfiles.airgap --to registry.corp:5000/devfile --key site.pub --devfile-out ./offline-registry

${DOWN_DOC}
${EXIT_DOC}`,
      ),
  ).action(async (file, opts) => setCode(await (await import('./commands/push.js')).pushCommand(file, opts)));

  program
    .command('serve')
    .description('Serve a bundle as a read-only registry (OCI Distribution API) straight from the .airgap file: no registry, no unpacking.')
    .argument('<file>', 'the .airgap file (or any volume of one: july.airgap.001)')
    .addOption(volumesDirOption())
    .option('--listen <host:port>', 'address to listen on; anything but loopback must be named (0.0.0.0:5000 for every interface)', '127.0.0.1:5000')
    .option('--key <file-or-dir>', 'trusted public key, or a directory of them (repeatable)', collect)
    .option('--insecure-skip-signature', 'serve even though nobody\'s signature is checked')
    .option('--prefix <path>', 'repository path prefix, as the path of push --to: quay.io/ns/app:1.2 is served as PREFIX/ns/app:1.2')
    .option('--keep-registry-host', 'keep the source registry host in the path, as push does: quay.io/ns/app:1.2 is served as PREFIX/quay.io/ns/app:1.2')
    .option('--advertise <host:port>', 'the address clients reach this server by: devfiles and the listing name images there (default: the listening address)')
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (with --tls-key); plain HTTP otherwise')
    .option('--tls-key <file>', 'the PEM private key of --tls-cert')
    .addOption(new Option('--log-format <format>', 'one line per request: text or json').choices(['text', 'json']).default('text'))
    .addHelpText(
      'after',
      `
Repositories are named as push names them, so clients pull what push would have put in a
registry: quay.io/ns/app:1.2 is 127.0.0.1:5000/ns/app:1.2 (PREFIX/ns/app:1.2 with --prefix).
Manifests, blobs (with ranges), tags/list, _catalog and referrers; writes get UNSUPPORTED.
Every byte is checked against its digest as it is read: a blob that fails is an error to the
client and a line in the log, never wrong bytes. A bundle with a devfile section is also a
devfile registry (/index, /v2index, /devfiles/<stack>[/<version>], starter-project zips),
its devfiles naming the images where this server serves them. SIGTERM or Ctrl-C stops it.

Example:
  $ bundle serve july.airgap --key site.pub --listen 127.0.0.1:5000
  $ skopeo copy --src-tls-verify=false docker://127.0.0.1:5000/ns/app:1.2 oci:app:1.2
  $ podman pull --tls-verify=false 127.0.0.1:5000/ns/app:1.2
  $ bundle serve devfiles.airgap --key site.pub --listen 0.0.0.0:8080 --advertise registry.lab:8080
  $ curl http://registry.lab:8080/v2index
${EXIT_DOC}`,
    )
    .action(async (file, opts) => setCode(await (await import('./commands/serve.js')).serveCommand(file, opts)));

  outputOptions(
    program
      .command('extract')
      .description('Write a bundle out as a standard OCI image layout (or write one member), checking every blob as it is written.')
      .argument('<file>', 'the .airgap file (or any volume of one: july.airgap.001)')
      .addOption(volumesDirOption())
      .option('--oci-layout <dir>', 'the folder to write the OCI image layout into (new, empty, or an earlier extraction to resume)')
      .option('--member <path-or-digest>', 'one member instead: index.json, blobs/sha256/<hex>, or a sha256:<hex> digest')
      .option('-o, --output <file>', 'where --member goes (- for stdout)')
      .option('--key <file-or-dir>', 'trusted public key, or a directory of them (repeatable)', collect)
      .option('--insecure-skip-signature', 'extract even though nobody\'s signature is checked')
      .addOption(new Option('--concurrency <n>', 'blobs written at once').argParser(parsePositiveInt).default(4))
      .addHelpText(
        'after',
        `
The layout is what skopeo (oci:DIR:REF), umoci and podman load read; REF is an image's ref
name (bundle inspect lists them). Blobs are written under a temporary name and renamed once
their digest is proven; blobs already there with the right digest are kept, so running it
again after an interruption finishes the job. Only blobs/sha256/<digest>, index.json and
oci-layout are written, inside DIR.

Example:
  $ bundle extract july.airgap --key site.pub --oci-layout ./layout
  $ skopeo inspect oci:./layout:quay.io/ns/app:1.2
  $ bundle extract july.airgap --key site.pub --member index.json -o -
${EXIT_DOC}`,
      ),
  ).action(async (file, opts) => setCode(await (await import('./commands/extract.js')).extractCommand(file, opts)));

  outputOptions(
    program
      .command('version')
      .description('Print the tool version, the bundle format versions it reads and writes, and the sha256 of the executable.')
      .addHelpText('after', `\nExample:\n  $ bundle version          # the same as bundle --version\n  $ bundle version --json\n${EXIT_DOC}`),
  ).action(async (opts) => setCode(await (await import('./commands/version.js')).versionCommand(opts)));

  outputOptions(
    program
      .command('extract-tool')
      .description('Write out the standalone executable a bundle carries (create --include-tool), after checking the signature and its sha256.')
      .argument('<file>', 'the .airgap file (or any volume of one: july.airgap.001)')
      .addOption(volumesDirOption())
      .requiredOption('-o, --output <path>', 'where to write the executable (mode 0755; written under a temporary name, renamed when complete)')
      .option('--key <file-or-dir>', 'trusted public key, or a directory of them (repeatable)', collect)
      .option('--insecure-skip-signature', 'extract even though nobody\'s signature is checked')
      .option('-f, --force', 'replace the output file if it exists')
      .addHelpText(
        'after',
        `
One trip carries the tool and the bundle: create it on the internet side with
  $ bundle create -c bundle.yaml -o july.airgap --sign-key site.key --include-tool
then, in the secure zone, with any copy of the tool (or the Node.js build):

Example:
  $ bundle extract-tool july.airgap -o ./bundle --key site.pub
  $ ./bundle version     # prints the sha256 create printed
${EXIT_DOC}`,
      ),
  ).action(async (file, opts) => setCode(await (await import('./commands/extract-tool.js')).extractToolCommand(file, opts)));

  return program;
}

/** Run the CLI; resolves to the exit code. Errors become one clear line, never a stack trace. */
export async function main(argv: string[]): Promise<number> {
  // Output piped into a reader that stops early (| head): end quietly, not with a stack trace.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  // --version alone is the version command (it hashes the executable: not at every start).
  const args = argv.slice(2);
  if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
    return (await import('./commands/version.js')).versionCommand({});
  }
  let code = 0;
  const program = buildProgram((c) => {
    code = c;
  });
  program.exitOverride();
  program.configureOutput({ writeErr: (s) => process.stderr.write(s) });
  for (const sub of program.commands) sub.exitOverride();
  try {
    await program.parseAsync(argv);
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return 0;
      return 2;
    }
    if (err instanceof BundleError) {
      process.stderr.write(`error: ${err.message}\n${err.hint ? `hint: ${err.hint}\n` : ''}`);
      return err.exitCode;
    }
    process.stderr.write(`error: ${errorMessage(err)}\n`);
    if (process.env.BUNDLE_DEBUG && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return 1;
  }
}
