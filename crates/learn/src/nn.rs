//! Multi-layer perceptron with a flat parameter buffer, batched forward and analytic backward.
//!
//! Why hand-written rather than candle/burn (measured in shared/research/stack.md on this 2-core
//! AVX2 machine): candle's PPO update was 2.4x slower than PyTorch even with a vectorised tanh
//! (eager-mode overhead: many small elementwise kernels in the loss/backward graph and ~10 tensor
//! ops per parameter in AdamW), burn 2.1x slower, while a fused hand path (matrixmultiply sgemm +
//! vectorisable tanh) took 0.68x PyTorch's time. The heads here are small and fixed (Linear/Tanh
//! stacks), so a hand path is short, exact and fast:
//! - all parameters of one network live in one flat `Vec<f32>` in PyTorch layout (per layer:
//!   weight `[out, in]` row-major, then bias `[out]`), gradients in a same-layout buffer, so the
//!   optimiser, global clipping and checkpoints are loops over one slice;
//! - matmuls go through single-threaded `matrixmultiply::sgemm` calls, large ones in fixed chunks
//!   of rows side by side (bit-identical whatever the rayon thread count: an element's reduction
//!   never depends on the rows around it);
//! - bias add + tanh is one fused pass with a branch-free exp-based tanh the compiler vectorises
//!   (AVX-512/AVX2 chosen at run time, same bits), and the tanh derivative is computed from the
//!   stored activations (`1 - a^2`), never recomputed.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use crate::error::{check_len, rows_of, LearnError, Result};
use crate::simd::multiversion;

// ---------------------------------------------------------------------------------------------
// Vectorisable elementwise kernels
// ---------------------------------------------------------------------------------------------

/// `|x|` is clamped here before `exp(2|x|)`: beyond it tanh rounds to +-1.0 in f32 anyway, and
/// the clamp keeps the exponent-bit construction in range.
pub const TANH_CLAMP: f32 = 10.0;

/// Branch-free `e^x` for `x` in `[0, 2 * TANH_CLAMP]` (Cephes `expf`: Cody-Waite range reduction,
/// degree-5 polynomial, 2^n built from exponent bits). Pure arithmetic and bit casts, so a loop
/// over it vectorises.
#[inline(always)]
fn exp_reduced(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to the nearest integer
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()); // n as a two's complement int
    let r = x - n * C1 - n * C2;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_2e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let poly = p * r * r + r + 1.0;
    poly * f32::from_bits(n_int.wrapping_add(127) << 23)
}

/// Fast float32 tanh: `1 - 2 / (e + 1)` with `e = exp(2|x|)` from `exp_reduced`, sign of
/// `x` restored (odd by construction).
///
/// One branch-free path of ~25 arithmetic ops and one division, so a slice loop over it
/// vectorises (libm's scalar tanh, ~20 ns/element, is what made candle/burn slow in
/// stack.md). Max abs error vs f64 tanh is below 2e-7 (tested on a dense grid; the error is
/// absolute, not relative, near 0, which is what activations need); `fast_tanh(0.0) == 0.0`
/// exactly (`e = 1`), which the residual policy relies on for its iteration-0 identity; NaN
/// propagates.
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    let e = exp_reduced(2.0 * x.abs().clamp(0.0, TANH_CLAMP));
    (1.0 - 2.0 / (e + 1.0)).copysign(x)
}

multiversion! {
    /// `xs[i] = fast_tanh(xs[i])`, vectorised.
    pub fn tanh_inplace(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = fast_tanh(*x);
        }
    }
}

multiversion! {
    /// Fused hidden-layer epilogue: `y[r, j] = tanh(y[r, j] + bias[j])` over rows of `y`.
    fn bias_tanh_rows(y: &mut [f32], bias: &[f32]) {
        for row in y.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = fast_tanh(*v + b);
            }
        }
    }
}

multiversion! {
    /// Output-layer epilogue: `y[r, j] += bias[j]`.
    fn bias_add_rows(y: &mut [f32], bias: &[f32]) {
        for row in y.chunks_exact_mut(bias.len()) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

multiversion! {
    /// The feature-major epilogue ([`Mlp::infer`]; `y` is `[bias.len(), batch]`):
    /// `y[j, r] = tanh(y[j, r] + bias[j])` after a hidden layer, `y[j, r] += bias[j]` after the
    /// output layer: per element the operations of [`bias_tanh_rows`] / [`bias_add_rows`], so
    /// the same bits.
    fn bias_features(y: &mut [f32], bias: &[f32], hidden: bool) {
        let batch = y.len() / bias.len().max(1);
        if batch == 0 {
            return;
        }
        for (row, &b) in y.chunks_exact_mut(batch).zip(bias) {
            if hidden {
                for v in row.iter_mut() {
                    *v = fast_tanh(*v + b);
                }
            } else {
                for v in row.iter_mut() {
                    *v += b;
                }
            }
        }
    }
}

/// `dst[c, r] = src[r, c]` for a row-major `src` of `rows` rows.
fn transpose(src: &[f32], rows: usize, dst: &mut [f32]) {
    let cols = src.len() / rows.max(1);
    for (r, row) in src.chunks_exact(cols.max(1)).enumerate().take(rows) {
        for (c, &v) in row.iter().enumerate() {
            dst[c * rows + r] = v;
        }
    }
}

multiversion! {
    /// Bias gradient: `db[j] += sum_r dz[r, j]` (rows in order, so the sum is deterministic).
    fn col_sum_accumulate(db: &mut [f32], dz: &[f32]) {
        for row in dz.chunks_exact(db.len()) {
            for (g, &d) in db.iter_mut().zip(row) {
                *g += d;
            }
        }
    }
}

multiversion! {
    /// Backward through tanh from its stored output: `d[i] *= 1 - a[i]^2` (PyTorch's formula).
    fn tanh_backward_inplace(d: &mut [f32], a: &[f32]) {
        for (g, &y) in d.iter_mut().zip(a) {
            *g *= 1.0 - y * y;
        }
    }
}

/// A read-only matrix operand of [`gemm`]: element `(i, j)` is
/// `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
struct Strided<'a> {
    data: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Strided<'a> {
    /// `data` as a row-major matrix with `cols` columns.
    #[inline]
    fn row_major(data: &'a [f32], cols: usize) -> Self {
        Strided {
            data,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of `data` read as a row-major matrix with `cols` columns.
    #[inline]
    fn transposed(data: &'a [f32], cols: usize) -> Self {
        Strided {
            data,
            row_stride: 1,
            col_stride: cols,
        }
    }
}

/// Dimensions of a product: `A[m, k] B[k, n]`.
#[derive(Clone, Copy)]
struct GemmShape {
    m: usize,
    k: usize,
    n: usize,
}

/// Products of at least this many multiply-adds run in chunks of rows side by side.
const GEMM_PAR_MIN_MACS: usize = 1 << 21;
/// Rows of `C` per chunk. Fixed, so the chunking never depends on the thread count; each
/// element of `C` is the same reduction over `k` whatever rows are computed beside it, so the
/// result is the same bits as one call over all rows.
const GEMM_CHUNK_ROWS: usize = 64;

/// `C[m, n] = A[m, k] B[k, n] + beta * C`, with `C` row-major (`n` columns); large products
/// called from outside rayon's pool in chunks of [`GEMM_CHUNK_ROWS`] rows on the pool (SFT
/// training's forward over a batch, and its weight gradient over output units, then use every
/// core). A call from a pool thread is already one of several tasks side by side (the actor
/// beside the critic, a chunk of plans) and stays serial: chunking there made the PPO update
/// 11% and a 1,024-row act() 18% slower (`cargo bench -p deltaplan-learn`).
fn gemm(shape: GemmShape, a: Strided<'_>, b: Strided<'_>, beta: f32, c: &mut [f32]) {
    let GemmShape { m, k, n } = shape;
    if rayon::current_thread_index().is_some()
        || m < 2 * GEMM_CHUNK_ROWS
        || m * k * n < GEMM_PAR_MIN_MACS
    {
        return gemm_serial(shape, a, b, beta, c);
    }
    gemm_chunked(shape, a, b, beta, c);
}

/// [`gemm`] in chunks of [`GEMM_CHUNK_ROWS`] rows of `C` on rayon's pool: the same bits as
/// [`gemm_serial`], for any thread count.
fn gemm_chunked(shape: GemmShape, a: Strided<'_>, b: Strided<'_>, beta: f32, c: &mut [f32]) {
    let GemmShape { m, k, n } = shape;
    c[..m * n]
        .par_chunks_mut(GEMM_CHUNK_ROWS * n)
        .enumerate()
        .for_each(|(j, rows)| {
            let first = j * GEMM_CHUNK_ROWS;
            let a_rows = Strided {
                data: &a.data[first * a.row_stride..],
                ..a
            };
            let shape = GemmShape {
                m: rows.len() / n,
                k,
                n,
            };
            gemm_serial(shape, a_rows, b, beta, rows);
        });
}

/// [`gemm`] in one single-threaded `sgemm` call.
#[inline]
fn gemm_serial(shape: GemmShape, a: Strided<'_>, b: Strided<'_>, beta: f32, c: &mut [f32]) {
    let GemmShape { m, k, n } = shape;
    if m == 0 || n == 0 {
        return;
    }
    let (rsa, csa, rsb, csb) = (a.row_stride, a.col_stride, b.row_stride, b.col_stride);
    // Bounds: the largest index each operand touches must lie inside its slice.
    assert!(k == 0 || (m - 1) * rsa + (k - 1) * csa < a.data.len());
    assert!(k == 0 || (k - 1) * rsb + (n - 1) * csb < b.data.len());
    assert!((m - 1) * n + (n - 1) < c.len());
    // SAFETY: the asserts above keep every access of the three strided matrices in bounds,
    // and `c` is a unique borrow (no aliasing with `a` or `b`).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.data.as_ptr(),
            rsa as isize,
            csa as isize,
            b.data.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Initialisation
// ---------------------------------------------------------------------------------------------

/// How the last (linear) layer is initialised.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OutputInit {
    /// Orthogonal weights scaled by `gain`, zero bias (CleanRL: 0.01 actor, 1.0 critic).
    Orthogonal {
        /// Gain applied to the orthogonal matrix.
        gain: f32,
    },
    /// Exactly zero weights and bias: the network outputs 0.0 for every input (residual policy
    /// starts as the identity on top of the frozen planner).
    Zero,
}

/// Initialisation of an [`Mlp`]: orthogonal hidden layers with `hidden_gain`, zero biases.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MlpInit {
    /// Gain of the hidden layers (sqrt(2) for tanh nets in CleanRL practice).
    pub hidden_gain: f32,
    /// Output layer initialisation.
    pub output: OutputInit,
}

impl MlpInit {
    /// Hidden gain sqrt(2), orthogonal output layer with `gain`.
    pub fn orthogonal(output_gain: f32) -> Self {
        Self {
            hidden_gain: std::f32::consts::SQRT_2,
            output: OutputInit::Orthogonal { gain: output_gain },
        }
    }
}

/// A `[rows, cols]` row-major matrix with orthonormal rows or columns (whichever are fewer),
/// times `gain`: PyTorch's `nn.init.orthogonal_` recipe (QR of a Gaussian matrix with the sign of
/// R's diagonal folded in), done by twice-applied modified Gram-Schmidt in f64.
pub fn orthogonal<R: Rng + ?Sized>(rows: usize, cols: usize, gain: f32, rng: &mut R) -> Vec<f32> {
    let (big, small) = (rows.max(cols), rows.min(cols));
    // `small` Gaussian columns of length `big`.
    let mut q: Vec<Vec<f64>> = (0..small)
        .map(|_| (0..big).map(|_| StandardNormal.sample(rng)).collect())
        .collect();
    for j in 0..small {
        let (done, rest) = q.split_at_mut(j);
        let col = &mut rest[0];
        for _pass in 0..2 {
            for prev in done.iter() {
                let dot: f64 = prev.iter().zip(col.iter()).map(|(a, b)| a * b).sum();
                col.iter_mut().zip(prev).for_each(|(c, p)| *c -= dot * p);
            }
        }
        let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
        col.iter_mut().for_each(|v| *v /= norm);
    }
    let gain = f64::from(gain);
    let mut w = vec![0.0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let v = if rows >= cols { q[c][r] } else { q[r][c] };
            w[r * cols + c] = (gain * v) as f32;
        }
    }
    w
}

// ---------------------------------------------------------------------------------------------
// Mlp
// ---------------------------------------------------------------------------------------------

/// Offsets of one Linear layer inside the flat parameter buffer.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Layer {
    fan_in: usize,
    fan_out: usize,
    w: usize,
    b: usize,
}

/// A named view of one parameter tensor (PyTorch `nn.Sequential` naming: "0.weight", "2.bias").
#[derive(Clone, Debug, PartialEq)]
pub struct TensorView<'a> {
    /// Name as in a PyTorch state dict.
    pub name: String,
    /// Shape (`[out, in]` for weights, `[out]` for biases).
    pub shape: Vec<usize>,
    /// Row-major data.
    pub data: &'a [f32],
}

/// Stack of Linear layers, tanh after every hidden layer, linear output.
///
/// Parameters are one flat buffer (per layer: weight `[out, in]` row-major, then bias `[out]`);
/// gradients share the layout and accumulate across `backward` calls until [`Mlp::zero_grad`].
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    sizes: Vec<usize>,
    layers: Vec<Layer>,
    params: Vec<f32>,
    grads: Vec<f32>,
    transposed: TransposedWeights,
}

/// Every layer's `W^T` (`[in, out]` row-major, at the layer's own offset of a buffer laid out
/// like the parameters), rebuilt by the first [`Mlp::infer`] after any `&mut` access to the
/// parameters marks it stale, in place: after the first inference the buffer is never
/// reallocated (the rollout allocates nothing per iteration).
#[derive(Debug, Default)]
struct TransposedWeights(std::sync::RwLock<Transposed>);

#[derive(Clone, Debug, Default)]
struct Transposed {
    fresh: bool,
    data: Vec<f32>,
}

impl TransposedWeights {
    /// Marks the copy stale (the weights are about to change).
    fn invalidate(&mut self) {
        self.0
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .fresh = false;
    }

    /// A read guard on the transpose of `mlp`'s current weights.
    fn of<'a>(&'a self, mlp: &Mlp) -> std::sync::RwLockReadGuard<'a, Transposed> {
        use std::sync::PoisonError;
        let current = self.0.read().unwrap_or_else(PoisonError::into_inner);
        if current.fresh {
            return current;
        }
        drop(current);
        {
            let mut t = self.0.write().unwrap_or_else(PoisonError::into_inner);
            if !t.fresh {
                t.data.resize(mlp.params.len(), 0.0);
                for layer in &mlp.layers {
                    let w = &mlp.params[layer.w..layer.b];
                    transpose(w, layer.fan_out, &mut t.data[layer.w..layer.b]);
                }
                t.fresh = true;
            }
        }
        self.0.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clone for TransposedWeights {
    fn clone(&self) -> Self {
        let t = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Self(std::sync::RwLock::new(t.clone()))
    }
}

impl PartialEq for TransposedWeights {
    /// A cache of the parameters, which [`Mlp`] compares itself: never a difference.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Caller-owned buffers for [`Mlp::infer`]: feature-major activations (`[width, batch]`) and
/// the row-major output. Grows to the largest batch seen, then allocates nothing.
#[derive(Clone, Debug, Default)]
pub struct InferWorkspace {
    input: Vec<f32>,
    output: Vec<f32>,
    rows: Vec<f32>,
}

impl InferWorkspace {
    /// Empty workspace; buffers are sized on first use.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Caller-owned activations and scratch for one [`Mlp`]. Grows to the largest batch seen and is
/// reused: after the first call at a given batch size, forward/backward allocate nothing
/// themselves (matrixmultiply still allocates and frees one packing buffer inside each sgemm
/// call; its API takes no caller buffer; `tests/alloc.rs` tells the two apart).
#[derive(Clone, Debug, Default)]
pub struct MlpWorkspace {
    batch: usize,
    /// Post-activation output of each layer, `[batch, fan_out]` (capacity may be larger).
    acts: Vec<Vec<f32>>,
    grad_a: Vec<f32>,
    grad_b: Vec<f32>,
}

impl MlpWorkspace {
    /// Empty workspace; buffers are sized on first use.
    pub fn new() -> Self {
        Self::default()
    }

    /// Batch size of the last forward pass.
    pub fn batch(&self) -> usize {
        self.batch
    }

    fn prepare(&mut self, sizes: &[usize], batch: usize) {
        let n_layers = sizes.len() - 1;
        if self.acts.len() != n_layers {
            self.acts = vec![Vec::new(); n_layers];
        }
        for (act, &width) in self.acts.iter_mut().zip(&sizes[1..]) {
            if act.len() < batch * width {
                act.resize(batch * width, 0.0);
            }
        }
        let widest = sizes[1..].iter().copied().max().unwrap_or(0).max(sizes[0]);
        for buf in [&mut self.grad_a, &mut self.grad_b] {
            if buf.len() < batch * widest {
                buf.resize(batch * widest, 0.0);
            }
        }
        self.batch = batch;
    }
}

impl Mlp {
    /// Builds `sizes[0] -> sizes[1] -> ... -> sizes[last]` with tanh between layers.
    pub fn new<R: Rng + ?Sized>(sizes: &[usize], init: MlpInit, rng: &mut R) -> Result<Self> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(LearnError::Config(format!(
                "an MLP needs at least two positive layer sizes, got {sizes:?}"
            )));
        }
        let mut layers = Vec::with_capacity(sizes.len() - 1);
        let mut offset = 0;
        for pair in sizes.windows(2) {
            let (fan_in, fan_out) = (pair[0], pair[1]);
            layers.push(Layer {
                fan_in,
                fan_out,
                w: offset,
                b: offset + fan_in * fan_out,
            });
            offset += fan_in * fan_out + fan_out;
        }
        let mut params = vec![0.0f32; offset];
        let last = layers.len() - 1;
        for (l, layer) in layers.iter().enumerate() {
            let gain = match (l == last, init.output) {
                (false, _) => init.hidden_gain,
                (true, OutputInit::Orthogonal { gain }) => gain,
                (true, OutputInit::Zero) => continue,
            };
            let w = orthogonal(layer.fan_out, layer.fan_in, gain, rng);
            params[layer.w..layer.b].copy_from_slice(&w);
        }
        Ok(Self {
            sizes: sizes.to_vec(),
            layers,
            grads: vec![0.0; offset],
            params,
            transposed: TransposedWeights::default(),
        })
    }

    /// Layer widths, input first.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }
    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.sizes[0]
    }
    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.sizes[self.sizes.len() - 1]
    }
    /// Number of scalar parameters.
    pub fn num_params(&self) -> usize {
        self.params.len()
    }
    /// All parameters, flat.
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    /// All parameters, flat, mutable.
    pub fn params_mut(&mut self) -> &mut [f32] {
        self.transposed.invalidate();
        &mut self.params
    }
    /// All gradients, flat (same layout as [`Mlp::params`]).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }
    /// All gradients, mutable.
    pub fn grads_mut(&mut self) -> &mut [f32] {
        &mut self.grads
    }
    /// Parameters and gradients at once (for an optimiser step).
    pub fn params_and_grads_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        self.transposed.invalidate();
        (&mut self.params, &mut self.grads)
    }
    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// Parameter tensors with PyTorch `nn.Sequential(Linear, Tanh, Linear, ...)` names.
    pub fn named_tensors(&self) -> Vec<TensorView<'_>> {
        self.named_views(&self.params)
    }

    /// Gradient tensors, named like [`Mlp::named_tensors`].
    pub fn named_grads(&self) -> Vec<TensorView<'_>> {
        self.named_views(&self.grads)
    }

    fn named_views<'a>(&self, buf: &'a [f32]) -> Vec<TensorView<'a>> {
        let mut out = Vec::with_capacity(2 * self.layers.len());
        for (l, layer) in self.layers.iter().enumerate() {
            out.push(TensorView {
                name: format!("{}.weight", 2 * l),
                shape: vec![layer.fan_out, layer.fan_in],
                data: &buf[layer.w..layer.b],
            });
            out.push(TensorView {
                name: format!("{}.bias", 2 * l),
                shape: vec![layer.fan_out],
                data: &buf[layer.b..layer.b + layer.fan_out],
            });
        }
        out
    }

    /// Overwrites the tensor `name` ("0.weight", ...) with `data` of the given `shape`.
    pub fn set_tensor(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        let (index, kind) = name
            .split_once('.')
            .and_then(|(i, k)| Some((i.parse::<usize>().ok()?, k)))
            .ok_or_else(|| LearnError::UnknownTensor(name.to_string()))?;
        let layer = (index % 2 == 0)
            .then(|| self.layers.get(index / 2))
            .flatten()
            .copied()
            .ok_or_else(|| LearnError::UnknownTensor(name.to_string()))?;
        let (start, want_shape) = match kind {
            "weight" => (layer.w, vec![layer.fan_out, layer.fan_in]),
            "bias" => (layer.b, vec![layer.fan_out]),
            _ => return Err(LearnError::UnknownTensor(name.to_string())),
        };
        if shape != want_shape.as_slice() {
            return Err(LearnError::Checkpoint(format!(
                "tensor `{name}` has shape {shape:?}, expected {want_shape:?}"
            )));
        }
        let n: usize = want_shape.iter().product();
        check_len(name, data.len(), n)?;
        self.transposed.invalidate();
        self.params[start..start + n].copy_from_slice(data);
        Ok(())
    }

    /// Batched forward of `x` (`[batch, in]`, row-major). Activations stay in `ws` for
    /// [`Mlp::backward`]; returns the output `[batch, out]`.
    pub fn forward<'w>(&self, x: &[f32], ws: &'w mut MlpWorkspace) -> Result<&'w [f32]> {
        let batch = rows_of("mlp input", x.len(), self.in_dim())?;
        ws.prepare(&self.sizes, batch);
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let (done, rest) = ws.acts.split_at_mut(l);
            let input: &[f32] = if l == 0 {
                x
            } else {
                &done[l - 1][..batch * layer.fan_in]
            };
            let out = &mut rest[0][..batch * layer.fan_out];
            let w = &self.params[layer.w..layer.b];
            let bias = &self.params[layer.b..layer.b + layer.fan_out];
            // out[B, out] = input[B, in] . W^T  (W is [out, in] row-major => W^T has strides (1, in))
            // out[B, out] = input[B, in] . W[out, in]^T
            gemm(
                GemmShape {
                    m: batch,
                    k: layer.fan_in,
                    n: layer.fan_out,
                },
                Strided::row_major(input, layer.fan_in),
                Strided::transposed(w, layer.fan_in),
                0.0,
                out,
            );
            if l < last {
                bias_tanh_rows(out, bias);
            } else {
                bias_add_rows(out, bias);
            }
        }
        Ok(&ws.acts[last][..batch * self.out_dim()])
    }

    /// [`Mlp::forward`] for inference (no [`Mlp::backward`] after it): the same bits, faster on
    /// the rollout's and evaluation's batches. Activations run feature-major (`[width, batch]`)
    /// and the weights are read through their cached transpose, so each product's operands are
    /// contiguous the way matrixmultiply packs them (strided operands are packed one element at
    /// a time, which cost as much as the multiply-adds at these sizes). Each output element is
    /// still the same reduction over the same inputs in the same order. Returns `[batch, out]`.
    pub fn infer<'w>(&self, x: &[f32], ws: &'w mut InferWorkspace) -> Result<&'w [f32]> {
        let batch = rows_of("mlp input", x.len(), self.in_dim())?;
        let transposed = self.transposed.of(self);
        let widest = self.sizes[1..].iter().copied().max().unwrap_or(0);
        for buf in [&mut ws.input, &mut ws.output] {
            if buf.len() < batch * widest {
                buf.resize(batch * widest, 0.0);
            }
        }
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            let (n_in, n_out) = (layer.fan_in, layer.fan_out);
            // out^T[out, B] = W[out, in] . input^T[in, B]; W is read as `W^T` column-major, the
            // first layer's input^T straight from the row-major `x`.
            let input = if l == 0 {
                Strided::transposed(x, n_in)
            } else {
                Strided::row_major(&ws.input[..n_in * batch], batch)
            };
            let w = Strided {
                data: &transposed.data[layer.w..layer.b],
                row_stride: 1,
                col_stride: n_out,
            };
            let out = &mut ws.output[..n_out * batch];
            let shape = GemmShape {
                m: n_out,
                k: n_in,
                n: batch,
            };
            gemm(shape, w, input, 0.0, out);
            let bias = &self.params[layer.b..layer.b + n_out];
            bias_features(out, bias, l < last);
            std::mem::swap(&mut ws.input, &mut ws.output);
        }
        let out_dim = self.out_dim();
        if ws.rows.len() < batch * out_dim {
            ws.rows.resize(batch * out_dim, 0.0);
        }
        transpose(
            &ws.input[..out_dim * batch],
            out_dim,
            &mut ws.rows[..batch * out_dim],
        );
        Ok(&ws.rows[..batch * out_dim])
    }

    /// Backward from `dout` = dL/d(output) (`[batch, out]`) for the last forward on the same `x`
    /// and `ws`. Accumulates dL/dparams into the gradient buffer; writes dL/dx into `dinput`
    /// (`[batch, in]`) when given.
    pub fn backward(
        &mut self,
        x: &[f32],
        ws: &mut MlpWorkspace,
        dout: &[f32],
        mut dinput: Option<&mut [f32]>,
    ) -> Result<()> {
        let batch = ws.batch;
        check_len("mlp input (backward)", x.len(), batch * self.in_dim())?;
        check_len("mlp dout", dout.len(), batch * self.out_dim())?;
        if let Some(d) = dinput.as_deref() {
            check_len("mlp dinput", d.len(), batch * self.in_dim())?;
        }
        if ws.acts.len() != self.layers.len() {
            return Err(LearnError::Config(
                "backward called on a workspace that has not run forward on this MLP".into(),
            ));
        }
        let MlpWorkspace {
            acts,
            grad_a,
            grad_b,
            ..
        } = ws;
        // `cur` holds dL/dz of the layer being processed, `next` receives dL/d(input of it).
        let (mut cur, mut next) = (grad_a, grad_b);
        for l in (0..self.layers.len()).rev() {
            let layer = self.layers[l];
            let (n_in, n_out) = (layer.fan_in, layer.fan_out);
            let dz: &[f32] = if l == self.layers.len() - 1 {
                dout
            } else {
                &cur[..batch * n_out]
            };
            let input: &[f32] = if l == 0 {
                x
            } else {
                &acts[l - 1][..batch * n_in]
            };
            let (gw, gb) = self.grads[layer.w..layer.b + n_out].split_at_mut(n_in * n_out);
            // dW[out, in] += dz^T[out, B] . input[B, in]
            gemm(
                GemmShape {
                    m: n_out,
                    k: batch,
                    n: n_in,
                },
                Strided::transposed(dz, n_out),
                Strided::row_major(input, n_in),
                1.0,
                gw,
            );
            col_sum_accumulate(gb, dz);
            let w = &self.params[layer.w..layer.b];
            // d(input)[B, in] = dz[B, out] . W[out, in]
            let input_grad = |out: &mut [f32]| {
                let shape = GemmShape {
                    m: batch,
                    k: n_out,
                    n: n_in,
                };
                let (dz, w) = (Strided::row_major(dz, n_out), Strided::row_major(w, n_in));
                gemm(shape, dz, w, 0.0, out);
            };
            if l > 0 {
                // ... then through the previous layer's tanh.
                let da = &mut next[..batch * n_in];
                input_grad(da);
                tanh_backward_inplace(da, input);
                std::mem::swap(&mut cur, &mut next);
            } else if let Some(dx) = dinput.as_deref_mut() {
                input_grad(dx);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn orthogonal_rows_or_columns_are_orthonormal() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        for (rows, cols) in [(5, 3), (3, 5), (4, 4)] {
            let w = orthogonal(rows, cols, 1.0, &mut rng);
            let (n, len, stride_v, stride_e) = if rows >= cols {
                (cols, rows, 1, cols)
            } else {
                (rows, cols, cols, 1)
            };
            for a in 0..n {
                for b in 0..n {
                    let dot: f64 = (0..len)
                        .map(|e| {
                            f64::from(w[a * stride_v + e * stride_e])
                                * f64::from(w[b * stride_v + e * stride_e])
                        })
                        .sum();
                    let want = if a == b { 1.0 } else { 0.0 };
                    assert!(
                        (dot - want).abs() < 1e-6,
                        "{rows}x{cols} ({a},{b}) dot={dot}"
                    );
                }
            }
        }
    }

    /// `mlp.infer(x)` has exactly the bits of `mlp.forward(x)`.
    fn assert_infer_is_forward(
        mlp: &Mlp,
        x: &[f32],
        fw: &mut MlpWorkspace,
        iw: &mut InferWorkspace,
        when: &str,
    ) {
        let want = mlp.forward(x, fw).unwrap().to_vec();
        let got = mlp.infer(x, iw).unwrap();
        assert_eq!(got.len(), want.len());
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits()),
            "{:?}, batch {}, {when}",
            mlp.sizes(),
            x.len() / mlp.in_dim()
        );
    }

    /// Inference (feature-major, against the cached transpose) gives the bits of the training
    /// forward, and a weight change through any `&mut` access reaches the next inference.
    #[test]
    fn infer_is_forward_bit_for_bit_and_follows_every_weight_change() {
        use rand::RngExt;
        let mut rng = rand_pcg::Pcg64::seed_from_u64(11);
        // The refinement's heads and the SFT planner's encoder and head; at 300 rows the wide
        // encoder's products take gemm's chunked path (chunks of output features, outside a
        // pool), and 1 and 5 rows are the narrowest operands.
        let shapes: [&[usize]; 4] = [
            &[270, 128, 128, 20],
            &[270, 128, 128, 1],
            &[142, 256, 256, 128],
            &[128, 128, 20],
        ];
        for sizes in shapes {
            let mut mlp = Mlp::new(sizes, MlpInit::orthogonal(1.0), &mut rng).unwrap();
            let (mut fw, mut iw) = (MlpWorkspace::new(), InferWorkspace::new());
            for batch in [1, 5, 64, 129, 300] {
                let x: Vec<f32> = (0..batch * sizes[0])
                    .map(|_| rng.random_range(-3.0f32..3.0))
                    .collect();
                assert_infer_is_forward(&mlp, &x, &mut fw, &mut iw, "before");
                // Every way to change the weights must reach the next inference.
                match batch % 3 {
                    0 => mlp.params_mut()[0] += 0.5,
                    1 => mlp.params_and_grads_mut().0[0] -= 0.25,
                    _ => {
                        let w: Vec<f32> = (0..sizes[0] * sizes[1])
                            .map(|_| rng.random_range(-0.1f32..0.1))
                            .collect();
                        mlp.set_tensor("0.weight", &[sizes[1], sizes[0]], &w)
                            .unwrap()
                    }
                }
                assert_infer_is_forward(&mlp, &x, &mut fw, &mut iw, "after a weight change");
            }
        }
    }

    /// Large products run in chunks of rows on rayon's pool and give the bits of one serial
    /// call, for row-major and transposed `A` (the forward and the weight gradient), with and
    /// without accumulation into `C`, on one and on two threads.
    #[test]
    fn chunked_products_are_the_serial_products_bit_for_bit() {
        use rand::RngExt;
        let mut rng = rand_pcg::Pcg64::seed_from_u64(7);
        for (m, k, n) in [(300, 142, 256), (256, 290, 128), (129, 2048, 64)] {
            assert!(m * k * n >= GEMM_PAR_MIN_MACS && m >= 2 * GEMM_CHUNK_ROWS);
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let c0: Vec<f32> = (0..m * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let shape = GemmShape { m, k, n };
            for (a_op, beta) in [
                (Strided::row_major(&a, k), 0.0),
                (Strided::transposed(&a, m), 1.0),
            ] {
                let b_op = Strided::row_major(&b, n);
                let mut want = c0.clone();
                gemm_serial(shape, a_op, b_op, beta, &mut want);
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut got = c0.clone();
                    pool.install(|| gemm_chunked(shape, a_op, b_op, beta, &mut got));
                    assert!(
                        got.iter()
                            .zip(&want)
                            .all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{m}x{k}x{n}, beta {beta}, {threads} threads"
                    );
                }
            }
        }
    }

    #[test]
    fn set_tensor_rejects_bad_names_and_shapes() {
        let mut rng = rand_pcg::Pcg64::seed_from_u64(1);
        let mut m = Mlp::new(&[3, 4, 2], MlpInit::orthogonal(1.0), &mut rng).unwrap();
        assert!(matches!(
            m.set_tensor("1.weight", &[4, 3], &[0.0; 12]),
            Err(LearnError::UnknownTensor(_))
        ));
        assert!(m.set_tensor("0.weight", &[3, 4], &[0.0; 12]).is_err());
        assert!(m.set_tensor("2.bias", &[2], &[1.0, 2.0]).is_ok());
        assert_eq!(&m.params()[m.num_params() - 2..], &[1.0, 2.0]);
    }
}
