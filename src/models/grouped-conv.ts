// An exact grouped convolution (torch `groups`, 1 < groups < channels), which tfjs-layers lacks.
// MobileFaceNet's second layer needs it (64 groups of 2 channels). Computed as one depthwise
// convolution with channel multiplier cout/groups followed by a sum over each group's inputs, so it
// runs on the fast depthwise kernels of every backend and has their gradients.
import * as tf from '@tensorflow/tfjs';

type Initializer = ReturnType<typeof tf.initializers.zeros>;

export interface GroupedConv2DArgs {
  name?: string;
  filters: number;
  kernelSize: number;
  strides?: number;
  padding?: 'same' | 'valid';
  groups: number;
  /** Accepted for symmetry with tf.layers.conv2d; the layer has no bias. */
  useBias?: boolean;
  kernelInitializer?: Initializer | string;
  trainable?: boolean;
}

export class GroupedConv2D extends tf.layers.Layer {
  static className = 'GroupedConv2D';
  readonly filters: number;
  readonly kernelSize: number;
  readonly strides: number;
  readonly padding: 'same' | 'valid';
  readonly groups: number;
  private readonly kernelInitializer: Initializer;
  private kernel: tf.LayerVariable | null = null;

  constructor(args: GroupedConv2DArgs) {
    super({ name: args.name, trainable: args.trainable });
    this.filters = args.filters;
    this.kernelSize = args.kernelSize;
    this.strides = args.strides ?? 1;
    this.padding = args.padding ?? 'valid';
    this.groups = args.groups;
    // A reloaded model gets its kernel from the weights file, so the default initializer only needs to exist.
    const init = args.kernelInitializer;
    this.kernelInitializer = init && typeof init !== 'string' ? init : tf.initializers.glorotUniform({});
    if (this.filters % this.groups !== 0) throw new Error(`${this.name}: filters ${this.filters} not divisible by groups ${this.groups}`);
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = inputShape as tf.Shape;
    const cin = shape[shape.length - 1]!;
    if (cin % this.groups !== 0) throw new Error(`${this.name}: input channels ${cin} not divisible by groups ${this.groups}`);
    // Keras' grouped-conv layout: [kh, kw, cin/groups, cout].
    this.kernel = this.addWeight(
      'kernel',
      [this.kernelSize, this.kernelSize, cin / this.groups, this.filters],
      'float32',
      this.kernelInitializer,
    );
    this.built = true;
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const [n, h, w] = inputShape as tf.Shape;
    const out = (size: number | null) => {
      if (size === null) return null;
      return this.padding === 'same'
        ? Math.ceil(size / this.strides)
        : Math.floor((size - this.kernelSize) / this.strides) + 1;
    };
    return [n!, out(h!), out(w!), this.filters];
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
      const k = this.kernelSize;
      const g = this.groups;
      const cin = x.shape[3];
      const a = cin / g;
      const b = this.filters / g;
      // [k,k,a,g*b] -> [k,k,g,a,b] -> depthwise filter [k,k,cin,b] with input channel g*a+i.
      const w = this.kernel!.read().reshape([k, k, a, g, b]).transpose([0, 1, 3, 2, 4]).reshape([k, k, cin, b]) as tf.Tensor4D;
      const d = tf.depthwiseConv2d(x, w, this.strides, this.padding);
      const [n, h, wd] = d.shape;
      return d.reshape([n, h, wd, g, a, b]).sum(4).reshape([n, h, wd, this.filters]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      filters: this.filters,
      kernelSize: this.kernelSize,
      strides: this.strides,
      padding: this.padding,
      groups: this.groups,
    };
  }
}

tf.serialization.registerClass(GroupedConv2D);
