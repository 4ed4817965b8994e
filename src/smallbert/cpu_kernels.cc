// Fused float32 CPU kernels for smallbert, called by MindSpore as AOT custom ops (see cpu_kernels.py):
// LayerNorm over the last axis, exact (erf) GELU, counter-based dropout, softmax cross-entropy and attention's masked
// softmax, forward and backward, Google's AdamWeightDecay update and a sum of squares. Each is one pass over memory; MindSpore 2.10's
// own CPU kernels for the first three take 2-20x longer on BERT's shapes. Signature of every entry point:
//   int Name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream, void *extra)
// with params = inputs then outputs, contiguous, float32 unless said otherwise. Returns 0 on success.
#include <cmath>
#include <cstdint>
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

// exp(v) for v <= 0 in double precision (relative error ~1e-11), vectorisable. The softmax below needs it: float32
// approximations biased by ~1e-6 (MindSpore's CPU Exp, measured) make every row of the cross-entropy gradient
// softmax - onehot sum to ~1e-6 instead of 0, a push in the same direction at every step.
inline double ExpNonPositiveDouble(double v) {
  v = v < -700.0 ? -700.0 : v;
  double n = (v * 1.4426950408889634 + 6755399441055744.0) - 6755399441055744.0;  // round: 1.5 * 2^52
  double r = v - n * 6.93147180369123816490e-01 - n * 1.90821492927058770002e-10;  // ln 2, split in two
  double p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 +
             r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880)))))))));
  int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
  return p * __builtin_bit_cast(double, bits);
}

// Standard normal CDF Phi(x) = (1 + erf(x / sqrt 2)) / 2, erf from Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7).
inline float NormalCdf(float x) {
  float z = std::fabs(x) * 0.70710678f;
  float t = 1.0f / (1.0f + 0.3275911f * z);
  float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  float erf_abs = 1.0f - poly * ExpNonPositive(-z * z);
  return 0.5f + 0.5f * std::copysign(erf_abs, x);
}

void GeluForwardRange(const float *__restrict x, float *__restrict y, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) y[i] = x[i] * NormalCdf(x[i]);
}

void GeluBackwardRange(const float *__restrict x, const float *__restrict dy, float *__restrict dx, int64_t begin,
                       int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float v = x[i];
    dx[i] = dy[i] * (NormalCdf(v) + v * 0.39894228f * ExpNonPositive(-0.5f * v * v));
  }
}

}  // namespace

// GELU forward. params: x [...], y [...].
extern "C" int GeluForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[1]);
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 16,
              [=](int64_t begin, int64_t end, int64_t) { GeluForwardRange(x, y, begin, end); });
  return 0;
}

// GELU backward: dx = dy * (Phi(x) + x * phi(x)). params: x, dy, dx.
extern "C" int GeluBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 3) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[2]);
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 16,
              [=](int64_t begin, int64_t end, int64_t) { GeluBackwardRange(x, dy, dx, begin, end); });
  return 0;
}

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
  ParallelFor(rows, 64, [&](int64_t begin, int64_t end, int64_t) {
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * h;
      float *yr = y + r * h;
      float sum = 0.0f;
      for (int64_t j = 0; j < h; ++j) sum += xr[j];
      const float mu = sum / h;
      float sq = 0.0f;
      for (int64_t j = 0; j < h; ++j) sq += (xr[j] - mu) * (xr[j] - mu);
      const float rs = 1.0f / std::sqrt(sq / h + eps);
      for (int64_t j = 0; j < h; ++j) yr[j] = (xr[j] - mu) * rs * gamma[j] + beta[j];
      mean[r] = mu;
      rstd[r] = rs;
    }
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
  float *dgamma = static_cast<float *>(params[6]);
  float *dbeta = static_cast<float *>(params[7]);
  const int64_t h = shapes[0][ndims[0] - 1];
  const int64_t rows = NumElements(ndims[0], shapes[0]) / h;
  const int64_t max_workers = MaxWorkers();
  std::vector<float> partial(2 * h * max_workers, 0.0f);  // per worker: dgamma then dbeta partial sums
  ParallelFor(rows, 64, [&](int64_t begin, int64_t end, int64_t worker) {
    float *pg = partial.data() + 2 * h * worker;
    float *pb = pg + h;
    for (int64_t r = begin; r < end; ++r) {
      const float *xr = x + r * h;
      const float *dyr = dy + r * h;
      float *dxr = dx + r * h;
      const float mu = mean[r], rs = rstd[r];
      float sum_g = 0.0f, sum_gx = 0.0f;
      for (int64_t j = 0; j < h; ++j) {
        const float xhat = (xr[j] - mu) * rs;
        const float g = dyr[j] * gamma[j];
        sum_g += g;
        sum_gx += g * xhat;
        pg[j] += dyr[j] * xhat;
        pb[j] += dyr[j];
      }
      const float a = sum_g / h, b = sum_gx / h;
      for (int64_t j = 0; j < h; ++j) dxr[j] = rs * (dyr[j] * gamma[j] - a - (xr[j] - mu) * rs * b);
    }
  });
  for (int64_t j = 0; j < h; ++j) {
    float sg = 0.0f, sb = 0.0f;
    for (int64_t w = 0; w < max_workers; ++w) {
      sg += partial[2 * h * w + j];
      sb += partial[2 * h * w + h + j];
    }
    dgamma[j] = sg;
    dbeta[j] = sb;
  }
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

void DropoutRange(const float *__restrict x, float *__restrict y, uint8_t *__restrict mask, uint32_t key,
                  uint32_t threshold, float scale, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const uint32_t keep = (Mix(key + static_cast<uint32_t>(i) * 0x9e3779b9u) >> 8) < threshold;
    mask[i] = static_cast<uint8_t>(keep);
    y[i] = keep ? x[i] * scale : 0.0f;
  }
}

void DropoutBackwardRange(const float *__restrict dy, const uint8_t *__restrict mask, float *__restrict dx,
                          float scale, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) dx[i] = mask[i] ? dy[i] * scale : 0.0f;
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
  uint32_t key = 0;
  for (uint32_t part : {static_cast<uint32_t>(stream[0]), static_cast<uint32_t>(stream[1]),
                        static_cast<uint32_t>(stream[2]), static_cast<uint32_t>(stream[3]), step}) {
    key = Mix(key ^ Mix(part + 0x6a09e667u));
  }
  const uint32_t threshold = static_cast<uint32_t>(static_cast<double>(keep_prob) * (1u << 24));
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

// Softmax cross-entropy per row, forward: nll = logsumexp(x) - x[label], the exponentials and their sum in double.
// params: logits [N, C], labels int32 [N]; nll [N], lse float64 [N] (kept for the backward). Returns 2 if a label
// is outside [0, C).
extern "C" int SoftmaxNllForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                 void *) {
  if (nparam != 4) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int32_t *labels = static_cast<const int32_t *>(params[1]);
  float *nll = static_cast<float *>(params[2]);
  double *lse = static_cast<double *>(params[3]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  for (int64_t i = 0; i < rows; ++i) {
    if (labels[i] < 0 || labels[i] >= cols) return 2;
  }
  ParallelFor(rows, 8, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      const float *row = x + i * cols;
      float top = row[0];
#pragma omp simd reduction(max : top)
      for (int64_t j = 0; j < cols; ++j) top = row[j] > top ? row[j] : top;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < cols; ++j) sum += ExpNonPositiveDouble(static_cast<double>(row[j]) - top);
      lse[i] = top + std::log(sum);
      nll[i] = static_cast<float>(lse[i] - row[labels[i]]);
    }
  });
  return 0;
}

// Softmax cross-entropy backward: dx = dnll * (softmax(x) - onehot(label)), softmax from the forward's lse.
// params: logits [N, C], labels int32 [N], lse float64 [N], dnll [N]; dlogits [N, C].
extern "C" int SoftmaxNllBackward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                  void *) {
  if (nparam != 5) return 1;
  const float *x = static_cast<const float *>(params[0]);
  const int32_t *labels = static_cast<const int32_t *>(params[1]);
  const double *lse = static_cast<const double *>(params[2]);
  const float *dnll = static_cast<const float *>(params[3]);
  float *dx = static_cast<float *>(params[4]);
  const int64_t cols = shapes[0][ndims[0] - 1], rows = NumElements(ndims[0], shapes[0]) / cols;
  ParallelFor(rows, 8, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      const float *row = x + i * cols;
      float *out = dx + i * cols;
      const double shift = lse[i], scale = dnll[i];
#pragma omp simd
      for (int64_t j = 0; j < cols; ++j) {
        out[j] = static_cast<float>(scale * ExpNonPositiveDouble(static_cast<double>(row[j]) - shift));
      }
      const int32_t label = labels[i];
      out[label] = static_cast<float>(scale * (ExpNonPositiveDouble(static_cast<double>(row[label]) - shift) - 1.0));
    }
  });
  return 0;
}

namespace {

void AdamWeightDecayRange(const float *__restrict w, const float *__restrict m, const float *__restrict v,
                          const float *__restrict g, float lr, float wd, const float *hyper, float *__restrict next_w,
                          float *__restrict next_m, float *__restrict next_v, int64_t begin, int64_t end) {
  const float b1 = hyper[0], one_minus_b1 = hyper[1], b2 = hyper[2], one_minus_b2 = hyper[3], eps = hyper[4];
  for (int64_t i = begin; i < end; ++i) {
    const float mi = b1 * m[i] + one_minus_b1 * g[i];
    const float vi = b2 * v[i] + one_minus_b2 * (g[i] * g[i]);
    next_m[i] = mi;
    next_v[i] = vi;
    next_w[i] = w[i] - lr * (mi / (std::sqrt(vi) + eps) + wd * w[i]);
  }
}

}  // namespace

// Google BERT's AdamWeightDecay update of one tensor (no bias correction; decoupled weight decay), out of place:
//   m' = b1 m + (1-b1) g,  v' = b2 v + (1-b2) g^2,  w' = w - lr (m' / (sqrt(v') + eps) + wd w)
// params: w, m, v, g [n]; lr [], wd [], hyper [5] = (b1, 1-b1, b2, 1-b2, eps); w', m', v' [n].
extern "C" int AdamWeightDecayUpdate(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                     void *) {
  if (nparam != 10) return 1;
  const float *w = static_cast<const float *>(params[0]);
  const float *m = static_cast<const float *>(params[1]);
  const float *v = static_cast<const float *>(params[2]);
  const float *g = static_cast<const float *>(params[3]);
  const float lr = *static_cast<const float *>(params[4]);
  const float wd = *static_cast<const float *>(params[5]);
  const float *hyper = static_cast<const float *>(params[6]);
  float *next_w = static_cast<float *>(params[7]);
  float *next_m = static_cast<float *>(params[8]);
  float *next_v = static_cast<float *>(params[9]);
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 15, [=](int64_t begin, int64_t end, int64_t) {
    AdamWeightDecayRange(w, m, v, g, lr, wd, hyper, next_w, next_m, next_v, begin, end);
  });
  return 0;
}

// Sum of squares of all elements, accumulated in double; the global gradient norm's terms. MindSpore 2.10's CPU
// MatMul does the same as a [1, n] x [n, 1] product at ~1 GB/s (29 ms for BERT's word embeddings, measured).
// params: x [...]; sum [1].
extern "C" int SquaredSum(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *, void *) {
  if (nparam != 2) return 1;
  const float *x = static_cast<const float *>(params[0]);
  std::vector<double> partial(MaxWorkers(), 0.0);
  ParallelFor(NumElements(ndims[0], shapes[0]), 1 << 16, [&](int64_t begin, int64_t end, int64_t worker) {
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = begin; i < end; ++i) sum += static_cast<double>(x[i]) * x[i];
    partial[worker] = sum;
  });
  double total = 0.0;
  for (double p : partial) total += p;  // in worker order: the same sum every run
  *static_cast<float *>(params[1]) = static_cast<float>(total);
  return 0;
}

// Attention's softmax(scale * scores + bias) over the last axis, forward. params: scores [B, A, S, T],
// bias [B, 1, 1, T] (0 keep, -10000 masked), scale [1]; probs [B, A, S, T].
extern "C" int MaskedSoftmaxForward(int nparam, void **params, int *ndims, int64_t **shapes, const char **, void *,
                                    void *) {
  if (nparam != 4 || ndims[0] != 4) return 1;
  if (ndims[1] != 4 || shapes[1][0] != shapes[0][0] || shapes[1][1] != 1 || shapes[1][2] != 1 ||
      shapes[1][3] != shapes[0][3]) return 3;  // the bias must be [B, 1, 1, T]
  const float *x = static_cast<const float *>(params[0]);
  const float *bias = static_cast<const float *>(params[1]);
  const float scale = *static_cast<const float *>(params[2]);
  float *y = static_cast<float *>(params[3]);
  const int64_t cols = shapes[0][3], rows_per_batch = shapes[0][1] * shapes[0][2];
  ParallelFor(shapes[0][0] * rows_per_batch, 64, [=](int64_t begin, int64_t end, int64_t) {
    for (int64_t i = begin; i < end; ++i) {
      const float *row = x + i * cols, *b = bias + (i / rows_per_batch) * cols;
      float *out = y + i * cols;
      for (int64_t j = 0; j < cols; ++j) out[j] = row[j] * scale + b[j];
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
      const float *pi = p + i * cols, *dpi = dp + i * cols;
      float *out = dx + i * cols;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < cols; ++j) dot += pi[j] * dpi[j];
      for (int64_t j = 0; j < cols; ++j) out[j] = scale * pi[j] * (dpi[j] - dot);
    }
  });
  return 0;
}
