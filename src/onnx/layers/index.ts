// Every layer family the ONNX graphs know, by tfjs class name.
import type { LayerFamily } from '../context.ts';
import { batchNormFamily } from './batchnorm.ts';
import { convFamily } from './conv.ts';
import { denseFamily } from './dense.ts';
import { addFamily, reluFamily } from './elementwise.ts';
import { preluFamily } from './prelu.ts';
import { dropoutFamily, flattenFamily, zeroPaddingFamily } from './reshape.ts';

const FAMILIES: readonly LayerFamily[] = [convFamily, batchNormFamily, preluFamily, reluFamily, addFamily, zeroPaddingFamily, flattenFamily, dropoutFamily, denseFamily];

const BY_CLASS = new Map(FAMILIES.flatMap((f) => f.classes.map((c) => [c, f] as const)));

/** Every tfjs class name some family handles. */
export const SUPPORTED_CLASSES: readonly string[] = FAMILIES.flatMap((f) => f.classes);

/** The family that emits layers of class `cls`, or undefined. */
export function familyOf(cls: string): LayerFamily | undefined {
  return BY_CLASS.get(cls);
}
