// The formats the fuzz suite mutates: where each one's seeds come from, which mutations fit it, and how
// a case is read — through the same library calls the CLI makes (inspect, train, import, eval, pack-bin).
// Runs inside the fuzz child process (fuzz-child.ts).
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, SHARED_FIXTURES } from './fixtures.ts';
import {
  GENERIC,
  bitFlip,
  chunkDelete,
  chunkDuplicate,
  extremeAt,
  mutate,
  pickleOpcode,
  protobufVarint,
  textEdit,
  truncate,
  zipEntries,
  zipField,
  type Mutation,
  type Rng,
} from './fuzz-mutate.ts';

export interface MadeCase {
  /** What the reader is given (a file, or a pack folder). */
  input: string;
  mutations: string[];
  /** An error must also match this (byte offset, key or line) where the mutated file's format has one. */
  locator?: RegExp;
}

export interface FuzzFormat {
  name: string;
  /** Whether the shared fixtures this format's seeds come from are present. */
  available(): boolean;
  /** Writes one mutated case into the empty folder `dir`. */
  make(dir: string, r: Rng): Promise<MadeCase>;
  read(input: string): Promise<void>;
}

const fixture = (...p: string[]) => path.join(SHARED_FIXTURES, ...p);
const cache = new Map<string, Uint8Array>();
function load(file: string): Uint8Array {
  let b = cache.get(file);
  if (!b) {
    b = new Uint8Array(fs.readFileSync(file));
    cache.set(file, b);
  }
  return b;
}

let tfReady: Promise<void> | undefined;
/** The cpu backend: the readers' checks do not depend on the backend, and it starts fastest. */
function initTf(): Promise<void> {
  tfReady ??= (async () => {
    const tf = await import('@tensorflow/tfjs');
    await tf.setBackend('cpu');
    tf.env().set('PROD', true);
  })();
  return tfReady;
}

// ---- RecordIO packs ----------------------------------------------------------------------------

/** Byte offsets of the records a seed .idx lists (to aim header mutations at real records). */
function idxOffsets(idx: Uint8Array): number[] {
  return new TextDecoder()
    .decode(idx)
    .split('\n')
    .filter(Boolean)
    .map((l) => Number(l.split('\t')[1]));
}

/** Sets one field of a record's chunk header or IRHeader to an extreme (magic, lrec, flag, label, ids, label array). */
function recHeader(offsets: number[]): Mutation {
  const m: Mutation = (b, r) => {
    const off = r.chance(0.3) ? 0 : r.pick(offsets);
    const field = r.pick([0, 4, 4, 8, 8, 12, 12, 16, 24, 32, 36]);
    if (field === 4 && r.chance(0.5)) {
      // lrec: keep the length, change the continuation flag (or the reverse).
      const out = b.slice();
      const v = new DataView(out.buffer);
      const lrec = v.getUint32(off + 4, true);
      v.setUint32(off + 4, r.chance(0.5) ? ((r.int(8) << 29) | (lrec & 0x1fffffff)) >>> 0 : ((lrec & 0xe0000000) | r.int(1 << 29)) >>> 0, true);
      return out;
    }
    return extremeAt(b, off + field, r, field === 12 || field >= 32 ? ['f32', 'u32'] : ['u32', 'u64']);
  };
  Object.defineProperty(m, 'name', { value: 'recHeader' });
  return m;
}

const recordio: FuzzFormat = {
  name: 'recordio',
  available: () => fs.existsSync(fixture('rec_insightface')),
  async make(dir, r) {
    const seed = r.pick(['rec_insightface', 'rec_insightface', 'rec_plain_keys']);
    const files: Record<string, Uint8Array> = {};
    for (const f of ['train.rec', 'train.idx', 'property']) files[f] = load(fixture(seed, f));
    const which = r.pick(['train.rec', 'train.rec', 'train.rec', 'train.rec', 'train.rec', 'train.idx', 'train.idx', 'property']);
    const list: Mutation[] =
      which === 'train.rec' ? [...GENERIC, recHeader(idxOffsets(files['train.idx']!)), recHeader(idxOffsets(files['train.idx']!))] : [...GENERIC, textEdit, textEdit];
    const { bytes, names } = mutate(files[which]!, r, list);
    files[which] = bytes;
    // Without .idx the reader walks the file (the no-idx layout); without property it counts labels.
    if (which === 'train.rec' && r.chance(0.15)) delete files['train.idx'];
    if (which !== 'property' && r.chance(0.1)) delete files.property;
    for (const [f, b] of Object.entries(files)) fs.writeFileSync(path.join(dir, f), b);
    return {
      input: dir,
      mutations: [`${seed}/${which}`, ...names],
      ...(which === 'train.rec' ? { locator: /byte offset \d+|key \d+/ } : which === 'train.idx' ? { locator: /line \d+|key -?\d+/ } : {}),
    };
  },
  async read(input) {
    // `arcface inspect` (every header through the label path), then every record whole (the loader path).
    const { inspectRec } = await import('../../src/data/inspect.ts');
    const { RecordIOSource } = await import('../../src/data/rec-source.ts');
    await inspectRec(input, { sample: 3 });
    const src = RecordIOSource.open(input);
    try {
      for (let i = 0; i < src.length; i++) src.item(i);
      void src.numClasses;
    } finally {
      src.close();
    }
  },
};

// ---- .bin verification sets --------------------------------------------------------------------

const bin: FuzzFormat = {
  name: 'bin',
  available: () => fs.existsSync(fixture('pairs_py2.bin')),
  async make(dir, r) {
    const seed = r.pick(['pairs_py2.bin', 'pairs_py3.bin', 'pairs_numpy_bool.bin']);
    const { bytes, names } = mutate(load(fixture(seed)), r, [...GENERIC, pickleOpcode, pickleOpcode, pickleOpcode]);
    const input = path.join(dir, 'set.bin');
    fs.writeFileSync(input, bytes);
    return { input, mutations: [seed, ...names] };
  },
  async read(input) {
    // `arcface inspect x.bin` and the parse `arcface eval` starts with.
    const { inspectBin } = await import('../../src/data/inspect.ts');
    await inspectBin(input, { sample: 2 });
  },
};

// ---- .pth (torch.save zip + pickle) ------------------------------------------------------------

const pthInner = (name: string, data: Uint8Array, r: Rng): Uint8Array => {
  if (name.endsWith('data.pkl')) return mutate(data, r, [pickleOpcode, pickleOpcode, ...GENERIC]).bytes;
  return r.pick([truncate, chunkDelete, chunkDuplicate, bitFlip])(data, r);
};

const pth: FuzzFormat = {
  name: 'pth',
  available: () => fs.existsSync(fixture('mbf', 'backbone.pth')),
  async make(dir, r) {
    const seed = r.chance(0.85) ? 'mbf' : 'iresnet_tiny';
    const inner = zipEntries(pthInner);
    Object.defineProperty(inner, 'name', { value: 'zipEntries' });
    const { bytes, names } = mutate(load(fixture(seed, 'backbone.pth')), r, [zipField, zipField, inner, inner, inner, ...GENERIC]);
    const input = path.join(dir, 'backbone.pth');
    fs.writeFileSync(input, bytes);
    return { input, mutations: [seed, ...names] };
  },
  async read(input) {
    await initTf();
    const { importTorch } = await import('../../src/convert/import-torch.ts');
    importTorch(input).model.dispose();
  },
};

// ---- ONNX ----------------------------------------------------------------------------------------

const onnx: FuzzFormat = {
  name: 'onnx',
  available: () => fs.existsSync(fixture('mbf', 'backbone.onnx')),
  async make(dir, r) {
    const seed = r.chance(0.85) ? 'mbf' : 'iresnet_tiny';
    const { bytes, names } = mutate(load(fixture(seed, 'backbone.onnx')), r, [protobufVarint, protobufVarint, protobufVarint, protobufVarint, ...GENERIC]);
    const input = path.join(dir, 'model.onnx');
    fs.writeFileSync(input, bytes);
    return { input, mutations: [seed, ...names] };
  },
  async read(input) {
    await initTf();
    const { importOnnx } = await import('../../src/convert/onnx/index.ts');
    (await importOnnx(input)).model.dispose();
  },
};

// ---- JPEG / PNG ----------------------------------------------------------------------------------

let jpegSeeds: Promise<Uint8Array[]> | undefined;
/** JPEGs encoded here (baseline and progressive) from the aligned face crop. */
function encodedJpegs(): Promise<Uint8Array[]> {
  jpegSeeds ??= (async (): Promise<Uint8Array[]> => {
    const sharp = (await import('sharp')).default;
    const png = load(fixture('faces', 'astronaut_aligned_112.png'));
    const bs = await Promise.all([sharp(png).jpeg({ quality: 90 }).toBuffer(), sharp(png).jpeg({ quality: 75, progressive: true }).toBuffer()]);
    return bs.map((b) => new Uint8Array(b));
  })();
  return jpegSeeds;
}

/** Breaks a size field: PNG IHDR width/height or a chunk length (big-endian), JPEG SOF dimensions or a segment length. */
const imageHeader: Mutation = (b, r) => {
  const out = b.slice();
  const v = new DataView(out.buffer);
  const big = r.pick([0, 1, 0xffff, 0x7fff, 0x10000, 0x7fffffff, 0xffffffff, 46341]);
  if (b[0] === 0x89 && b.length > 24) {
    const chunks: number[] = [];
    for (let p = 8; p + 8 <= b.length && chunks.length < 64; p += 12 + v.getUint32(p)) chunks.push(p);
    const at = r.chance(0.6) ? r.pick([16, 20]) : r.pick(chunks);
    v.setUint32(at, big >>> 0);
  } else {
    const segs: number[] = [];
    for (let p = 2; p + 4 <= b.length && b[p] === 0xff && segs.length < 64; p += 2 + v.getUint16(p + 2)) {
      segs.push(p);
      if (b[p + 1] === 0xda) break;
    }
    const sof = segs.find((p) => b[p + 1] === 0xc0 || b[p + 1] === 0xc2);
    if (sof !== undefined && r.chance(0.6)) v.setUint16(sof + r.pick([5, 7]), big & 0xffff);
    else if (segs.length) v.setUint16(r.pick(segs) + 2, big & 0xffff);
  }
  return out;
};

const image: FuzzFormat = {
  name: 'image',
  available: () => fs.existsSync(fixture('faces', 'astronaut_aligned_112.png')),
  async make(dir, r) {
    const seeds = [...(await encodedJpegs()), load(fixture('faces', 'astronaut_aligned_112.png'))];
    const k = r.int(seeds.length + (r.chance(0.1) ? 1 : 0));
    const seed = k < seeds.length ? seeds[k]! : load(fixture('faces', 'astronaut.png'));
    const { bytes, names } = mutate(seed, r, [...GENERIC, imageHeader, imageHeader, imageHeader]);
    const input = path.join(dir, seed[0] === 0x89 ? 'face.png' : 'face.jpg');
    fs.writeFileSync(input, bytes);
    return { input, mutations: [`seed${k}`, ...names] };
  },
  async read(input) {
    // The loader's decode (libjpeg-turbo fast path, else sharp; resized to 112) and `arcface embed`'s.
    const { decodeImage } = await import('../../src/data/decode.ts');
    const infer = await import('../../src/infer/image.ts');
    await decodeImage(fs.readFileSync(input), input, 112);
    await infer.readImage(input);
  },
};

// ---- training configs ----------------------------------------------------------------------------

const JSON_VALUES: unknown[] = [null, -1, 0, 0.5, 1e300, -1e300, 2 ** 53, 'x', '', [], [1, 2, 3, 4], [0, 0, 0, 0], [-1, 2, 2, 2], [1e9, 1, 1, 1], {}, true, 'r50', 'mbf', 'base', 'tiny', 'cfg'];
const JSON_KEYS = ['toString', 'constructor', '__proto__', 'hasOwnProperty', 'valueOf', 'network', 'layers', 'widths', 'extends', 'embedding_size', 'input_size', 'margin_list', 'lr', 'batch_size', ''];

/** Sets, adds or removes one key of the JSON object (prototype names included). */
const jsonEdit: Mutation = (b, r) => {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(new TextDecoder().decode(b)) as Record<string, unknown>;
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return textEdit(b, r);
  } catch {
    return textEdit(b, r);
  }
  const keys = Object.keys(obj);
  const key = r.chance(0.5) && keys.length ? r.pick(keys) : r.pick(JSON_KEYS);
  if (r.chance(0.15)) delete obj[key];
  else Object.defineProperty(obj, key, { value: r.pick(JSON_VALUES), enumerable: true, configurable: true, writable: true });
  return new TextEncoder().encode(JSON.stringify(obj, null, 2));
};

const config: FuzzFormat = {
  name: 'config',
  available: () => true,
  async make(dir, r) {
    const names = fs.readdirSync(path.join(REPO_ROOT, 'configs')).filter((f) => f.endsWith('.json')).sort();
    const seed = r.pick(names);
    const { bytes, names: ms } = mutate(load(path.join(REPO_ROOT, 'configs', seed)), r, [jsonEdit, jsonEdit, jsonEdit, jsonEdit, textEdit, textEdit, ...GENERIC]);
    const input = path.join(dir, 'cfg.json');
    fs.writeFileSync(input, bytes);
    return { input, mutations: [seed, ...ms] };
  },
  async read(input) {
    // `arcface train --config`: load and validate, then the backbone the config describes.
    const { loadConfig, specFromConfig } = await import('../../src/train/config.ts');
    specFromConfig(loadConfig(input));
  },
};

// ---- pairs.txt -----------------------------------------------------------------------------------

const PAIRS_LFW = `2\t3
Abel_Pacheco\t1\t4
Akhmed_Zakayev\t1\t3
Akhmed_Zakayev\t2\t3
Abdel_Madi_Shabneh\t1\tDean_Barker\t1
Abdel_Madi_Shabneh\t1\tGiancarlo_Fisichella\t1
Abdul_Majeed_Shobokshi\t1\tCharles_Cope\t1
Amber_Tamblyn\t1\t2
Anders_Ebbeson\t2\t3
Angela_Bassett\t1\t5
Abdul_Rahman\t1\tPhil_Cline\t1
Adam_Scott\t1\tAndrew_Sabey\t1
Adolfo_Aguilar_Zinser\t2\tCharlie_Sheen\t1
`;
const PAIRS_SIMPLE = `# a comment
alice/1.jpg alice/2.jpg 1
alice/1.jpg bob/1.jpg 0

bob/1.jpg bob/2.png 1
carol/x.jpg dave/y.jpg 0
`;

const pairs: FuzzFormat = {
  name: 'pairs',
  available: () => true,
  async make(dir, r) {
    const seed = r.chance(0.6) ? PAIRS_LFW : PAIRS_SIMPLE;
    const { bytes, names } = mutate(new TextEncoder().encode(seed), r, [textEdit, textEdit, textEdit, ...GENERIC]);
    const input = path.join(dir, 'pairs.txt');
    fs.writeFileSync(input, bytes);
    return { input, mutations: [seed === PAIRS_LFW ? 'lfw' : 'simple', ...names], locator: /line \d+|no pairs/ };
  },
  async read(input) {
    // `arcface pack-bin --pairs`: the parse (image loading is the image format's business).
    const { parsePairs } = await import('../../src/data/pairs.ts');
    parsePairs(input);
  },
};

export const FORMATS: readonly FuzzFormat[] = [recordio, bin, pth, onnx, image, config, pairs];
