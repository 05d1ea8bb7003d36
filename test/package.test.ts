// The published package as a user gets it: `npm pack` (which builds dist/ through `prepare`), the tarball's
// contents, then a fresh project that installs the tarball (dependencies from the npm registry) and
// (a) runs plain-Node ESM scripts against it — embedding and comparing faces, decoding in worker threads —
// (b) type-checks a TypeScript file under a strict NodeNext tsconfig (test/fixtures/consumer/).
import { test, before, after, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { REPO_ROOT, sharedFixture } from './helpers/fixtures.ts';
import { frFeatureOnnx } from './helpers/third-party-model.ts';

const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const CONSUMER_FILES = path.join(REPO_ROOT, 'test', 'fixtures', 'consumer');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-package-'));
const project = path.join(tmp, 'consumer');
const installed = path.join(project, 'node_modules', 'arcface-ts');

interface PackResult {
  filename: string;
  size: number;
  unpackedSize: number;
  entryCount: number;
  files: { path: string; size: number }[];
}
let pack: PackResult;
let installError: string | undefined;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}, timeout = 300_000): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, ...env } });
}

before(() => {
  const p = run(NPM, ['pack', '--json', '--pack-destination', tmp], REPO_ROOT);
  assert.equal(p.status, 0, `npm pack failed:\n${p.stderr}`);
  pack = (JSON.parse(p.stdout.slice(p.stdout.indexOf('['))) as PackResult[])[0]!;
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  for (const f of fs.readdirSync(CONSUMER_FILES)) fs.copyFileSync(path.join(CONSUMER_FILES, f), path.join(project, f));
  // As the README tells CPU-only installs: no CUDA download by onnxruntime-node's install script.
  const i = run(NPM, ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(tmp, pack.filename), '@types/node@20'], project, {
    ONNXRUNTIME_NODE_INSTALL: 'skip',
  });
  if (i.status !== 0) installError = `npm install of the tarball failed:\n${i.stderr}`;
});

after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('the tarball holds the compiled package, its bin and configs, and nothing else', (t) => {
  const files = pack.files.map((f) => f.path);
  t.diagnostic(`${pack.filename}: ${pack.size} bytes packed, ${pack.unpackedSize} unpacked, ${pack.entryCount} files`);
  for (const f of ['package.json', 'README.md', 'bin/arcface.js', 'configs/base.json', 'configs/tiny.json', 'dist/index.js', 'dist/index.d.ts', 'dist/index.js.map', 'dist/browser.js', 'dist/browser.d.ts', 'dist/cli/main.js', 'dist/data/decode-worker.js', 'dist-web/index.html', 'dist-web/app.js', 'dist-web/assets.json']) {
    assert.ok(files.includes(f), `${f} is missing from the tarball`);
  }
  // The web page ships as its bundle; the detector weights and wasm it loads come from installed dependencies.
  const stray = files.filter((f) => !/^(dist\/.*\.(js|d\.ts|js\.map)|dist-web\/(index\.html|style\.css|app\.js|assets\.json)|bin\/arcface\.js|configs\/[\w-]+\.json|package\.json|README\.md)$/.test(f));
  assert.deepEqual(stray, []);
  // Every compiled module has its types and map; no TypeScript source ships.
  for (const js of files.filter((f) => f.startsWith('dist/') && f.endsWith('.js'))) {
    assert.ok(files.includes(js.replace(/\.js$/, '.d.ts')) && files.includes(`${js}.map`), `${js} lacks .d.ts or .map`);
  }
  assert.ok(pack.size < 1_500_000, `tarball is ${pack.size} bytes`);
});

test('the exports map and bin point at files in the tarball', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
    exports: Record<string, { types: string; default: string } | string>;
    bin: Record<string, string>;
    dependencies: Record<string, string>;
  };
  const files = new Set(pack.files.map((f) => f.path));
  for (const [key, target] of Object.entries(pkg.exports)) {
    if (typeof target === 'string') continue;
    assert.ok(files.has(target.types.replace(/^\.\//, '')), `${key} types`);
    assert.ok(files.has(target.default.replace(/^\.\//, '')), `${key} default`);
  }
  assert.ok(files.has(pkg.bin.arcface!));
  assert.equal(pkg.dependencies.tsx, undefined, 'tsx is a devDependency');
});

/** Bare module specifiers reachable from `entry` through static imports of compiled ESM (dynamic imports not followed). */
function staticPackages(entry: string): Set<string> {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const src = fs.readFileSync(file, 'utf8');
    for (const m of src.matchAll(/^\s*(?:import|export)\s(?:[^'";]*?\sfrom\s)?['"]([^'"]+)['"]/gm)) {
      const spec = m[1]!;
      if (spec.startsWith('.')) visit(path.resolve(path.dirname(file), spec));
      else packages.add(spec);
    }
  };
  visit(entry);
  return packages;
}

/** The install failing (registry unreachable) skips the tests that need it, with npm's message. */
function installedOrSkip(t: TestContext): boolean {
  if (installError) t.skip(installError);
  return !installError;
}

test('the installed `arcface` runs compiled JavaScript; --help loads no tfjs, onnxruntime or sharp', (t) => {
  if (!installedOrSkip(t)) return;
  const r = run(path.join(project, 'node_modules', '.bin', 'arcface'), ['--help'], project);
  assert.equal(r.status, 0, r.stderr);
  for (const c of ['demo', 'train', 'import', 'export', 'pack', 'pack-bin', 'inspect', 'eval', 'embed', 'compare']) assert.match(r.stdout, new RegExp(`arcface ${c}\\b`));
  const loaded = [...staticPackages(path.join(installed, 'dist', 'cli', 'main.js'))];
  assert.deepEqual(loaded.filter((p) => /^(@tensorflow|onnxruntime|sharp|@vladmandic|onnx-proto|@cwasm)/.test(p)), []);
  assert.ok(loaded.includes('yargs'), `static imports: ${loaded}`);
});

test('the installed `arcface serve` serves the page, its detector weights and the tfjs wasm binaries', async (t) => {
  if (!installedOrSkip(t)) return;
  const child = spawn(path.join(project, 'node_modules', '.bin', 'arcface'), ['serve', '--port', '0'], { cwd: project });
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout.on('data', (b: Buffer) => {
        out += b.toString();
        const m = /(http:\/\/\S+\/)/.exec(out);
        if (m) resolve(m[1]!);
      });
      child.once('exit', (code) => reject(new Error(`arcface serve exited with ${code}: ${out}`)));
    });
    const assets = JSON.parse(fs.readFileSync(path.join(installed, 'dist-web', 'assets.json'), 'utf8')) as Record<string, string>;
    for (const p of ['', 'app.js', ...Object.keys(assets)]) {
      const r = await fetch(new URL(p, url));
      assert.equal(r.status, 200, p);
      const bytes = new Uint8Array(await r.arrayBuffer());
      if (p in assets) assert.deepEqual(bytes, new Uint8Array(fs.readFileSync(path.join(project, 'node_modules', assets[p]!))), p);
    }
    // No way out of the page's folder (%2f is not a separator to the URL parser, so `..` reaches the server).
    assert.equal((await fetch(`${url}..%2fpackage.json`)).status, 404);
  } finally {
    child.kill();
  }
});

const FR = frFeatureOnnx();
const ASTRONAUT = sharedFixture('faces', 'astronaut.png');
test(
  '(a) plain Node ESM: embeds two photos of one face and another person, and compares them',
  { skip: !FR ? 'needs test/.models/fr_feature.onnx (npm test fetches it)' : !ASTRONAUT ? 'needs ../shared/fixtures/faces' : false },
  async (t) => {
    if (!installedOrSkip(t)) return;
    const mirror = path.join(tmp, 'mirror.png');
    await sharp(ASTRONAUT).flop().toFile(mirror);
    // A different person: a demo photo inside the installed face-api package.
    const other = path.join(project, 'node_modules', '@vladmandic', 'face-api', 'demo', 'sample1.jpg');
    const r = run(process.execPath, ['embed.mjs', FR!, ASTRONAUT!, mirror, other], project);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { dim: number; same: number; sameVerdict: string; other: number; otherVerdict: string };
    assert.equal(out.dim, 512);
    assert.ok(out.same >= 0.5, `mirror cosine ${out.same}`);
    assert.equal(out.sameVerdict, 'same');
    assert.ok(out.other <= 0.3, `other person cosine ${out.other}`);
    assert.equal(out.otherVerdict, 'different');
  },
);

const REC = sharedFixture('rec_insightface');
test('the installed loader decodes in worker threads (compiled decode-worker.js) exactly as inline', { skip: !REC && 'needs ../shared/fixtures/rec_insightface' }, (t) => {
  if (!installedOrSkip(t)) return;
  const r = run(process.execPath, ['workers.mjs', REC!], project);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { threads: { images: number; sum: number }; inline: { images: number; sum: number } };
  assert.equal(out.threads.images, 72);
  assert.deepEqual(out.threads, out.inline);
});

test('(b) TypeScript: the API type-checks under strict NodeNext with noUncheckedIndexedAccess, exactOptionalPropertyTypes, skipLibCheck false', (t) => {
  if (!installedOrSkip(t)) return;
  const r = run(process.execPath, [path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], project);
  const errors = r.stdout.split('\n').filter((l) => /error TS\d+/.test(l));
  // tfjs-layers' own declarations fail strict checks (a bare `import '@tensorflow/tfjs'` gets these same two
  // errors); nothing else may: no error in arcface-ts's declarations or in the consumer's file.
  const known = [/^node_modules\/@tensorflow\/tfjs-layers\/dist\/engine\/training\.d\.ts\(\d+,\d+\): error TS2420:/, /^node_modules\/@tensorflow\/tfjs-layers\/dist\/keras_format\/types\.d\.ts\(\d+,\d+\): error TS2411:/];
  assert.deepEqual(errors.filter((e) => !known.some((k) => k.test(e))), []);
});
