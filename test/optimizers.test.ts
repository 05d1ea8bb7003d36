// SGD / AdamW / clipping / accumulation against torch 1.13, state export, and a leak check.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/select.ts';
import { PolynomialLRWarmup } from '../src/train/lr-schedule.ts';
import { GradientAccumulator, TorchOptimizer, globalNorm, type OptimizerKind } from '../src/train/optimizers.ts';

// Expected values: Debian python3-torch 1.13 running the same model and loss with torch.optim.SGD
// (momentum 0.9, weight_decay 5e-4) or torch.optim.AdamW, insightface's PolynomialLRWarmup, and
// torch.nn.utils.clip_grad_norm_([A, b], 5) before each opt.step(); parameters after the last step and
// the pre-clip backbone norms (script: scratch/losses/torch_opt.py, not committed).
const TORCH = {
  sgd: {
    A: [0.6315003037452698, -0.15818434953689575, -0.5854073166847229, 0.7439681887626648, -0.4381187856197357, 0.36819323897361755],
    b: [-0.38489165902137756, 0.03696414455771446, -0.4852076768875122],
    W: [0.3151686489582062, -0.016001664102077484, 0.67305988073349, -0.29716283082962036, -0.3888932466506958, -0.5375908017158508,
      -0.4143040180206299, 0.6377890110015869, -1.7772876024246216, 0.2174016684293747, 0.8429239392280579, 0.019669367000460625],
    norms: [17.318937301635742, 42.50605392456055, 43.70674514770508, 33.62019348144531],
  },
  sgd_acc2_warmup2: {
    A: [0.5564917922019958, -0.4625997543334961, -0.3194512128829956, 1.1496354341506958, 0.14015412330627441, 0.06429634988307953],
    b: [-0.1820334792137146, -0.22585096955299377, -0.1820114552974701],
    W: [0.25529301166534424, 0.5300507545471191, 0.13272179663181305, -0.33235228061676025, -0.9487565755844116, -0.3117859661579132,
      -1.4582831859588623, -1.0509097576141357, -1.4296700954437256, -0.9509860277175903, 0.7362679243087769, -0.8914687633514404],
    norms: [26.76762580871582, 62.122711181640625, 481.0565490722656],
  },
  adamw_bb01: {
    A: [0.4964442253112793, -0.9962847828865051, 0.24651344120502472, 1.5026614665985107, 0.7467619180679321, -0.49653178453445435],
    b: [0.09666594862937927, -0.19716472923755646, 0.29655921459198],
    W: [0.21956244111061096, -0.06714377552270889, 0.3658382296562195, -0.3267177939414978, 0.5643419623374939, 0.13230915367603302,
      0.01677689328789711, 0.16579343378543854, -0.6643732786178589, 0.863092303276062, -0.3756615221500397, 0.27148041129112244],
    norms: [17.318937301635742, 9.189061164855957, 15.934028625488281, 10.193231582641602],
  },
};

function makeParams() {
  return {
    A: tf.variable(tf.tensor2d([[0.5, -1.0, 0.25], [1.5, 0.75, -0.5]])),
    b: tf.variable(tf.tensor1d([0.1, -0.2, 0.3])),
    W: tf.variable(tf.tensor2d([[0.2, -0.1, 0.4], [-0.3, 0.6, 0.1], [0.05, 0.2, -0.7], [0.9, -0.4, 0.3]])),
  };
}

// x_k[i][j] = ((3i + 5j + 7k) % 11) / 5 - 1; loss = 4 * sum(z^2) + 0.3 * sum(z), z = tanh(x A + b) W^T
function lossFn(p: ReturnType<typeof makeParams>, k: number): tf.Scalar {
  const x = tf.tensor2d(Array.from({ length: 5 }, (_, i) => [0, 1].map((j) => ((i * 3 + j * 5 + k * 7) % 11) / 5 - 1)));
  const z = tf.tanh(x.matMul(p.A).add(p.b)).matMul(p.W, false, true);
  return z.square().sum().mul(4).add(z.mul(0.3).sum()) as tf.Scalar;
}

function run(kind: OptimizerKind, micro: number, acc: number, warmup: number, base: number, wd: number, bbScale: number) {
  const p = makeParams();
  const opt = new TorchOptimizer(
    [{ name: 'backbone', params: [p.A, p.b], lrScale: bbScale, clipNorm: 5 }, { name: 'head', params: [p.W] }],
    { kind, weightDecay: wd },
  );
  const sched = new PolynomialLRWarmup({ baseLr: base, warmupSteps: warmup, totalSteps: 10 });
  const accum = new GradientAccumulator(acc);
  const norms: number[] = [];
  for (let step = 1; step <= micro; step++) {
    const { value, grads } = tf.variableGrads(() => lossFn(p, step));
    const ready = accum.add(grads);
    tf.dispose([value, ...Object.values(grads)]);
    if (ready) {
      const g = accum.take();
      const n = globalNorm([g[p.A.name], g[p.b.name]]);
      norms.push(n.dataSync()[0]);
      n.dispose();
      opt.step(g, sched.lr);
      tf.dispose(Object.values(g));
    }
    sched.step();
  }
  return { p, opt, accum, norms };
}

function assertClose(got: ArrayLike<number>, want: number[], tol: number, what: string) {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) {
    assert.ok(Math.abs(got[i] - want[i]) <= tol * Math.max(1, Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

const CASES: [keyof typeof TORCH, OptimizerKind, number, number, number, number, number, number][] = [
  ['sgd', 'sgd', 4, 1, 0, 0.1, 5e-4, 1],
  ['sgd_acc2_warmup2', 'sgd', 6, 2, 2, 0.1, 5e-4, 1],
  ['adamw_bb01', 'adamw', 4, 1, 0, 1e-2, 0.1, 0.1],
];

for (const [name, kind, micro, acc, warmup, base, wd, bbScale] of CASES) {
  test(`${name}: parameters after the run match torch`, async () => {
    await initBackend('cpu', { quiet: true });
    const { p, opt, accum, norms } = run(kind, micro, acc, warmup, base, wd, bbScale);
    const want = TORCH[name];
    assertClose(norms, want.norms, 1e-5, `${name} clip norms`);
    assertClose(p.A.dataSync(), want.A, 2e-5, `${name} A`);
    assertClose(p.b.dataSync(), want.b, 2e-5, `${name} b`);
    assertClose(p.W.dataSync(), want.W, 2e-5, `${name} W`);
    opt.dispose();
    accum.dispose();
    tf.dispose([p.A, p.b, p.W]);
  });
}

for (const kind of ['sgd', 'adamw'] as const) {
  test(`${kind}: exported state restores exactly (2 + 2 steps == 4 steps)`, async () => {
    await initBackend('cpu', { quiet: true });
    const straight = run(kind, 4, 1, 0, 0.05, 1e-3, 0.5);
    const first = run(kind, 2, 1, 0, 0.05, 1e-3, 0.5);
    const state = first.opt.getState();
    assert.equal(state.step, 2);
    assert.ok(state.params.every((ps) => ps.step === 2));
    // A fresh optimiser on fresh variables holding the same values continues from the state.
    const p = makeParams();
    for (const k of ['A', 'b', 'W'] as const) (p[k] as tf.Variable).assign(first.p[k]);
    const opt = new TorchOptimizer(
      [{ name: 'backbone', params: [p.A, p.b], lrScale: 0.5, clipNorm: 5 }, { name: 'head', params: [p.W] }],
      { kind, weightDecay: 1e-3 },
    );
    opt.setState(JSON.parse(JSON.stringify(state, (_, v) => (v instanceof Float32Array ? { f32: [...v] } : v)), (_, v) => (v && v.f32 ? Float32Array.from(v.f32) : v)));
    const sched = new PolynomialLRWarmup({ baseLr: 0.05, warmupSteps: 0, totalSteps: 10 });
    sched.restore(2);
    for (let step = 3; step <= 4; step++) {
      const { value, grads } = tf.variableGrads(() => lossFn(p, step));
      opt.step(grads, sched.lr);
      tf.dispose([value, ...Object.values(grads)]);
      sched.step();
    }
    for (const k of ['A', 'b', 'W'] as const) assert.deepEqual([...p[k].dataSync()], [...straight.p[k].dataSync()], k);
    assert.throws(() => opt.setState({ ...state, kind: kind === 'sgd' ? 'adamw' : 'sgd' }), /optimizer state is for/);
    assert.throws(() => opt.setState({ ...state, params: state.params.slice(1) }), /has 2 parameters, this optimizer has 3/);
    for (const r of [straight, first]) {
      r.opt.dispose();
      r.accum.dispose();
      tf.dispose([r.p.A, r.p.b, r.p.W]);
    }
    opt.dispose();
    tf.dispose([p.A, p.b, p.W]);
  });
}

test('a training loop keeps tf.memory().numTensors flat', async () => {
  await initBackend('cpu', { quiet: true });
  for (const kind of ['sgd', 'adamw'] as const) {
    const p = makeParams();
    const opt = new TorchOptimizer([{ name: 'backbone', params: [p.A, p.b], clipNorm: 5 }, { name: 'head', params: [p.W] }], { kind, weightDecay: 5e-4 });
    const accum = new GradientAccumulator(2);
    const counts: number[] = [];
    for (let step = 1; step <= 20; step++) {
      const { value, grads } = tf.variableGrads(() => lossFn(p, step));
      if (accum.add(grads)) {
        const g = accum.take();
        opt.step(g, 0.01);
        tf.dispose(Object.values(g));
      }
      tf.dispose([value, ...Object.values(grads)]);
      if (step % 2 === 0) counts.push(tf.memory().numTensors);
    }
    assert.ok(counts.slice(1).every((c) => c === counts[0]), `${kind}: ${counts.join(' ')}`);
    opt.dispose();
    accum.dispose();
    tf.dispose([p.A, p.b, p.W]);
  }
});
