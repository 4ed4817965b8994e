// Fused float32 CPU kernels for smallbert, called by MindSpore as AOT custom ops (see cpu_kernels.py):
// LayerNorm over the last axis, bias + exact (erf) GELU, counter-based dropout, a residual block's bias + dropout +
// residual add + LayerNorm, attention's heads in and out and its masked softmax, softmax cross-entropy, forward and
// backward, Google's AdamWeightDecay update and a sum of squares. Each is one pass over memory; MindSpore 2.10's own
// CPU kernels for the LayerNorm, GELU and dropout take 2-20x longer on BERT's shapes. Signature of every entry point:
//   int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// with params = inputs then outputs, contiguous, float32 unless said otherwise. Returns 0 on success.
#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <malloc.h>
#include <sched.h>
#include <thread>
#include <vector>

namespace {

int64_t NumElements(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[i];
  return n;
}

// Threads to split work over: the CPUs this process may run on (taskset / cgroup cpusets), at most 16.
int64_t MaxWorkers() {
  static const int64_t count = [] {
    cpu_set_t set;
    int64_t n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    return n < 1 ? 1 : (n > 16 ? 16 : n);
  }();
  return count;
}

// Runs fn(begin, end, worker) over [0, n) split into contiguous chunks of at least min_chunk, one per thread.
template <typename Fn>
void ParallelFor(int64_t n, int64_t min_chunk, Fn fn) {
  int64_t workers = MaxWorkers();
  if (workers > n / min_chunk) workers = n / min_chunk;
  if (workers <= 1) {
    fn(0, n, 0);
    return;
  }
  std::vector<std::thread> threads;
  int64_t chunk = (n + workers - 1) / workers;
  for (int64_t w = 1; w < workers; ++w) {
    int64_t begin = w * chunk, end = begin + chunk < n ? begin + chunk : n;
    threads.emplace_back(fn, begin, end, w);
  }
  fn(0, chunk < n ? chunk : n, 0);
  for (auto &t : threads) t.join();
}

// exp(v) for v <= 0, written so that the compiler vectorises loops calling it (libm's expf is not vectorised).
inline float ExpNonPositive(float v) {
  v = v < -87.0f ? -87.0f : v;
  // Round v / ln 2 to the nearest integer: adding 1.5 * 2^23 pushes the fraction out of the mantissa.
  float n = (v * 1.44269504f + 12582912.0f) - 12582912.0f;
  float r = v - n * 0.693145752f - n * 1.42860677e-6f;  // ln 2 split in two for accuracy
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.0f / 6 + r * (1.0f / 24 + r * (1.0f / 120 + r * (1.0f / 720 + r * (1.0f / 5040)))))));
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

// Standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2 from z = |x| / sqrt 2 and e = exp(-z^2), erf from
// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
inline float NormalCdf(float x, float z, float e) {
  float t = 1.0f / (1.0f + 0.3275911f * z);
  float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  float erf_abs = 1.0f - poly * e;
  return 0.5f + 0.5f * std::copysign(erf_abs, x);
}

inline float NormalCdf(float x) {
  const float z = std::fabs(x) * 0.70710678f;
  return NormalCdf(x, z, ExpNonPositive(-z * z));
}

// d/dv [v Phi(v)] = Phi(v) + v phi(v); phi(v) = exp(-v^2 / 2) / sqrt(2 pi) is Phi's own exponential over sqrt(2 pi).
inline float GeluGrad(float v) {
  const float z = std::fabs(v) * 0.70710678f, e = ExpNonPositive(-z * z);
  return NormalCdf(v, z, e) + v * 0.39894228f * e;
}

// Loops over one row each, their pointers declared unaliased so that the compiler vectorises them.
inline void BiasGeluRow(const float *__restrict x, const float *__restrict b, int64_t cols, float *__restrict y) {
  for (int64_t j = 0; j < cols; ++j) {
    const float v = x[j] + b[j];
    y[j] = v * NormalCdf(v);
  }
}

// dx = dy * gelu'(x + b), adding dx into db.
inline void BiasGeluBackwardRow(const float *__restrict x, const float *__restrict b, const float *__restrict dy,
                                int64_t cols, float *__restrict dx, float *__restrict db) {
  for (int64_t j = 0; j < cols; ++j) {
    dx[j] = dy[j] * GeluGrad(x[j] + b[j]);
    db[j] += dx[j];
  }
}

// Adds the per-worker partial sums partial[w * n + j] in worker order (the same result every run) into out[j].
template <typename T>
void SumPartials(const std::vector<T> &partial, int64_t n, float *out) {
  const int64_t workers = static_cast<int64_t>(partial.size()) / n;
  for (int64_t j = 0; j < n; ++j) {
    T sum = 0;
    for (int64_t w = 0; w < workers; ++w) sum += partial[w * n + j];
    out[j] = static_cast<float>(sum);
  }
}

}  // namespace

// GELU of a dense layer's output and its bias, forward: y = gelu(x + b). params: x [N, C], b [C]; y [N, C].
extern "C" int BiasGeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                               void *) {
  if (nparam != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[2]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  ParallelFor(rows, 16, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t r = begin; r < end; ++r) BiasGeluRow(x + r * cols, b, cols, y + r * cols);
  });
  return 0;
}

// Its backward: dx = dy * gelu'(x + b), db = the column sums of dx (the GELU's input is recomputed, not stored).
// params: x [N, C], b [C], dy [N, C]; dx [N, C], db [C].
extern "C" int BiasGeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                void *) {
  if (nparam != 5) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  std::vector<float> partial(cols * MaxWorkers(), 0.0f);
  ParallelFor(rows, 16, [&](int64_t begin, int64_t end, int64_t worker) {
    for (int64_t r = begin; r < end; ++r) {
      BiasGeluBackwardRow(x + r * cols, b, dy + r * cols, cols, dx + r * cols, partial.data() + cols * worker);
    }
  });
  SumPartials(partial, cols, static_cast<float *>(params[4]));
  return 0;
}

namespace {

// One row of LayerNorm: y = (x - mean) * rstd * gamma + beta over h values; returns mean and rstd through mu, rs.
// The sums are vectorised: lanes add in a fixed order, so results are reproducible, not sequential sums.
inline void LayerNormRow(const float *__restrict x, const float *gamma, const float *beta, float eps, int64_t h,
                         float *__restrict y, float *mu, float *rs) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < h; ++j) sum += x[j];
  const float m = sum / h;
  float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
  for (int64_t j = 0; j < h; ++j) sq += (x[j] - m) * (x[j] - m);
  const float r = 1.0f / std::sqrt(sq / h + eps);
  for (int64_t j = 0; j < h; ++j) y[j] = (x[j] - m) * r * gamma[j] + beta[j];
  *mu = m;
  *rs = r;
}

// One row of its backward: dx from dy, adding the row's terms of dgamma and dbeta into pg and pb.
inline void LayerNormBackwardRow(const float *__restrict x, const float *gamma, float mu, float rs,
                                 const float *__restrict dy, int64_t h, float *__restrict dx, float *__restrict pg,
                                 float *__restrict pb) {
  float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
  for (int64_t j = 0; j < h; ++j) {
    const float xhat = (x[j] - mu) * rs;
    const float g = dy[j] * gamma[j];
    sum_g += g;
    sum_gx += g * xhat;
    pg[j] += dy[j] * xhat;
    pb[j] += dy[j];
  }
  const float a = sum_g / h, b = sum_gx / h;
  for (int64_t j = 0; j < h; ++j) dx[j] = rs * (dy[j] * gamma[j] - a - (x[j] - mu) * rs * b);
}

}  // namespace

// LayerNorm forward over the last axis. params: x [..., H], gamma [H], beta [H], eps [1]; y [..., H], mean [...], rstd [...].
extern "C" int LayerNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 7) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *beta = static_cast<const float *>(params[2]);
  const float eps = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  float *mean = static_cast<float *>(params[5]);
  float *rstd = static_cast<float *>(params[6]);
  const int64_t h = shapes[0][ndims[0] - 1];
  const int64_t rows = NumElements(ndims[0], shapes[0]) / h;
  ParallelFor(rows, 64, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t r = begin; r < end; ++r) LayerNormRow(x + r * h, gamma, beta, eps, h, y + r * h, mean + r, rstd + r);
  });
  return 0;
}

// LayerNorm backward. params: x [..., H], gamma [H], mean [...], rstd [...], dy [..., H]; dx [..., H], dgamma [H], dbeta [H].
extern "C" int LayerNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 8) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *mean = static_cast<const float *>(params[2]);
  const float *rstd = static_cast<const float *>(params[3]);
  const float *dy = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  const int64_t h = shapes[0][ndims[0] - 1];
  const int64_t rows = NumElements(ndims[0], shapes[0]) / h;
  std::vector<float> pg(h * MaxWorkers(), 0.0f), pb(h * MaxWorkers(), 0.0f);  // per-worker dgamma, dbeta terms
  ParallelFor(rows, 64, [&](int64_t begin, int64_t end, int64_t worker) {
    for (int64_t r = begin; r < end; ++r) {
      LayerNormBackwardRow(x + r * h, gamma, mean[r], rstd[r], dy + r * h, h, dx + r * h, pg.data() + h * worker,
                           pb.data() + h * worker);
    }
  });
  SumPartials(pg, h, static_cast<float *>(params[6]));
  SumPartials(pb, h, static_cast<float *>(params[7]));
  return 0;
}

namespace {

// A bijective 32-bit mixer (xor-shift-multiply rounds): consecutive inputs give unrelated outputs.
inline uint32_t Mix(uint32_t v) {
  v ^= v >> 16;
  v *= 0x21f0aaadu;
  v ^= v >> 15;
  v *= 0x735a2d97u;
  v ^= v >> 15;
  return v;
}

// The key of one dropout call: a hash of stream (seed low and high 32 bits, rank, site) and the step counter.
uint32_t DropoutKey(const int32_t *stream, uint32_t step) {
  uint32_t key = 0;
  for (uint32_t part : {static_cast<uint32_t>(stream[0]), static_cast<uint32_t>(stream[1]),
                        static_cast<uint32_t>(stream[2]), static_cast<uint32_t>(stream[3]), step}) {
    key = Mix(key ^ Mix(part + 0x6a09e667u));
  }
  return key;
}

uint32_t KeepThreshold(float keep_prob) { return static_cast<uint32_t>(static_cast<double>(keep_prob) * (1u << 24)); }

// Whether element i is kept: 24 random bits of the element's counter under `key`, below keep_prob * 2^24.
inline uint32_t Kept(uint32_t key, int64_t i, uint32_t threshold) {
  return (Mix(key + static_cast<uint32_t>(i) * 0x9e3779b9u) >> 8) < threshold;
}

void DropoutRange(const float *__restrict x, float *__restrict y, uint8_t *__restrict mask, uint32_t key,
                  uint32_t threshold, float scale, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t keep = Kept(key, i, threshold);
    mask[i] = static_cast<uint8_t>(keep);
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

void DropoutBackwardRange(const float *__restrict dy, const uint8_t *__restrict mask, float *__restrict dx,
                          float scale, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
}

// z = dropout(h + b) + residual over one row whose first element is number `first`; a threshold of 2^24 keeps all.
inline void DropoutResidualRow(const float *__restrict h, const float *__restrict b, const float *__restrict residual,
                               uint32_t key, int64_t first, uint32_t threshold, float scale, int64_t cols,
                               float *__restrict z, uint8_t *__restrict mask) {
  for (int64_t j = 0; j < cols; ++j) {
    const uint32_t keep = threshold >= (1u << 24) ? 1u : Kept(key, first + j, threshold);
    mask[j] = static_cast<uint8_t>(keep);
    z[j] = (keep ? (h[j] + b[j]) * scale : 0.0f) + residual[j];
  }
}

// dh = dz through the mask of one row, adding dh into db.
inline void DropoutBackwardRow(const float *__restrict dz, const uint8_t *__restrict mask, float scale, int64_t cols,
                               float *__restrict dh, float *__restrict db) {
  for (int64_t j = 0; j < cols; ++j) {
    dh[j] = mask[j] ? dz[j] * scale : 0.0f;
    db[j] += dh[j];
  }
}

}  // namespace

// Dropout whose mask is a pure function of (stream, step, element index): a counter-based generator, so a run that
// restores `step` from a checkpoint draws the same masks as one that never stopped.
// params: x [...], stream int32 [4] (seed low and high 32 bits, rank, site), step int32 [1], keep_prob float32 [1];
//         y [...] = x * mask / keep_prob, mask uint8 [...].
extern "C" int DropoutForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 6) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int32_t *stream = static_cast<const int32_t *>(params[1]);
  const uint32_t step = static_cast<uint32_t>(*static_cast<const int32_t *>(params[2]));
  const float keep_prob = *static_cast<const float *>(params[3]);
  float *y = static_cast<float *>(params[4]);
  uint8_t *mask = static_cast<uint8_t *>(params[5]);
  const uint32_t key = DropoutKey(stream, step);
  const uint32_t threshold = KeepThreshold(keep_prob);
  const float scale = 1.0f / keep_prob;
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 16, [=](int64_t begin, int64_t end, int64_t) {
    DropoutRange(x, y, mask, key, threshold, scale, begin, end);
  });
  return 0;
}

// Dropout backward. params: dy [...], mask uint8 [...], keep_prob float32 [1]; dx [...].
extern "C" int DropoutBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 4) return 1;
  const float *dy = static_cast<const float *>(params[0]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[1]);
  const float scale = 1.0f / *static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 16, [=](int64_t begin, int64_t end, int64_t) {
    DropoutBackwardRange(dy, mask, dx, scale, begin, end);
  });
  return 0;
}

// The end of a Transformer sub-layer, forward: y = LayerNorm(dropout(h + b) + residual), where h is the dense
// layer's output before its bias. The dropout mask is DropoutForward's for the same (stream, step), element for
// element. params: h [N, C], b [C], residual [N, C], gamma [C], beta [C], eps [1], stream int32 [4], step int32 [1],
// keep_prob [1]; y [N, C], z [N, C] (LayerNorm's input, kept for the backward), mask uint8 [N, C], mean [N], rstd [N].
extern "C" int ResidualLayerNormForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                        void *) {
  if (nparam != 14) return 1;
  const float *h = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  const float *residual = static_cast<const float *>(params[2]);
  const float *gamma = static_cast<const float *>(params[3]);
  const float *beta = static_cast<const float *>(params[4]);
  const float eps = *static_cast<const float *>(params[5]);
  const uint32_t key = DropoutKey(static_cast<const int32_t *>(params[6]),
                                  static_cast<uint32_t>(*static_cast<const int32_t *>(params[7])));
  const float keep_prob = *static_cast<const float *>(params[8]);
  float *y = static_cast<float *>(params[9]);
  float *z = static_cast<float *>(params[10]);
  uint8_t *mask = static_cast<uint8_t *>(params[11]);
  float *mean = static_cast<float *>(params[12]);
  float *rstd = static_cast<float *>(params[13]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  const uint32_t threshold = KeepThreshold(keep_prob);
  const float scale = 1.0f / keep_prob;
  ParallelFor(rows, 16, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t first = r * cols;
      DropoutResidualRow(h + first, b, residual + first, key, first, threshold, scale, cols, z + first, mask + first);
      LayerNormRow(z + first, gamma, beta, eps, cols, y + first, mean + r, rstd + r);
    }
  });
  return 0;
}

// Its backward. params: z [N, C], gamma [C], mean [N], rstd [N], mask uint8 [N, C], keep_prob [1], dy [N, C];
// dh [N, C], db [C], dresidual [N, C], dgamma [C], dbeta [C].
extern "C" int ResidualLayerNormBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **,
                                         void *, void *) {
  if (nparam != 12) return 1;
  const float *z = static_cast<const float *>(params[0]);
  const float *gamma = static_cast<const float *>(params[1]);
  const float *mean = static_cast<const float *>(params[2]);
  const float *rstd = static_cast<const float *>(params[3]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[4]);
  const float scale = 1.0f / *static_cast<const float *>(params[5]);
  const float *dy = static_cast<const float *>(params[6]);
  float *dh = static_cast<float *>(params[7]);
  float *dresidual = static_cast<float *>(params[9]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  const int64_t workers = MaxWorkers();
  std::vector<float> pb(cols * workers, 0.0f), pg(cols * workers, 0.0f), pbeta(cols * workers, 0.0f);
  ParallelFor(rows, 16, [&](int64_t begin, int64_t end, int64_t worker) {
    float *db = pb.data() + cols * worker;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t first = r * cols;
      // dresidual = dz, the LayerNorm's input gradient; dh = dz through the dropout mask.
      LayerNormBackwardRow(z + first, gamma, mean[r], rstd[r], dy + first, cols, dresidual + first,
                           pg.data() + cols * worker, pbeta.data() + cols * worker);
      DropoutBackwardRow(dresidual + first, mask + first, scale, cols, dh + first, db);
    }
  });
  SumPartials(pb, cols, static_cast<float *>(params[8]));
  SumPartials(pg, cols, static_cast<float *>(params[10]));
  SumPartials(pbeta, cols, static_cast<float *>(params[11]));
  return 0;
}

// Softmax cross-entropy per row of z = x + b, forward: nll = logsumexp(z) - z[label]. The exponentials are float32,
// their sum double; the backward divides the same float32 exponentials by that sum, so each gradient row sums to 0
// up to its final roundings, however inexact the exponential is (a float32 exp biased by ~1e-6, as MindSpore's
// CPU Exp is, pushed the output bias and every word-embedding row the same way at every step).
// params: logits [N, C], bias [C], labels int32 [N]; nll [N], stats float64 [N, 2] = (max z, sum exp(z - max z))
// per row, kept for the backward. Returns 2 if a label is outside [0, C).
extern "C" int SoftmaxNllForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                 void *) {
  if (nparam != 5) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  const int32_t *labels = static_cast<const int32_t *>(params[2]);
  float *nll = static_cast<float *>(params[3]);
  double *stats = static_cast<double *>(params[4]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  for (int64_t i = 0; i < rows; ++i) {
    if (labels[i] < 0 || labels[i] >= cols) return 2;
  }
  ParallelFor(rows, 8, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      const float *row = x + i * cols;
      float top = row[0] + b[0];
#pragma omp simd reduction(max : top)
      for (int64_t j = 0; j < cols; ++j) top = row[j] + b[j] > top ? row[j] + b[j] : top;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < cols; ++j) sum += ExpNonPositive(row[j] + b[j] - top);
      stats[2 * i] = top;
      stats[2 * i + 1] = sum;
      const int32_t label = labels[i];
      nll[i] = static_cast<float>(top + std::log(sum) - (row[label] + b[label]));
    }
  });
  return 0;
}

namespace {

// One row of the softmax cross-entropy backward: dz = dnll · (exp(z - top) / sum - onehot(label)), added into db
// (in double: each row holds one large negative entry among small positive ones, whose float32 sums lose ~1e-6).
inline void SoftmaxNllBackwardRow(const float *__restrict x, const float *__restrict b, int64_t cols,
                                  const double *stats, float dnll, int32_t label, float *__restrict dz,
                                  double *__restrict db) {
  const float top = static_cast<float>(stats[0]);
  const double scale = dnll / stats[1];
  for (int64_t j = 0; j < cols; ++j) dz[j] = static_cast<float>(scale * ExpNonPositive(x[j] + b[j] - top));
  dz[label] = static_cast<float>(scale * ExpNonPositive(x[label] + b[label] - top) - dnll);
  for (int64_t j = 0; j < cols; ++j) db[j] += dz[j];
}

}  // namespace

// Softmax cross-entropy backward. params: logits [N, C], bias [C], labels int32 [N], stats float64 [N, 2] (from
// the forward), dnll [N]; dlogits [N, C], dbias [C] (the column sums of dlogits).
extern "C" int SoftmaxNllBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                  void *) {
  if (nparam != 7) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *b = static_cast<const float *>(params[1]);
  const int32_t *labels = static_cast<const int32_t *>(params[2]);
  const double *stats = static_cast<const double *>(params[3]);
  const float *dnll = static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  std::vector<double> partial(MaxWorkers() * cols, 0.0);
  ParallelFor(rows, 8, [&](int64_t begin, int64_t end, int64_t worker) {
    for (int64_t i = begin; i < end; ++i) {
      SoftmaxNllBackwardRow(x + i * cols, b, cols, stats + 2 * i, dnll[i], labels[i], dx + i * cols,
                            partial.data() + worker * cols);
    }
  });
  SumPartials(partial, cols, static_cast<float *>(params[6]));
  return 0;
}

namespace {

void AdamWeightDecayRange(float *__restrict w, float *__restrict m, float *__restrict v, const float *__restrict g,
                          float scale, float lr, float wd, const float *hyper, int64_t begin, int64_t end) {
  const float b1 = hyper[0], one_minus_b1 = hyper[1], b2 = hyper[2], one_minus_b2 = hyper[3], eps = hyper[4];
  for (int64_t i = begin; i < end; ++i) {
    const float gi = g[i] * scale;
    const float mi = b1 * m[i] + one_minus_b1 * gi;
    const float vi = b2 * v[i] + one_minus_b2 * (gi * gi);
    m[i] = mi;
    v[i] = vi;
    w[i] = w[i] - lr * (mi / (std::sqrt(vi) + eps) + wd * w[i]);
  }
}

}  // namespace

// Google BERT's AdamWeightDecay update of one tensor (no bias correction; decoupled weight decay), in place, for
// the gradient g = scale * g_in (the step's unscaling and clipping, so that they cost no pass of their own):
//   m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2,  w = w - lr (m / (sqrt(v) + eps) + wd w)
// params: w, m, v (written), g_in [n]; lr [], wd [], hyper [5] = (b1, 1-b1, b2, 1-b2, eps), scale [];
// done [1] (set to 1).
extern "C" int AdamWeightDecayInPlace(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                      void *) {
  if (nparam != 9) return 1;
  *static_cast<float *>(params[8]) = 1.0f;
  float *w = static_cast<float *>(params[0]);
  float *m = static_cast<float *>(params[1]);
  float *v = static_cast<float *>(params[2]);
  const float *g = static_cast<const float *>(params[3]);
  const float lr = *static_cast<const float *>(params[4]);
  const float wd = *static_cast<const float *>(params[5]);
  const float *hyper = static_cast<const float *>(params[6]);
  const float scale = *static_cast<const float *>(params[7]);
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 15, [=](int64_t begin, int64_t end, int64_t) {
    AdamWeightDecayRange(w, m, v, g, scale, lr, wd, hyper, begin, end);
  });
  return 0;
}

namespace {

double SumOfSquares(const float *__restrict x, int64_t begin, int64_t end) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

}  // namespace

// Sum of squares of all elements of all inputs, accumulated in double: the global gradient norm's square, in one
// op for every gradient (one op per tensor, plus the adds, cost ~4% of an L4-H256 step in launches alone).
// MindSpore 2.10's CPU MatMul computes a tensor's part as a [1, n] x [n, 1] product at ~1 GB/s (29 ms for BERT's
// word embeddings, measured). params: x_1 ... x_k [...]; sum [1].
extern "C" int SquaredSum(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam < 2) return 1;
  const int inputs = nparam - 1;
  std::vector<int64_t> offset(inputs + 1, 0);  // the inputs' places in one index space
  for (int t = 0; t < inputs; ++t) offset[t + 1] = offset[t] + NumElements(ndims[t], shapes[t]);
  std::vector<double> partial(MaxWorkers(), 0.0);
  ParallelFor(offset[inputs], 1 << 16, [&](int64_t begin, int64_t end, int64_t worker) {
    for (int t = 0; t < inputs; ++t) {
      const int64_t lo = std::max(begin, offset[t]), hi = std::min(end, offset[t + 1]);
      if (lo < hi) {
        partial[worker] += SumOfSquares(static_cast<const float *>(params[t]), lo - offset[t], hi - offset[t]);
      }
    }
  });
  double total = 0.0;
  for (double p : partial) total += p;  // in worker order: the same sum every run
  *static_cast<float *>(params[inputs]) = static_cast<float>(total);
  return 0;
}

namespace {

inline void AddRow(const float *__restrict x, const float *__restrict b, int64_t n, float *__restrict y) {
  for (int64_t j = 0; j < n; ++j) y[j] = x[j] + b[j];
}

// y = x, adding x into sum.
inline void CopyAndSumRow(const float *__restrict x, int64_t n, float *__restrict y, float *__restrict sum) {
  for (int64_t j = 0; j < n; ++j) {
    y[j] = x[j];
    sum[j] += x[j];
  }
}

// Moves D-value runs between the heads layout [B, A, S, D] (`heads_shape`) and the rows layout [B, S, A, D]:
// from heads to rows if to_rows, else from rows to heads.
void MoveHeads(const float *x, const int64_t *heads_shape, bool to_rows, float *y) {
  const int64_t heads = heads_shape[1], seq = heads_shape[2], d = heads_shape[3];
  ParallelFor(heads_shape[0] * seq, 16, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t row = begin; row < end; ++row) {  // row = b * S + s
      const int64_t b = row / seq, s = row % seq;
      for (int64_t a = 0; a < heads; ++a) {
        const int64_t in_heads = ((b * heads + a) * seq + s) * d, in_rows = (row * heads + a) * d;
        const float *from = x + (to_rows ? in_heads : in_rows);
        float *to = y + (to_rows ? in_rows : in_heads);
        std::copy(from, from + d, to);
      }
    }
  });
}

}  // namespace

// Attention's query, key and value heads from one [B*S, 3H] projection, forward: adds the three biases and moves
// each head's D values from the rows layout to the heads layout, q[b, a, s, :] = x[b, s, 0, a, :] + bias[0, a, :]
// (k from 1, v from 2). params: x [B, S, 3, A, D], bias [3, A, D]; q, k, v [B, A, S, D].
extern "C" int QkvHeadsForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                               void *) {
  if (nparam != 5 || ndims[0] != 5 || shapes[0][2] != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  float *out[3] = {static_cast<float *>(params[2]), static_cast<float *>(params[3]), static_cast<float *>(params[4])};
  const int64_t seq = shapes[0][1], heads = shapes[0][3], d = shapes[0][4];
  ParallelFor(shapes[0][0] * seq, 16, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t row = begin; row < end; ++row) {  // row = b * S + s
      const int64_t b = row / seq, s = row % seq;
      for (int64_t t = 0; t < 3; ++t) {
        for (int64_t a = 0; a < heads; ++a) {
          AddRow(x + ((row * 3 + t) * heads + a) * d, bias + (t * heads + a) * d, d,
                 out[t] + ((b * heads + a) * seq + s) * d);
        }
      }
    }
  });
  return 0;
}

// Its backward: dx[b, s, t, a, :] = d{q,k,v}[b, a, s, :]; dbias = their sums over b and s.
// params: dq, dk, dv [B, A, S, D]; dx [B, S, 3, A, D], dbias [3, A, D].
extern "C" int QkvHeadsBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                void *) {
  if (nparam != 5 || ndims[0] != 4) return 1;
  const float *din[3] = {static_cast<const float *>(params[0]), static_cast<const float *>(params[1]),
                         static_cast<const float *>(params[2])};
  float *dx = static_cast<float *>(params[3]);
  const int64_t heads = shapes[0][1], seq = shapes[0][2], d = shapes[0][3], width = 3 * heads * d;
  std::vector<float> partial(width * MaxWorkers(), 0.0f);
  ParallelFor(shapes[0][0] * seq, 16, [&](int64_t begin, int64_t end, int64_t worker) {
    float *dbias = partial.data() + width * worker;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / seq, s = row % seq;
      for (int64_t t = 0; t < 3; ++t) {
        for (int64_t a = 0; a < heads; ++a) {
          CopyAndSumRow(din[t] + ((b * heads + a) * seq + s) * d, d, dx + ((row * 3 + t) * heads + a) * d,
                        dbias + (t * heads + a) * d);
        }
      }
    }
  });
  SumPartials(partial, width, static_cast<float *>(params[4]));
  return 0;
}

// Attention heads back to rows, forward: y[b, s, a, :] = x[b, a, s, :]. params: x [B, A, S, D]; y [B, S, A, D].
extern "C" int MergeHeadsForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                 void *) {
  if (nparam != 2 || ndims[0] != 4) return 1;
  MoveHeads(static_cast<const float *>(params[0]), shapes[0], true, static_cast<float *>(params[1]));
  return 0;
}

// Its backward: dx[b, a, s, :] = dy[b, s, a, :]. params: dy [B, S, A, D]; dx [B, A, S, D].
extern "C" int MergeHeadsBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                  void *) {
  if (nparam != 2 || ndims[0] != 4) return 1;
  const int64_t heads_shape[4] = {shapes[0][0], shapes[0][2], shapes[0][1], shapes[0][3]};
  MoveHeads(static_cast<const float *>(params[0]), heads_shape, false, static_cast<float *>(params[1]));
  return 0;
}

namespace {

inline void MaskedSoftmaxRow(const float *__restrict x, const float *__restrict b, float scale, int64_t cols,
                             float *__restrict out) {
  for (int64_t j = 0; j < cols; ++j) out[j] = x[j] * scale + b[j];
  float top = out[0];
#pragma omp simd reduction(max : top)
  for (int64_t j = 0; j < cols; ++j) top = out[j] > top ? out[j] : top;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < cols; ++j) {
    const float shifted = out[j] - top;
    out[j] = shifted < -87.0f ? 0.0f : ExpNonPositive(shifted);  // masked keys get exactly 0, as in expf
    sum += out[j];
  }
  const float inverse = 1.0f / sum;
  for (int64_t j = 0; j < cols; ++j) out[j] *= inverse;
}

inline void MaskedSoftmaxBackwardRow(const float *__restrict p, const float *__restrict dp, float scale, int64_t cols,
                                     float *__restrict dx) {
  float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
  for (int64_t j = 0; j < cols; ++j) dot += p[j] * dp[j];
  for (int64_t j = 0; j < cols; ++j) dx[j] = scale * p[j] * (dp[j] - dot);
}

// Whether input 1 (attention's mask bias) has the shape [B, 1, 1, T] for the scores [B, A, S, T] of input 0.
bool IsMaskBias(const int *ndims, int64_t **shapes) {
  return ndims[1] == 4 && shapes[1][0] == shapes[0][0] && shapes[1][1] == 1 && shapes[1][2] == 1 &&
         shapes[1][3] == shapes[0][3];
}

}  // namespace

// Attention's softmax(scale * scores + bias) over the last axis, forward. params: scores [B, A, S, T],
// bias [B, 1, 1, T] (0 keep, -10000 masked), scale [1]; probs [B, A, S, T].
extern "C" int MaskedSoftmaxForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                    void *) {
  if (nparam != 4 || ndims[0] != 4) return 1;
  if (!IsMaskBias(ndims, shapes)) return 3;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  const float scale = *static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const int64_t cols = shapes[0][3], rows_per_batch = shapes[0][1] * shapes[0][2];
  ParallelFor(shapes[0][0] * rows_per_batch, 64, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      MaskedSoftmaxRow(x + i * cols, bias + (i / rows_per_batch) * cols, scale, cols, y + i * cols);
    }
  });
  return 0;
}

// Its backward: dscores = scale * p * (dp - sum(dp * p)) per row. params: probs, dprobs [B, A, S, T], scale [1];
// dscores [B, A, S, T].
extern "C" int MaskedSoftmaxBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                     void *) {
  if (nparam != 4) return 1;
  const float *p = static_cast<const float *>(params[0]);
  const float *dp = static_cast<const float *>(params[1]);
  const float scale = *static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[3]);
  const int64_t cols = shapes[0][ndims[0] - 1];
  ParallelFor(NumElements(ndims[0], shapes[0]) / cols, 64, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      MaskedSoftmaxBackwardRow(p + i * cols, dp + i * cols, scale, cols, dx + i * cols);
    }
  });
  return 0;
}

// Attention's softmax and its dropout, forward: probs = softmax(scale * scores + bias) as MaskedSoftmaxForward,
// then y = dropout(probs) with DropoutForward's masks for the same (stream, step), element for element, while the
// row is in cache. params: scores [B, A, S, T], bias [B, 1, 1, T], scale [1], stream int32 [4], step int32 [1],
// keep_prob [1]; y [B, A, S, T], probs [B, A, S, T] (kept for the backward), mask uint8 [B, A, S, T].
extern "C" int MaskedSoftmaxDropoutForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **,
                                           void *, void *) {
  if (nparam != 9 || ndims[0] != 4) return 1;
  if (!IsMaskBias(ndims, shapes)) return 3;
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  const float scale = *static_cast<const float *>(params[2]);
  const uint32_t key = DropoutKey(static_cast<const int32_t *>(params[3]),
                                  static_cast<uint32_t>(*static_cast<const int32_t *>(params[4])));
  const float keep_prob = *static_cast<const float *>(params[5]);
  float *y = static_cast<float *>(params[6]);
  float *probs = static_cast<float *>(params[7]);
  uint8_t *mask = static_cast<uint8_t *>(params[8]);
  const uint32_t threshold = KeepThreshold(keep_prob);
  const float inverse_keep = 1.0f / keep_prob;
  const int64_t cols = shapes[0][3], rows_per_batch = shapes[0][1] * shapes[0][2];
  ParallelFor(shapes[0][0] * rows_per_batch, 64, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      MaskedSoftmaxRow(x + i * cols, bias + (i / rows_per_batch) * cols, scale, cols, probs + i * cols);
      DropoutRange(probs, y, mask, key, threshold, inverse_keep, i * cols, (i + 1) * cols);
    }
  });
  return 0;
}

// Its backward: dprobs = dy through the mask, then MaskedSoftmaxBackward's row. params: probs, mask uint8,
// keep_prob [1], dy [B, A, S, T], scale [1]; dscores [B, A, S, T].
extern "C" int MaskedSoftmaxDropoutBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **,
                                            void *, void *) {
  if (nparam != 6) return 1;
  const float *p = static_cast<const float *>(params[0]);
  const uint8_t *mask = static_cast<const uint8_t *>(params[1]);
  const float inverse_keep = 1.0f / *static_cast<const float *>(params[2]);
  const float *dy = static_cast<const float *>(params[3]);
  const float scale = *static_cast<const float *>(params[4]);
  float *dx = static_cast<float *>(params[5]);
  const int64_t cols = shapes[0][ndims[0] - 1];
  ParallelFor(NumElements(ndims[0], shapes[0]) / cols, 64, [=](int64_t begin, int64_t end, int64_t) {
    std::vector<float> dp(cols);
    for (int64_t i = begin; i < end; ++i) {
      DropoutBackwardRange(dy + i * cols, mask + i * cols, dp.data(), inverse_keep, 0, cols);
      MaskedSoftmaxBackwardRow(p + i * cols, dp.data(), scale, cols, dx + i * cols);
    }
  });
  return 0;
}

// Returns the host heap's free pages to the OS (glibc malloc_trim), the first time any graph runs it in this
// process. A train step's graph runs it before its other kernels: compiling the graph leaves ~0.3 GB of freed but
// resident heap (L4-H256, measured), which would otherwise count on top of the step's own memory at its peak. Later
// calls return at once: a trim takes ~8 ms. params: x (any; only orders the op), done float32 [1].
extern "C" int ReleaseFreedHeap(int nparam, void **params, int *, int64_t **, const char **, void *, void *) {
  if (nparam != 2) return 1;
  static std::atomic<bool> done{false};
  if (!done.exchange(true)) malloc_trim(0);
  *static_cast<float *>(params[1]) = 1.0f;
  return 0;
}
