#include "common.h"
#include "src/loss/poly_softmax/poly_softmax.cu"
#include "src/loss/poly_sigmoid/poly_sigmoid.cu"
#include <functional>
static const unsigned IGN = 0xFFFFFFFFu;
struct Cfg { bool softmax, focal; float gamma; float alpha; bool has_alpha; float smoothing; bool weight; bool ignore; bool probs; bool scalar; std::vector<float> eps; };
static unsigned ceil32(size_t c) { return (unsigned)((c + 31) / 32 * 32); }
// reference row loss in double
static double ref_row(const Cfg &k, const double *z, int c, unsigned t, const float *y, const std::vector<float> &w) {
  auto W = [&](int j) { return k.weight ? (double)w[j] : 1.0; };
  double al = k.smoothing; double gamma = k.focal ? k.gamma : 0.0;
  auto terms = [&](double f, double aw, double &A, double &G) { f = std::max(f, 0.0); A = k.focal ? aw * std::pow(f, gamma) : 1.0; G = 0; for (size_t j = 0; j < k.eps.size(); ++j) G += k.eps[j] * std::pow(f, gamma + j + 1); };
  if (k.softmax) {
    double m = -INFINITY; for (int j = 0; j < c; ++j) m = std::max(m, z[j]);
    double s = 0; for (int j = 0; j < c; ++j) s += std::exp(z[j] - m); double lse = m + std::log(s);
    double su = 0, ce = 0, pt = 0;
    for (int j = 0; j < c; ++j) { double yj = k.probs ? (1 - al) * y[j] + al / c : (1 - al) * (j == (int)t) + al / c; double u = W(j) * yj; su += u; if (u != 0) ce += u * (lse - z[j]); pt += yj * std::exp(z[j] - lse); }
    double A, G; terms(1 - pt, k.has_alpha ? k.alpha : 1.0, A, G);
    double wrow = k.probs ? su : W(t);
    return A * ce + wrow * G;
  }
  double tot = 0;
  for (int j = 0; j < c; ++j) {
    double yj = k.probs ? y[j] : (j == (int)t ? 1.0 : 0.0); yj = (1 - al) * yj + 0.5 * al;
    double sg = 1 / (1 + std::exp(-z[j]));
    double bce = std::max(z[j], 0.0) - z[j] * yj + std::log1p(std::exp(-std::fabs(z[j])));
    double f = yj * (1 - sg) + (1 - yj) * sg;
    double aw = (k.focal && k.has_alpha) ? k.alpha * yj + (1 - k.alpha) * (1 - yj) : 1.0;
    double A, G; terms(f, aw, A, G);
    tot += W(j) * (A * bce + G);
  }
  return tot;
}
// Device class targets (Rust: Targets::ClassBuffer): dfdx's 64-bit indices go
// through poly_class_targets, launched as cuda_inputs.rs does; `bad` >= 0 puts
// an out-of-range index in that row (above 2^32, so a 32-bit truncation would
// look valid), whose loss and gradient must be NaN while every other row
// matches the reference.
struct DevTgt { bool on; int bad; bool all_ignored = false; };
static void loss_case(const Cfg &k, int b, int c, unsigned seed, bool with_nan = false, bool neg_inf = false, DevTgt dt = {false, -1}) {
  std::mt19937 r(seed);
  auto z = uniform(r, (size_t)b * c, -6, 6); auto y = uniform(r, (size_t)b * c, 0, 1); auto w = uniform(r, c, 0.5, 2);
  std::vector<unsigned> t(b); std::uniform_int_distribution<int> d(0, c - 1);
  unsigned ign = 1 % c;
  for (int i = 0; i < b; ++i) t[i] = (dt.all_ignored || i % 7 == 3) ? ign : d(r);
  if (with_nan) z[1] = NAN;
  // A -inf logit in every row, never on the target (PyTorch's cross_entropy is finite there).
  if (neg_inf) for (int i = 0; i < b; ++i) z[(size_t)i * c + (t[i] + 1) % c] = -INFINITY;
  std::vector<unsigned> tgt(b); for (int i = 0; i < b; ++i) tgt[i] = (k.ignore && t[i] == ign) ? IGN : t[i];
  std::vector<float> prm{k.smoothing, k.gamma, k.has_alpha ? k.alpha : -1.f, k.focal ? 1.f : 0.f, (float)k.eps.size()}; prm.insert(prm.end(), k.eps.begin(), k.eps.end());
  // A mean whose denominator needs device targets' values (cuda_inputs.rs:
  // JobInputs::device_mean): the device sums it; the reference is PyTorch's.
  const bool dev_mean = dt.on && k.scalar && (k.ignore || (k.softmax && k.weight));
  int flags = (k.probs ? F_PROBS : 0) | (k.weight ? F_WEIGHT : 0) | (k.scalar ? F_SCALAR : 0) | (dev_mean ? F_DEV_MEAN : 0);
  float scale = 1.0f / b;
  if (dev_mean) {
    double den = 0;
    for (int i = 0; i < b; ++i) if (!(k.ignore && t[i] == ign)) den += k.softmax ? (k.weight ? (double)w[t[i]] : 1.0) : (double)c;
    scale = (float)(1.0 / den);  // all ignored: 1/0 = inf, and the loss 0 * inf = NaN
  }
  std::vector<unsigned> tgt_buf = k.probs ? std::vector<unsigned>(1, 0) : tgt;
  if (dt.on) {
    std::vector<unsigned long long> src(t.begin(), t.end());
    if (dt.bad >= 0) { src[dt.bad] = (1ull << 32) + t[dt.bad]; tgt[dt.bad] = BAD_ROW; }
    std::vector<unsigned> dev(b, 0xDEADBEEFu);
    launch(poly_class_targets, (unsigned)((b + POLY_BLOCK - 1) / POLY_BLOCK), (unsigned)POLY_BLOCK,
           (const unsigned long long *)src.data(), dev.data(), b, c, (int)k.ignore, (unsigned long long)ign);
    bool same = dev == tgt;
    printf("%s class targets on the device b%d c%d ignore%d bad%d\n", same ? "ok  " : "FAIL", b, c, (int)k.ignore, dt.bad);
    if (!same) g_fail++;
    tgt_buf = dev;
  }
  std::vector<float> probs_buf = k.probs ? y : std::vector<float>(1, 0.f), w_buf = k.weight ? w : std::vector<float>(1, 0.f);
  std::vector<float> out(k.scalar ? 1 : b, 0.f), stats(4 * std::max(b, 1), 0.f);
  // Uninitialised on the device (cuda_inputs.rs: row_sums): poison it.
  std::vector<double> rows(dev_mean ? 2 * b : k.scalar ? b : 1, -12345.0);
  std::vector<float> scale_buf(1, -777.f);
  double wsum = 0; if (k.weight) for (float v : w) wsum += v; else wsum = (double)c;
  if (k.softmax) launch(poly_softmax_fwd, (unsigned)b, std::clamp(ceil32(c), 32u, (unsigned)POLY_BLOCK), (const float *)z.data(), (const unsigned *)tgt_buf.data(), (const float *)probs_buf.data(), (const float *)w_buf.data(), (const float *)prm.data(), stats.data(), out.data(), rows.data(), b, c, flags, wsum);
  else launch(poly_sigmoid_fwd, (unsigned)b, std::clamp(ceil32(c), 32u, 256u), (const float *)z.data(), (const unsigned *)tgt_buf.data(), (const float *)probs_buf.data(), (const float *)w_buf.data(), (const float *)prm.data(), out.data(), rows.data(), b, c, flags);
  if (k.scalar) launch(poly_reduce_rows, 1u, (unsigned)POLY_BLOCK, (const double *)rows.data(), out.data(), scale_buf.data(), b, dev_mean ? 0.f : scale, flags);
  if (k.scalar && !(scale_buf[0] == scale || (std::isnan(scale_buf[0]) && dt.bad >= 0) || (std::isinf(scale) && std::isinf(scale_buf[0])))) {
    printf("FAIL reduction's gradient factor %g, expected %g\n", scale_buf[0], scale); g_fail++;
  }
  auto go = uniform(r, k.scalar ? 1 : b, 0.5, 2);
  auto g0 = uniform(r, (size_t)b * c); auto g = g0;
  if (k.softmax) launch(poly_softmax_bwd, (unsigned)b, std::clamp(ceil32(c), 32u, (unsigned)POLY_BLOCK), (const float *)z.data(), (const unsigned *)tgt_buf.data(), (const float *)probs_buf.data(), (const float *)w_buf.data(), (const float *)prm.data(), (const float *)stats.data(), (const float *)go.data(), g.data(), b, c, flags, (const float *)scale_buf.data());
  else { size_t n = (size_t)b * c; launch(poly_sigmoid_bwd, (unsigned)std::min<size_t>((n + 255) / 256, 65535), 256u, (const float *)z.data(), (const unsigned *)tgt_buf.data(), (const float *)probs_buf.data(), (const float *)w_buf.data(), (const float *)prm.data(), (const float *)go.data(), g.data(), b, c, flags, (const float *)scale_buf.data()); }
  // reference
  std::vector<double> ref_rows(b, 0.0), gref(g0.begin(), g0.end());
  for (int i = 0; i < b; ++i) {
    if (!k.probs && k.ignore && t[i] == ign) continue;
    if (i == dt.bad) continue;
    std::vector<double> zr(z.begin() + (size_t)i * c, z.begin() + (size_t)(i + 1) * c);
    const float *yr = y.data() + (size_t)i * c;
    ref_rows[i] = ref_row(k, zr.data(), c, t[i], yr, w);
    double gi = k.scalar ? go[0] * scale : go[i];
    for (int j = 0; j < c; ++j) {
      if (!std::isfinite(zr[j])) continue;  // d/dz of a -inf logit: 0
      double h = 1e-5 * std::max(1.0, std::fabs(zr[j])), z0 = zr[j];
      zr[j] = z0 + h; double lp = ref_row(k, zr.data(), c, t[i], yr, w); zr[j] = z0 - h; double lm = ref_row(k, zr.data(), c, t[i], yr, w); zr[j] = z0;
      gref[(size_t)i * c + j] += gi * (lp - lm) / (2 * h);
    }
  }
  std::vector<double> oref;
  if (k.scalar) { double s = 0; for (double v : ref_rows) s += v; oref = {s * scale}; } else oref = ref_rows;
  char wname[200]; snprintf(wname, sizeof wname, "%s%s a%s sm%.1f w%d ign%d probs%d scalar%d b%d c%d%s", k.softmax ? "softmax" : "sigmoid", k.focal ? "Focal" : "", k.has_alpha ? "0.25" : "-", k.smoothing, k.weight, k.ignore, k.probs, k.scalar, b, c, with_nan ? " NaN" : neg_inf ? " -inf" : "");
  std::string base(wname);
  if (dev_mean && std::isinf(scale)) {
    // Every row ignored: the mean over no rows is NaN (PyTorch's 0/0); no gradient is written.
    bool ok = std::isnan(out[0]) && g == g0;
    printf("%s %s all rows ignored: NaN mean, gradient untouched (loss %g)\n", ok ? "ok  " : "FAIL", wname, out[0]); if (!ok) g_fail++;
    return;
  }
  if (with_nan) {
    bool ok = std::isnan(out[0]) && (k.scalar || std::isfinite(out[b - 1]));
    for (int j = 0; j < c; ++j) ok = ok && std::isnan(g[j]);
    for (size_t j = c; j < g.size(); ++j) ok = ok && std::isfinite(g[j]);
    printf("%s %s NaN row propagates (loss %g, grad[0] %g)\n", ok ? "ok  " : "FAIL", wname, out[0], g[0]); if (!ok) g_fail++;
    return;
  }
  if (dt.bad >= 0) {
    // The bad row: NaN loss (so a NaN reduced loss) and a NaN gradient row;
    // the rest is compared below with that row taken out.
    bool ok = std::isnan(out[k.scalar ? 0 : dt.bad]);
    for (int j = 0; j < c; ++j) ok = ok && std::isnan(g[(size_t)dt.bad * c + j]);
    printf("%s %s out-of-range device target gives NaN (loss %g)\n", ok ? "ok  " : "FAIL", wname, out[k.scalar ? 0 : dt.bad]);
    if (!ok) g_fail++;
    if (k.scalar) return;  // nothing finite left to compare in the loss
    out[dt.bad] = 0.f; oref[dt.bad] = 0.0;
    for (int j = 0; j < c; ++j) { g[(size_t)dt.bad * c + j] = 0.f; gref[(size_t)dt.bad * c + j] = 0.0; }
    base += " rows besides the bad one";
  }
  if (dt.on) base += dev_mean ? " device targets, mean summed on the device" : " device targets";
  check((base + " loss").c_str(), out, oref, 2e-5); check((base + " grad").c_str(), g, gref, 2e-4);
}
int main() {
  std::vector<float> eps{2.0f, -0.5f};
  for (int sm = 0; sm < 2; ++sm) for (int kind = 0; kind < 3; ++kind) for (int opt = 0; opt < 4; ++opt) for (int probs = 0; probs < 2; ++probs) for (int scalar = 0; scalar < 2; ++scalar) {
    Cfg k{sm == 1, kind > 0, kind > 0 ? 2.0f : 0.0f, 0.25f, kind == 1, (opt & 1) ? 0.1f : 0.0f, (opt & 2) != 0, opt == 3 && !probs, probs == 1, scalar == 1, eps};
    loss_case(k, 5, 7, 100 + sm * 100 + kind * 20 + opt * 4 + probs * 2 + scalar);
  }
  for (int sm = 0; sm < 2; ++sm) {
    Cfg k{sm == 1, false, 0, 0, false, 0.1f, true, true, false, false, eps};
    loss_case(k, 3, 1500, 7 + sm); // > 1024 classes: block loops
    Cfg k2{sm == 1, true, 2.0f, 0.25f, true, 0.1f, false, false, true, true, eps};
    loss_case(k2, 2, 1100, 9 + sm);
    Cfg k3{sm == 1, false, 0, 0, false, 0.0f, false, false, false, false, eps};
    loss_case(k3, 2, 1, 11 + sm);
  }
  // -inf logits off the target, no smoothing: finite loss and gradient (issue 12 item 7),
  // with and without class weights, plain and focal, per row and reduced.
  for (int wgt = 0; wgt < 2; ++wgt) for (int kind = 0; kind < 2; ++kind) for (int scalar = 0; scalar < 2; ++scalar) {
    Cfg ki{true, kind == 1, kind == 1 ? 2.0f : 0.0f, 0.25f, kind == 1, 0.0f, wgt == 1, false, false, scalar == 1, eps};
    loss_case(ki, 6, 9, 300 + wgt * 4 + kind * 2 + scalar, false, true);
  }
  // Large batch: the two-stage reduction over many rows (was a float atomicAdd).
  for (int sm = 0; sm < 2; ++sm) {
    Cfg kb{sm == 1, false, 0, 0, false, 0.0f, false, false, false, true, eps};
    loss_case(kb, 700, 3, 400 + sm);
  }
  // Class targets read from dfdx's usize buffer on the device: every kind,
  // with and without the ignore index, per row and reduced, in range and with
  // one out-of-range row; more rows than a block (several blocks).
  // With an ignore index or class weights a mean's denominator is summed on the device.
  for (int sm = 0; sm < 2; ++sm) for (int kind = 0; kind < 3; ++kind) for (int ig = 0; ig < 2; ++ig) for (int wgt = 0; wgt < 2; ++wgt) for (int scalar = 0; scalar < 2; ++scalar) for (int bad = 0; bad < 2; ++bad) {
    Cfg kd{sm == 1, kind > 0, kind > 0 ? 2.0f : 0.0f, 0.25f, kind == 1, 0.0f, wgt == 1, ig == 1, false, scalar == 1, eps};
    loss_case(kd, 6, 9, 500 + sm * 80 + kind * 16 + ig * 8 + wgt * 4 + scalar * 2 + bad, false, false, {true, bad ? 2 : -1});
  }
  // The device mean over more rows than a block, smoothing and weights; and every row ignored.
  for (int sm = 0; sm < 2; ++sm) {
    Cfg km{sm == 1, false, 0, 0, false, 0.1f, true, true, false, true, eps};
    loss_case(km, 2 * POLY_BLOCK + 37, 5, 700 + sm, false, false, {true, -1});
    loss_case(km, 4, 3, 703 + sm, false, false, {true, -1, true});
  }
  for (int sm = 0; sm < 2; ++sm) {
    Cfg kd{sm == 1, false, 0, 0, false, 0.1f, true, true, false, false, eps};
    loss_case(kd, POLY_BLOCK + 37, 5, 600 + sm, false, false, {true, POLY_BLOCK + 1});
  }
  Cfg kn{true, false, 0, 0, false, 0.0f, false, false, false, false, {2.0f}};
  loss_case(kn, 2, 3, 13, true);
  printf("%s: %d failures\n", __FILE__, g_fail);
  return g_fail != 0;
}
