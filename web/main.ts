// The web page: photos of a few people -> face detection and ArcFace alignment -> fine-tuning with a margin
// head and Partial FC -> threshold on held-out photos -> verification -> download. Everything runs here,
// on the best tfjs backend the browser offers; the page fetches nothing but its own files.
import * as tf from '@tensorflow/tfjs';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-webgpu';
// The no-bundle build imports tfjs's own ESM modules: the bundler resolves them to this page's tfjs.
import * as faceapiModule from '@vladmandic/face-api/dist/face-api.esm-nobundle.js';
import { zipSync, strToU8 } from 'fflate';
import {
  ArcfaceError,
  PartialFC,
  buildBackbone,
  cosineThresholdsAtFar,
  countParameters,
  defaultCard,
  exactRoc,
  exportOnnx,
  fit,
  fivePointsFrom68,
  importOnnx,
  importTorch,
  inputConventionOf,
  modelToArtifacts,
  modelJsonOf,
  normCrop,
  ONNX_CARD_KEY,
  planSmallData,
  registerWasmGradientKernels,
  specOf,
  DEFAULT_THRESHOLD,
  type BackboneSpec,
  type CalibratedThreshold,
  type FitBatch,
  type ModelCard,
  type Point,
  type RgbImage,
} from '../src/browser.ts';

/** What the page uses of face-api. */
interface FaceApi {
  nets: {
    ssdMobilenetv1: { loadFromUri(dir: string): Promise<void>; isLoaded: boolean };
    faceLandmark68Net: { loadFromUri(dir: string): Promise<void>; isLoaded: boolean };
  };
  SsdMobilenetv1Options: new (o: { minConfidence?: number; maxResults?: number }) => object;
  detectAllFaces(
    input: tf.Tensor3D,
    options: object,
  ): {
    withFaceLandmarks(): Promise<{ detection: { score: number; box: { width: number; height: number } }; landmarks: { positions: { x: number; y: number }[] } }[]>;
  };
}
const faceapi = faceapiModule as unknown as FaceApi;

type BackendName = 'webgpu' | 'webgl' | 'wasm' | 'cpu';
const BACKENDS: BackendName[] = ['webgpu', 'webgl', 'wasm', 'cpu'];
const MAX_SIDE = 1280;
const FAR_TARGETS = [0.1, 0.01];

interface Photo {
  file: File;
  person: string;
  status: 'pending' | 'aligned' | 'no-face' | 'error';
  note?: string;
  /** Five points in the decoded (at most MAX_SIDE) image. */
  landmarks?: Point[];
  crops: Map<number, RgbImage>;
  el?: HTMLElement;
  heldOut?: boolean;
}

interface CurvePoint {
  step: number;
  value: number;
}

/** State the page shows (and an automated test reads through `window.arcfaceWeb`). */
interface PageState {
  phase: 'starting' | 'ready' | 'aligning' | 'training' | 'trained' | 'error';
  backend: string;
  backends: Record<string, string>;
  photos: number;
  /** Photos not yet through detection. */
  pending: number;
  aligned: number;
  people: number;
  model?: { source: string; network: string; parameters: number; inputSize: number; embeddingSize: number };
  loss: CurvePoint[];
  accuracy: CurvePoint[];
  initialAccuracy?: number;
  finalAccuracy?: number;
  trainSeconds?: number;
  steps?: number;
  batchSize?: number;
  thresholds?: CalibratedThreshold[];
  verify?: { cosine: number; threshold: number; match: boolean; nearest?: { person: string; cosine: number } };
  downloads: string[];
  error?: string;
}

const state: PageState = { phase: 'starting', backend: '', backends: {}, photos: 0, pending: 0, aligned: 0, people: 0, loss: [], accuracy: [], downloads: [] };
const photos: Photo[] = [];
let model: tf.LayersModel | undefined;
let modelSpec: BackboneSpec | undefined;
let modelSource = '';
let card: ModelCard | undefined;
let people: string[] = [];
let stopper: AbortController | undefined;
/** The running fine-tuning: detection (which may switch backends) waits for it. */
let training: Promise<void> | undefined;
let trainBackend: BackendName = 'cpu';
let headCount = 0;

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

function fail(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  state.phase = 'error';
  state.error = msg;
  $('train-status').textContent = `error: ${msg}`;
  console.error(e);
}

// ---- backends ---------------------------------------------------------------------------------------------

async function describeBackend(name: BackendName): Promise<string | null> {
  try {
    if (name === 'webgpu') {
      const gpu = (navigator as { gpu?: { requestAdapter(): Promise<{ info?: { vendor?: string; architecture?: string; description?: string } } | null> } }).gpu;
      const a = gpu && (await gpu.requestAdapter());
      if (!a) return null;
      if (!(await tf.setBackend('webgpu'))) return null;
      const i = a.info ?? {};
      return [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'adapter';
    }
    if (!(await tf.setBackend(name))) return null;
    if (name === 'webgl') {
      const gl = document.createElement('canvas').getContext('webgl2');
      const info = gl?.getExtension('WEBGL_debug_renderer_info');
      return (gl && String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER))) || 'WebGL';
    }
    return name === 'wasm' ? 'WebAssembly' : 'JavaScript';
  } catch {
    return null;
  }
}

const isSoftware = (detail: string) => /swiftshader|llvmpipe|lavapipe|software|basic render/i.test(detail);

/** Probes every backend, then picks: a hardware WebGPU, else a hardware WebGL, else wasm (faster than software GPUs). */
async function probeBackends(): Promise<BackendName> {
  for (const b of BACKENDS) {
    const d = await describeBackend(b);
    if (d !== null) state.backends[b] = d;
  }
  $('backends').textContent = `(present: ${Object.entries(state.backends).map(([k, v]) => `${k}: ${v}`).join(' · ')})`;
  const hw = (b: BackendName) => b in state.backends && !isSoftware(state.backends[b]!);
  return hw('webgpu') ? 'webgpu' : hw('webgl') ? 'webgl' : 'wasm' in state.backends ? 'wasm' : 'webgl' in state.backends ? 'webgl' : 'cpu';
}

async function useBackend(name: BackendName): Promise<void> {
  if (!(name in state.backends)) throw new ArcfaceError(`the ${name} backend is not available in this browser`);
  if (tf.getBackend() !== name && !(await tf.setBackend(name))) throw new ArcfaceError(`the ${name} backend could not be started`);
  await tf.ready();
}

function chosenBackend(auto: BackendName): BackendName {
  const v = $<HTMLSelectElement>('backend-select').value;
  return v === 'auto' ? auto : (v as BackendName);
}

/** face-api reads results synchronously: it runs on webgl (or wasm) rather than webgpu. */
function detectionBackend(): BackendName {
  if (trainBackend !== 'webgpu') return trainBackend;
  return 'webgl' in state.backends ? 'webgl' : 'wasm' in state.backends ? 'wasm' : 'cpu';
}

async function onBackend<T>(name: BackendName, fn: () => Promise<T>): Promise<T> {
  const before = tf.getBackend() as BackendName;
  await useBackend(name);
  try {
    return await fn();
  } finally {
    await useBackend(before);
  }
}

// ---- photos: decode, detect, align ---------------------------------------------------------------------

async function decode(file: Blob): Promise<{ img: RgbImage; canvas: HTMLCanvasElement }> {
  const bmp = await createImageBitmap(file);
  const k = Math.min(1, MAX_SIDE / Math.max(bmp.width, bmp.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.max(1, Math.round(bmp.width * k));
  canvas.height = Math.max(1, Math.round(bmp.height * k));
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.drawImage(bmp, 0, 0, canvas.width, canvas.height);
  bmp.close();
  const rgba = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
  const data = new Uint8Array(canvas.width * canvas.height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    data[j] = rgba[i]!;
    data[j + 1] = rgba[i + 1]!;
    data[j + 2] = rgba[i + 2]!;
  }
  return { img: { width: canvas.width, height: canvas.height, data }, canvas };
}

let detectorReady: Promise<void> | undefined;
function loadDetector(): Promise<void> {
  detectorReady ??= (async () => {
    const dir = new URL('model/', location.href).href;
    await faceapi.nets.ssdMobilenetv1.loadFromUri(dir);
    await faceapi.nets.faceLandmark68Net.loadFromUri(dir);
  })();
  return detectorReady;
}

/** The five ArcFace points of the largest face, or undefined when there is none. */
async function findFace(img: RgbImage): Promise<{ landmarks: Point[]; faces: number } | undefined> {
  return onBackend(detectionBackend(), async () => {
    await loadDetector();
    const input = tf.tensor3d(Int32Array.from(img.data), [img.height, img.width, 3], 'int32');
    try {
      const found = await faceapi.detectAllFaces(input, new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5, maxResults: 20 })).withFaceLandmarks();
      if (!found.length) return undefined;
      const area = (f: (typeof found)[number]) => f.detection.box.width * f.detection.box.height;
      const best = found.reduce((a, b) => (area(b) > area(a) ? b : a));
      return { landmarks: [...fivePointsFrom68(best.landmarks.positions.map((p) => [p.x, p.y] as Point))], faces: found.length };
    } finally {
      input.dispose();
    }
  });
}

async function cropOf(p: Photo, size: number): Promise<RgbImage> {
  let c = p.crops.get(size);
  if (!c) {
    const { img } = await decode(p.file);
    c = normCrop(img, p.landmarks as never, size).crop;
    p.crops.set(size, c);
  }
  return c;
}

function drawRgb(canvas: HTMLCanvasElement, img: RgbImage): void {
  canvas.width = img.width;
  canvas.height = img.height;
  const ctx = canvas.getContext('2d')!;
  const out = ctx.createImageData(img.width, img.height);
  for (let i = 0, j = 0; j < img.data.length; i += 4, j += 3) {
    out.data[i] = img.data[j]!;
    out.data[i + 1] = img.data[j + 1]!;
    out.data[i + 2] = img.data[j + 2]!;
    out.data[i + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
}

/** "alice_2.jpg" -> "alice"; "Bob Smith 03.png" -> "Bob Smith". */
function personFromFileName(name: string): string {
  const stem = name.replace(/\.[^.]+$/, '');
  return stem.replace(/[\s_-]*\(?\d+\)?$/, '').trim() || stem;
}

const IMAGE = /\.(jpe?g|png|webp|bmp|gif|avif)$/i;

function addPhotos(items: { file: File; person: string }[]): void {
  for (const { file, person } of items) {
    if (!IMAGE.test(file.name)) continue;
    const p: Photo = { file, person, status: 'pending', crops: new Map() };
    photos.push(p);
    const el = document.createElement('div');
    el.className = 'photo';
    el.title = file.name;
    const canvas = document.createElement('canvas');
    const name = document.createElement('input');
    name.value = person;
    name.addEventListener('change', () => {
      p.person = name.value.trim();
      refreshSummary();
    });
    const status = document.createElement('div');
    status.className = 'status';
    status.textContent = 'waiting';
    el.append(canvas, name, status);
    $('photo-list').append(el);
    p.el = el;
  }
  refreshSummary();
  // Detection may switch backends: photos added while fine-tuning wait for it to end.
  void (training ?? Promise.resolve()).then(() => alignPending()).catch(fail);
}

let aligning: Promise<void> | undefined;
async function alignPending(): Promise<void> {
  if (aligning) return aligning.then(() => alignPending());
  aligning = (async () => {
    state.phase = 'aligning';
    for (const p of photos.filter((x) => x.status === 'pending')) {
      const status = p.el!.querySelector('.status')!;
      status.textContent = 'detecting…';
      try {
        const { img } = await decode(p.file);
        const face = await findFace(img);
        if (!face) {
          p.status = 'no-face';
          p.el!.classList.add('bad');
          status.textContent = 'no face';
        } else {
          p.landmarks = face.landmarks;
          p.status = 'aligned';
          const size = model?.inputs[0]!.shape[1] ?? 112;
          const crop = normCrop(img, p.landmarks as never, size).crop;
          p.crops.set(size, crop);
          drawRgb(p.el!.querySelector('canvas')!, crop);
          status.textContent = face.faces > 1 ? `${face.faces} faces: largest` : 'aligned';
        }
      } catch (e) {
        p.status = 'error';
        p.el!.classList.add('bad');
        status.textContent = 'unreadable';
        p.note = (e as Error).message;
      }
      refreshSummary();
      await tf.nextFrame();
    }
    state.phase = 'ready';
  })().finally(() => {
    aligning = undefined;
  });
  return aligning;
}

function refreshSummary(): void {
  const ok = photos.filter((p) => p.status === 'aligned' && p.person);
  people = [...new Set(ok.map((p) => p.person))].sort();
  state.photos = photos.length;
  state.pending = photos.filter((p) => p.status === 'pending').length;
  state.aligned = ok.length;
  state.people = people.length;
  $('photo-summary').textContent = `${photos.length} photos, ${ok.length} faces aligned, ${people.length} people` + (photos.length > ok.length ? ` (${photos.length - ok.length} without a usable face)` : '');
  updateButtons();
}

function updateButtons(): void {
  const busy = state.phase === 'training';
  $<HTMLButtonElement>('train').disabled = busy || !model || people.length < 2 || state.aligned < 4;
  $<HTMLButtonElement>('stop').disabled = !busy;
  $<HTMLSelectElement>('backend-select').disabled = busy;
  $<HTMLInputElement>('model').disabled = busy;
  $<HTMLButtonElement>('new-model').disabled = busy;
  $<HTMLButtonElement>('verify').disabled = busy || !model;
  for (const id of ['dl-tfjs', 'dl-onnx', 'dl-card']) $<HTMLButtonElement>(id).disabled = busy || !model;
}

/** Files of a dropped folder tree, each with its parent folder's name. */
async function entryFiles(entry: FileSystemEntry, parent: string | undefined, out: { file: File; person: string }[]): Promise<void> {
  if (entry.isFile) {
    const file = await new Promise<File>((res, rej) => (entry as FileSystemFileEntry).file(res, rej));
    out.push({ file, person: parent ?? personFromFileName(file.name) });
  } else if (entry.isDirectory) {
    const reader = (entry as FileSystemDirectoryEntry).createReader();
    for (;;) {
      const batch = await new Promise<FileSystemEntry[]>((res, rej) => reader.readEntries(res, rej));
      if (!batch.length) break;
      for (const e of batch) await entryFiles(e, entry.name, out);
    }
  }
}

// ---- model --------------------------------------------------------------------------------------------------

async function openModel(files: File[]): Promise<void> {
  const byExt = (re: RegExp) => files.find((f) => re.test(f.name));
  const json = byExt(/\.json$/i);
  const onnx = byExt(/\.onnx$/i);
  const torch = byExt(/\.(pth|pt)$/i);
  let m: tf.LayersModel;
  await useBackend(trainBackend);
  if (json) {
    m = await tf.loadLayersModel(tf.io.browserFiles([json, ...files.filter((f) => f !== json && !/\.json$/i.test(f.name))]));
    modelSource = json.name;
  } else if (onnx) {
    m = (await importOnnx(new Uint8Array(await onnx.arrayBuffer()), { name: onnx.name })).model;
    modelSource = onnx.name;
  } else if (torch) {
    m = importTorch(new Uint8Array(await torch.arrayBuffer()), { label: torch.name }).model;
    modelSource = torch.name;
  } else {
    throw new ArcfaceError('pick a tfjs model.json (with its weight files), an .onnx or a .pth file', files.map((f) => f.name).join(', '));
  }
  setModel(m, modelSource);
}

function setModel(m: tf.LayersModel, source: string): void {
  if (model && model !== m) model.dispose();
  model = m;
  modelSpec = specOf(m);
  modelSource = source;
  const inputSize = m.inputs[0]!.shape[1]!;
  const embeddingSize = m.outputs[0]!.shape[m.outputs[0]!.shape.length - 1]!;
  if (m.inputs[0]!.shape.length !== 4 || m.inputs[0]!.shape[2] !== inputSize || m.outputs[0]!.shape.length !== 2) {
    throw new ArcfaceError(`the model takes [${m.inputs[0]!.shape}] and gives [${m.outputs[0]!.shape}]; a face model takes square images and gives one vector`, source);
  }
  state.model = { source, network: modelSpec?.network ?? m.name, parameters: countParameters(m), inputSize, embeddingSize };
  card = undefined;
  state.thresholds = undefined;
  $('model-summary').textContent = `${source}: ${state.model.network}, ${state.model.parameters.toLocaleString('en')} parameters, input ${inputSize}x${inputSize}, embedding ${embeddingSize}`;
  $('model-summary').classList.remove('muted');
  updateButtons();
}

/** A small IResNet to start from when the user has no model (fast enough to train on any backend). */
function newTinyModel(): tf.LayersModel {
  return buildBackbone({ network: 'iresnet', layers: [1, 1, 1, 1], widths: [8, 16, 16, 32], inputSize: 112, embeddingSize: 64 }, { seed: 1 });
}

// ---- tensors from crops ---------------------------------------------------------------------------------

/** Crops -> the model's input values (its channel order and normalisation), optionally mirrored. */
function pixels(crops: RgbImage[], flips?: boolean[]): Float32Array {
  const c = inputConventionOf(model!);
  const order = c.order === 'BGR' ? [2, 1, 0] : [0, 1, 2];
  const size = crops[0]!.width;
  const out = new Float32Array(crops.length * size * size * 3);
  crops.forEach((img, n) => {
    const base = n * size * size * 3;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const sx = flips?.[n] ? size - 1 - x : x;
        const s = (y * size + sx) * 3;
        const o = base + (y * size + x) * 3;
        for (let ch = 0; ch < 3; ch++) out[o + ch] = (img.data[s + order[ch]!]! - c.mean[ch]!) / c.std[ch]!;
      }
    }
  });
  return out;
}

/** L2-normalised embeddings of crops, batch by batch. */
async function embed(m: tf.LayersModel, crops: RgbImage[]): Promise<Float32Array[]> {
  const size = m.inputs[0]!.shape[1]!;
  const out: Float32Array[] = [];
  for (let i = 0; i < crops.length; i += 16) {
    const part = crops.slice(i, i + 16);
    const e = tf.tidy(() => {
      const y = m.predict(tf.tensor4d(pixels(part), [part.length, size, size, 3])) as tf.Tensor2D;
      return tf.div(y, tf.maximum(tf.norm(y, 2, 1, true), 1e-12)) as tf.Tensor2D;
    });
    const data = (await e.data()) as Float32Array;
    const dim = e.shape[1];
    e.dispose();
    for (let k = 0; k < part.length; k++) out.push(data.slice(k * dim, (k + 1) * dim));
  }
  return out;
}

const dot = (a: Float32Array, b: Float32Array) => a.reduce((s, v, i) => s + v * b[i]!, 0);

/** Accuracy at the best threshold: the exact ROC's best split of genuine and impostor pairs. */
function bestAccuracy(cosines: number[], issame: boolean[]): number {
  const roc = exactRoc(cosines, issame);
  const g = issame.filter(Boolean).length;
  const n = issame.length - g;
  let best = 0;
  for (let i = 0; i < roc.fpr.length; i++) best = Math.max(best, (roc.tpr[i]! * g + (1 - roc.fpr[i]!) * n) / issame.length);
  return best;
}

// ---- fine-tuning ------------------------------------------------------------------------------------------

interface Split {
  train: { crop: RgbImage; label: number }[];
  held: RgbImage[];
  pairs: [number, number, boolean][];
}

async function makeSplit(): Promise<Split> {
  const size = model!.inputs[0]!.shape[1]!;
  const ok = photos.filter((p) => p.status === 'aligned' && p.person);
  const labels = ok.map((p) => people.indexOf(p.person));
  const holdout = Number($<HTMLInputElement>('holdout').value);
  const plan = planSmallData(labels, { batch_size: 1 << 30, num_epoch: 1, val_split: holdout, min_steps: 1, seed: 1, gradient_acc: 1 }, 'the photos');
  ok.forEach((p) => (p.heldOut = false));
  for (const i of plan.holdout) ok[i]!.heldOut = true;
  for (const p of ok) p.el!.querySelector('.status')!.textContent = p.heldOut ? 'held out' : 'training';
  const crops = await Promise.all(ok.map((p) => cropOf(p, size)));
  const pos = new Map(plan.holdout.map((i, k) => [i, k]));
  return {
    train: plan.train.map((i) => ({ crop: crops[i]!, label: labels[i]! })),
    held: plan.holdout.map((i) => crops[i]!),
    pairs: plan.pairs.map(([a, b, same]) => [pos.get(a)!, pos.get(b)!, same]),
  };
}

async function verification(m: tf.LayersModel, split: Split): Promise<{ accuracy: number; cosines: number[]; issame: boolean[] }> {
  const e = await embed(m, split.held);
  const cosines = split.pairs.map(([a, b]) => dot(e[a]!, e[b]!));
  const issame = split.pairs.map((p) => p[2]);
  return { accuracy: bestAccuracy(cosines, issame), cosines, issame };
}

/** Seeded batches over the training crops: reshuffled each pass, half of the faces mirrored. */
function* batches(split: Split, steps: number, batchSize: number, seed: number): Generator<FitBatch> {
  let s = seed >>> 0;
  const rand = () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  let order: number[] = [];
  for (let step = 0; step < steps; step++) {
    const idx: number[] = [];
    while (idx.length < batchSize) {
      if (!order.length) {
        order = split.train.map((_, i) => i);
        for (let i = order.length - 1; i > 0; i--) {
          const j = Math.floor(rand() * (i + 1));
          [order[i], order[j]] = [order[j]!, order[i]!];
        }
      }
      idx.push(order.pop()!);
    }
    const picked = idx.map((i) => split.train[i]!);
    yield { images: pixels(picked.map((t) => t.crop), picked.map(() => rand() < 0.5)), labels: Int32Array.from(picked.map((t) => t.label)) };
  }
}

function marginOptions(): { s: number; m1: number; m2: number; m3: number } {
  const s = Number($<HTMLInputElement>('scale').value) || 32;
  return $<HTMLSelectElement>('head').value === 'cosface' ? { s, m1: 1, m2: 0, m3: 0.35 } : { s, m1: 1, m2: 0.5, m3: 0 };
}

async function train(): Promise<void> {
  await alignPending();
  await useBackend(trainBackend);
  state.phase = 'training';
  state.loss = [];
  state.accuracy = [];
  state.error = undefined;
  updateButtons();
  const split = await makeSplit();
  const steps = Math.max(1, Number($<HTMLInputElement>('steps').value) | 0);
  const batchSize = Math.max(2, Math.min(Number($<HTMLInputElement>('batch').value) | 0, split.train.length));
  const evalEvery = Math.max(1, Number($<HTMLInputElement>('eval-every').value) | 0);
  const lr = Number($<HTMLInputElement>('lr').value);
  const embeddingSize = state.model!.embeddingSize;
  const head = new PartialFC({ numClasses: people.length, embeddingSize, margin: marginOptions(), seed: 1, name: `web_head_${headCount++}` });
  stopper = new AbortController();
  const status = $('train-status');
  const canVerify = split.pairs.length > 0;
  const evaluate = async (step: number) => {
    if (!canVerify) return;
    const v = await verification(model!, split);
    state.accuracy.push({ step, value: v.accuracy });
    if (step === 0) state.initialAccuracy = v.accuracy;
    state.finalAccuracy = v.accuracy;
    plot();
  };
  let t0 = 0;
  try {
    status.textContent = `${split.train.length} photos to train on, ${split.held.length} held out (${split.pairs.length} pairs); batch ${batchSize} on ${trainBackend}`;
    await evaluate(0);
    const source = batches(split, steps, batchSize, 7);
    // Verification runs between steps: the loop pulls each batch from here.
    async function* withChecks(): AsyncGenerator<FitBatch> {
      let step = 0;
      for (const b of source) {
        if (step > 0 && step % evalEvery === 0) await evaluate(step);
        await tf.nextFrame();
        if (step === 1) t0 = performance.now(); // the first step compiles shaders: not counted
        yield b;
        step++;
      }
    }
    t0 = performance.now();
    const r = await fit({
      backbone: model!,
      head,
      batches: withChecks(),
      steps,
      lr,
      signal: stopper.signal,
      onProgress: (p) => {
        state.loss.push({ step: p.step, value: p.loss });
        status.textContent = `step ${p.step}/${p.totalSteps}: loss ${p.loss.toFixed(3)} (lr ${p.lr.toPrecision(3)}) on ${trainBackend}`;
        plot();
      },
    });
    state.trainSeconds = (performance.now() - t0) / 1000;
    state.steps = r.steps;
    state.batchSize = batchSize;
    if (state.accuracy.at(-1)?.step !== r.steps) await evaluate(r.steps);
    await calibrate(split);
    const rate = r.steps > 1 ? ` · ${((r.steps - 1) / state.trainSeconds).toFixed(2)} steps/s` : '';
    status.textContent = `${r.stopped ? 'stopped' : 'done'} after ${r.steps} steps: loss ${state.loss[0]?.value.toFixed(3)} → ${r.finalLoss.toFixed(3)}` +
      (canVerify ? `, verification accuracy ${pct(state.initialAccuracy!)} → ${pct(state.finalAccuracy!)}` : '') + rate;
    state.phase = 'trained';
  } catch (e) {
    fail(e);
  } finally {
    head.dispose();
    stopper = undefined;
    if (state.phase === 'training') state.phase = 'ready';
    updateButtons();
  }
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

async function calibrate(split: Split): Promise<void> {
  const base = defaultCard(state.model!.embeddingSize, state.model!.inputSize, {
    network: state.model!.network,
    provenance: { source: modelSource, created: new Date().toISOString(), tool: 'arcface-ts web page', notes: [`fine-tuned in the browser on ${split.train.length} photos of ${people.length} people, ${state.steps} steps on ${trainBackend}`] },
  });
  base.input = { ...base.input, ...(() => { const c = inputConventionOf(model!); return { channels: c.order, mean: c.mean, std: c.std }; })() };
  if (!split.pairs.length) {
    card = base;
    $('calibration').textContent = 'too few photos per person to hold some out: no threshold calibrated (the default is used)';
    return;
  }
  const v = await verification(model!, split);
  const dataset = `held-out photos (${split.held.length} photos of ${people.length} people)`;
  const ts = cosineThresholdsAtFar(v.cosines, v.issame, FAR_TARGETS).map((t) => ({ far: t.farTarget, cosine: t.threshold, tar: t.tar, dataset, pairs: v.issame.length }));
  card = { ...base, thresholds: ts };
  state.thresholds = ts;
  const rows = ts.map((t) => `<tr><td>${t.far}</td><td>${t.cosine.toFixed(4)}</td><td>${pct(t.tar)}</td></tr>`).join('');
  const el = $('calibration');
  el.classList.remove('muted');
  el.innerHTML = `<p>${v.issame.filter(Boolean).length} genuine and ${v.issame.filter((s) => !s).length} impostor pairs of held-out photos; best accuracy ${pct(v.accuracy)}.
    The page decides "same person" when the cosine is above the threshold at FAR ${Math.min(...FAR_TARGETS)}.</p>
    <table><tr><th>FAR</th><th>cosine threshold</th><th>TAR</th></tr>${rows}</table>`;
}

// ---- plot ---------------------------------------------------------------------------------------------------

function plot(): void {
  const svg = $('plot');
  const W = 640, H = 240, L = 44, R = 44, T = 24, B = 28;
  const steps = Math.max(1, ...state.loss.map((p) => p.step), ...state.accuracy.map((p) => p.step));
  const maxLoss = Math.max(1e-6, ...state.loss.map((p) => p.value));
  const x = (s: number) => L + ((W - L - R) * s) / steps;
  const yLoss = (v: number) => T + (H - T - B) * (1 - v / maxLoss);
  const yAcc = (v: number) => T + (H - T - B) * (1 - v);
  const line = (pts: CurvePoint[], y: (v: number) => number) => pts.map((p) => `${x(p.step).toFixed(1)},${y(p.value).toFixed(1)}`).join(' ');
  svg.innerHTML = `
    <rect x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="none" stroke="#ccc"/>
    <text x="${L - 4}" y="${T + 10}" text-anchor="end" font-size="11" fill="#c33">${maxLoss.toFixed(2)}</text>
    <text x="${L - 4}" y="${H - B}" text-anchor="end" font-size="11" fill="#c33">0</text>
    <text x="${W - R + 4}" y="${T + 10}" font-size="11" fill="#36c">100%</text>
    <text x="${W - R + 4}" y="${H - B}" font-size="11" fill="#36c">0%</text>
    <text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="11" fill="#555">step (of ${steps})</text>
    <text x="${L}" y="15" font-size="12" fill="#c33">— training loss</text>
    <text x="${L + 120}" y="15" font-size="12" fill="#36c">— verification accuracy (held-out pairs, best threshold)</text>
    <polyline fill="none" stroke="#c33" stroke-width="1.5" points="${line(state.loss, yLoss)}"/>
    <polyline fill="none" stroke="#36c" stroke-width="2" points="${line(state.accuracy, yAcc)}"/>
    ${state.accuracy.map((p) => `<circle cx="${x(p.step)}" cy="${yAcc(p.value)}" r="2.5" fill="#36c"/>`).join('')}`;
}

// ---- verify -----------------------------------------------------------------------------------------------

async function faceCrop(file: File): Promise<RgbImage> {
  const { img } = await decode(file);
  const face = await findFace(img);
  if (!face) throw new ArcfaceError('no face found', file.name);
  return normCrop(img, face.landmarks as never, state.model!.inputSize).crop;
}

async function verify(): Promise<void> {
  const a = $<HTMLInputElement>('verify-a').files?.[0];
  const b = $<HTMLInputElement>('verify-b').files?.[0];
  const out = $('verify-result');
  if (!a || !b) {
    out.textContent = 'pick photo A and photo B';
    return;
  }
  try {
    out.textContent = 'detecting…';
    const crops = [await faceCrop(a), await faceCrop(b)];
    await useBackend(trainBackend);
    const [ea, eb] = await embed(model!, crops);
    const cosine = dot(ea!, eb!);
    const calibrated = card?.thresholds.find((t) => t.far === Math.min(...FAR_TARGETS));
    const threshold = calibrated?.cosine ?? DEFAULT_THRESHOLD;
    // Who photo A looks like among the people trained on: the best mean cosine to their photos.
    let nearest: { person: string; cosine: number } | undefined;
    const known = photos.filter((p) => p.status === 'aligned' && p.person);
    if (known.length) {
      const e = await embed(model!, await Promise.all(known.map((p) => cropOf(p, state.model!.inputSize))));
      for (const person of people) {
        const mine = e.filter((_, i) => known[i]!.person === person);
        const c = mine.reduce((s, v) => s + dot(ea!, v), 0) / mine.length;
        if (!nearest || c > nearest.cosine) nearest = { person, cosine: c };
      }
    }
    const match = cosine > threshold;
    state.verify = { cosine, threshold, match, nearest };
    out.innerHTML = '';
    for (const c of crops) {
      const canvas = document.createElement('canvas');
      drawRgb(canvas, c);
      const wrap = document.createElement('span');
      wrap.className = 'verify';
      wrap.append(canvas);
      out.append(wrap);
    }
    const text = document.createElement('div');
    text.innerHTML = `<span class="${match ? 'match' : 'nomatch'}">${match ? 'same person' : 'different people'}</span><br>
      cosine ${cosine.toFixed(4)} ${match ? '>' : '≤'} threshold ${threshold.toFixed(4)} (${calibrated ? `calibrated at FAR ${calibrated.far}` : 'default, not calibrated'})` +
      (nearest ? `<br>photo A is closest to <b>${escapeHtml(nearest.person)}</b> (mean cosine ${nearest.cosine.toFixed(3)})` : '');
    out.append(text);
  } catch (e) {
    out.textContent = `error: ${(e as Error).message}`;
  }
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

// ---- download ------------------------------------------------------------------------------------------------

function currentCard(): ModelCard {
  return card ?? defaultCard(state.model!.embeddingSize, state.model!.inputSize, { network: state.model!.network, provenance: { source: modelSource, created: new Date().toISOString(), tool: 'arcface-ts web page' } });
}

function save(bytes: Uint8Array, name: string, type: string): void {
  const url = URL.createObjectURL(new Blob([bytes as BlobPart], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  state.downloads.push(name);
}

/** model.json + weights.bin + model-card.json, as `arcface export --format tfjs` writes them. */
async function tfjsZip(): Promise<Uint8Array> {
  const a = await modelToArtifacts(model!, modelSpec);
  const json = modelJsonOf(a, 'weights.bin');
  return zipSync({
    'model.json': strToU8(JSON.stringify(json)),
    'weights.bin': new Uint8Array(a.weightData as ArrayBuffer),
    'model-card.json': strToU8(`${JSON.stringify(currentCard(), null, 2)}\n`),
  });
}

function onnxBytes(): Uint8Array {
  return exportOnnx(model!, { spec: modelSpec, extraMetadata: { [ONNX_CARD_KEY]: JSON.stringify(currentCard()) } });
}

// ---- throughput (for the page's figures and automated tests) ---------------------------------------------

/**
 * Fine-tuning speed of a copy of the current model on `backend`: one warm-up step (shader compilation),
 * then timed steps until `maxSteps` or `budgetMs` (at least one timed step).
 */
async function benchmark(
  backend: BackendName,
  opts: { maxSteps?: number; budgetMs?: number; batchSize?: number } = {},
): Promise<{ backend: string; steps?: number; batchSize?: number; stepsPerSecond?: number; imagesPerSecond?: number; error?: string }> {
  const { maxSteps = 5, budgetMs = 5000, batchSize = 8 } = opts;
  const before = tf.getBackend() as BackendName;
  let copy: tf.LayersModel | undefined;
  let head: PartialFC | undefined;
  try {
    await useBackend(backend);
    copy = await tf.loadLayersModel(tf.io.fromMemory(await modelToArtifacts(model!, modelSpec)));
    const split = await makeSplit();
    head = new PartialFC({ numClasses: people.length, embeddingSize: state.model!.embeddingSize, margin: marginOptions(), seed: 1, name: `web_head_${headCount++}` });
    const times: number[] = [];
    const stop = new AbortController();
    await fit({
      backbone: copy,
      head,
      batches: [...batches(split, maxSteps + 1, batchSize, 11)],
      lr: 0.01,
      signal: stop.signal,
      onProgress: () => {
        times.push(performance.now());
        if (times.length > 1 && times.at(-1)! - times[0]! > budgetMs) stop.abort();
      },
    });
    const steps = times.length - 1;
    const sec = (times.at(-1)! - times[0]!) / 1000;
    return { backend, steps, batchSize, stepsPerSecond: steps / sec, imagesPerSecond: (steps * batchSize) / sec };
  } catch (e) {
    return { backend, error: (e as Error).message };
  } finally {
    head?.dispose();
    copy?.dispose();
    await useBackend(before).catch(() => undefined);
  }
}

/** The first aligned photo's crop and the embedding the page computes for it (raw, not normalised). */
async function probe(): Promise<{ crop: number[]; size: number; embedding: number[] }> {
  const p = photos.find((x) => x.status === 'aligned')!;
  const crop = await cropOf(p, state.model!.inputSize);
  const y = tf.tidy(() => model!.predict(tf.tensor4d(pixels([crop]), [1, crop.width, crop.width, 3])) as tf.Tensor);
  const e = Array.from(await y.data());
  y.dispose();
  return { crop: Array.from(crop.data), size: crop.width, embedding: e };
}

// ---- wiring ----------------------------------------------------------------------------------------------------

function run(fn: () => Promise<void> | void): () => void {
  return () => {
    Promise.resolve()
      .then(fn)
      .catch(fail);
  };
}

async function main(): Promise<void> {
  setWasmPaths(new URL('./', location.href).href);
  registerWasmGradientKernels();
  tf.enableProdMode();
  const auto = await probeBackends();
  trainBackend = chosenBackend(auto);
  await useBackend(trainBackend);
  $('backend').textContent = trainBackend;
  $<HTMLSelectElement>('backend-select').addEventListener('change', run(async () => {
    trainBackend = chosenBackend(auto);
    await useBackend(trainBackend);
    $('backend').textContent = trainBackend;
    state.backend = trainBackend;
  }));
  state.backend = trainBackend;

  $<HTMLInputElement>('folder').addEventListener('change', (ev) => {
    const files = [...((ev.target as HTMLInputElement).files ?? [])];
    addPhotos(files.map((file) => {
      const parts = file.webkitRelativePath.split('/');
      return { file, person: parts.length >= 2 ? parts[parts.length - 2]! : personFromFileName(file.name) };
    }));
  });
  $<HTMLInputElement>('photos').addEventListener('change', (ev) => {
    addPhotos([...((ev.target as HTMLInputElement).files ?? [])].map((file) => ({ file, person: personFromFileName(file.name) })));
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const entries = [...(e.dataTransfer?.items ?? [])].map((i) => i.webkitGetAsEntry()).filter((x): x is FileSystemEntry => !!x);
    run(async () => {
      const out: { file: File; person: string }[] = [];
      for (const en of entries) await entryFiles(en, undefined, out);
      addPhotos(out);
    })();
  });
  $<HTMLInputElement>('model').addEventListener('change', run(async () => {
    await openModel([...($<HTMLInputElement>('model').files ?? [])]);
  }));
  $('new-model').addEventListener('click', run(async () => {
    await useBackend(trainBackend);
    setModel(newTinyModel(), 'new tiny IResNet');
  }));
  $('train').addEventListener('click', run(async () => {
    if (training) return;
    training = train().finally(() => (training = undefined));
    await training;
  }));
  $('stop').addEventListener('click', () => stopper?.abort());
  $('verify').addEventListener('click', run(verify));
  $('dl-tfjs').addEventListener('click', run(async () => save(await tfjsZip(), 'arcface-finetuned-tfjs.zip', 'application/zip')));
  $('dl-onnx').addEventListener('click', run(() => save(onnxBytes(), 'arcface-finetuned.onnx', 'application/octet-stream')));
  $('dl-card').addEventListener('click', run(() => save(strToU8(`${JSON.stringify(currentCard(), null, 2)}\n`), 'model-card.json', 'application/json')));
  plot();
  state.phase = 'ready';
  updateButtons();
}

(window as unknown as { arcfaceWeb: object }).arcfaceWeb = { state, benchmark, probe, tf };
main().catch(fail);
