// Writing outputs through temporary names: an interrupted write never leaves a file that looks complete.
import fs from 'node:fs';
import path from 'node:path';

/** `dir/.name.partial-<pid>`: hidden, and clearly not the finished file. */
export function temporaryName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.partial-${process.pid}`);
}

export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const tmp = temporaryName(file);
  try {
    fs.writeFileSync(tmp, data);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}
