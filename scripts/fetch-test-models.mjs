// Test-time copy of a real pretrained face model that ships inside an npm package: faceplugin's 512-d
// fr_feature.onnx (MIT). Taking it with `npm pack` instead of a dev dependency avoids that package's
// ~550 unrelated dependencies. Runs before `npm test`; offline it says so and the tests that need the
// model skip with a message.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const PACKAGE = 'faceplugin-face-recognition-js@0.0.1';
const MEMBER = 'package/model/fr_feature.onnx';
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const target = path.join(root, 'test', '.models', 'fr_feature.onnx');

if (fs.existsSync(target)) process.exit(0);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'arcface-models-'));
try {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const out = execFileSync(npm, ['pack', PACKAGE, '--silent', '--pack-destination', tmp], { encoding: 'utf8', timeout: 120_000 });
  const tgz = path.join(tmp, out.trim().split('\n').pop());
  execFileSync('tar', ['-xzf', tgz, '-C', tmp, MEMBER], { timeout: 60_000 });
  fs.mkdirSync(path.dirname(target), { recursive: true });
  fs.copyFileSync(path.join(tmp, MEMBER), `${target}.tmp`);
  fs.renameSync(`${target}.tmp`, target);
  process.stderr.write(`fetched ${PACKAGE} ${MEMBER.replace('package/', '')} -> ${path.relative(root, target)}\n`);
} catch (e) {
  process.stderr.write(`note: could not fetch ${PACKAGE} (${e.message.split('\n')[0]}); tests that need fr_feature.onnx will skip\n`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
