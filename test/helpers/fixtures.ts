// Locates ../shared/fixtures; tests that need it skip with a clear message where it is absent.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SHARED_FIXTURES = path.resolve(REPO_ROOT, '..', 'shared', 'fixtures');

/** Path of a shared fixture, or undefined when ../shared/fixtures is not there. */
export function sharedFixture(...parts: string[]): string | undefined {
  const p = path.join(SHARED_FIXTURES, ...parts);
  return fs.existsSync(p) ? p : undefined;
}

/** `skip` option for node:test: a message when the fixture is missing, false otherwise. */
export function skipUnlessFixture(...parts: string[]): string | false {
  return sharedFixture(...parts) ? false : `needs ../shared/fixtures/${parts.join('/')} (not present beside this checkout)`;
}
