// The tfjs WebGPU backend in Node: Dawn (the `webgpu` package's prebuilt dawn.node) provides
// `navigator.gpu`; @tensorflow/tfjs-backend-webgpu runs on the adapter it returns. Both packages are
// optional dependencies, loaded only when this backend is tried.
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ArcfaceError } from '../errors.ts';

/** The adapter tfjs runs on, as WebGPU describes it. */
export interface WebgpuAdapter {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** A CPU implementation (SwiftShader, lavapipe/llvmpipe, WARP): correct, but slower than wasm. */
  software: boolean;
}

/** The slice of WebGPU this module touches (the full types come with the optional package). */
interface GpuAdapterLike {
  readonly info: { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter?: boolean };
  readonly features: ReadonlySet<string>;
  readonly limits: Record<string, number>;
  requestDevice(desc?: object): Promise<GpuDeviceLike>;
}
type GpuDeviceLike = object;
interface GpuLike {
  requestAdapter(opts?: object): Promise<GpuAdapterLike | null>;
}

type Probe = { ok: true; adapter: WebgpuAdapter } | { ok: false; missing: string };

const ADAPTER_OPTIONS = { powerPreference: 'high-performance' };
const SOFTWARE = /swiftshader|llvmpipe|lavapipe|softpipe|microsoft basic render|\bwarp\b/i;
let probed: Promise<Probe> | null = null;
let current: WebgpuAdapter | null = null;
let gpu: GpuLike | null = null;
let registered = false;

/** The adapter the webgpu backend runs on, once `setupWebgpu` succeeded. */
export function webgpuAdapter(): WebgpuAdapter | null {
  return current;
}

/** One line naming the adapter, e.g. "nvidia ampere (NVIDIA A100, Vulkan driver 550.54)". */
export function describeAdapter(a: WebgpuAdapter): string {
  const name = [a.vendor, a.architecture].filter(Boolean).join(' ') || 'unknown adapter';
  const detail = [a.device, a.description].filter((s) => s && s !== a.architecture).join(', ');
  return `${name}${detail ? ` (${detail})` : ''}${a.software ? ', software' : ''}`;
}

/**
 * On Linux Dawn drives the GPU through the Vulkan loader; without it, or without a driver for it to
 * load, Dawn prints native warnings and finds nothing. Checking both first keeps that quiet (auto
 * selection tries webgpu on every machine) and names what is missing.
 * (process.dlopen of a library that is not a Node addon fails with "did not self-register" after
 * loading it: that failure means the library is there.)
 */
function vulkanLoaderMissing(): string | null {
  if (process.platform !== 'linux') return null;
  try {
    process.dlopen({ exports: {} }, 'libvulkan.so.1', os.constants.dlopen.RTLD_LAZY);
  } catch (e) {
    if (!/did not self-register/i.test((e as Error).message)) {
      return 'no Vulkan loader (libvulkan.so.1): install the GPU\'s Vulkan driver (e.g. libvulkan1 with the NVIDIA driver or mesa-vulkan-drivers)';
    }
  }
  return vulkanDriverListed() ? null : 'no Vulkan driver registered (no ICD file in */vulkan/icd.d, and VK_ICD_FILENAMES unset): install the GPU\'s Vulkan driver';
}

/** Where the Vulkan loader looks for driver manifests (its documented search path), or an override. */
function vulkanDriverListed(): boolean {
  if (process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES || process.env.VK_ADD_DRIVER_FILES) return true;
  const env = (k: string, d: string) => (process.env[k] || d).split(':').filter(Boolean);
  const home = os.homedir();
  const roots = [
    ...env('XDG_CONFIG_DIRS', '/etc/xdg'), '/etc', path.join(home, '.config'),
    ...env('XDG_DATA_DIRS', '/usr/local/share:/usr/share'), path.join(home, '.local/share'),
  ];
  return roots.some((r) => {
    try {
      return fs.readdirSync(path.join(r, 'vulkan', 'icd.d')).some((f) => f.endsWith('.json'));
    } catch {
      return false;
    }
  });
}

async function probe(): Promise<Probe> {
  const missingLoader = vulkanLoaderMissing();
  if (missingLoader) return { ok: false, missing: missingLoader };
  let webgpu: { create(flags: string[]): GpuLike; globals: object };
  try {
    // A variable specifier: the package is optional, and absent installs must still type-check.
    const pkg = 'webgpu';
    webgpu = (await import(pkg)) as typeof webgpu;
  } catch (e) {
    return { ok: false, missing: `the "webgpu" package (Dawn for Node) could not be loaded: ${(e as Error).message.split('\n')[0]}; install it with npm install webgpu` };
  }
  gpu = webgpu.create([]);
  const adapter = await gpu.requestAdapter(ADAPTER_OPTIONS);
  if (!adapter) return { ok: false, missing: 'no WebGPU adapter: Dawn found no GPU driver (Vulkan on Linux, Metal on macOS, D3D12 on Windows)' };
  const info = adapter.info;
  const text = `${info.vendor} ${info.architecture} ${info.device} ${info.description}`;
  // tfjs-backend-webgpu uses the WebGPU globals (GPUBufferUsage, ...) and registers itself only where
  // navigator.gpu exists; Node 21+ has a navigator without gpu, Node 20 none at all.
  for (const [k, v] of Object.entries(Object.getOwnPropertyDescriptors(webgpu.globals))) {
    if (!(k in globalThis)) Object.defineProperty(globalThis, k, { ...v, configurable: true });
  }
  const g = globalThis as { navigator?: object };
  if (g.navigator == null) Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  else if (!('gpu' in g.navigator) || (g.navigator as { gpu?: unknown }).gpu == null) {
    Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  }
  return {
    ok: true,
    adapter: {
      vendor: info.vendor ?? '',
      architecture: info.architecture ?? '',
      device: info.device ?? '',
      description: info.description ?? '',
      software: info.isFallbackAdapter === true || SOFTWARE.test(text),
    },
  };
}

/**
 * Finds the WebGPU adapter and registers the `webgpu` tfjs backend on it. Returns the adapter, or what
 * is missing: the package, a driver, or an adapter. tfjs-backend-webgpu 4.22 has every gradient kernel
 * training uses (conv and depthwise filter/input gradients, UnsortedSegmentSum for gather): none is
 * added here; test/webgpu-grad.test.ts holds each to the cpu backend's.
 */
export async function setupWebgpu(): Promise<Probe> {
  probed ??= probe();
  const p = await probed;
  if (!p.ok) return p;
  let WebGPUBackend: new (device: GpuDeviceLike, info: unknown) => tf.KernelBackend;
  try {
    const pkg = '@tensorflow/tfjs-backend-webgpu';
    ({ WebGPUBackend } = (await import(pkg)) as { WebGPUBackend: typeof WebGPUBackend });
  } catch (e) {
    return { ok: false, missing: `@tensorflow/tfjs-backend-webgpu could not be loaded: ${(e as Error).message.split('\n')[0]}` };
  }
  // Our factory replaces the package's (priority 3, which would make tfjs start it whenever no backend
  // is set): the lowest priority, and an adapter like the one announced.
  if (!registered) {
    tf.removeBackend('webgpu');
    tf.registerBackend('webgpu', () => webgpuFactory(WebGPUBackend), 0);
    registered = true;
  }
  current = p.adapter;
  return p;
}

async function webgpuFactory(Backend: new (device: GpuDeviceLike, info: unknown) => tf.KernelBackend): Promise<tf.KernelBackend> {
  // An adapter makes one device: each (re)initialisation asks for a fresh one.
  const adapter = await gpu!.requestAdapter(ADAPTER_OPTIONS);
  if (!adapter) throw webgpuUnavailable('the WebGPU adapter went away');
  const want = ['timestamp-query', 'bgra8unorm-storage'].filter((f) => adapter.features.has(f));
  const limits = adapter.limits;
  // The adapter's own maxima (the defaults are lower: large convolutions need big storage buffers).
  const requiredLimits: Record<string, number> = {};
  for (const k of ['maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxStorageBufferBindingSize',
    'maxBufferSize', 'maxComputeWorkgroupSizeX', 'maxComputeInvocationsPerWorkgroup']) {
    requiredLimits[k] = limits[k]!;
  }
  return new Backend(await adapter.requestDevice({ requiredFeatures: want, requiredLimits }), adapter.info);
}

/** The error `--backend webgpu` gives where the backend cannot start. */
export function webgpuUnavailable(missing: string): ArcfaceError {
  return new ArcfaceError(`backend "webgpu" is not available: ${missing}`);
}
