// The tfjs backend for inference. The face detector runs on it, and it is ~30x slower on cpu than
// on wasm (about 20 s per image), so that choice gets a note.
import { initBackend, type BackendName } from '../backend/select.ts';

export async function initInferBackend(requested: string | undefined, detecting: boolean): Promise<BackendName> {
  const name = await initBackend(requested);
  if (detecting && name.endsWith('cpu')) process.stderr.write('arcface: note: face detection on the cpu backend takes ~20 s per image; wasm is ~30x faster\n');
  return name;
}
