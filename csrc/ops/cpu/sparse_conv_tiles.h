// The sparse convolution's compute loop, written once over an ISA type I (vector V of I::L floats: loads,
// masked loads/stores, broadcast, fma, add, min, max) and included by each ISA file after its target pragma,
// inside an anonymous namespace: no standard-library code here, so nothing compiled for one ISA leaks to
// another.
//
// A work item is (image, tile of job.vectors * I::L grid positions, range of output channels). For each
// output channel K vectors of accumulators cover the tile; every nonzero weight is broadcast once and FMA'd
// with the K input vectors at its offset (the loads are the FMAs' memory operands), so one weight load
// serves the whole tile. Bias, residual and clamp are applied in registers and stored straight to the
// output when the grid has no padding columns (Wq == Wo); otherwise through a buffer that drops them.
// Blocked rows (job.block > 1, run_blocks) keep B output channels x V vectors in registers instead.

struct Epilogue {
  float* out;         // the output channel's plane
  const float* res;   // its residual plane or null
  float bias, lo, hi;
};

template <class I>
inline typename I::V finish(typename I::V v, const Epilogue& e, const float* res) {
  v = I::add(v, I::set1(e.bias));
  if (res) v = I::add(v, I::load(res));
  return I::min(I::set1(e.hi), I::max(I::set1(e.lo), v));  // NaN passes both
}

template <class I>
inline typename I::V finish_n(typename I::V v, const Epilogue& e, const float* res, int n) {
  v = I::add(v, I::set1(e.bias));
  if (res) v = I::add(v, I::load_n(res, n));
  return I::min(I::set1(e.hi), I::max(I::set1(e.lo), v));
}

// n buffered values t to the output run starting at d: bias, residual and clamp in vectors, the last one masked.
template <class I>
inline void write_run(const Epilogue& e, int64_t d, const float* t, int64_t n) {
  float* o = e.out + d;
  const float* r = e.res ? e.res + d : nullptr;
  int64_t i = 0;
  for (; i + I::L <= n; i += I::L) I::storeu(o + i, finish<I>(I::load(t + i), e, r ? r + i : nullptr));
  if (i < n) I::store_n(o + i, finish_n<I>(I::load_n(t + i, int(n - i)), e, r ? r + i : nullptr, int(n - i)), int(n - i));
}

// Buffered grid positions [q0, q0 + len) to the output rows, dropping the columns x >= Wo: one run per grid row.
template <class I>
inline void write_grid(const Job& j, const Epilogue& e, int64_t q0, int64_t len, const float* tmp) {
  const int64_t end = q0 + len;
  for (int64_t y = q0 / j.Wq, q = q0; q < end; q = ++y * j.Wq) {
    const int64_t stop = y * j.Wq + j.Wo < end ? y * j.Wq + j.Wo : end;
    if (q < stop) write_run<I>(e, y * j.Wo + (q - y * j.Wq), tmp + (q - q0), stop - q);
  }
}

// Bias, residual and clamp on K accumulator vectors at grid position q0 (the last holds `tail` positions), then
// the store: straight to the output when the grid has no padding columns, else through a buffer.
template <class I, int K, bool TAIL>
inline void store_tile(const Job& j, const Epilogue& e, const typename I::V* acc, int64_t q0, int tail) {
  if (j.Wq == j.Wo) {  // grid = output: the tile is one contiguous run
    float* o = e.out + q0;
    const float* r = e.res ? e.res + q0 : nullptr;
    for (int k = 0; k < K; ++k) {
      if (TAIL && k == K - 1) I::store_n(o + k * I::L, finish_n<I>(acc[k], e, r ? r + k * I::L : nullptr, tail), tail);
      else I::storeu(o + k * I::L, finish<I>(acc[k], e, r ? r + k * I::L : nullptr));
    }
    return;
  }
  alignas(64) float tmp[K * I::L];
  for (int k = 0; k < K; ++k) I::store(tmp + k * I::L, acc[k]);
  write_grid<I>(j, e, q0, (K - 1) * I::L + tail, tmp);
}

// One output channel over the K vectors at grid position q0 (the last vector holds `tail` positions). MASKED:
// the last vector's loads are masked too (else read whole: the extra lanes stay inside the input, are never stored).
template <class I, int K, bool TAIL, bool MASKED = TAIL>
inline void tile(const Job& j, const Epilogue& e, const float* __restrict in, const int32_t* __restrict off,
                 const float* __restrict val, int64_t nnz, int64_t q0, int tail) {
  typename I::V acc[K];
  for (int k = 0; k < K; ++k) acc[k] = I::zero();
  for (int64_t n = 0; n < nnz; ++n) {
    const typename I::V w = I::set1(val[n]);
    const float* a = in + off[n];
    for (int k = 0; k < K; ++k)
      acc[k] = I::fma(w, (MASKED && k == K - 1) ? I::load_n(a + k * I::L, tail) : I::load(a + k * I::L), acc[k]);
  }
  store_tile<I, K, TAIL>(j, e, acc, q0, tail);
}

// Whole-vector loads of V vectors at every offset of a row stay inside the input: masked tail loads are slow.
// A row's offsets are below the end of the input channel of its last entry (the offsets grow with the channel).
inline bool whole_loads(const Job& j, const float* in, const int32_t* off, int64_t nnz, int64_t vectors_end) {
  const int64_t bound = nnz ? (off[nnz - 1] / j.in_channel + 1) * j.in_channel : 0;
  return in + bound + vectors_end <= j.in_end;
}

template <class I, int K>
inline void tile_k(const Job& j, const Epilogue& e, const float* in, const int32_t* off, const float* val, int64_t nnz, int64_t q0,
                   int len) {
  const int tail = len - (K - 1) * I::L;
  if (tail == I::L) tile<I, K, false>(j, e, in, off, val, nnz, q0, tail);
  else if (whole_loads(j, in, off, nnz, K * I::L)) tile<I, K, true, false>(j, e, in, off, val, nnz, q0, tail);
  else tile<I, K, true>(j, e, in, off, val, nnz, q0, tail);
}

// len grid positions from q0: K = ceil(len / L) vectors.
template <class I, int K = I::KMAX>
inline void tile_len(const Job& j, const Epilogue& e, const float* in, const int32_t* off, const float* val, int64_t nnz, int64_t q0,
                     int len) {
  if constexpr (K > 1) {
    if (len <= (K - 1) * I::L) return tile_len<I, K - 1>(j, e, in, off, val, nnz, q0, len);
  }
  tile_k<I, K>(j, e, in, off, val, nnz, q0, len);
}

// Register-blocked: the B output channels of a row (`width` of them real) over V vectors at grid position q0.
// Each stored entry's V activation vectors are loaded once and FMA'd with its B broadcast weights.
template <class I, int B, int V, bool TAIL, bool MASKED = TAIL>
inline void block_tile(const Job& j, const Epilogue* e, int width, const float* __restrict in, const int32_t* __restrict off,
                       const float* __restrict val, int64_t nnz, int64_t q0, int tail) {
  typename I::V acc[B][V];
#pragma GCC unroll 8
  for (int b = 0; b < B; ++b)
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) acc[b][v] = I::zero();
  for (int64_t n = 0; n < nnz; ++n) {
    const float* a = in + off[n];
    const float* w = val + n * B;
    typename I::V x[V];
#pragma GCC unroll 8
    for (int v = 0; v < V; ++v) x[v] = (MASKED && v == V - 1) ? I::load_n(a + v * I::L, tail) : I::load(a + v * I::L);
#pragma GCC unroll 8
    for (int b = 0; b < B; ++b) {
      const typename I::V wb = I::set1(w[b]);
#pragma GCC unroll 8
      for (int v = 0; v < V; ++v) acc[b][v] = I::fma(wb, x[v], acc[b][v]);
    }
  }
  for (int b = 0; b < width; ++b) store_tile<I, V, TAIL>(j, e[b], acc[b], q0, tail);
}

// len grid positions from q0 in register tiles of V vectors (the last one narrower).
template <class I, int B, int V>
inline void block_len(const Job& j, const Epilogue* e, int width, const float* in, const int32_t* off, const float* val, int64_t nnz,
                      int64_t q0, int len) {
  if constexpr (V > 1) {
    if (len <= (V - 1) * I::L) return block_len<I, B, V - 1>(j, e, width, in, off, val, nnz, q0, len);
  }
  const int tail = len - (V - 1) * I::L;
  if (tail == I::L) block_tile<I, B, V, false>(j, e, width, in, off, val, nnz, q0, tail);
  else if (whole_loads(j, in, off, nnz, V * I::L)) block_tile<I, B, V, true, false>(j, e, width, in, off, val, nnz, q0, tail);
  else block_tile<I, B, V, true>(j, e, width, in, off, val, nnz, q0, tail);
}

template <class I, int B>
void run_blocks(const Job& j) {
  constexpr int V = block_vectors(I::REGS, I::KMAX, B), R = V * I::L;
  const int T = j.vectors * I::L;
  const int64_t P = grid_positions(j), tiles = (P + T - 1) / T, items = j.N * tiles * j.n_chunks, plane = j.Ho * j.Wo;
#pragma omp parallel for schedule(dynamic, 1) num_threads(j.threads) if (items > 1 && j.threads > 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t c = it % j.n_chunks, t = (it / j.n_chunks) % tiles, n = it / (j.n_chunks * tiles);
    const int64_t q0 = t * T, end = P - q0 < T ? P : q0 + T;
    const float* image = j.in + n * j.in_image;
    for (int64_t row = j.chunks[c]; row < j.chunks[c + 1]; ++row) {
      const int64_t g = row / j.rows_per_group, first = (row - g * j.rows_per_group) * B, oc0 = g * j.cout_per_group + first;
      const int width = j.cout_per_group - first < B ? int(j.cout_per_group - first) : B;
      Epilogue e[B];
      for (int b = 0; b < width; ++b) {
        const int64_t at = (n * j.Cout + oc0 + b) * plane;
        e[b] = Epilogue{j.out + at, j.residual ? j.residual + at : nullptr, j.bias ? j.bias[oc0 + b] : 0.0f, j.lo, j.hi};
      }
      const int64_t s = j.row_ptr[row], nnz = j.row_ptr[row + 1] - s;
      const float* in = image + g * j.in_group;
      for (int64_t q = q0; q < end; q += R)
        block_len<I, B, V>(j, e, width, in + q, j.offsets + s, j.values + s * B, nnz, q, end - q < R ? int(end - q) : R);
    }
  }
}

template <class I>
void run_tiles(const Job& j) {
  if (j.block == 2) return run_blocks<I, 2>(j);
  if (j.block == 4) return run_blocks<I, 4>(j);
  if (j.block == 8) return run_blocks<I, 8>(j);
  const int T = j.vectors * I::L;
  const int64_t P = grid_positions(j), tiles = (P + T - 1) / T, items = j.N * tiles * j.n_chunks, plane = j.Ho * j.Wo;
#pragma omp parallel for schedule(dynamic, 1) num_threads(j.threads) if (items > 1 && j.threads > 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t c = it % j.n_chunks, t = (it / j.n_chunks) % tiles, n = it / (j.n_chunks * tiles);
    const int64_t q0 = t * T;
    const int len = P - q0 < T ? int(P - q0) : T;
    const float* image = j.in + n * j.in_image + q0;
    for (int64_t oc = j.chunks[c]; oc < j.chunks[c + 1]; ++oc) {
      const int64_t b = j.row_ptr[oc], at = (n * j.Cout + oc) * plane;
      const Epilogue e{j.out + at, j.residual ? j.residual + at : nullptr, j.bias ? j.bias[oc] : 0.0f, j.lo, j.hi};
      tile_len<I>(j, e, image + (oc / j.cout_per_group) * j.in_group, j.offsets + b, j.values + b, j.row_ptr[oc + 1] - b, q0, len);
    }
  }
}
