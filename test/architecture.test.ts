// The module layering of src/, from the import graph (static imports, re-exports and dynamic import()
// with a literal path, as TypeScript's own pre-processor finds them):
//   1. nothing outside src/cli imports from src/cli;
//   2. src/backend and src/ort import nothing from src/convert, directly or through other modules;
//   3. no import cycles.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import ts from 'typescript';

const ROOT = path.resolve(import.meta.dirname, '..');
const SRC = path.join(ROOT, 'src');

/** Module -> the src modules it imports, as paths relative to the repository root. */
type ImportGraph = Map<string, string[]>;

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sourceFiles(p) : e.name.endsWith('.ts') ? [p] : [];
  });
}

function importGraph(): ImportGraph {
  const graph: ImportGraph = new Map();
  for (const file of sourceFiles(SRC)) {
    const { importedFiles } = ts.preProcessFile(fs.readFileSync(file, 'utf8'), true, true);
    const deps = importedFiles
      .map((f) => f.fileName)
      .filter((spec) => spec.startsWith('.'))
      .map((spec) => path.relative(ROOT, path.resolve(path.dirname(file), spec)));
    graph.set(path.relative(ROOT, file), [...new Set(deps)]);
  }
  return graph;
}

const under = (file: string, dir: string): boolean => file.startsWith(`${dir}/`);

/** Every module reachable from `from` (not counting itself unless on a cycle). */
function reachable(graph: ImportGraph, from: string): Map<string, string[]> {
  const paths = new Map<string, string[]>();
  const queue: [string, string[]][] = [[from, [from]]];
  while (queue.length) {
    const [m, via] = queue.shift()!;
    for (const d of graph.get(m) ?? []) {
      if (paths.has(d)) continue;
      paths.set(d, [...via, d]);
      queue.push([d, [...via, d]]);
    }
  }
  return paths;
}

/** One line per broken rule. */
function violations(graph: ImportGraph): string[] {
  const out: string[] = [];
  for (const [file, deps] of graph) {
    if (!under(file, 'src/cli')) for (const d of deps) if (under(d, 'src/cli')) out.push(`${file} imports ${d} (only src/cli may import src/cli)`);
  }
  for (const file of graph.keys()) {
    if (!under(file, 'src/backend') && !under(file, 'src/ort')) continue;
    for (const [d, via] of reachable(graph, file)) {
      if (under(d, 'src/convert')) out.push(`${file} reaches ${d}: ${via.join(' -> ')} (src/backend and src/ort must not depend on src/convert)`);
    }
  }
  // Cycles: a depth-first search; a module met again while still on the stack closes one.
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (m: string): void => {
    state.set(m, 'open');
    stack.push(m);
    for (const d of graph.get(m) ?? []) {
      if (state.get(d) === 'open') out.push(`import cycle: ${[...stack.slice(stack.indexOf(d)), d].join(' -> ')}`);
      else if (!state.has(d)) visit(d);
    }
    stack.pop();
    state.set(m, 'done');
  };
  for (const m of [...graph.keys()].sort()) if (!state.has(m)) visit(m);
  return out;
}

test('the import graph sees every module, static and dynamic imports', () => {
  const graph = importGraph();
  assert.ok(graph.size > 100, `${graph.size} modules`);
  // Known edges of each kind: a static import, a re-export and a dynamic import('...').
  assert.ok(graph.get('src/ort/train.ts')!.includes('src/onnx/training.ts'));
  assert.ok(graph.get('src/browser.ts')!.includes('src/errors.ts'), 're-export');
  assert.ok(graph.get('src/cli/commands/export.ts')!.includes('src/onnx/export.ts'), 'dynamic import');
  for (const deps of graph.values()) for (const d of deps) assert.ok(graph.has(d), `import of a missing module ${d}`);
});

test('the layering rules hold: src/cli on top, src/backend and src/ort below src/convert, no cycles', () => {
  assert.deepEqual(violations(importGraph()), []);
});

test('the checker reports each kind of violation', () => {
  const graph: ImportGraph = new Map([
    ['src/train/loop.ts', ['src/cli/commands/train.ts']],
    ['src/cli/commands/train.ts', []],
    ['src/ort/infer.ts', ['src/onnx/export.ts']],
    ['src/onnx/export.ts', ['src/convert/onnx/reader.ts']],
    ['src/convert/onnx/reader.ts', []],
    ['src/data/a.ts', ['src/data/b.ts']],
    ['src/data/b.ts', ['src/data/a.ts']],
  ]);
  assert.deepEqual(violations(graph), [
    'src/train/loop.ts imports src/cli/commands/train.ts (only src/cli may import src/cli)',
    'src/ort/infer.ts reaches src/convert/onnx/reader.ts: src/ort/infer.ts -> src/onnx/export.ts -> src/convert/onnx/reader.ts (src/backend and src/ort must not depend on src/convert)',
    'import cycle: src/data/a.ts -> src/data/b.ts -> src/data/a.ts',
  ]);
});
