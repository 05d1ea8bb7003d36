// Node built-ins for modules that the browser entry (src/browser.ts) also loads. They are fetched when a
// function needs them, through process.getBuiltinModule (Node >= 20.16), so those modules carry no Node
// import and bundle for browsers; there, only the functions that take file paths fail (ArcfaceError).
import type * as Fs from 'node:fs';
import type * as Os from 'node:os';
import type * as NodeModule from 'node:module';
import { ArcfaceError } from './errors.ts';

type Builtins = { 'node:fs': typeof Fs; 'node:os': typeof Os; 'node:module': typeof NodeModule };

/** The built-in module `id` in Node, undefined elsewhere. */
export function nodeBuiltin<K extends keyof Builtins>(id: K): Builtins[K] | undefined {
  const proc = (globalThis as { process?: { getBuiltinModule?: (id: string) => unknown } }).process;
  return proc?.getBuiltinModule?.(id) as Builtins[K] | undefined;
}

/** node:fs, or an ArcfaceError naming `file` outside Node (pass bytes there instead of a path). */
export function nodeFs(file: string): typeof Fs {
  const fs = nodeBuiltin('node:fs');
  if (!fs) throw new ArcfaceError('file paths work only in Node; pass the bytes instead', file);
  return fs;
}
