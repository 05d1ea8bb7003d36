// arcface-ts for browsers (and any JS runtime): everything that works on bytes and tensors, with no Node
// import. Runs on whichever tfjs backend is active (webgl, wasm, cpu, ...). Importing it registers the
// GroupedConv2D layer that MobileFaceNet models need.
export { buildBackbone, resolveSpec, NETWORKS, type BackboneSpec } from './models/factory.ts';
export { iresnet, IRESNET_LAYERS, type IResNetOptions } from './models/iresnet.ts';
export { mobileFaceNet, type MobileFaceNetOptions } from './models/mobilefacenet.ts';
export { GroupedConv2D } from './models/grouped-conv.ts';
export { countParameters } from './models/params.ts';
export { specOf, modelToArtifacts, modelFromArtifacts, loadModelFromUrl, modelJsonOf } from './models/io-memory.ts';
export { CombinedMarginLoss, type MarginOptions, type MarginVariant, type Labels } from './losses/margin.ts';
export { PartialFC, type PartialFCOptions } from './losses/partial-fc.ts';
export { evaluateVerification, pairDistances, type VerificationResult, type VerificationOptions } from './eval/verification.ts';
export { cosineThresholdsAtFar, exactRoc, pairCosines, type CosineAtFar, type Roc } from './eval/calibrate.ts';
export { trainStep, type StepParts } from './train/step.ts';
export { fit, type FitOptions, type FitBatch, type FitResult, type TrainProgress } from './train/fit.ts';
export { trainForward, applyBatchNormUpdates, trainableVariables, type BatchNormUpdate } from './train/forward.ts';
export { TorchOptimizer, type OptimizerKind } from './train/optimizers.ts';
export { PolynomialLRWarmup } from './train/lr-schedule.ts';
export { importTorch, type ImportTorchOptions } from './convert/import-torch.ts';
export { loadStateDict, toStateDict } from './convert/torch-mapping.ts';
export { parseTorchStateDict, serialiseTorchStateDict, type TorchTensor, type TorchTensorOut } from './formats/torch.ts';
export { importOnnx, type ImportOnnxOptions, type ImportedOnnx } from './convert/onnx/index.ts';
export { exportOnnx, type ExportOnnxOptions } from './onnx/export.ts';
export { parseBin, serialiseBin, type VerificationSet } from './data/bin-bytes.ts';
export { parseRecordIO, encodeRecordIO, type RecordAt } from './data/recordio-bytes.ts';
export { packRecord, unpackRecord, classOf, type IRHeader } from './data/irheader.ts';
export { cosineSimilarity, l2Normalise, verdict, DEFAULT_THRESHOLD } from './infer/similarity.ts';
export { alignmentMatrix, warpAffine, normCrop, arcfaceTemplate, type Landmarks5, type Point } from './infer/align.ts';
export type { RgbImage } from './infer/image.ts';
export { ArcfaceError } from './errors.ts';
export { fivePointsFrom68 } from './infer/align.ts';
export { defaultCard, parseCard, withThresholds, pickThreshold, CARD_FILE, ONNX_CARD_KEY, type ModelCard, type CalibratedThreshold } from './infer/model-card.ts';
export { drawPairs, type DrawPairsOptions } from './data/draw-pairs.ts';
export { planSmallData, type SmallDataPlan } from './train/small-data.ts';
export { registerWasmGradientKernels } from './backend/wasm-grad.ts';
export { inputConventionOf, type InputConvention } from './models/input-convention.ts';
