// arcface-ts public API for Node (the browser-safe subset is `arcface-ts/browser`, src/browser.ts).
// Importing it also registers the GroupedConv2D layer that MobileFaceNet models need.
export * from './browser.ts';
export { initBackend, BACKEND_ORDER, type BackendName } from './backend/select.ts';
export { saveModel, loadModel } from './models/io.ts';
export { loadBackbone, type LoadedBackbone } from './convert/load-backbone.ts';
export { writeOnnx } from './onnx/write.ts';
export { loadOnnxBackbone } from './convert/load-backbone.ts';
export { recogniseOnnxBackbone, NotRecognisedError } from './convert/onnx-backbone.ts';
export { applyInputConvention } from './convert/onnx-input.ts';
export { inputConventionOf, setInputConvention, STANDARD_INPUT, type InputConvention } from './models/input-convention.ts';
export { readTorchStateDict } from './formats/torch.ts';
export { writeTorchStateDict, writeTorchObject } from './formats/torch-write.ts';
export { evaluateModel, prepareVerificationSet, type PreparedSet, type SetEvaluation, type EvaluateOptions } from './eval/evaluate-bin.ts';
export { loadConfig, type TrainConfig } from './train/config.ts';
export { train, type TrainOptions, type TrainResult } from './train/loop.ts';
export { readBin, writeBin } from './data/bin-set.ts';
export { RecordIOReader, RecordIOWriter, readIdx, writeIdx, iterateRecords } from './data/recordio.ts';
export { PackWriter, type PackLayout } from './data/pack-writer.ts';
export { packFolder } from './data/pack-folder.ts';
export * as data from './data/index.ts';
// Inference: detect, align, embed, compare.
export { initInferBackend } from './infer/backend.ts';
export { readImage, resizeImage } from './infer/image.ts';
export { detectFaces, type DetectedFace, type DetectOptions } from './infer/detect.ts';
export { loadEmbedder } from './infer/load-embedder.ts';
export type { Embedder, ModelFormat } from './infer/embedder.ts';
export { embedFile, embedFiles, embedCrops, prepareFace, NoFaceError, type EmbedOptions, type EmbedResult, type PreparedFace } from './infer/embed.ts';
export { alignPhotos, type AlignOptions, type AlignReport, type AlignRecord } from './infer/align-photos.ts';
export { readCard, writeCard, defaultCard, decisionThreshold, pickThreshold, type ModelCard, type CalibratedThreshold } from './infer/card.ts';
export { listGallery, readGallery, searchGallery, type GalleryEntry, type SearchMatch } from './infer/search.ts';
export { pairsFromFolder, drawPairs } from './data/pairs.ts';
