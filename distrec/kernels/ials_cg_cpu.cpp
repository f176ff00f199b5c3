// Implicit ALS's row solve on CPU (distrec/models/als.py, objective implicit, solver cg): every
// row of one side takes `steps` conjugate-gradient iterations on its system
//
//   A_u = G + diag(scale_u * lam) + sum_{i in I_u} a_ui y_i y_i^T      b_u = sum_{i in I_u} (1 + a_ui) y_i
//
// with a_ui = alpha * r_ui (confidence by rating) or alpha (binary): c = 1 + a is the confidence,
// from its current factors (warm start), with the fixed side's rows y_i read from `table` and
// G = Y^T Y (the Gramian of all of that side's rows). This is implicit's (benfred/implicit)
// per-row CG, and the same iteration as als.py's batched torch version: A is never formed and
// nothing is gathered; a row's products y_i . v are taken against the table itself, which a
// half-sweep reads over and over (it stays cache-resident where the batched version streams
// a padded copy of every row's features from memory ten times). Rows run in parallel over
// torch's intra-op threads (at::parallel_reduce). Returns the observed part of the objective at
// the new factors, sum over the ratings of c (1 - s)^2 - s^2 with s = y_i . x_u (kept current
// through the steps from the products the steps take anyway; the caller adds sum_u x_u^T G x_u).

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

inline float dot(const float* a, const float* b, int64_t k) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < k; ++j) s += a[j] * b[j];
  return s;
}

inline void axpy(float alpha, const float* x, float* y, int64_t k) {
  for (int64_t j = 0; j < k; ++j) y[j] += alpha * x[j];
}

// out = G v + d * v, G symmetric [k, k] row-major
inline void apply_dense(const float* g, const float* d, const float* v, float* out, int64_t k) {
  for (int64_t i = 0; i < k; ++i) out[i] = dot(g + i * k, v, k) + d[i] * v[i];
}

void check(const at::Tensor& t, at::ScalarType dtype, int64_t dims, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "ials_cg: ", name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "ials_cg: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dims, "ials_cg: ", name, " must have ", dims, " dimension(s), got ", t.dim());
  TORCH_CHECK(t.is_contiguous(), "ials_cg: ", name, " must be contiguous");
}

double ials_cg(const at::Tensor& indptr, const at::Tensor& cols, const at::Tensor& values, double alpha,
               bool by_rating, const at::Tensor& table, const at::Tensor& gram, const at::Tensor& scale,
               const at::Tensor& lam, at::Tensor x, int64_t steps) {
  check(indptr, at::kLong, 1, "indptr");
  check(cols, at::kLong, 1, "cols");
  check(values, at::kFloat, 1, "values");
  check(table, at::kFloat, 2, "table");
  check(gram, at::kFloat, 2, "gram");
  check(scale, at::kFloat, 1, "scale");
  check(lam, at::kFloat, 1, "lam");
  check(x, at::kFloat, 2, "x");
  const int64_t rows = x.size(0), k = x.size(1), nnz = cols.size(0);
  TORCH_CHECK(indptr.size(0) == rows + 1, "ials_cg: indptr has ", indptr.size(0), " entries for ", rows, " rows");
  TORCH_CHECK(values.size(0) == nnz, "ials_cg: values needs one entry per column index (", nnz, ")");
  TORCH_CHECK(table.size(1) == k && gram.size(0) == k && gram.size(1) == k && lam.size(0) == k,
              "ials_cg: table [M, k], gram [k, k] and lam [k] must match x's k = ", k);
  TORCH_CHECK(scale.size(0) == rows, "ials_cg: scale needs one entry per row (", rows, ")");
  TORCH_CHECK(steps >= 0, "ials_cg: steps must be >= 0");
  const int64_t* ip = indptr.data_ptr<int64_t>();
  TORCH_CHECK(rows == 0 || (ip[0] == 0 && ip[rows] == nnz), "ials_cg: indptr must run from 0 to nnz = ", nnz);
  const int64_t* col = cols.data_ptr<int64_t>();
  const float* rv = values.data_ptr<float>();
  const float al = static_cast<float>(alpha);
  auto conf = [&](int64_t n) { return by_rating ? al * rv[n] : al; };  // a = c - 1
  const float* y = table.data_ptr<float>();
  const float* g = gram.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  const float* lm = lam.data_ptr<float>();
  float* xs = x.data_ptr<float>();
  const int64_t table_rows = table.size(0);
  if (nnz > 0) {
    const auto [lo, hi] = std::minmax_element(col, col + nnz);
    TORCH_CHECK(*lo >= 0 && *hi < table_rows, "ials_cg: column index out of range [0, ", table_rows, ")");
  }

  return at::parallel_reduce(
      0, rows, 64, 0.0,
      [&](int64_t begin, int64_t end, double total) {
        // sx, sp: y_i . x_u and y_i . p of the row's ratings; sx follows x_u through the steps
        std::vector<float> buf(4 * k), sx, sp;
        float *d = buf.data(), *r = d + k, *p = r + k, *ap = p + k;
        for (int64_t u = begin; u < end; ++u) {
          float* xu = xs + u * k;
          const int64_t first = ip[u], count = ip[u + 1] - first;
          const int64_t* cu = col + first;
          sx.resize(count);
          sp.resize(count);
          for (int64_t j = 0; j < k; ++j) d[j] = sc[u] * lm[j];
          // r = b - A x
          apply_dense(g, d, xu, r, k);
          for (int64_t j = 0; j < k; ++j) r[j] = -r[j];
          for (int64_t n = 0; n < count; ++n) {
            const float* yi = y + cu[n] * k;
            const float an = conf(first + n);
            sx[n] = dot(yi, xu, k);
            axpy(1.f + an - an * sx[n], yi, r, k);
          }
          std::copy(r, r + k, p);
          float rs = dot(r, r, k);
          for (int64_t step = 0; step < steps; ++step) {
            apply_dense(g, d, p, ap, k);
            for (int64_t n = 0; n < count; ++n) {
              const float* yi = y + cu[n] * k;
              sp[n] = dot(yi, p, k);
              axpy(conf(first + n) * sp[n], yi, ap, k);
            }
            const float pap = dot(p, ap, k);
            const float alpha = pap > 0.f ? rs / std::max(pap, 1e-30f) : 0.f;
            axpy(alpha, p, xu, k);
            for (int64_t n = 0; n < count; ++n) sx[n] += alpha * sp[n];
            axpy(-alpha, ap, r, k);
            const float rs_new = dot(r, r, k);
            const float beta = rs > 0.f ? rs_new / std::max(rs, 1e-30f) : 0.f;
            for (int64_t j = 0; j < k; ++j) p[j] = r[j] + beta * p[j];
            rs = rs_new;
          }
          for (int64_t n = 0; n < count; ++n) {
            const float c = 1.f + conf(first + n), e = 1.f - sx[n];
            total += c * e * e - sx[n] * sx[n];
          }
        }
        return total;
      },
      [](double left, double right) { return left + right; });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(distrec, m) {
  m.def("ials_cg(Tensor indptr, Tensor cols, Tensor values, float alpha, bool by_rating, Tensor table, Tensor gram, "
        "Tensor scale, Tensor lam, Tensor(a!) x, int steps) -> float");
}

TORCH_LIBRARY_IMPL(distrec, CPU, m) { m.impl("ials_cg", ials_cg); }
