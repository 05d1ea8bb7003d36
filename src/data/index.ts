// The data API in one import: sources, the loader, formats.
export type { ImageSource, SourceItem, SourceSpec } from './source.ts';
export { RecordIOSource, readProperty, type PackProperty, type RecLayout } from './rec-source.ts';
export { ImageFolderSource, IMAGE_EXTENSIONS } from './folder-source.ts';
export { MemorySource } from './memory-source.ts';
export { openTrainingSource, openSourceFromSpec } from './open-source.ts';
export { DataLoader, createTrainLoader, createEvalLoader, type Batch, type LoaderOptions } from './loader.ts';
export type { SkipNote } from './fill.ts';
export { Rng, type RngState } from './random.ts';
export { RecordIOReader, RecordIOWriter, RecordIOError, readIdx, readIdxTable, writeIdx, iterateRecords, scanRecordOffsets } from './recordio.ts';
export { packRecord, unpackRecord, classOf, type IRHeader } from './irheader.ts';
export { PackWriter, type PackLayout } from './pack-writer.ts';
export { packFolder } from './pack-folder.ts';
export { readBin, writeBin, parseBin, serialiseBin, binSource, decodeBinImages, type VerificationSet } from './bin-set.ts';
export { parsePairs, buildVerificationSet, type Pair } from './pairs.ts';
export { decodeImage, resizeRgb, encodeJpeg, ImageDecodeError, type RgbImage } from './decode.ts';
export { decodeJpeg, jpegSize } from './jpeg.ts';
export { NORMALISE, writeNormalised } from './normalise.ts';
