// Registers the kernels that training needs and the tfjs wasm backend (4.22) lacks or runs slowly:
// conv2d / depthwiseConv2d gradients as XNNPACK forward convolutions (src/backend/wasm-conv-grad.ts)
// and UnsortedSegmentSum (gradient of tf.gather) as a scatter-add. The kernel functions call tf ops;
// the engine does not record ops run inside a kernel on the gradient tape, and returns our tensors.
import * as tf from '@tensorflow/tfjs';
import type {
  Conv2DBackpropFilterAttrs,
  Conv2DBackpropInputAttrs,
  DepthwiseConv2dNativeBackpropFilterAttrs,
  DepthwiseConv2dNativeBackpropInputAttrs,
  KernelFunc,
  NamedAttrMap,
  NamedTensorInfoMap,
  TensorInfo,
  UnsortedSegmentSumAttrs,
} from '@tensorflow/tfjs';
import {
  conv2dFilterGrad,
  conv2dInputGrad,
  depthwiseFilterGrad,
  depthwiseInputGrad,
  geometryFromConvInfo,
} from './wasm-conv-grad.ts';
import { unsortedSegmentSum } from './wasm-segment-sum.ts';

const BACKEND = 'wasm';

/**
 * A kernel input as a Tensor. Ops pass Tensors, used as they are; a bare TensorInfo (a kernel called
 * from another kernel) gets its own reference, released when the enclosing tidy disposes the wrapper.
 */
function asTensor<T extends tf.Tensor>(info: TensorInfo | undefined, kernel: string, name: string): T {
  if (info == null) throw new Error(`${kernel}: missing input "${name}"`);
  if (info instanceof tf.Tensor) return info as T;
  tf.engine().backend.incRef(info.dataId);
  return tf.engine().makeTensorFromTensorInfo(info) as T;
}

function checkDilations(kernel: string, dilations: number | [number, number] | undefined): void {
  const d = dilations == null ? [1, 1] : typeof dilations === 'number' ? [dilations, dilations] : dilations;
  if (d[0] !== 1 || d[1] !== 1) {
    throw new Error(`${kernel} on wasm supports dilation 1 only, got dilations [${d}]`);
  }
}

/** The gradient's dy must have the forward output's shape; a mismatch would give silently wrong values. */
function checkDy(kernel: string, dy: tf.Tensor, info: tf.backend_util.Conv2DInfo): void {
  if (!tf.util.arraysEqual(dy.shape, info.outShape)) {
    throw new Error(`${kernel}: dy has shape [${dy.shape}] but the convolution's output shape is [${info.outShape}]`);
  }
}

const toNhwc = (t: tf.Tensor4D): tf.Tensor4D => tf.transpose(t, [0, 2, 3, 1]);
const toNchw = (t: tf.Tensor4D): tf.Tensor4D => tf.transpose(t, [0, 3, 1, 2]);

function conv2dBackpropFilter(inputs: NamedTensorInfoMap, attrs: NamedAttrMap): tf.Tensor {
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as Conv2DBackpropFilterAttrs;
  return tf.tidy(() => {
    let x = asTensor<tf.Tensor4D>(inputs.x, 'Conv2DBackpropFilter', 'x');
    let dy = asTensor<tf.Tensor4D>(inputs.dy, 'Conv2DBackpropFilter', 'dy');
    const format = tf.backend_util.convertConv2DDataFormat(dataFormat ?? 'NHWC');
    const info = tf.backend_util.computeConv2DInfo(x.shape, filterShape, strides, 1, pad, dimRoundingMode, false, format);
    checkDy('Conv2DBackpropFilter', dy, info);
    if (format === 'channelsFirst') {
      x = toNhwc(x);
      dy = toNhwc(dy);
    }
    return conv2dFilterGrad(x, dy, geometryFromConvInfo(info));
  });
}

function conv2dBackpropInput(inputs: NamedTensorInfoMap, attrs: NamedAttrMap): tf.Tensor {
  const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as Conv2DBackpropInputAttrs;
  return tf.tidy(() => {
    let dy = asTensor<tf.Tensor4D>(inputs.dy, 'Conv2DBackpropInput', 'dy');
    const filter = asTensor<tf.Tensor4D>(inputs.filter, 'Conv2DBackpropInput', 'filter');
    const format = tf.backend_util.convertConv2DDataFormat(dataFormat ?? 'NHWC');
    const info = tf.backend_util.computeConv2DInfo(inputShape, filter.shape, strides, 1, pad, dimRoundingMode, false, format);
    checkDy('Conv2DBackpropInput', dy, info);
    if (format === 'channelsFirst') dy = toNhwc(dy);
    const dx = conv2dInputGrad(dy, filter, geometryFromConvInfo(info));
    return format === 'channelsFirst' ? toNchw(dx) : dx;
  });
}

function depthwiseBackpropFilter(inputs: NamedTensorInfoMap, attrs: NamedAttrMap): tf.Tensor {
  const kernel = 'DepthwiseConv2dNativeBackpropFilter';
  const { strides, dilations, pad, dimRoundingMode, filterShape } =
    attrs as unknown as DepthwiseConv2dNativeBackpropFilterAttrs;
  checkDilations(kernel, dilations);
  return tf.tidy(() => {
    const x = asTensor<tf.Tensor4D>(inputs.x, kernel, 'x');
    const dy = asTensor<tf.Tensor4D>(inputs.dy, kernel, 'dy');
    const info = tf.backend_util.computeConv2DInfo(x.shape, filterShape, strides, 1, pad, dimRoundingMode, true);
    checkDy(kernel, dy, info);
    return depthwiseFilterGrad(x, dy, geometryFromConvInfo(info), filterShape[3]);
  });
}

function depthwiseBackpropInput(inputs: NamedTensorInfoMap, attrs: NamedAttrMap): tf.Tensor {
  const kernel = 'DepthwiseConv2dNativeBackpropInput';
  const { strides, dilations, pad, dimRoundingMode, inputShape } =
    attrs as unknown as DepthwiseConv2dNativeBackpropInputAttrs;
  checkDilations(kernel, dilations);
  return tf.tidy(() => {
    const dy = asTensor<tf.Tensor4D>(inputs.dy, kernel, 'dy');
    const filter = asTensor<tf.Tensor4D>(inputs.filter, kernel, 'filter');
    const info = tf.backend_util.computeConv2DInfo(inputShape, filter.shape, strides, 1, pad, dimRoundingMode, true);
    checkDy(kernel, dy, info);
    return depthwiseInputGrad(dy, filter, geometryFromConvInfo(info));
  });
}

function segmentSum(inputs: NamedTensorInfoMap, attrs: NamedAttrMap): tf.Tensor {
  const { numSegments } = attrs as unknown as UnsortedSegmentSumAttrs;
  return tf.tidy(() =>
    unsortedSegmentSum(
      asTensor(inputs.x, 'UnsortedSegmentSum', 'x'),
      asTensor(inputs.segmentIds, 'UnsortedSegmentSum', 'segmentIds'),
      numSegments,
    ),
  );
}

const KERNELS: Record<string, (inputs: NamedTensorInfoMap, attrs: NamedAttrMap) => tf.Tensor> = {
  Conv2DBackpropFilter: conv2dBackpropFilter,
  // Replaces wasm's own naive-loop kernel.
  Conv2DBackpropInput: conv2dBackpropInput,
  DepthwiseConv2dNativeBackpropFilter: depthwiseBackpropFilter,
  DepthwiseConv2dNativeBackpropInput: depthwiseBackpropInput,
  UnsortedSegmentSum: segmentSum,
};

/** Names of the kernels registered for the wasm backend by registerWasmGradientKernels. */
export const WASM_GRADIENT_KERNELS: readonly string[] = Object.keys(KERNELS);

const ours = new Map<string, KernelFunc>(
  Object.entries(KERNELS).map(([name, impl]) => [name, ({ inputs, attrs }) => impl(inputs, attrs ?? {})]),
);

/**
 * Registers the gradient kernels for the wasm backend; idempotent. Call it after importing
 * @tensorflow/tfjs-backend-wasm: that import registers wasm's own Conv2DBackpropInput, which ours replaces.
 */
export function registerWasmGradientKernels(): void {
  for (const [kernelName, kernelFunc] of ours) {
    const current = tf.getKernel(kernelName, BACKEND);
    if (current?.kernelFunc === kernelFunc) continue;
    if (current != null) tf.unregisterKernel(kernelName, BACKEND);
    tf.registerKernel({ kernelName, backendName: BACKEND, kernelFunc });
  }
}
