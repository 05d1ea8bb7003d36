// docs/api.md's examples, each run as written (imports of `arcface-ts` and `arcface-ts/browser` pointed at the
// sources) in a folder holding the files they name, made from the shared fixtures and the test model.
// An example needing a file that is absent here skips with its name.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import sharp from 'sharp';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';
import { frFeatureOnnx, packageFile } from './helpers/third-party-model.ts';

const doc = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'api.md'), 'utf8');
const examples = [...doc.matchAll(/^## (.+)\n[\s\S]*?^```ts\n([\s\S]*?)^```$/gm)].map((m) => ({ title: m[1]!, code: m[2]! }));
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-api-docs-'));

// name in the examples -> where it comes from (undefined: not available here)
const astronaut = sharedFixture('faces', 'astronaut.png');
const FILES: Record<string, string | undefined> = {
  'backbone.pth': sharedFixture('mbf', 'backbone.pth'),
  'backbone.onnx': sharedFixture('mbf', 'backbone.onnx'),
  'lfw.bin': sharedFixture('pairs_py2.bin'),
  'faces-rec': sharedFixture('rec_insightface'),
  'model.onnx': frFeatureOnnx(),
  'alice.png': astronaut,
  'alice-2.png': astronaut,
  'bob.jpg': packageFile('@vladmandic/face-api', 'demo/sample1.jpg'),
};

before(async () => {
  for (const [name, from] of Object.entries(FILES)) {
    if (!from) continue;
    if (name === 'alice-2.png') await sharp(from).flop().toFile(path.join(dir, name)); // the mirror image
    else fs.cpSync(from, path.join(dir, name), { recursive: true });
  }
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('docs/api.md has an example per section', () => {
  assert.ok(examples.length >= 7, `${examples.length} examples`);
});

examples.forEach(({ title, code }, k) => {
  const missing = Object.keys(FILES).filter((f) => code.includes(`'${f}`) && !FILES[f]);
  test(`docs/api.md example ${k + 1}: ${title}`, { skip: missing.length ? `needs ${missing.join(', ')}` : false }, (t) => {
    const src = code
      .replaceAll("from 'arcface-ts/browser'", `from '${pathToFileURL(path.join(REPO_ROOT, 'src', 'browser.ts')).href}'`)
      .replaceAll("from 'arcface-ts'", `from '${pathToFileURL(path.join(REPO_ROOT, 'src', 'index.ts')).href}'`)
      .replaceAll("from '@tensorflow/tfjs'", `from '${import.meta.resolve('@tensorflow/tfjs')}'`);
    const file = path.join(dir, `example-${k + 1}.mts`);
    fs.writeFileSync(file, src);
    const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), file], { cwd: dir, encoding: 'utf8', timeout: 300_000 });
    assert.equal(r.status, 0, `example ${k + 1} failed:\n${r.stderr}`);
    t.diagnostic(r.stdout.trim());
    const check = CHECKS[title];
    assert.ok(check, `no check for "${title}"`);
    for (const re of check) assert.match(r.stdout, re);
  });
});

// What each example prints (the values its comments show), against the fixtures' known contents.
const CHECKS: Record<string, RegExp[]> = {
  'Models: build, save, load': [/^2059520$/m, /network: 'mbf'/, /embeddingSize: 512/, /inputSize: 112/],
  'Converting: insightface `.pth`, ONNX, tfjs': [/^mbf 128$/m, /^true \[ null, 112, 112, 3 \]$/m],
  'Training: `train(config)` with progress and a stop signal': [/^step 1\/20 loss \d+\.\d{3} lr 0\.1000$/m, /^step 3\/20 /m, /^true 3 runs\/tiny\/model$/m],
  'Evaluating on a `.bin` verification set': [/^lfw 60 (0|1|0\.\d+) (0|0\.\d+)$/m],
  'RecordIO packs and `.bin` sets: read and write': [/^0 \d{3,}$/m, /^missing\.bin cannot read: ENOENT.*'missing\.bin'$/m],
  'Faces: detect, align, embed, compare': [/^0\.9\d\d same -?0\.[0-2]\d\d different$/m, /^(0\.[5-9]\d|1\.00) 512$/m],
  'In the browser: `arcface-ts/browser`': [/^4 true$/m, /^\[ null, 64 \] \[ null, 64 \]$/m, /^true$/m],
};

