// The WebGPU tests run on a real adapter where one is present, and otherwise on the SwiftShader Vulkan
// driver that Debian's chromium-common package ships (/usr/lib/chromium): its Vulkan loader is loaded into
// this process before Dawn looks for one, and VK_ICD_FILENAMES points the loader at SwiftShader.
// Child processes get the same through LD_LIBRARY_PATH (webgpuEnv).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupWebgpu, type WebgpuAdapter } from '../../src/backend/webgpu.ts';

const CHROMIUM = '/usr/lib/chromium';
const ICD = path.join(CHROMIUM, 'vk_swiftshader_icd.json');
// glibc's RTLD_NODELETE (Node does not export it): the library stays loaded after process.dlopen's
// "did not self-register" failure, so Dawn's later dlopen("libvulkan.so.1") finds it by its soname.
const RTLD_NODELETE = 0x1000;

let software = false;

function systemVulkanLoader(): boolean {
  try {
    process.dlopen({ exports: {} }, 'libvulkan.so.1', os.constants.dlopen.RTLD_LAZY);
  } catch (e) {
    return /did not self-register/i.test((e as Error).message);
  }
  return true;
}

function useSwiftShader(): void {
  if (process.platform !== 'linux' || process.env.VK_ICD_FILENAMES || !fs.existsSync(ICD) || systemVulkanLoader()) return;
  process.env.VK_ICD_FILENAMES = ICD;
  try {
    process.dlopen({ exports: {} }, path.join(CHROMIUM, 'libvulkan.so.1'),
      os.constants.dlopen.RTLD_NOW | os.constants.dlopen.RTLD_GLOBAL | RTLD_NODELETE);
  } catch {
    // expected: not a Node addon; it is loaded all the same
  }
  software = true;
}

let probe: Promise<{ adapter: WebgpuAdapter | null; missing: string }> | null = null;

/** The adapter the tests run on, or null with what is missing. */
export function webgpuTestAdapter(): Promise<{ adapter: WebgpuAdapter | null; missing: string }> {
  probe ??= (async () => {
    useSwiftShader();
    const p = await setupWebgpu();
    return p.ok ? { adapter: p.adapter, missing: '' } : { adapter: null, missing: p.missing };
  })();
  return probe;
}

/** node:test `skip` value: false where an adapter is present, else why the test cannot run. */
export async function skipUnlessWebgpu(): Promise<string | false> {
  const { adapter, missing } = await webgpuTestAdapter();
  return adapter ? false : `no WebGPU adapter (${missing}); apt-get install chromium-common gives a software one (SwiftShader)`;
}

/** Environment for a child process that should find the same adapter. */
export function webgpuEnv(): Record<string, string> {
  if (!software) return {};
  return {
    VK_ICD_FILENAMES: ICD,
    LD_LIBRARY_PATH: [CHROMIUM, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':'),
  };
}
