// depthwise_conv2d's compute loop (XNNPACK's dwconv2d-chw scheme), written once over an ISA type I (see
// sparse_conv_tiles.h) and included by each ISA file after its target pragma, inside an anonymous namespace.
//
// One work item (image n, channel c): fill the stride-phase planes of x[n, c] (zero padding included), then
// compute the output rows in vectors of I::L output pixels. The unrolled path (k x k taps: 3x3 and 5x5 at stride
// 1 or 2, 7x7 at stride 1, 3x3 dilated by 2) keeps the k² weights in registers (as many as fit) and computes R
// output rows together: each input vector is loaded once and FMA'd into every one of the R rows it feeds (3x3
// stride 1, R = 4: 18 loads for 36 FMAs). Any other geometry runs the taps' offsets one by one. A row's last vector is computed whole (its extra
// lanes read the next row or the buffer's slack) and stored masked.

namespace dw {

template <class I>
inline void put(const depthwise::Job& j, typename I::V v, float bias, float* o, const float* r, int n) {
  v = I::add(v, I::set1(bias));
  if (r) v = I::add(v, n == I::L ? I::load(r) : I::load_n(r, n));
  v = I::min(I::set1(j.hi), I::max(I::set1(j.lo), v));  // NaN passes both
  if (n == I::L) I::storeu(o, v);
  else I::store_n(o, v, n);
}

// Row r of x[n, c] (s: its first element) split into column phases 0 and 1 (stride 2): d0[jj] = padded x[2jj],
// d1[jj] = padded x[2jj + 1], whole vectors deinterleaved where they lie inside the row.
template <class I>
inline void split_row(const depthwise::Job& j, const float* s, float* d0, float* d1) {
  const auto at = [&](int64_t q) { return q >= 0 && q < j.W ? s[q] : 0.0f; };
  int64_t k = 0;
  for (; k < j.Wq && 2 * k < j.pw; ++k) d0[k] = at(2 * k - j.pw), d1[k] = at(2 * k + 1 - j.pw);
  for (; k + I::L <= j.Wq && 2 * (k + I::L) - j.pw <= j.W; k += I::L) {
    typename I::V e, o;
    I::even_odd(I::load(s + 2 * k - j.pw), I::load(s + 2 * k - j.pw + I::L), e, o);
    I::storeu(d0 + k, e);
    I::storeu(d1 + k, o);
  }
  if (k < j.Wq) {  // the row's end (and zeros past it) through masked loads
    const int64_t left = j.W - (2 * k - j.pw);
    const int n = left < 0 ? 0 : left > 2 * I::L ? 2 * I::L : int(left), m = j.Wq - k < I::L ? int(j.Wq - k) : I::L;
    typename I::V e, o;
    I::even_odd(I::load_n(s + 2 * k - j.pw, n < I::L ? n : I::L), I::load_n(s + 2 * k - j.pw + I::L, n > I::L ? n - I::L : 0), e, o);
    I::store_n(d0 + k, e, m);
    I::store_n(d1 + k, o, m);
    k += m;
  }
  for (; k < j.Wq; ++k) d0[k] = at(2 * k - j.pw), d1[k] = at(2 * k + 1 - j.pw);
}

// Plane (a, b) of x[n, c]: dst[i, jj] = x[sh*i + a - ph, sw*jj + b - pw], 0 outside x.
template <class I>
__attribute__((optimize("no-tree-loop-distribute-patterns"))) inline void fill(const depthwise::Job& j, const float* src, float* dst) {
  const bool pairs = j.sw == 2 && j.sx == 1;  // phases 0 and 1 split together from each row
  for (int a = 0; a < j.sh; ++a)
    for (int b = 0; b < j.sw; ++b) {
      if (!j.used[a * j.sw + b] || (pairs && b == 1 && j.used[a * 2])) continue;
      if (pairs && b == 0 && j.used[a * 2 + 1]) {
        float* p = dst + a * 2 * j.plane;
        for (int64_t i = 0; i < j.Hq; ++i) {
          const int64_t r = int64_t(j.sh) * i + a - j.ph;
          if (r >= 0 && r < j.H) split_row<I>(j, src + r * j.sy, p + i * j.Wq, p + j.plane + i * j.Wq);
          else
            for (int64_t k = 0; k < j.Wq; ++k) p[i * j.Wq + k] = p[j.plane + i * j.Wq + k] = 0.0f;
        }
        continue;
      }
      float* p = dst + (a * j.sw + b) * j.plane;
      int64_t j0 = (j.pw - b + j.sw - 1) / j.sw, j1 = (j.W + j.pw - b + j.sw - 1) / j.sw;
      j0 = j0 < j.Wq ? j0 : j.Wq;
      j1 = j1 < j.Wq ? j1 : j.Wq;
      for (int64_t i = 0; i < j.Hq; ++i) {
        float* d = p + i * j.Wq;
        const int64_t r = int64_t(j.sh) * i + a - j.ph;
        if (r < 0 || r >= j.H || j0 >= j1) {
          for (int64_t k = 0; k < j.Wq; ++k) d[k] = 0.0f;
          continue;
        }
        for (int64_t k = 0; k < j0; ++k) d[k] = 0.0f;
        const float* s = src + r * j.sy + (int64_t(j.sw) * j0 + b - j.pw) * j.sx;
        const int64_t n = j1 - j0;
        if (j.sw == 1 && j.sx == 1) {
          int64_t k = 0;
          for (; k + I::L <= n; k += I::L) I::storeu(d + j0 + k, I::load(s + k));
          if (k < n) I::store_n(d + j0 + k, I::load_n(s + k, int(n - k)), int(n - k));
        } else {
          const int64_t step = j.sw * j.sx;
          for (int64_t k = 0; k < n; ++k) d[j0 + k] = s[k * step];
        }
        for (int64_t k = j1; k < j.Wq; ++k) d[k] = 0.0f;
      }
    }
}

// R output rows from y0 (k x k taps, stride s, dilation d): per vector of pixels, each of the (R-1)*s + (k-1)*d + 1
// input rows' k vectors is loaded once and FMA'd into the rows it feeds. w: the k² broadcast weights.
template <class I, int K, int S, int D, int R>
inline void fast_rows(const depthwise::Job& j, const float* pl, const typename I::V* w, float bias, int64_t y0, float* out,
                      const float* res) {
  for (int64_t x0 = 0; x0 < j.Wo; x0 += I::L) {
    typename I::V acc[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] = I::zero();
#pragma GCC unroll 64
    for (int iy = 0; iy < (R - 1) * S + (K - 1) * D + 1; ++iy) {
      const float* row = pl + (iy % S) * S * j.plane + (y0 + iy / S) * j.Wq + x0;
#pragma GCC unroll 8
      for (int kx = 0; kx < K; ++kx) {
        const typename I::V v = I::load(row + (kx * D % S) * j.plane + kx * D / S);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const int ky = (iy - r * S) / D;
          if (iy - r * S >= 0 && (iy - r * S) % D == 0 && ky < K) acc[r] = I::fma(w[ky * K + kx], v, acc[r]);
        }
      }
    }
    const int n = j.Wo - x0 < I::L ? int(j.Wo - x0) : I::L;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
      put<I>(j, acc[r], bias, out + (y0 + r) * j.Wo + x0, res ? res + (y0 + r) * j.Wo + x0 : nullptr, n);
  }
}

// The last Ho % R rows, R' < R at a time.
template <class I, int K, int S, int D, int R>
inline void fast_tail(const depthwise::Job& j, const float* pl, const typename I::V* w, float bias, int64_t y0, float* out,
                      const float* res) {
  if constexpr (R > 1) {
    if (j.Ho - y0 < R) return fast_tail<I, K, S, D, R - 1>(j, pl, w, bias, y0, out, res);
  }
  if (y0 < j.Ho) fast_rows<I, K, S, D, R>(j, pl, w, bias, y0, out, res);
}

template <class I, int K, int S, int D = 1>
inline void fast_channel(const depthwise::Job& j, const float* pl, const float* weight, float bias, float* out, const float* res) {
  constexpr int R = I::REGS >= 32 ? 6 : 4;  // accumulators beside the k² weights
  typename I::V w[K * K];
  for (int t = 0; t < K * K; ++t) w[t] = I::set1(weight[t]);
  int64_t y0 = 0;
  for (; y0 + R <= j.Ho; y0 += R) fast_rows<I, K, S, D, R>(j, pl, w, bias, y0, out, res);
  fast_tail<I, K, S, D, R - 1>(j, pl, w, bias, y0, out, res);
}

template <class I>
inline void any_channel(const depthwise::Job& j, const float* pl, const float* weight, float bias, float* out, const float* res) {
  const int taps = j.kh * j.kw;
  for (int64_t y = 0; y < j.Ho; ++y)
    for (int64_t x0 = 0; x0 < j.Wo; x0 += I::L) {
      const float* at = pl + y * j.Wq + x0;
      typename I::V acc = I::zero();
      for (int t = 0; t < taps; ++t) acc = I::fma(I::set1(weight[t]), I::load(at + j.offsets[t]), acc);
      const int n = j.Wo - x0 < I::L ? int(j.Wo - x0) : I::L;
      put<I>(j, acc, bias, out + y * j.Wo + x0, res ? res + y * j.Wo + x0 : nullptr, n);
    }
}

template <class I>
void channel(const depthwise::Job& j, int64_t item, float* scratch) {
  const int64_t n = item / j.C, c = item % j.C, plane = j.Ho * j.Wo;
  fill<I>(j, j.in + n * j.sn + c * j.sc, scratch);
  float* out = j.out + item * plane;
  const float* res = j.residual ? j.residual + item * plane : nullptr;
  const float* w = j.weight + c * j.kh * j.kw;
  const float bias = j.bias ? j.bias[c] : 0.0f;
  switch (j.fast) {
    case 31: return fast_channel<I, 3, 1>(j, scratch, w, bias, out, res);
    case 32: return fast_channel<I, 3, 2>(j, scratch, w, bias, out, res);
    case 51: return fast_channel<I, 5, 1>(j, scratch, w, bias, out, res);
    case 52: return fast_channel<I, 5, 2>(j, scratch, w, bias, out, res);
    case 71: return fast_channel<I, 7, 1>(j, scratch, w, bias, out, res);
    case 231: return fast_channel<I, 3, 1, 2>(j, scratch, w, bias, out, res);  // dilated (DeepLab's backbones)
    default: return any_channel<I>(j, scratch, w, bias, out, res);
  }
}

}  // namespace dw
