// One string factory for every backbone, like insightface's `get_model(name, num_features=...)`.
import type * as tf from '@tensorflow/tfjs';
import { IRESNET_LAYERS, iresnet, type IResNetName } from './iresnet.ts';
import { mobileFaceNet } from './mobilefacenet.ts';

/** What a backbone is; stored beside saved models so they can be rebuilt and converted. */
export interface BackboneSpec {
  /** `r18`…`r200`, `iresnet` (custom `layers`), `mbf` or `mbf_large`. */
  network: string;
  embeddingSize: number;
  inputSize: number;
  /** IResNet: blocks per stage (set for every iresnet, derived from the name when omitted). */
  layers?: number[];
  /** IResNet stage widths (default 64, 128, 256, 512). */
  widths?: number[];
  /** MobileFaceNet blocks and width multiplier. */
  blocks?: number[];
  scale?: number;
}

export const NETWORKS = [...Object.keys(IRESNET_LAYERS), 'iresnet', 'mbf', 'mbf_large'] as const;

/** Fills in the defaults of a partial spec; throws for an unknown network name. */
export function resolveSpec(spec: Partial<BackboneSpec> & { network: string }): BackboneSpec {
  const { network } = spec;
  const base = { network, embeddingSize: spec.embeddingSize ?? 512, inputSize: spec.inputSize ?? 112 };
  if (Object.hasOwn(IRESNET_LAYERS, network) || network === 'iresnet') {
    const layers = spec.layers ?? (IRESNET_LAYERS as Record<string, readonly number[]>)[network];
    if (!layers) throw new Error('network "iresnet" needs `layers` (blocks per stage, e.g. [2,2,2,2])');
    return { ...base, layers: [...layers], widths: [...(spec.widths ?? [64, 128, 256, 512])] };
  }
  if (network === 'mbf' || network === 'mbf_large') {
    const large = network === 'mbf_large';
    return { ...base, blocks: [...(spec.blocks ?? (large ? [2, 8, 12, 4] : [1, 4, 6, 2]))], scale: spec.scale ?? (large ? 4 : 2) };
  }
  throw new Error(`unknown network "${network}": choose one of ${NETWORKS.join(', ')}`);
}

export function isIResNet(spec: BackboneSpec): boolean {
  return spec.layers !== undefined;
}

/** Builds the backbone a spec describes (reference initialisation, seeded when `seed` is given). */
export function buildBackbone(spec: Partial<BackboneSpec> & { network: string }, opts: { seed?: number; dropout?: number } = {}): tf.LayersModel {
  const s = resolveSpec(spec);
  if (isIResNet(s)) {
    return iresnet({ layers: s.layers!, widths: s.widths, embeddingSize: s.embeddingSize, inputSize: s.inputSize, seed: opts.seed, dropout: opts.dropout, name: s.network });
  }
  return mobileFaceNet({ blocks: s.blocks, scale: s.scale, embeddingSize: s.embeddingSize, inputSize: s.inputSize, seed: opts.seed, name: s.network });
}

export type { IResNetName };
