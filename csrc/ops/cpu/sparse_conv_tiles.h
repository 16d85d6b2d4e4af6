// The sparse convolution's compute loop, written once over an ISA type I (vector V of I::L floats, load,
// masked load, broadcast, fma, store) and included by each ISA file after its target pragma, inside an
// anonymous namespace: no standard-library code here, so nothing compiled for one ISA leaks to another.
//
// A work item is (image, tile of I::L * I::KMAX grid positions, range of output channels). For each output
// channel K <= KMAX vectors of accumulators cover the tile; every nonzero weight is broadcast once and
// FMA'd with the K input vectors at its offset (the loads are the FMAs' memory operands), so one weight
// load serves the whole tile. The accumulators go to a small buffer; the epilogue drops the padding
// columns and writes bias + residual, clamped, to the output rows.

template <class I, int K, bool TAIL>
inline void accumulate(const float* __restrict in, const int32_t* __restrict off, const float* __restrict val, int64_t nnz,
                       int tail, float* __restrict tmp) {
  typename I::V acc[K];
  for (int k = 0; k < K; ++k) acc[k] = I::zero();
  for (int64_t j = 0; j < nnz; ++j) {
    const typename I::V w = I::set1(val[j]);
    const float* a = in + off[j];
    for (int k = 0; k < K; ++k)
      acc[k] = I::fma(w, (TAIL && k == K - 1) ? I::load_n(a + k * I::L, tail) : I::load(a + k * I::L), acc[k]);
  }
  for (int k = 0; k < K; ++k) I::store(tmp + k * I::L, acc[k]);
}

// tmp[0, len) = the accumulated grid positions [q0, q0 + len); K = ceil(len / L) vectors, the last one partial.
template <class I, int K>
inline void accumulate_k(const float* in, const int32_t* off, const float* val, int64_t nnz, int len, float* tmp) {
  const int tail = len - (K - 1) * I::L;
  if (tail == I::L) accumulate<I, K, false>(in, off, val, nnz, tail, tmp);
  else accumulate<I, K, true>(in, off, val, nnz, tail, tmp);
}

template <class I, int K = I::KMAX>
inline void accumulate_len(const float* in, const int32_t* off, const float* val, int64_t nnz, int len, float* tmp) {
  if constexpr (K > 1) {
    if (len <= (K - 1) * I::L) return accumulate_len<I, K - 1>(in, off, val, nnz, len, tmp);
  }
  accumulate_k<I, K>(in, off, val, nnz, len, tmp);
}

template <bool RESIDUAL>
inline void write_run(float* __restrict o, const float* __restrict t, const float* __restrict r, int64_t n, float b, float lo,
                      float hi) {
  for (int64_t i = 0; i < n; ++i) {
    float v = t[i] + b;
    if constexpr (RESIDUAL) v += r[i];
    v = v < lo ? lo : v;  // NaN stays NaN
    o[i] = v > hi ? hi : v;
  }
}

// Output channel oc of image n: grid positions [q0, q0 + len) from tmp to the output rows.
inline void write_tile(const Job& j, int64_t n, int64_t oc, int64_t q0, int64_t len, const float* tmp) {
  const int64_t plane = j.Ho * j.Wo, at = (n * j.Cout + oc) * plane;
  float* out = j.out + at;
  const float* res = j.residual ? j.residual + at : nullptr;
  const float b = j.bias ? j.bias[oc] : 0.0f;
  for (int64_t q = q0, end = q0 + len; q < end;) {
    const int64_t y = q / j.Wq, x = q - y * j.Wq;
    if (x >= j.Wo) {
      q = (y + 1) * j.Wq;
      continue;
    }
    const int64_t run = j.Wo - x < end - q ? j.Wo - x : end - q, d = y * j.Wo + x;
    if (res) write_run<true>(out + d, tmp + (q - q0), res + d, run, b, j.lo, j.hi);
    else write_run<false>(out + d, tmp + (q - q0), nullptr, run, b, j.lo, j.hi);
    q += run;
  }
}

template <class I>
void run_tiles(const Job& j) {
  constexpr int T = I::L * I::KMAX;
  const int64_t P = grid_positions(j), tiles = (P + T - 1) / T, items = j.N * tiles * j.n_chunks;
#pragma omp parallel for schedule(dynamic, 1) num_threads(j.threads) if (items > 1)
  for (int64_t it = 0; it < items; ++it) {
    alignas(64) float tmp[T];
    const int64_t c = it % j.n_chunks, t = (it / j.n_chunks) % tiles, n = it / (j.n_chunks * tiles);
    const int64_t q0 = t * T;
    const int len = P - q0 < T ? int(P - q0) : T;
    const float* image = j.in + n * j.in_image + q0;
    for (int64_t oc = j.chunks[c]; oc < j.chunks[c + 1]; ++oc) {
      const int64_t b = j.row_ptr[oc], nnz = j.row_ptr[oc + 1] - b;
      const float* in = image + (oc / j.cout_per_group) * j.in_group;
      if (nnz == 0) {
        for (int i = 0; i < len; ++i) tmp[i] = 0.0f;
      } else {
        accumulate_len<I>(in, j.offsets + b, j.values + b, nnz, len, tmp);
      }
      write_tile(j, n, oc, q0, len, tmp);
    }
  }
}
