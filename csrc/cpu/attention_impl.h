// Blocked flash-attention style CPU kernels (forward and backward) for masked attention.
//
// This file is included twice by csrc/cpu/attention.cpp: once inside a
// `#pragma GCC target("avx,fma")` region (namespace attn_avx) and once for the baseline ISA
// (namespace attn_generic); the CPU is probed at run time. All arithmetic is written with GCC
// vector extensions (32-byte vectors: 8 floats or 4 doubles) so both copies vectorise.
//
// Before inclusion the includer defines E2E_ATTN_NS (namespace name), E2E_ATTN_FMA (1 when
// FMA intrinsics may be used) and the types TView / Job (see attention.cpp).

namespace E2E_ATTN_NS {

typedef float f8 __attribute__((vector_size(32)));
typedef double d4 __attribute__((vector_size(32)));
typedef int32_t i8 __attribute__((vector_size(32)));

template <typename T>
struct VT;
template <>
struct VT<float> {
  using V = f8;
  static constexpr int W = 8;
};
template <>
struct VT<double> {
  using V = d4;
  static constexpr int W = 4;
};

template <typename V, typename T>
inline V vload(const T* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void vstore(T* p, V v) {
  __builtin_memcpy(p, &v, sizeof(V));
}

inline f8 vfma(f8 a, f8 b, f8 c) {
#if E2E_ATTN_FMA
  return _mm256_fmadd_ps(a, b, c);
#else
  return a * b + c;
#endif
}
inline d4 vfma(d4 a, d4 b, d4 c) {
#if E2E_ATTN_FMA
  return _mm256_fmadd_pd(a, b, c);
#else
  return a * b + c;
#endif
}

// Vector 2^x for x <= 0 (the softmax argument s - max). Range reduction to f in [-0.5, 0.5]
// by the 1.5*2^23 rounding trick, degree-6 polynomial (rel. error ~2e-7), exponent by integer
// add. Inputs below -125 (including -inf) give exactly 0.
inline f8 exp2v(f8 x) {
  const i8 tiny = x < -125.0f;
  x = x < -125.0f ? (f8){} - 125.0f : x;
  const f8 t = x + 12582912.0f;
  const i8 n = (i8)t - 0x4B400000;
  const f8 f = x - (t - 12582912.0f);
  f8 p = (f8){} + 1.5403530e-4f;
  p = vfma(p, f, (f8){} + 1.3333558e-3f);
  p = vfma(p, f, (f8){} + 9.6181291e-3f);
  p = vfma(p, f, (f8){} + 5.5504109e-2f);
  p = vfma(p, f, (f8){} + 2.4022651e-1f);
  p = vfma(p, f, (f8){} + 6.9314718e-1f);
  p = vfma(p, f, (f8){} + 1.0f);
  const i8 bits = ((i8)p + (n << 23)) & ~tiny;
  return (f8)bits;
}

// Rows of a tile: s[j] <- 2^(s[j]*c - sub) for j < n_valid, 0 for n_valid <= j < n (n % W == 0).
// Returns the sum of the row.
inline float exp2_row(float* s, int n_valid, int n, float c, float sub) {
  f8 acc = {};
  const f8 iota = {0, 1, 2, 3, 4, 5, 6, 7};
  for (int j = 0; j < n; j += 8) {
    f8 x = vload<f8>(s + j) * c - sub;
    const i8 keep = (iota + (float)j) < (float)n_valid;
    x = keep ? x : (f8){} - INFINITY;
    const f8 e = exp2v(x);
    acc += e;
    vstore(s + j, e);
  }
  float sum = 0.f;
  for (int w = 0; w < 8; ++w) sum += acc[w];
  return sum;
}
inline double exp2_row(double* s, int n_valid, int n, double c, double sub) {
  double sum = 0.0;
  for (int j = 0; j < n; ++j) {
    const double e = j < n_valid ? std::exp2(s[j] * c - sub) : 0.0;
    s[j] = e;
    sum += e;
  }
  return sum;
}

// max(init, s[0..n)) for n % W == 0.
inline float row_max(const float* s, int n, float init) {
  f8 mx = (f8){} + init;
  for (int j = 0; j < n; j += 8) {
    const f8 x = vload<f8>(s + j);
    mx = x > mx ? x : mx;
  }
  float r = init;
  for (int w = 0; w < 8; ++w) r = std::max(r, mx[w]);
  return r;
}
inline double row_max(const double* s, int n, double init) {
  double r = init;
  for (int j = 0; j < n; ++j) r = std::max(r, s[j]);
  return r;
}

// C[m x n] (= or +=) A[m x K] * B[K x n], with A read at A[r*ars + k*acs] (so a transposed
// operand needs no copy), B row stride ldb, C row stride ldc, n % W == 0.
template <typename T, int R, int CV, bool ACC>
inline void micro(int K, const T* __restrict A, int64_t ars, int64_t acs, const T* __restrict B, int64_t ldb,
                  T* __restrict C, int64_t ldc) {
  using V = typename VT<T>::V;
  constexpr int W = VT<T>::W;
  V acc[R][CV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < CV; ++c) acc[r][c] = ACC ? vload<V>(C + r * ldc + c * W) : V{};
  for (int k = 0; k < K; ++k) {
    V b[CV];
#pragma GCC unroll 4
    for (int c = 0; c < CV; ++c) b[c] = vload<V>(B + k * ldb + c * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V a = V{} + A[r * ars + k * acs];
#pragma GCC unroll 4
      for (int c = 0; c < CV; ++c) acc[r][c] = vfma(a, b[c], acc[r][c]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < CV; ++c) vstore(C + r * ldc + c * W, acc[r][c]);
}

template <typename T, bool ACC, int CV>
inline void gemm_cols(int m, int K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb, T* C,
                      int64_t ldc) {
  int r = 0;
  for (; r + 6 <= m; r += 6) micro<T, 6, CV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc);
  for (; r + 2 <= m; r += 2) micro<T, 2, CV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc);
  for (; r < m; ++r) micro<T, 1, CV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc);
}

// C[m x n] (= or +=) A * B, n a multiple of the vector width.
template <typename T, bool ACC>
inline void gemm(int m, int n, int K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb, T* C,
                 int64_t ldc) {
  constexpr int W = VT<T>::W;
  int c = 0;
  for (; c + 2 * W <= n; c += 2 * W) gemm_cols<T, ACC, 2>(m, K, A, ars, acs, B + c, ldb, C + c, ldc);
  for (; c < n; c += W) gemm_cols<T, ACC, 1>(m, K, A, ars, acs, B + c, ldb, C + c, ldc);
}

constexpr int BQ = 64;  // query rows per tile
constexpr int BK = 64;  // key columns per tile (a multiple of every vector width)

inline int round_up(int x, int w) { return (x + w - 1) / w * w; }

// Per-thread scratch space.
template <typename T>
struct Scratch {
  std::vector<T> qs, o, kt, vs, s, dos, dp, ks, vt, dk, dv, dq, rowv, rowv2;
  Scratch(int dp_, int64_t max_len, bool backward) {
    qs.assign(BQ * dp_, T(0));
    o.assign(BQ * dp_, T(0));
    kt.assign(dp_ * BK, T(0));
    vs.assign(BK * dp_, T(0));
    s.assign(BQ * BK, T(0));
    if (backward) {
      dos.assign(BQ * dp_, T(0));
      dp.assign(BQ * BK, T(0));
      ks.assign(BK * dp_, T(0));
      vt.assign(dp_ * BK, T(0));
      dk.assign(BK * dp_, T(0));
      dv.assign(BK * dp_, T(0));
      dq.assign(std::max<int64_t>(max_len, 1) * dp_, T(0));
      rowv.assign(std::max<int64_t>(max_len, 1), T(0));
      rowv2.assign(std::max<int64_t>(max_len, 1), T(0));
    }
  }
};

// Copy rows [r0, r0+n) of one (jet, head) slice into dst[n x dp] (row-major, zero padding to dp and
// to n_pad rows), multiplied by mul.
template <typename T>
inline void load_rows(const TView<T>& x, int64_t pos, int64_t h, int64_t r0, int n, int n_pad, int D, int dp,
                      T mul, T* dst) {
  for (int r = 0; r < n_pad; ++r) {
    T* d = dst + (int64_t)r * dp;
    if (r < n) {
      const T* src = x.ptr(pos, h, r0 + r);
      for (int c = 0; c < D; ++c) d[c] = src[c] * mul;
    } else {
      for (int c = 0; c < D; ++c) d[c] = T(0);
    }
    for (int c = D; c < dp; ++c) d[c] = T(0);
  }
}

// Transposed copy: dst[d * ld + r] = x[r0 + r][d] for r < n, zero for n <= r < n_pad and d >= D.
template <typename T>
inline void load_rows_t(const TView<T>& x, int64_t pos, int64_t h, int64_t r0, int n, int n_pad, int D, int dp,
                        int64_t ld, T* dst) {
  for (int r = 0; r < n_pad; ++r) {
    if (r < n) {
      const T* src = x.ptr(pos, h, r0 + r);
      for (int c = 0; c < D; ++c) dst[c * ld + r] = src[c];
    } else {
      for (int c = 0; c < D; ++c) dst[c * ld + r] = T(0);
    }
  }
  for (int c = D; c < dp; ++c)
    for (int r = 0; r < n_pad; ++r) dst[c * ld + r] = T(0);
}

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// One forward task: query rows [i0, i0 + bq) of (jet, head). Writes out rows and lse.
template <typename T>
void fwd_task(const FwdArgs<T>& a, const Job& job, int64_t h, int64_t i0, Scratch<T>& sc) {
  constexpr int W = VT<T>::W;
  const int D = a.D, dp = round_up(D, W);
  const int64_t L = job.len;
  const int bq = (int)std::min<int64_t>(BQ, L - i0);
  const T c = T(a.scale * kLog2e);
  T* qs = sc.qs.data();
  T* o = sc.o.data();
  T* kt = sc.kt.data();
  T* vs = sc.vs.data();
  T* s = sc.s.data();
  T m[BQ], l[BQ];
  load_rows(a.q, job.pos, h, i0, bq, bq, D, dp, c, qs);  // scores come out in log2 units
  for (int r = 0; r < bq; ++r) {
    m[r] = -INFINITY;
    l[r] = T(0);
    for (int cc = 0; cc < dp; ++cc) o[r * dp + cc] = T(0);
  }
  for (int64_t k0 = 0; k0 < L; k0 += BK) {
    const int bk = (int)std::min<int64_t>(BK, L - k0);
    const int bkp = round_up(bk, W);
    load_rows_t(a.k, job.pos, h, k0, bk, bkp, D, dp, BK, kt);
    load_rows(a.v, job.pos, h, k0, bk, bkp, D, dp, T(1), vs);
    gemm<T, false>(bq, bkp, D, qs, dp, 1, kt, BK, s, BK);  // scores q.k * scale * log2(e)
    for (int r = 0; r < bq; ++r) {
      T* sr = s + r * BK;
      for (int j = bk; j < bkp; ++j) sr[j] = -INFINITY;  // padded keys of the last tile
      const T mx = row_max(sr, bkp, m[r]);
      const T alpha = m[r] == -INFINITY ? T(0) : std::exp2(m[r] - mx);
      const T sum = exp2_row(sr, bk, bkp, T(1), mx);
      l[r] = l[r] * alpha + sum;
      m[r] = mx;
      if (alpha != T(1)) {
        T* orow = o + r * dp;
        for (int cc = 0; cc < dp; ++cc) orow[cc] *= alpha;
      }
    }
    gemm<T, true>(bq, dp, bk, s, BK, 1, vs, dp, o, dp);  // o += p v
  }
  for (int r = 0; r < bq; ++r) {
    const T inv = T(1) / l[r];
    T* dst = a.out.ptr(job.pos, h, i0 + r);
    for (int cc = 0; cc < D; ++cc) dst[cc] = o[r * dp + cc] * inv;
    *a.lse.ptr(job.pos, h, i0 + r) = T((double)m[r] * kLn2 + std::log((double)l[r]));
  }
}

// One backward task: the whole (jet, head) slice, keys outer and queries inner; dQ accumulated
// in scratch, so no two tasks write the same memory.
template <typename T>
void bwd_task(const BwdArgs<T>& a, const Job& job, int64_t h, Scratch<T>& sc) {
  constexpr int W = VT<T>::W;
  const int D = a.D, dp = round_up(D, W);
  const int64_t L = job.len;
  const T c = T(a.scale * kLog2e);
  T* qs = sc.qs.data();
  T* dos = sc.dos.data();
  T* kt = sc.kt.data();
  T* vt = sc.vt.data();
  T* ks = sc.ks.data();
  T* s = sc.s.data();
  T* dpm = sc.dp.data();
  T* dk = sc.dk.data();
  T* dv = sc.dv.data();
  T* dq = sc.dq.data();
  T* delta = sc.rowv.data();
  T* lse2 = sc.rowv2.data();
  for (int64_t i = 0; i < L; ++i) {
    const T* go = a.dout.ptr(job.pos, h, i);
    const T* oo = a.out.ptr(job.pos, h, i);
    T acc = T(0);
    for (int cc = 0; cc < D; ++cc) acc += go[cc] * oo[cc];
    delta[i] = acc;
    lse2[i] = *a.lse.ptr(job.pos, h, i) * T(kLog2e);
  }
  std::fill(dq, dq + L * dp, T(0));
  for (int64_t k0 = 0; k0 < L; k0 += BK) {
    const int bk = (int)std::min<int64_t>(BK, L - k0);
    const int bkp = round_up(bk, W);
    load_rows_t(a.k, job.pos, h, k0, bk, bkp, D, dp, BK, kt);
    load_rows_t(a.v, job.pos, h, k0, bk, bkp, D, dp, BK, vt);
    load_rows(a.k, job.pos, h, k0, bk, bk, D, dp, T(1), ks);
    std::fill(dk, dk + bk * dp, T(0));
    std::fill(dv, dv + bk * dp, T(0));
    for (int64_t i0 = 0; i0 < L; i0 += BQ) {
      const int bq = (int)std::min<int64_t>(BQ, L - i0);
      load_rows(a.q, job.pos, h, i0, bq, bq, D, dp, T(1), qs);
      load_rows(a.dout, job.pos, h, i0, bq, bq, D, dp, T(1), dos);
      gemm<T, false>(bq, bkp, D, qs, dp, 1, kt, BK, s, BK);     // scores
      gemm<T, false>(bq, bkp, D, dos, dp, 1, vt, BK, dpm, BK);  // dP = dO V^T
      for (int r = 0; r < bq; ++r) {
        T* sr = s + r * BK;
        exp2_row(sr, bk, bkp, c, lse2[i0 + r]);  // P, zero on padded keys
        T* dr = dpm + r * BK;
        const T dl = delta[i0 + r];
        for (int j = 0; j < bkp; ++j) dr[j] = sr[j] * (dr[j] - dl);  // dS (unscaled)
      }
      gemm<T, true>(bk, dp, bq, s, 1, BK, dos, dp, dv, dp);                // dV += P^T dO
      gemm<T, true>(bk, dp, bq, dpm, 1, BK, qs, dp, dk, dp);               // dK += dS^T Q
      gemm<T, true>(bq, dp, bk, dpm, BK, 1, ks, dp, dq + i0 * dp, dp);     // dQ += dS K
    }
    const T sc_ = T(a.scale);
    for (int j = 0; j < bk; ++j) {
      T* gk = a.dk.ptr(job.pos, h, k0 + j);
      T* gv = a.dv.ptr(job.pos, h, k0 + j);
      for (int cc = 0; cc < D; ++cc) {
        gk[cc] = dk[j * dp + cc] * sc_;
        gv[cc] = dv[j * dp + cc];
      }
    }
  }
  const T sc_ = T(a.scale);
  for (int64_t i = 0; i < L; ++i) {
    T* gq = a.dq.ptr(job.pos, h, i);
    for (int cc = 0; cc < D; ++cc) gq[cc] = dq[i * dp + cc] * sc_;
  }
}

// Dynamic scheduling on top of at::parallel_for: one worker per thread pulls tasks (ordered
// most expensive first) from a shared counter, so very unequal jets still balance.
template <typename T, typename F>
void run_dynamic(int64_t ntasks, int dp, int64_t max_len, bool backward, const F& f) {
  if (ntasks == 0) return;
  std::atomic<int64_t> next{0};
  const int64_t nw = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), ntasks));
  at::parallel_for(0, nw, 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      Scratch<T> sc(dp, max_len, backward);
      for (int64_t t = next.fetch_add(1); t < ntasks; t = next.fetch_add(1)) f(t, sc);
    }
  });
}

template <typename T>
void attention_forward(const FwdArgs<T>& a, const std::vector<Job>& jobs, int64_t max_len) {
  constexpr int W = VT<T>::W;
  // Tasks: (job, head, query tile), jobs already sorted longest first.
  std::vector<std::array<int64_t, 3>> tasks;
  for (size_t j = 0; j < jobs.size(); ++j)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i0 = 0; i0 < jobs[j].len; i0 += BQ) tasks.push_back({(int64_t)j, h, i0});
  run_dynamic<T>((int64_t)tasks.size(), round_up(a.D, W), max_len, false, [&](int64_t t, Scratch<T>& sc) {
    fwd_task<T>(a, jobs[tasks[t][0]], tasks[t][1], tasks[t][2], sc);
  });
}

template <typename T>
void attention_backward(const BwdArgs<T>& a, const std::vector<Job>& jobs, int64_t max_len) {
  constexpr int W = VT<T>::W;
  const int64_t ntasks = (int64_t)jobs.size() * a.H;
  run_dynamic<T>(ntasks, round_up(a.D, W), max_len, true, [&](int64_t t, Scratch<T>& sc) {
    bwd_task<T>(a, jobs[t / a.H], t % a.H, sc);
  });
}

}  // namespace E2E_ATTN_NS
