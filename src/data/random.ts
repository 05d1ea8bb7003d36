// Seeded pseudo-random numbers: xoshiro128** (Blackman & Vigna), seeded through splitmix32.
// Small, fast, 128-bit state that can be saved in a checkpoint and restored exactly, so a resumed
// run sees the same data order, flips and samples as an uninterrupted one.

/** Everything needed to continue a generator's sequence exactly. Plain JSON. */
export interface RngState {
  /** The four 32-bit words of the xoshiro128** state. */
  s: [number, number, number, number];
  /** The second Box-Muller sample, kept for the next `nextNormal()` call (null when none). */
  spare: number | null;
}

const TWO_POW_32 = 4294967296;

/** splitmix32: spreads a seed over many well-mixed 32-bit words. */
function splitmix32(x: number): [number, number] {
  x = (x + 0x9e3779b9) >>> 0;
  let z = x;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  z = (z ^ (z >>> 16)) >>> 0;
  return [x, z];
}

/** Folds any number of integer parts (each up to 2^53) into one 32-bit seed, order-sensitive. */
function mixParts(parts: readonly number[]): number {
  let h = 0x243f6a88;
  for (const p of parts) {
    if (!Number.isSafeInteger(p)) throw new RangeError(`seed parts must be safe integers, got ${p}`);
    const lo = p >>> 0;
    const hi = Math.floor(p / TWO_POW_32) >>> 0;
    for (const w of [lo, hi]) {
      h = splitmix32((h ^ w) >>> 0)[1];
    }
  }
  return h;
}

export class Rng {
  private readonly s = new Uint32Array(4);
  private spare: number | null = null;

  /** A generator whose sequence is a pure function of the seed (one integer or several). */
  constructor(seed: number | readonly number[] = 0) {
    let x = mixParts(typeof seed === 'number' ? [seed] : seed);
    for (let i = 0; i < 4; i++) {
      const [next, z] = splitmix32(x);
      x = next;
      this.s[i] = z;
    }
    if ((this.s[0] | this.s[1] | this.s[2] | this.s[3]) === 0) this.s[0] = 1; // all-zero state is a fixed point
  }

  /** Same as `new Rng([...parts])`: e.g. `Rng.derive(seed, epoch)` for a per-epoch stream. */
  static derive(...parts: number[]): Rng {
    return new Rng(parts);
  }

  /** Uniform integer in [0, 2^32). */
  nextUint32(): number {
    const s = this.s;
    const m = Math.imul(s[1], 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = (s[3] << 11) | (s[3] >>> 21);
    return result;
  }

  /** Uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** Uniform integer in [0, n), without modulo bias. n must be in [1, 2^32]. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_POW_32) throw new RangeError(`nextInt(n) needs 1 <= n <= 2^32, got ${n}`);
    // Reject the top partial range so every residue is equally likely.
    const limit = TWO_POW_32 - (TWO_POW_32 % n);
    for (;;) {
      const x = this.nextUint32();
      if (x < limit) return x % n;
    }
  }

  /** Standard normal sample (Box-Muller; the second value of each pair is kept for the next call). */
  nextNormal(mean = 0, std = 1): number {
    if (this.spare !== null) {
      const z = this.spare;
      this.spare = null;
      return mean + std * z;
    }
    let u = 0;
    while (u === 0) u = this.nextFloat(); // log(0) is -Infinity
    const v = this.nextFloat();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return mean + std * r * Math.cos(2 * Math.PI * v);
  }

  /** Fisher-Yates shuffle in place; returns the same array. */
  shuffle<T extends { length: number; [i: number]: any }>(a: T): T {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = a[i];
      a[i] = a[j];
      a[j] = t;
    }
    return a;
  }

  /** A uniformly random permutation of 0..n-1. */
  permutation(n: number): Int32Array {
    const p = new Int32Array(n);
    for (let i = 0; i < n; i++) p[i] = i;
    return this.shuffle(p);
  }

  getState(): RngState {
    return { s: [this.s[0], this.s[1], this.s[2], this.s[3]], spare: this.spare };
  }

  setState(state: RngState): void {
    if (!state || !Array.isArray(state.s) || state.s.length !== 4 || state.s.some((w) => !Number.isInteger(w) || w < 0 || w >= TWO_POW_32)) {
      throw new Error('invalid RNG state: expected { s: four 32-bit unsigned integers, spare: number | null }');
    }
    if ((state.s[0] | state.s[1] | state.s[2] | state.s[3]) === 0) throw new Error('invalid RNG state: all-zero');
    this.s.set(state.s);
    this.spare = typeof state.spare === 'number' ? state.spare : null;
  }
}
