/**
 * The base images of a Dockerfile: the images its `FROM` lines (and `COPY --from=`)
 * name, with `ARG` defaults declared before the first FROM applied. A FROM or
 * `--from` naming an earlier build stage (`AS builder`, or its index) is not an
 * image; neither is `scratch`.
 */
export interface BaseImageRef {
  /** The reference as written, ARG defaults substituted. */
  image: string;
  /** 1-based line of the instruction. */
  line: number;
}

interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

/** Logical instructions: comments dropped, `\` continuations joined. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split(/\r?\n/);
  let escape = '\\';
  let current: { text: string; line: number } | undefined;
  lines.forEach((raw, i) => {
    const directive = /^#\s*escape\s*=\s*(\S)\s*$/i.exec(raw);
    if (directive && out.length === 0 && !current) escape = directive[1]!;
    if (/^\s*#/.test(raw)) return;
    const line = raw.replace(/\s+$/, '');
    const continued = line.endsWith(escape);
    const body = continued ? line.slice(0, -1) : line;
    if (current) current.text += ` ${body.trim()}`;
    else if (body.trim()) current = { text: body.trim(), line: i + 1 };
    if (!continued && current) {
      const m = /^(\S+)\s*(.*)$/.exec(current.text);
      if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!, line: current.line });
      current = undefined;
    }
  });
  if (current) {
    const m = /^(\S+)\s*(.*)$/.exec(current.text);
    if (m) out.push({ keyword: m[1]!.toUpperCase(), args: m[2]!, line: current.line });
  }
  return out;
}

/** `$NAME`, `${NAME}`, `${NAME:-default}`, `${NAME-default}` with the given values. */
export function expandArgs(s: string, args: ReadonlyMap<string, string>): string {
  return s.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, braced: string | undefined, dflt: string | undefined, bare: string | undefined) => {
    const name = (braced ?? bare)!;
    const v = args.get(name);
    if (v !== undefined && v !== '') return v;
    return dflt ?? v ?? '';
  });
}

/** `ARG A=1 B="2"` -> [['A','1'], ['B','2']]; `ARG C` -> [['C', undefined]]. */
function parseArgs(args: string): [string, string | undefined][] {
  const out: [string, string | undefined][] = [];
  const re = /([A-Za-z_][A-Za-z0-9_]*)(?:=("(?:[^"\\]|\\.)*"|'[^']*'|\S*))?/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(args))) {
    let v = m[2];
    if (v !== undefined && /^(["']).*\1$/.test(v)) v = v.slice(1, -1);
    out.push([m[1]!, v]);
  }
  return out;
}

export function dockerfileBaseImages(text: string): BaseImageRef[] {
  const globalArgs = new Map<string, string>();
  const stages: string[] = [];
  const images: BaseImageRef[] = [];
  let seenFrom = false;
  for (const ins of instructions(text)) {
    if (ins.keyword === 'ARG' && !seenFrom) {
      for (const [k, v] of parseArgs(ins.args)) if (v !== undefined) globalArgs.set(k, expandArgs(v, globalArgs));
      continue;
    }
    if (ins.keyword === 'FROM') {
      seenFrom = true;
      const words = ins.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const image = expandArgs(words[0] ?? '', globalArgs);
      const alias = words.length >= 3 && words[1]!.toUpperCase() === 'AS' ? words[2]!.toLowerCase() : undefined;
      if (image && image.toLowerCase() !== 'scratch' && !stages.includes(image.toLowerCase())) images.push({ image, line: ins.line });
      stages.push(alias ?? `#${stages.length}`);
      continue;
    }
    if (ins.keyword === 'COPY' || ins.keyword === 'ADD' || ins.keyword === 'RUN') {
      for (const m of ins.args.matchAll(/--(?:from|mount=[^\s]*\bfrom)=([^\s,]+)/g)) {
        const ref = expandArgs(m[1]!, globalArgs);
        const isStage = stages.includes(ref.toLowerCase()) || (/^\d+$/.test(ref) && Number(ref) < stages.length);
        if (!isStage) images.push({ image: ref, line: ins.line });
      }
    }
  }
  return images;
}
