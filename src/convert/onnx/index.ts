// Public surface of the ONNX importer (and the protobuf reader an exporter can share).
export { importOnnx, SUPPORTED_OPS, type ImportOnnxOptions, type ImportedOnnx, type ValueLayout } from './importer.ts';
export { OnnxOp } from './onnx-op-layer.ts';
export { readOnnxModel, readTensorProto, tensorFromProto, onnx, DataType } from './reader.ts';
export type { ConstTensor, Dim } from './const-tensor.ts';
