// Separable 2-D fast wavelet transform (one level), CPU, float32/float64.
//
// Formulation (see difftransforms/wavelets/_plans.py): along each axis a level is a "plan"
// (taps t of even length F, extension matrix B of size (2K+F-2) x N, identity in the middle
// and a few sparse pad rows given in CSR form):
//   analysis   y[k] = sum_j t[j] (B x)[2k+j]
//   synthesis  x = B^T z,  z[n] = sum_k y[k] t[n-2k]
// The two are exact adjoints, so each one is the other's backward.
//
// Both kernels are fused per output row: the H-direction filtering of the F (or F/2) input
// rows goes to a small row buffer that stays in L1, the W-direction filtering is done
// polyphase (even/odd split), so every loop is a unit-stride axpy the compiler vectorises.
// Parallel over (plane, output row) with at::parallel_for.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

using torch::Tensor;

struct Ext {
  int64_t N = 0, K = 0, F = 0, padL = 0, npad = 0, nrows = 0;
  const int64_t* ptr = nullptr;
  const int64_t* idx = nullptr;
  const double* w = nullptr;
  // full index of pad row r
  int64_t row_pos(int64_t r) const { return r < padL ? r : r + N; }
};

Ext make_ext(int64_t N, int64_t K, int64_t F, int64_t padL, const Tensor& ptr, const Tensor& idx,
             const Tensor& w, const char* axis) {
  Ext e;
  e.N = N; e.K = K; e.F = F; e.padL = padL; e.npad = 2 * K + F - 2;
  e.nrows = e.npad - N;
  TORCH_CHECK(N >= 1 && K >= 1 && F >= 2 && F % 2 == 0, "wavelets: bad plan sizes on ", axis,
              " (N=", N, ", K=", K, ", F=", F, ")");
  TORCH_CHECK(padL >= 0 && e.nrows >= padL, "wavelets: bad padding on ", axis);
  TORCH_CHECK(ptr.dtype() == torch::kInt64 && idx.dtype() == torch::kInt64 &&
              w.dtype() == torch::kFloat64, "wavelets: plan tensors must be int64/int64/float64");
  TORCH_CHECK(ptr.device().is_cpu() && idx.device().is_cpu() && w.device().is_cpu() &&
              ptr.is_contiguous() && idx.is_contiguous() && w.is_contiguous(),
              "wavelets: plan tensors must be contiguous CPU tensors");
  TORCH_CHECK(ptr.numel() == e.nrows + 1, "wavelets: CSR row pointer has ", ptr.numel(),
              " entries on ", axis, ", expected ", e.nrows + 1);
  TORCH_CHECK(idx.numel() == w.numel(), "wavelets: CSR index/weight size mismatch");
  e.ptr = ptr.data_ptr<int64_t>();
  e.idx = idx.data_ptr<int64_t>();
  e.w = w.data_ptr<double>();
  TORCH_CHECK(e.ptr[e.nrows] == idx.numel(), "wavelets: CSR row pointer inconsistent");
  for (int64_t i = 0; i < idx.numel(); ++i)
    TORCH_CHECK(e.idx[i] >= 0 && e.idx[i] < N, "wavelets: CSR index out of range");
  return e;
}

// a = (acc ? a : 0) + sum_t ca[t] * x_t ; b likewise with cb (n_terms = 1..4), one pass
template <typename T>
inline void comb2(T* __restrict__ a, T* __restrict__ b, const T* const* xs, const T* ca,
                  const T* cb, int n_terms, bool acc, int64_t n) {
  const T* __restrict__ x0 = xs[0];
  const T* __restrict__ x1 = n_terms > 1 ? xs[1] : xs[0];
  const T* __restrict__ x2 = n_terms > 2 ? xs[2] : xs[0];
  const T* __restrict__ x3 = n_terms > 3 ? xs[3] : xs[0];
  const T a0 = ca[0], a1 = n_terms > 1 ? ca[1] : T(0), a2 = n_terms > 2 ? ca[2] : T(0),
          a3 = n_terms > 3 ? ca[3] : T(0);
  const T b0 = cb[0], b1 = n_terms > 1 ? cb[1] : T(0), b2 = n_terms > 2 ? cb[2] : T(0),
          b3 = n_terms > 3 ? cb[3] : T(0);
  if (n_terms == 4) {
    if (acc) {
      for (int64_t q = 0; q < n; ++q) {
        a[q] += a0 * x0[q] + a1 * x1[q] + a2 * x2[q] + a3 * x3[q];
        b[q] += b0 * x0[q] + b1 * x1[q] + b2 * x2[q] + b3 * x3[q];
      }
    } else {
      for (int64_t q = 0; q < n; ++q) {
        a[q] = a0 * x0[q] + a1 * x1[q] + a2 * x2[q] + a3 * x3[q];
        b[q] = b0 * x0[q] + b1 * x1[q] + b2 * x2[q] + b3 * x3[q];
      }
    }
  } else if (n_terms == 2) {
    if (acc) {
      for (int64_t q = 0; q < n; ++q) {
        a[q] += a0 * x0[q] + a1 * x1[q];
        b[q] += b0 * x0[q] + b1 * x1[q];
      }
    } else {
      for (int64_t q = 0; q < n; ++q) {
        a[q] = a0 * x0[q] + a1 * x1[q];
        b[q] = b0 * x0[q] + b1 * x1[q];
      }
    }
  } else {
    for (int64_t q = 0; q < n; ++q) {
      const T va = a0 * x0[q] + a1 * x1[q] + a2 * x2[q] + a3 * x3[q];
      const T vb = b0 * x0[q] + b1 * x1[q] + b2 * x2[q] + b3 * x3[q];
      a[q] = acc ? a[q] + va : va;
      b[q] = acc ? b[q] + vb : vb;
    }
  }
}

// a, b = sum over all terms (any count), in passes of up to 4 terms
template <typename T>
inline void combine(T* a, T* b, const T* const* xs, const T* ca, const T* cb, int64_t n_terms,
                    int64_t n) {
  if (n_terms == 0) {
    std::fill(a, a + n, T(0));
    std::fill(b, b + n, T(0));
    return;
  }
  for (int64_t s = 0; s < n_terms; s += 4) {
    const int c = static_cast<int>(std::min<int64_t>(4, n_terms - s));
    comb2(a, b, xs + s, ca + s, cb + s, c, s > 0, n);
  }
}

template <typename T>
inline void axpy(T* __restrict__ a, const T* __restrict__ x, T c, int64_t n) {
  for (int64_t q = 0; q < n; ++q) a[q] += c * x[q];
}

// a = sum_t c[t] * x_t (any number of terms, passes of up to 4 terms)
template <typename T>
inline void combine1(T* __restrict__ a, const T* const* xs, const T* c, int64_t n_terms,
                     int64_t n) {
  if (n_terms == 0) {
    std::fill(a, a + n, T(0));
    return;
  }
  for (int64_t s = 0; s < n_terms; s += 4) {
    const int64_t m = std::min<int64_t>(4, n_terms - s);
    const T* __restrict__ x0 = xs[s];
    const T* __restrict__ x1 = m > 1 ? xs[s + 1] : x0;
    const T* __restrict__ x2 = m > 2 ? xs[s + 2] : x0;
    const T* __restrict__ x3 = m > 3 ? xs[s + 3] : x0;
    const T c0 = c[s], c1 = m > 1 ? c[s + 1] : T(0), c2 = m > 2 ? c[s + 2] : T(0),
            c3 = m > 3 ? c[s + 3] : T(0);
    if (s == 0) {
      if (m == 2) {
        for (int64_t q = 0; q < n; ++q) a[q] = c0 * x0[q] + c1 * x1[q];
      } else {
        for (int64_t q = 0; q < n; ++q) a[q] = c0 * x0[q] + c1 * x1[q] + c2 * x2[q] + c3 * x3[q];
      }
    } else {
      if (m == 2) {
        for (int64_t q = 0; q < n; ++q) a[q] += c0 * x0[q] + c1 * x1[q];
      } else {
        for (int64_t q = 0; q < n; ++q) a[q] += c0 * x0[q] + c1 * x1[q] + c2 * x2[q] + c3 * x3[q];
      }
    }
  }
}

template <typename T>
inline void deinterleave(const T* __restrict__ b, T* __restrict__ e, T* __restrict__ o,
                         int64_t half) {
  for (int64_t u = 0; u < half; ++u) {
    e[u] = b[2 * u];
    o[u] = b[2 * u + 1];
  }
}

// polyphase W-analysis of one extended row: lo[q] = sum_j tl[j] e[2q+j], hi likewise
// (E = even samples, O = odd samples; taps are (2, F))
template <typename T>
inline void row_analysis(const T* E, const T* O, const T* taps, int64_t F, int64_t K, T* lo,
                         T* hi) {
  const T* xs[128];
  T ca[128], cb[128];
  for (int64_t j = 0; j < F; ++j) {
    xs[j] = (j % 2 ? O : E) + j / 2;
    ca[j] = taps[j];
    cb[j] = taps[F + j];
  }
  combine(lo, hi, xs, ca, cb, F, K);
}

template <typename T>
void analysis_impl(const T* x, int64_t M, int64_t ps, int64_t rs, const T* taps, int64_t F,
                   const Ext& eh, const Ext& ew, T* out, int64_t S) {
  const int64_t H = eh.N, W = ew.N, Kh = eh.K, Kw = ew.K;
  const int64_t npw = ew.npad, half = npw / 2;
  const int64_t grain = std::max<int64_t>(1, 32768 / (W * F + 1));
  at::parallel_for(0, M * Kh, grain, [&](int64_t begin, int64_t end) {
    std::vector<double> dtmp(W);
    std::vector<T> bl(npw), bh(npw), tmp(F * W), El(half), Ol(half), Eh(half), Oh(half);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m = t / Kh, k = t % Kh;
      const T* xm = x + m * ps;
      T* L = bl.data() + ew.padL;
      T* Hb = bh.data() + ew.padL;
      const T* rows[128];
      int64_t ntmp = 0;
      for (int64_t j = 0; j < F; ++j) {
        const int64_t p = 2 * k + j;
        if (p >= eh.padL && p < eh.padL + H) {
          rows[j] = xm + (p - eh.padL) * rs;
        } else {
          const int64_t r = p < eh.padL ? p : p - H;
          // pad rows are accumulated in double: smooth/antireflect extrapolate and cancel
          T* tr = tmp.data() + (ntmp++) * W;
          std::fill(dtmp.begin(), dtmp.end(), 0.0);
          for (int64_t e = eh.ptr[r]; e < eh.ptr[r + 1]; ++e) {
            const T* src = xm + eh.idx[e] * rs;
            const double we = eh.w[e];
            for (int64_t q = 0; q < W; ++q) dtmp[q] += we * static_cast<double>(src[q]);
          }
          for (int64_t q = 0; q < W; ++q) tr[q] = static_cast<T>(dtmp[q]);
          rows[j] = tr;
        }
      }
      combine(L, Hb, rows, taps, taps + F, F, W);
      for (int64_t r = 0; r < ew.nrows; ++r) {
        double sl = 0, sh = 0;
        for (int64_t e = ew.ptr[r]; e < ew.ptr[r + 1]; ++e) {
          sl += ew.w[e] * static_cast<double>(L[ew.idx[e]]);
          sh += ew.w[e] * static_cast<double>(Hb[ew.idx[e]]);
        }
        const int64_t p = ew.row_pos(r);
        bl[p] = static_cast<T>(sl);
        bh[p] = static_cast<T>(sh);
      }
      deinterleave(bl.data(), El.data(), Ol.data(), half);
      deinterleave(bh.data(), Eh.data(), Oh.data(), half);
      if (k + 1 < Kh) {  // prefetch the two new input rows of the next output row
        for (int64_t j = F; j < F + 2; ++j) {
          const int64_t p = 2 * k + j;
          if (p >= eh.padL && p < eh.padL + H) {
            const char* rp = reinterpret_cast<const char*>(xm + (p - eh.padL) * rs);
            for (int64_t b = 0; b < W * static_cast<int64_t>(sizeof(T)); b += 64)
              __builtin_prefetch(rp + b);
          }
        }
      }
      T* o_aa = out + (m * 4 + 0) * S + k * Kw;
      T* o_da = out + (m * 4 + 1) * S + k * Kw;
      T* o_ad = out + (m * 4 + 2) * S + k * Kw;
      T* o_dd = out + (m * 4 + 3) * S + k * Kw;
      row_analysis(El.data(), Ol.data(), taps, F, Kw, o_aa, o_ad);
      row_analysis(Eh.data(), Oh.data(), taps, F, Kw, o_da, o_dd);
    }
  });
}

struct Band {
  int64_t ps, rs;
};

template <typename T>
void synthesis_impl(const T* a, const T* h, const T* v, const T* d, Band ba, Band bh, Band bv,
                    Band bd, int64_t M, const T* taps, int64_t F, const Ext& eh, const Ext& ew,
                    T* out) {
  const int64_t Nh = eh.N, Nw = ew.N, Kh = eh.K, Kw = ew.K, F2 = F / 2;
  const int64_t npw = ew.npad, half = npw / 2, lp = Kw + 2 * (F2 - 1);
  // transpose the H pad rows: for output row i, which full rows p fold into it (weight w)
  std::vector<int64_t> tptr(Nh + 1, 0);
  for (int64_t e = 0; e < eh.ptr[eh.nrows]; ++e) tptr[eh.idx[e] + 1]++;
  for (int64_t i = 0; i < Nh; ++i) tptr[i + 1] += tptr[i];
  std::vector<int64_t> tpos(tptr[Nh]), fill(tptr.begin(), tptr.end() - 1);
  std::vector<double> tw(tptr[Nh]);
  for (int64_t r = 0; r < eh.nrows; ++r)
    for (int64_t e = eh.ptr[r]; e < eh.ptr[r + 1]; ++e) {
      const int64_t slot = fill[eh.idx[e]]++;
      tpos[slot] = eh.row_pos(r);
      tw[slot] = eh.w[e];
    }
  const int64_t grain = std::max<int64_t>(1, 32768 / (Kw * F + 1));
  at::parallel_for(0, M * Nh, grain, [&](int64_t begin, int64_t end) {
    std::vector<T> PL(lp, T(0)), PH(lp, T(0)), zE(half), zO(half);
    T* cL = PL.data() + (F2 - 1);
    T* cH = PH.data() + (F2 - 1);
    std::vector<T> tl_(Kw), th_(Kw);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t m = t / Nh, i = t % Nh;
      int64_t flushed = 0;
      const T* xl[256];
      const T* xh[256];
      T cf[256];
      int64_t nt = 0;
      auto flush = [&]() {
        if (flushed == 0) {
          combine1(cL, xl, cf, nt, Kw);
          combine1(cH, xh, cf, nt, Kw);
        } else {
          combine1(tl_.data(), xl, cf, nt, Kw);
          combine1(th_.data(), xh, cf, nt, Kw);
          axpy(cL, tl_.data(), T(1), Kw);
          axpy(cH, th_.data(), T(1), Kw);
        }
        ++flushed;
      };
      const int64_t ncontrib = 1 + tptr[i + 1] - tptr[i];
      for (int64_t c = 0; c < ncontrib; ++c) {
        const int64_t n = c == 0 ? eh.padL + i : tpos[tptr[i] + c - 1];
        const T wt = c == 0 ? T(1) : static_cast<T>(tw[tptr[i] + c - 1]);
        const int64_t kmin = std::max<int64_t>(0, (n - F + 2) / 2);
        const int64_t kmax = std::min<int64_t>(Kh - 1, n / 2);
        for (int64_t k = kmin; k <= kmax; ++k) {
          const int64_t j = n - 2 * k;
          if (j < 0 || j >= F) continue;
          if (nt + 2 > 256) {  // flush (only for extreme fold counts)
            flush();
            nt = 0;
          }
          xl[nt] = a + m * ba.ps + k * ba.rs;
          xh[nt] = v + m * bv.ps + k * bv.rs;
          cf[nt++] = wt * taps[j];
          xl[nt] = h + m * bh.ps + k * bh.rs;
          xh[nt] = d + m * bd.ps + k * bd.rs;
          cf[nt++] = wt * taps[F + j];
        }
      }
      if (nt > 0 || flushed == 0) flush();
      // W synthesis (polyphase): z[2u+r] = sum_s tl[2s+r] cL[u-s] + th[2s+r] cH[u-s]
      {
        const T* xs[256];
        T ce[256], co[256];
        for (int64_t s2 = 0; s2 < F2; ++s2) {
          xs[2 * s2] = PL.data() + (F2 - 1) - s2;
          xs[2 * s2 + 1] = PH.data() + (F2 - 1) - s2;
          ce[2 * s2] = taps[2 * s2];
          ce[2 * s2 + 1] = taps[F + 2 * s2];
          co[2 * s2] = taps[2 * s2 + 1];
          co[2 * s2 + 1] = taps[F + 2 * s2 + 1];
        }
        combine(zE.data(), zO.data(), xs, ce, co, F, half);
      }
      T* o = out + (m * Nh + i) * Nw;
      const int64_t off = ew.padL;
      int64_t jj = 0;
      if (off % 2) {  // first output sample sits on an odd full index
        o[0] = zO[off / 2];
        jj = 1;
      }
      {
        const int64_t base = (off + jj) / 2;  // off + jj is even here
        const int64_t npair = (Nw - jj) / 2;
        for (int64_t u = 0; u < npair; ++u) {
          o[jj + 2 * u] = zE[base + u];
          o[jj + 2 * u + 1] = zO[base + u];
        }
        if ((Nw - jj) % 2) o[Nw - 1] = zE[base + npair];
      }
      for (int64_t r = 0; r < ew.nrows; ++r) {
        const int64_t p = ew.row_pos(r);
        const T val = (p % 2) ? zO[p / 2] : zE[p / 2];
        for (int64_t e = ew.ptr[r]; e < ew.ptr[r + 1]; ++e)
          o[ew.idx[e]] += static_cast<T>(ew.w[e]) * val;
      }
    }
  });
}

int64_t band_stride(int64_t Kh, int64_t Kw) { return Kh * Kw + 16; }

void check_taps(const Tensor& x, const Tensor& taps) {
  TORCH_CHECK(taps.dim() == 2 && taps.size(0) == 2 && taps.size(1) % 2 == 0,
              "wavelets: taps must have shape (2, F) with F even, got ", taps.sizes());
  TORCH_CHECK(taps.size(1) <= 128, "wavelets: the kernel supports filters up to length 128");
  TORCH_CHECK(taps.dtype() == x.dtype(), "wavelets: taps dtype ", taps.dtype(),
              " differs from input dtype ", x.dtype());
  TORCH_CHECK(x.dtype() == torch::kFloat32 || x.dtype() == torch::kFloat64,
              "wavelets: only float32 and float64 are supported, got ", x.dtype());
}

Tensor analysis2d_cpu(const Tensor& x_, const Tensor& taps_, int64_t Kh, int64_t padLh,
                      const Tensor& ptrH, const Tensor& idxH, const Tensor& wH, int64_t Kw,
                      int64_t padLw, const Tensor& ptrW, const Tensor& idxW, const Tensor& wW) {
  TORCH_CHECK(x_.dim() == 3, "wavelets: analysis2d expects (M, H, W), got ", x_.sizes());
  check_taps(x_, taps_);
  Tensor x = x_.stride(2) == 1 ? x_ : x_.contiguous();
  Tensor taps = taps_.contiguous();
  const int64_t M = x.size(0), H = x.size(1), W = x.size(2), F = taps.size(1);
  Ext eh = make_ext(H, Kh, F, padLh, ptrH, idxH, wH, "H");
  Ext ew = make_ext(W, Kw, F, padLw, ptrW, idxW, wW, "W");
  // The four bands of a plane are kept band_stride() elements apart, not Kh*Kw: with
  // power-of-two sizes, bands exactly 2^k bytes apart alias in the caches and the
  // four-stream loops (here and in synthesis) run several times slower.
  const int64_t S = band_stride(Kh, Kw);
  Tensor out = torch::empty_strided({M, 4, Kh, Kw}, {4 * S, S, Kw, 1}, x.options());
  if (M == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "analysis2d", [&] {
    analysis_impl<scalar_t>(x.data_ptr<scalar_t>(), M, x.stride(0), x.stride(1),
                            taps.data_ptr<scalar_t>(), F, eh, ew, out.data_ptr<scalar_t>(), S);
  });
  return out;
}

Tensor synthesis2d_cpu(const Tensor& a_, const Tensor& h_, const Tensor& v_, const Tensor& d_,
                       const Tensor& taps_, int64_t Nh, int64_t padLh, const Tensor& ptrH,
                       const Tensor& idxH, const Tensor& wH, int64_t Nw, int64_t padLw,
                       const Tensor& ptrW, const Tensor& idxW, const Tensor& wW) {
  TORCH_CHECK(a_.dim() == 3, "wavelets: synthesis2d expects (M, Kh, Kw) bands, got ",
              a_.sizes());
  for (const Tensor* b : {&h_, &v_, &d_})
    TORCH_CHECK(b->sizes() == a_.sizes() && b->dtype() == a_.dtype(),
                "wavelets: the four bands must have the same shape and dtype");
  check_taps(a_, taps_);
  auto prep = [](const Tensor& t) { return t.stride(2) == 1 ? t : t.contiguous(); };
  Tensor a = prep(a_), h = prep(h_), v = prep(v_), d = prep(d_);
  Tensor taps = taps_.contiguous();
  const int64_t M = a.size(0), Kh = a.size(1), Kw = a.size(2), F = taps.size(1);
  Ext eh = make_ext(Nh, Kh, F, padLh, ptrH, idxH, wH, "H");
  Ext ew = make_ext(Nw, Kw, F, padLw, ptrW, idxW, wW, "W");
  Tensor out = torch::empty({M, Nh, Nw}, a.options());
  if (M == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "synthesis2d", [&] {
    synthesis_impl<scalar_t>(
        a.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
        d.data_ptr<scalar_t>(), Band{a.stride(0), a.stride(1)}, Band{h.stride(0), h.stride(1)},
        Band{v.stride(0), v.stride(1)}, Band{d.stride(0), d.stride(1)}, M,
        taps.data_ptr<scalar_t>(), F, eh, ew, out.data_ptr<scalar_t>());
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(difftransforms_wavelets, m) {
  m.def("analysis2d(Tensor x, Tensor taps, int Kh, int padLh, Tensor ptrH, Tensor idxH, "
        "Tensor wH, int Kw, int padLw, Tensor ptrW, Tensor idxW, Tensor wW) -> Tensor");
  m.def("synthesis2d(Tensor a, Tensor h, Tensor v, Tensor d, Tensor taps, int Nh, int padLh, "
        "Tensor ptrH, Tensor idxH, Tensor wH, int Nw, int padLw, Tensor ptrW, Tensor idxW, "
        "Tensor wW) -> Tensor");
}

TORCH_LIBRARY_IMPL(difftransforms_wavelets, CPU, m) {
  m.impl("analysis2d", &analysis2d_cpu);
  m.impl("synthesis2d", &synthesis2d_cpu);
}
