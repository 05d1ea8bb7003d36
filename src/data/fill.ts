// Reads, decodes, flips and normalises a run of batch slots into shared NHWC float32 memory. The same code
// runs in each worker thread and, with `workers: 0`, in the calling thread.
import { ArcfaceError } from '../errors.ts';
import { decodeFast, decodeImage, ImageDecodeError, resizeRgb } from './decode.ts';
import { writeNormalised } from './normalise.ts';
import type { ImageSource } from './source.ts';

export interface FillTask {
  /** Dataset index of each slot. */
  indices: Int32Array;
  /** 1 = mirror that slot's image. */
  flips: Uint8Array;
  /** First batch slot this task writes. */
  start: number;
}

export interface FillOptions {
  inputSize: number;
  /** Replace an undecodable image by the next decodable one in dataset order (and report it) instead of failing. */
  skipCorrupt: boolean;
}

/** A corrupt image that was replaced; `substitute` is the dataset index used in its place. */
export interface SkipNote {
  index: number;
  where: string;
  reason: string;
  substitute: number;
}

const MAX_SUBSTITUTES = 1000;

/** `source.item(i)`, with any failure that is not already an ArcfaceError named after the image's place. */
function readItem(source: ImageSource, index: number): { label: number; bytes: Uint8Array } {
  try {
    return source.item(index);
  } catch (e) {
    if (e instanceof ArcfaceError) throw e;
    throw new ArcfaceError(`cannot read image: ${(e as Error).message}`, source.describe(index));
  }
}

export async function fillSlots(
  source: ImageSource,
  task: FillTask,
  images: Float32Array,
  labels: Int32Array,
  opts: FillOptions,
  scratch: Uint8Array = new Uint8Array(opts.inputSize * opts.inputSize * 3),
): Promise<SkipNote[]> {
  const size = opts.inputSize;
  const per = size * size * 3;
  const notes: SkipNote[] = [];
  for (let j = 0; j < task.indices.length; j++) {
    const slot = task.start + j;
    let index = task.indices[j];
    for (let attempt = 0; ; attempt++) {
      try {
        const { label, bytes } = readItem(source, index);
        let img = decodeFast(bytes, scratch);
        if (!img) img = await decodeImage(bytes, source.describe(index), size);
        // `scratch` is shared by concurrent fills (prefetch), so the resize gets its own copy.
        else if (img.width !== size || img.height !== size) img = await resizeRgb({ ...img, data: img.data.slice() }, size, source.describe(index));
        writeNormalised(img.data, size, size, images, slot * per, task.flips[j] === 1);
        labels[slot] = label;
        break;
      } catch (e) {
        if (!(e instanceof ImageDecodeError)) throw e;
        if (!opts.skipCorrupt) throw new ArcfaceError(`${e.message} (the \`skipCorrupt\` option skips such images)`, e.where);
        const next = (index + 1) % source.length;
        notes.push({ index, where: source.describe(index), reason: e.reason, substitute: next });
        if (attempt >= Math.min(MAX_SUBSTITUTES, source.length)) throw new ArcfaceError(`${e.message}; and the next ${attempt} images cannot be decoded either`, e.where);
        index = next;
      }
    }
  }
  return notes;
}
