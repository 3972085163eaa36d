// Blocked flash-attention style CPU kernels (forward and backward) for masked attention.
//
// This file is included twice by csrc/cpu/attention.cpp: once inside a
// `#pragma GCC target("avx2,fma")` region (namespace attn_avx2) and once for the baseline ISA
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

// Broadcast a scalar to every lane. (`V{} + x` would cost a real addition, since 0 + x is not an
// identity for x = -0, and GCC does not turn a lane loop into a broadcast.)
template <typename V>
inline V splat(float x) {
#if E2E_ATTN_FMA
  return _mm256_set1_ps(x);
#else
  return (V){} - (-x);  // not hot on the baseline path
#endif
}
template <typename V>
inline V splat(double x) {
#if E2E_ATTN_FMA
  return _mm256_set1_pd(x);
#else
  return (V){} - (-x);
#endif
}

inline f8 vmax(f8 a, f8 b) {
#if E2E_ATTN_FMA
  return _mm256_max_ps(a, b);
#else
  return a > b ? a : b;
#endif
}

// Vector 2^x for x <= 0 (the softmax argument s - max). Range reduction to f in [-0.5, 0.5]
// by the 1.5*2^23 rounding trick, degree-5 polynomial fitted to the relative error (max 8e-8,
// below float32's epsilon), exponent by integer add. x is clamped at -126, so -inf (a masked key)
// gives 2^-126 ~ 1e-38: zero for every purpose of a softmax whose largest term is 1.
inline f8 exp2v(f8 x) {
  x = vmax(splat<f8>(-126.0f), x);  // (maxps returns its second operand for NaN: NaN stays NaN)
  const f8 t = x + 12582912.0f;        // 1.5 * 2^23: the low mantissa bits of t hold round(x)
  const f8 f = x - (t - 12582912.0f);  // in [-0.5, 0.5]
  f8 p = splat<f8>(1.3266995e-3f);
  p = vfma(p, f, splat<f8>(9.6754581e-3f));
  p = vfma(p, f, splat<f8>(5.5507428e-2f));
  p = vfma(p, f, splat<f8>(2.4022122e-1f));
  p = vfma(p, f, splat<f8>(6.9314695e-1f));
  p = vfma(p, f, splat<f8>(1.0000001f));
  return (f8)((i8)p + ((i8)t << 23));  // (bits(t) << 23) == round(x) << 23 (mod 2^32)
}

// out[i] = 2^x[i] for i < n, computed in whole vectors (x and out hold round_up(n, W) entries).
inline void exp2_vec(const float* x, int n, float* out) {
  for (int i = 0; i < n; i += 8) vstore(out + i, exp2v(vload<f8>(x + i)));
}
inline void exp2_vec(const double* x, int n, double* out) {
  for (int i = 0; i < n; ++i) out[i] = std::exp2(x[i]);
}

// s[j] <- 2^(s[j]*c - sub) for j < n (n % W == 0); entries equal to -inf give (about) 0.
// Returns the lane-wise partial sums of the row (reduce with hsum).
inline f8 exp2_row(float* s, int n, float c, float sub) {
  f8 acc0 = {}, acc1 = {};
  const f8 cv = splat<f8>(c), sv = splat<f8>(-sub);
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    const f8 e0 = exp2v(vfma(vload<f8>(s + j), cv, sv));
    const f8 e1 = exp2v(vfma(vload<f8>(s + j + 8), cv, sv));
    acc0 += e0;
    acc1 += e1;
    vstore(s + j, e0);
    vstore(s + j + 8, e1);
  }
  for (; j < n; j += 8) {
    const f8 e = exp2v(vfma(vload<f8>(s + j), cv, sv));
    acc0 += e;
    vstore(s + j, e);
  }
  return acc0 + acc1;
}
inline d4 exp2_row(double* s, int n, double c, double sub) {
  double sum = 0.0;
  for (int j = 0; j < n; ++j) {
    const double e = std::exp2(s[j] * c - sub);  // exactly 0 for s[j] = -inf
    s[j] = e;
    sum += e;
  }
  return d4{sum, 0.0, 0.0, 0.0};
}

inline float hsum(f8 v) {
#if E2E_ATTN_FMA
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
#else
  float r = 0.f;
  for (int w = 0; w < 8; ++w) r += v[w];
  return r;
#endif
}
inline double hsum(d4 v) { return (v[0] + v[1]) + (v[2] + v[3]); }

// max(init, s[0..n)) for n % W == 0.
inline float row_max(const float* s, int n, float init) {
  f8 mx = splat<f8>(init), mx1 = mx;
  int j = 0;
  for (; j + 16 <= n; j += 16) {
    mx = vmax(vload<f8>(s + j), mx);
    mx1 = vmax(vload<f8>(s + j + 8), mx1);
  }
  for (; j < n; j += 8) mx = vmax(vload<f8>(s + j), mx);
  mx = vmax(mx1, mx);
#if E2E_ATTN_FMA
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  return _mm_cvtss_f32(x);
#else
  float r = init;
  for (int w = 0; w < 8; ++w) r = std::max(r, mx[w]);
  return r;
#endif
}
inline double row_max(const double* s, int n, double init) {
  double r = init;
  for (int j = 0; j < n; ++j) r = std::max(r, s[j]);
  return r;
}

// C[m x n] (= or +=) A[m x K] * B[K x n], with A read at A[r*ars + k*acs] (so a transposed
// operand needs no copy), B row stride ldb, C row stride ldc, n % W == 0. With `rs` (ACC only),
// C's row r is first multiplied by rs[r] (the online-softmax rescale, fused into the load).
template <typename T, int R, int CV, bool ACC>
inline void micro(int K, const T* __restrict A, int64_t ars, int64_t acs, const T* __restrict B, int64_t ldb,
                  T* __restrict C, int64_t ldc, const T* __restrict rs) {
  using V = typename VT<T>::V;
  constexpr int W = VT<T>::W;
  V acc[R][CV];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int c = 0; c < CV; ++c) {
      if (ACC) {
        acc[r][c] = vload<V>(C + r * ldc + c * W);
        if (rs) acc[r][c] *= rs[r];
      } else {
        acc[r][c] = V{};
      }
    }
  for (int k = 0; k < K; ++k) {
    V b[CV];
#pragma GCC unroll 4
    for (int c = 0; c < CV; ++c) b[c] = vload<V>(B + k * ldb + c * W);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const V a = splat<V>(A[r * ars + k * acs]);
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
                      int64_t ldc, const T* rs) {
  int r = 0;
  for (; r + 6 <= m; r += 6)
    micro<T, 6, CV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
  for (; r + 2 <= m; r += 2)
    micro<T, 2, CV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
  for (; r < m; ++r) micro<T, 1, CV, ACC>(K, A + r * ars, ars, acs, B, ldb, C + r * ldc, ldc, rs ? rs + r : nullptr);
}

// C[m x n] (= or +=) A * B, n a multiple of the vector width (optionally C rows rescaled by rs first).
template <typename T, bool ACC>
inline void gemm(int m, int n, int K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb, T* C,
                 int64_t ldc, const T* rs = nullptr) {
  constexpr int W = VT<T>::W;
  int c = 0;
  for (; c + 2 * W <= n; c += 2 * W) gemm_cols<T, ACC, 2>(m, K, A, ars, acs, B + c, ldb, C + c, ldc, rs);
  for (; c < n; c += W) gemm_cols<T, ACC, 1>(m, K, A, ars, acs, B + c, ldb, C + c, ldc, rs);
}

constexpr int BQ = 48;  // query rows per tile (a multiple of the 6-row micro-kernel: no remainder rows)
constexpr int BK = 128;  // key columns per tile (a multiple of every vector width)
static_assert(BQ % 8 == 0, "exp2_vec processes the per-row arrays (BQ entries) in whole 8-lane vectors");
static_assert(BK % 16 == 0, "load_tiles_t copies 16-row chunks that must not straddle two key tiles");

inline int round_up(int x, int w) { return (x + w - 1) / w * w; }
inline int64_t round_up64(int64_t x, int64_t w) { return (x + w - 1) / w * w; }

// Copy rows [r0, r0+n) of one (jet, head) slice into dst[n_pad x dp] (row-major, zero padding to dp
// and to n_pad rows), multiplied by mul.
template <typename T>
inline void load_rows(const TView<T>& x, int64_t pos, int64_t h, int64_t r0, int64_t n, int64_t n_pad, int D,
                      int dp, T mul, T* dst) {
  for (int64_t r = 0; r < n_pad; ++r) {
    T* d = dst + r * dp;
    if (r < n) {
      const T* src = x.ptr(pos, h, r0 + r);
      for (int c = 0; c < D; ++c) d[c] = src[c] * mul;
    } else {
      for (int c = 0; c < D; ++c) d[c] = T(0);
    }
    for (int c = D; c < dp; ++c) d[c] = T(0);
  }
}

// Transposed copy of rows [0, n) in key tiles: tile t = r / BK is a dp x BK block at dst + t*dp*BK
// with dst_t[d * BK + r % BK] = x[r][d]; zero for n <= r < n_pad (n_pad % BK == 0) and for d >= D.
// Each tile is contiguous, so the dp rows a micro-kernel streams never alias in a 4 KiB-strided
// L1 set (a full-length K^T with a 2,000-key row stride would).
template <typename T>
inline void load_tiles_t(const TView<T>& x, int64_t pos, int64_t h, int64_t n, int64_t n_pad, int D, int dp,
                         T* dst) {
  std::fill(dst, dst + n_pad * dp, T(0));
  constexpr int CH = 16;  // rows per chunk: the source rows stay in L1 while columns are scattered
  for (int64_t r0 = 0; r0 < n; r0 += CH) {
    const int64_t rn = std::min<int64_t>(CH, n - r0);  // BK % CH == 0: a chunk never spans two tiles
    const T* src[CH];
    for (int64_t r = 0; r < rn; ++r) src[r] = x.ptr(pos, h, r0 + r);
    T* tile = dst + (r0 / BK) * dp * BK + r0 % BK;
    for (int c = 0; c < D; ++c) {
      T* d = tile + c * BK;
      for (int64_t r = 0; r < rn; ++r) d[r] = src[r][c];
    }
  }
}

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

// Keys and values of every (jet, head), packed once per forward call so that the query tiles
// (separate tasks) stream them from contiguous memory: K^T in dp x BK tiles (keys contiguous) and V as
// Lp x dp, Lp = the jet's length rounded up to BK, zero padded.
template <typename T>
struct PackedKV {
  std::unique_ptr<T[]> buf;  // uninitialised: the packing writes every element, padding included
  std::vector<int64_t> off;  // per job: first padded token of the job (sum of earlier Lp)
  int64_t H = 0;
  int dp = 0;
  T* kt(size_t j, int64_t h, int64_t lp) { return buf.get() + 2 * dp * (off[j] * H + h * lp); }
  T* v(size_t j, int64_t h, int64_t lp) { return kt(j, h, lp) + dp * lp; }
};

// One forward task: query rows [i0, i0 + bq) of (jet, head). Writes out rows and lse.
template <typename T>
void fwd_task(const FwdArgs<T>& a, const Job& job, size_t j, int64_t h, int64_t i0, PackedKV<T>& kv, T* scratch) {
  constexpr int W = VT<T>::W;
  const int D = a.D, dp = kv.dp;
  const int64_t L = job.len, Lp = round_up64(L, BK);
  const int bq = (int)std::min<int64_t>(BQ, L - i0);
  const T c = T(a.scale * kLog2e);
  T* qs = scratch;         // BQ x dp
  T* o = qs + BQ * dp;     // BQ x dp
  T* s = o + BQ * dp;      // BQ x BK
  const T* kt = kv.kt(j, h, Lp);
  const T* vv = kv.v(j, h, Lp);
  using V = typename VT<T>::V;
  V lv[BQ];                                // lane-wise running sums of each row
  T m[BQ], mnew[BQ], alpha[BQ], diff[BQ];  // running max (log2 units), its update and rescale
  load_rows(a.q, job.pos, h, i0, bq, bq, D, dp, c, qs);  // scores come out in log2 units
  for (int r = 0; r < BQ; ++r) {
    m[r] = -INFINITY;
    diff[r] = T(0);
  }
  for (int64_t k0 = 0; k0 < L; k0 += BK) {
    const int bk = (int)std::min<int64_t>(BK, L - k0);
    const int bkp = round_up(bk, W);
    gemm<T, false>(bq, bkp, D, qs, dp, 1, kt + k0 * dp, BK, s, BK);  // scores q.k * scale * log2(e)
    for (int r = 0; r < bq; ++r) {
      T* sr = s + r * BK;
      for (int jj = bk; jj < bkp; ++jj) sr[jj] = -INFINITY;  // padded keys of the last tile
      mnew[r] = row_max(sr, bkp, m[r]);
    }
    if (k0 > 0) {
      for (int r = 0; r < bq; ++r) diff[r] = m[r] - mnew[r];
      exp2_vec(diff, bq, alpha);  // rescale of the earlier tiles, all rows at once
    }
    for (int r = 0; r < bq; ++r) {
      const V e = exp2_row(s + r * BK, bkp, T(1), mnew[r]);
      lv[r] = k0 == 0 ? e : lv[r] * alpha[r] + e;
      m[r] = mnew[r];
    }
    if (k0 == 0)
      gemm<T, false>(bq, dp, bkp, s, BK, 1, vv, dp, o, dp);  // o = p v
    else
      gemm<T, true>(bq, dp, bkp, s, BK, 1, vv + k0 * dp, dp, o, dp, alpha);  // o = alpha o + p v
  }
  for (int r = 0; r < bq; ++r) {
    const T l = hsum(lv[r]);
    const T inv = T(1) / l;
    T* dst = a.out.ptr(job.pos, h, i0 + r);
    for (int cc = 0; cc < D; ++cc) dst[cc] = o[r * dp + cc] * inv;
    *a.lse.ptr(job.pos, h, i0 + r) = T((double)m[r] * kLn2 + std::log((double)l));
  }
}

// One backward task: the whole (jet, head) slice, keys outer and queries inner; dQ accumulated
// in scratch, so no two tasks write the same memory. Q, dO, K (rows), K^T and V^T are packed once
// per task.
template <typename T>
void bwd_task(const BwdArgs<T>& a, const Job& job, int64_t h, T* scratch) {
  constexpr int W = VT<T>::W;
  const int D = a.D, dp = round_up(D, W);
  const int64_t L = job.len, Lp = round_up64(L, BK);
  const T c = T(a.scale * kLog2e);
  T* qs = scratch;          // Lp x dp
  T* dos = qs + Lp * dp;    // Lp x dp
  T* ks = dos + Lp * dp;    // Lp x dp
  T* kt = ks + Lp * dp;     // K^T, dp x BK tiles
  T* vt = kt + Lp * dp;     // V^T, dp x BK tiles
  T* dq = vt + Lp * dp;     // Lp x dp
  T* delta = dq + Lp * dp;  // Lp
  T* lse2 = delta + Lp;     // Lp
  T* s = lse2 + Lp;         // BQ x BK
  T* dpm = s + BQ * BK;     // BQ x BK
  T* dk = dpm + BQ * BK;    // BK x dp
  T* dv = dk + BK * dp;     // BK x dp
  load_rows(a.q, job.pos, h, 0, L, L, D, dp, T(1), qs);
  load_rows(a.dout, job.pos, h, 0, L, L, D, dp, T(1), dos);
  load_rows(a.k, job.pos, h, 0, L, Lp, D, dp, T(1), ks);
  load_tiles_t(a.k, job.pos, h, L, Lp, D, dp, kt);
  load_tiles_t(a.v, job.pos, h, L, Lp, D, dp, vt);
  for (int64_t i = 0; i < L; ++i) {
    const T* oo = a.out.ptr(job.pos, h, i);
    const T* go = dos + i * dp;
    T acc = T(0);
    for (int cc = 0; cc < D; ++cc) acc += go[cc] * oo[cc];
    delta[i] = acc;
    lse2[i] = *a.lse.ptr(job.pos, h, i) * T(kLog2e);
  }
  std::fill(dq, dq + L * dp, T(0));
  for (int64_t k0 = 0; k0 < L; k0 += BK) {
    const int bk = (int)std::min<int64_t>(BK, L - k0);
    const int bkp = round_up(bk, W);
    for (int64_t i0 = 0; i0 < L; i0 += BQ) {
      const int bq = (int)std::min<int64_t>(BQ, L - i0);
      gemm<T, false>(bq, bkp, D, qs + i0 * dp, dp, 1, kt + k0 * dp, BK, s, BK);     // scores
      gemm<T, false>(bq, bkp, D, dos + i0 * dp, dp, 1, vt + k0 * dp, BK, dpm, BK);  // dP = dO V^T
      for (int r = 0; r < bq; ++r) {
        T* sr = s + r * BK;
        for (int jj = bk; jj < bkp; ++jj) sr[jj] = -INFINITY;  // padded keys
        exp2_row(sr, bkp, c, lse2[i0 + r]);                   // P
        T* dr = dpm + r * BK;
        const T dl = delta[i0 + r];
        for (int jj = 0; jj < bkp; ++jj) dr[jj] = sr[jj] * (dr[jj] - dl);  // dS (unscaled)
      }
      if (i0 == 0) {
        gemm<T, false>(bk, dp, bq, s, 1, BK, dos, dp, dv, dp);   // dV = P^T dO
        gemm<T, false>(bk, dp, bq, dpm, 1, BK, qs, dp, dk, dp);  // dK = dS^T Q
      } else {
        gemm<T, true>(bk, dp, bq, s, 1, BK, dos + i0 * dp, dp, dv, dp);   // dV += P^T dO
        gemm<T, true>(bk, dp, bq, dpm, 1, BK, qs + i0 * dp, dp, dk, dp);  // dK += dS^T Q
      }
      gemm<T, true>(bq, dp, bkp, dpm, BK, 1, ks + k0 * dp, dp, dq + i0 * dp, dp);  // dQ += dS K
    }
    const T sc_ = T(a.scale);
    for (int jj = 0; jj < bk; ++jj) {
      T* gk = a.dk.ptr(job.pos, h, k0 + jj);
      T* gv = a.dv.ptr(job.pos, h, k0 + jj);
      for (int cc = 0; cc < D; ++cc) {
        gk[cc] = dk[jj * dp + cc] * sc_;
        gv[cc] = dv[jj * dp + cc];
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
// most expensive first) from a shared counter, so very unequal jets still balance. Each worker
// owns `scratch_elems` elements of scratch space.
template <typename T, typename F>
void run_dynamic(int64_t ntasks, int64_t scratch_elems, const F& f) {
  if (ntasks == 0) return;
  std::atomic<int64_t> next{0};
  const int64_t nw = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), ntasks));
  at::parallel_for(0, nw, 1, [&](int64_t b, int64_t e) {
    for (int64_t w = b; w < e; ++w) {
      std::vector<T> scratch((size_t)scratch_elems);
      for (int64_t t = next.fetch_add(1); t < ntasks; t = next.fetch_add(1)) f(t, scratch.data());
    }
  });
}

template <typename T>
void attention_forward(const FwdArgs<T>& a, const std::vector<Job>& jobs, int64_t max_len) {
  (void)max_len;
  constexpr int W = VT<T>::W;
  const int dp = round_up(a.D, W);
  PackedKV<T> kv;
  kv.H = a.H;
  kv.dp = dp;
  kv.off.resize(jobs.size());
  int64_t padded_total = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    kv.off[j] = padded_total;
    padded_total += round_up64(jobs[j].len, BK);
  }
  kv.buf.reset(new T[(size_t)(2 * dp * padded_total * a.H)]);
  // Pack K^T and V per (jet, head), in parallel.
  const int64_t npack = (int64_t)jobs.size() * a.H;
  at::parallel_for(0, npack, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const size_t j = (size_t)(t / a.H);
      const int64_t h = t % a.H, L = jobs[j].len, Lp = round_up64(L, BK);
      load_tiles_t(a.k, jobs[j].pos, h, L, Lp, a.D, dp, kv.kt(j, h, Lp));
      load_rows(a.v, jobs[j].pos, h, 0, L, Lp, a.D, dp, T(1), kv.v(j, h, Lp));
    }
  });
  // Tasks: (job, head, query tile), jobs already sorted longest first.
  std::vector<std::array<int64_t, 3>> tasks;
  for (size_t j = 0; j < jobs.size(); ++j)
    for (int64_t h = 0; h < a.H; ++h)
      for (int64_t i0 = 0; i0 < jobs[j].len; i0 += BQ) tasks.push_back({(int64_t)j, h, i0});
  run_dynamic<T>((int64_t)tasks.size(), 2 * BQ * dp + BQ * BK, [&](int64_t t, T* scratch) {
    const size_t j = (size_t)tasks[t][0];
    fwd_task<T>(a, jobs[j], j, tasks[t][1], tasks[t][2], kv, scratch);
  });
}

template <typename T>
void attention_backward(const BwdArgs<T>& a, const std::vector<Job>& jobs, int64_t max_len) {
  constexpr int W = VT<T>::W;
  const int dp = round_up(a.D, W);
  const int64_t Lp = round_up64(std::max<int64_t>(max_len, 1), BK);
  const int64_t ntasks = (int64_t)jobs.size() * a.H;
  const int64_t scratch = 6 * Lp * dp + 2 * Lp + 2 * BQ * BK + 2 * BK * dp;
  run_dynamic<T>(ntasks, scratch, [&](int64_t t, T* sc) { bwd_task<T>(a, jobs[t / a.H], t % a.H, sc); });
}

}  // namespace E2E_ATTN_NS
