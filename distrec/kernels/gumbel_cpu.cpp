// Distill-CF's multi-Gumbel sampler on CPU (distrec/distill/gumbel.py), one fused pass per row:
//
//   forward   total[r] = sum_d softmax((logits[r] + g[d, r]) / tau)
//   backward  grad_logits[r] = (1/tau) sum_d p_dr * (grad[r] - <grad[r], p_dr>)
//
// The noise is a function of (draw, row, item), not a generator's stream, so backward redraws
// exactly the forward's noise: g = -log(-log u), u = ((h >> 9) + 1/2) / 2^23 with
// h = lowbias32(key[d, r] ^ (item * 0x9E3779B9)) and key[d, r] made from the seed (the torch
// version in gumbel.py computes the same u). A row's draw is computed into a buffer the size of
// one row (cache-resident): the logs, the max, the exponentials and the sum, then added into the
// row's total (forward) or its gradient (backward). Nothing of size draws x rows x items exists.
// Rows run in parallel (at::parallel_for). log and exp are cephes' single-precision polynomials
// (~1 ulp), written branch-free so that g++ vectorizes the loops for the build machine's CPU.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

inline uint32_t lowbias32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

// log(x) for normal x > 0 (cephes logf).
inline float log_approx(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126);
  float m = std::bit_cast<float>((bits & 0x007fffffU) | 0x3f000000U);  // [0.5, 1)
  const bool low = m < 0.707106781186547524f;
  e = low ? e - 1.0f : e;
  m = low ? m + m - 1.0f : m - 1.0f;
  const float z = m * m;
  float y = 7.0376836292e-2f;
  y = y * m - 1.1514610310e-1f;
  y = y * m + 1.1676998740e-1f;
  y = y * m - 1.2420140846e-1f;
  y = y * m + 1.4249322787e-1f;
  y = y * m - 1.6668057665e-1f;
  y = y * m + 2.0000714765e-1f;
  y = y * m - 2.4999993993e-1f;
  y = y * m + 3.3333331174e-1f;
  y = y * m * z;
  y += e * -2.12194440e-4f;
  y += -0.5f * z;
  return m + y + e * 0.693359375f;
}

// exp(x) for x <= 0 (cephes expf; below -87 it returns ~1e-38, as good as 0 here). n = round(x /
// ln 2) by adding 1.5 * 2^23 (std::floor would keep g++ from vectorizing the loop).
inline float exp_approx(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const int32_t exponent = static_cast<int32_t>(std::bit_cast<uint32_t>(shifted) - 0x4B400000U) + 127;
  x -= n * 0.693359375f;
  x -= n * -2.12194440e-4f;
  const float z = x * x;
  float y = 1.9875691500e-4f;
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * z + x + 1.0f;
  return y * std::bit_cast<float>(static_cast<uint32_t>(exponent) << 23);
}

struct Draws {
  const float* logits;
  const int32_t* keys;  // [draws, rows]: 32-bit keys
  int64_t draws, rows, items;
  float tau;
  std::vector<uint32_t> item_salt;  // item * 0x9E3779B9 mod 2^32

  Draws(const at::Tensor& logits_, const at::Tensor& keys_, double tau_)
      : logits(logits_.data_ptr<float>()), keys(keys_.data_ptr<int32_t>()), draws(keys_.size(0)), rows(logits_.size(0)),
        items(logits_.size(1)), tau(static_cast<float>(tau_)), item_salt(items) {
    for (int64_t i = 0; i < items; ++i) item_salt[i] = static_cast<uint32_t>(i) * 0x9E3779B9U;
  }

  // p = softmax((logits[r] + g[d, r]) / tau) into p[items]
  void softmax(int64_t d, int64_t r, float* p) const {
    const uint32_t key = static_cast<uint32_t>(keys[d * rows + r]);
    const float* l = logits + r * items;
    const uint32_t* salt = item_salt.data();
    float top = -std::numeric_limits<float>::max();
#pragma omp simd reduction(max : top)
    for (int64_t i = 0; i < items; ++i) {
      const float u = static_cast<float>(lowbias32(key ^ salt[i]) >> 9) * 0x1p-23f + 0x1p-24f;
      const float z = (l[i] - log_approx(-log_approx(u))) / tau;
      p[i] = z;
      top = z > top ? z : top;
    }
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < items; ++i) {
      p[i] = exp_approx(p[i] - top);
      sum += p[i];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (int64_t i = 0; i < items; ++i) p[i] *= inv;
  }
};

void check(const at::Tensor& logits, const at::Tensor& keys) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat && logits.is_contiguous() && logits.device().is_cpu(),
              "logits must be a contiguous float32 CPU matrix");
  TORCH_CHECK(keys.dim() == 2 && keys.scalar_type() == at::kInt && keys.is_contiguous() && keys.size(1) == logits.size(0),
              "keys must be int32 [draws, rows]");
}

at::Tensor gumbel_forward(const at::Tensor& logits, const at::Tensor& keys, double tau) {
  check(logits, keys);
  const Draws dr(logits, keys, tau);
  auto total = at::zeros_like(logits);
  float* out = total.data_ptr<float>();
  at::parallel_for(0, dr.rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(dr.items);
    for (int64_t r = begin; r < end; ++r) {
      float* t = out + r * dr.items;
      for (int64_t d = 0; d < dr.draws; ++d) {
        dr.softmax(d, r, p.data());
#pragma omp simd
        for (int64_t i = 0; i < dr.items; ++i) t[i] += p[i];
      }
    }
  });
  return total;
}

at::Tensor gumbel_backward(const at::Tensor& logits, const at::Tensor& grad, const at::Tensor& keys, double tau) {
  check(logits, keys);
  TORCH_CHECK(grad.sizes() == logits.sizes() && grad.scalar_type() == at::kFloat, "grad must match the logits");
  const at::Tensor g_contig = grad.contiguous();
  const Draws dr(logits, keys, tau);
  auto result = at::zeros_like(logits);
  float* out = result.data_ptr<float>();
  const float* g_all = g_contig.data_ptr<float>();
  at::parallel_for(0, dr.rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(dr.items);
    for (int64_t r = begin; r < end; ++r) {
      float* acc = out + r * dr.items;
      const float* g = g_all + r * dr.items;
      for (int64_t d = 0; d < dr.draws; ++d) {
        dr.softmax(d, r, p.data());
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t i = 0; i < dr.items; ++i) dot += p[i] * g[i];
#pragma omp simd
        for (int64_t i = 0; i < dr.items; ++i) acc[i] += p[i] * (g[i] - dot);
      }
      const float inv_tau = 1.0f / dr.tau;
#pragma omp simd
      for (int64_t i = 0; i < dr.items; ++i) acc[i] *= inv_tau;
    }
  });
  return result;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(distrec, m) {
  m.def("gumbel_forward(Tensor logits, Tensor keys, float tau) -> Tensor");
  m.def("gumbel_backward(Tensor logits, Tensor grad, Tensor keys, float tau) -> Tensor");
}

TORCH_LIBRARY_IMPL(distrec, CPU, m) {
  m.impl("gumbel_forward", gumbel_forward);
  m.impl("gumbel_backward", gumbel_backward);
}
