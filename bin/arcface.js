#!/usr/bin/env node
// Launcher for the compiled CLI (`npm run build`, run by `npm ci`/`prepare`, writes dist/).
try {
  await import('../dist/cli/main.js');
} catch (e) {
  if (e?.code === 'ERR_MODULE_NOT_FOUND' && String(e.message).includes('dist/cli/main.js')) {
    process.stderr.write('arcface: error: dist/ is missing; run `npm run build` (or `npm ci`) first\n');
    process.exitCode = 1;
  } else {
    throw e;
  }
}
