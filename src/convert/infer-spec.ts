// Recognises an insightface backbone from its state-dict keys and shapes alone, so `arcface import`
// needs no --network flag: IResNet layer counts, widths, embedding and input size; MobileFaceNet
// blocks, scale, embedding and input size.
import type { TorchTensor } from '../formats/torch.ts';
import { IRESNET_LAYERS } from '../models/iresnet.ts';
import type { BackboneSpec } from '../models/factory.ts';

const countIndices = (keys: string[], prefix: string): number => {
  const seen = new Set<number>();
  for (const k of keys) {
    if (!k.startsWith(prefix)) continue;
    const i = Number.parseInt(k.slice(prefix.length), 10);
    if (Number.isInteger(i)) seen.add(i);
  }
  return seen.size;
};

/** Returns the spec of the network in `sd`, or throws naming what is not recognised. */
export function inferSpec(sd: Map<string, TorchTensor>): BackboneSpec {
  const keys = [...sd.keys()];
  const shape = (k: string) => sd.get(k)?.shape;
  if (sd.has('conv1.weight') && sd.has('fc.weight') && keys.some((k) => k.startsWith('layer1.0.'))) {
    const layers = [1, 2, 3, 4].map((s) => countIndices(keys, `layer${s}.`));
    const widths = [1, 2, 3, 4].map((s) => shape(`layer${s}.0.conv1.weight`)?.[0] ?? 0);
    const [embeddingSize, fcIn] = shape('fc.weight')!;
    const side = Math.sqrt(fcIn! / widths[3]!) * 16;
    if (layers.some((n) => n === 0) || widths.some((w) => !w) || !Number.isInteger(side) || !(side >= 16)) {
      throw new Error('looks like an IResNet but its stages or fc size are inconsistent');
    }
    // Each stage's first conv is [width, previous width, 3, 3]: checked here, so that a damaged shape
    // cannot make the model built below far bigger than the file.
    const want = (k: string, dims: number[]) => {
      const got = shape(k);
      if (!got || got.join() !== dims.join()) throw new Error(`looks like an IResNet but "${k}" has shape [${got ?? ''}], expected [${dims}]`);
    };
    want('conv1.weight', [widths[0]!, 3, 3, 3]);
    widths.forEach((w, i) => want(`layer${i + 1}.0.conv1.weight`, [w, widths[Math.max(0, i - 1)]!, 3, 3]));
    const named = Object.entries(IRESNET_LAYERS).find(([, l]) => l.every((n, i) => n === layers[i]));
    const standardWidths = widths.every((w, i) => w === 64 << i);
    return {
      network: named && standardWidths ? named[0] : 'iresnet',
      embeddingSize: embeddingSize!,
      inputSize: side,
      layers,
      widths,
    };
  }
  if (sd.has('layers.0.layers.0.weight') && sd.has('conv_sep.layers.0.weight') && sd.has('features.layers.2.weight')) {
    const scale = shape('layers.0.layers.0.weight')![0]! / 64;
    const first = shape('layers.0.layers.0.weight')!;
    if (!Number.isInteger(scale) || scale < 1 || first.join() !== [64 * scale, 3, 3, 3].join()) {
      throw new Error(`looks like a MobileFaceNet but "layers.0.layers.0.weight" has shape [${first}], expected [64 x scale, 3, 3, 3]`);
    }
    const grouped = shape('layers.1.layers.0.weight');
    const blocks = [
      grouped && grouped.length === 4 ? 1 : countIndices(keys, 'layers.1.layers.'),
      countIndices(keys, 'layers.3.layers.'),
      countIndices(keys, 'layers.5.layers.'),
      countIndices(keys, 'layers.7.layers.'),
    ];
    const k = shape('features.layers.0.layers.0.weight')![2]!;
    const embeddingSize = shape('features.layers.2.weight')![0]!;
    if (!(k >= 1) || !(embeddingSize >= 1)) throw new Error('looks like a MobileFaceNet but its head has an empty kernel or embedding');
    const isLarge = scale === 4 && blocks.join() === '2,8,12,4';
    return { network: isLarge ? 'mbf_large' : 'mbf', embeddingSize, inputSize: 16 * k, blocks, scale };
  }
  throw new Error(
    `not an insightface IResNet or MobileFaceNet state dict (first keys: ${keys.slice(0, 5).join(', ')}); the \`network\` option says what it is`,
  );
}
