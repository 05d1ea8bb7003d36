// The real pretrained face model used by acceptance tests: a test-time copy made by
// scripts/fetch-test-models.mjs (run by `npm test` before the tests).
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { REPO_ROOT } from './fixtures.ts';

export const FR_FEATURE_ONNX = path.join(REPO_ROOT, 'test', '.models', 'fr_feature.onnx');

export function frFeatureOnnx(): string | undefined {
  return fs.existsSync(FR_FEATURE_ONNX) ? FR_FEATURE_ONNX : undefined;
}

export const FR_FEATURE_MISSING =
  'needs test/.models/fr_feature.onnx (faceplugin-face-recognition-js@0.0.1): run `node scripts/fetch-test-models.mjs` (npm test does)';

const require = createRequire(import.meta.url);

/** A file shipped inside an installed npm package (e.g. face-api's demo photos), if present. */
export function packageFile(pkg: string, rel: string): string | undefined {
  try {
    const p = path.join(path.dirname(require.resolve(`${pkg}/package.json`)), rel);
    return fs.existsSync(p) ? p : undefined;
  } catch {
    return undefined;
  }
}
