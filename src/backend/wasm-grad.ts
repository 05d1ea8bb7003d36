// Placeholder until the wasm gradient kernels land (see test/wasm-grad.test.ts).
export function registerWasmGradientKernels(): void {}
