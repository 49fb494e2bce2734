/**
 * WebGPU for Node through the optional `webgpu` package (Dawn). The same WGSL kernels then run in
 * the CLI and in the kernel tests as in the browser.
 */
import { GpuUnavailableError } from '../gpu/device';

interface DawnModule {
  create(options: string[]): GPU;
  globals: object;
}

let cachedGpu: Promise<GPU> | undefined;

/**
 * The Dawn `GPU` object, with the WebGPU globals (`GPUBufferUsage`, ...) installed on `globalThis`.
 * `options` are Dawn toggles such as `backend=vulkan`; the default lets Dawn choose.
 * Rejects with a `GpuUnavailableError` when the package cannot be loaded.
 */
export function nodeGpu(options: readonly string[] = []): Promise<GPU> {
  if (options.length === 0 && cachedGpu) return cachedGpu;
  const gpu = loadDawn().then((dawn) => {
    for (const [name, value] of Object.entries(dawn.globals)) {
      if (!(name in globalThis))
        Object.defineProperty(globalThis, name, { value, configurable: true, writable: true });
    }
    return dawn.create([...options]);
  });
  if (options.length === 0)
    cachedGpu = gpu.catch((e) => {
      cachedGpu = undefined;
      throw e;
    });
  return gpu;
}

async function loadDawn(): Promise<DawnModule> {
  // A variable specifier keeps bundlers from inlining the native module into the CLI bundle.
  const specifier = 'webgpu';
  try {
    return (await import(/* @vite-ignore */ specifier)) as DawnModule;
  } catch (e) {
    throw new GpuUnavailableError(
      `WebGPU for Node is not available: the optional package "webgpu" could not be loaded ` +
        `(${(e as Error).message}). Install it with "npm install webgpu", or run with --device cpu.`,
    );
  }
}

/**
 * An adapter from Dawn, or a `GpuUnavailableError` that says what to install. With no GPU, Dawn can
 * use a software Vulkan driver (SwiftShader from Chromium: set VK_ICD_FILENAMES to its ICD file).
 */
export async function nodeAdapter(options: readonly string[] = []): Promise<GPUAdapter> {
  const gpu = await nodeGpu(options);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new GpuUnavailableError(
      'WebGPU for Node found no GPU adapter. Install a Vulkan driver for your GPU and libvulkan1, or ' +
        'point VK_ICD_FILENAMES at a software driver (e.g. /usr/lib/chromium/vk_swiftshader_icd.json), ' +
        'or run with --device cpu.',
    );
  }
  return adapter;
}
