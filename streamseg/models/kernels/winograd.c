/* Winograd F(m x m, 3 x 3) tile transforms for NHWC float32 tensors (stride 1, zero padding 1).
 *
 * streamseg compiles this file on first use (see ../winograd.py) and calls it through ctypes;
 * the element-wise products between the two transforms are one batched GEMM done by PyTorch.
 * The transform matrices arrive as compile-time constants (-DWINO_BT_<A>=... -DWINO_AT_<A>=...,
 * written by winograd.py from its exact Toom-Cook construction), so the compiler drops the zero
 * and +-1 coefficients; A = m + 2 is a constant per function so the tile loops unroll and the
 * channel loop vectorises.
 *
 * Layouts: x, y, res: [n, H, W, C] contiguous; tiles p = (b*TH + th)*TW + tw with TH = ceil(H/m),
 * TW = ceil(W/m); tile p covers output rows m*th .. m*th+m-1. One call handles tiles [p0, p1):
 * v is [A*A, p1-p0, C] and mm is [A*A, p1-p0, Co] for just those tiles (callers chunk big batches).
 * Tiles [p0, p1) are split over OpenMP threads: built with -fopenmp, this library binds to the
 * libgomp.so.1 that PyTorch has already loaded, so it shares PyTorch's thread pool instead of
 * competing with its spinning workers. omp_set_num_threads follows torch.set_num_threads.
 */
#include <stddef.h>
#include <stdlib.h>

#define DEFINE_WINOGRAD(A)                                                                      \
void wino_input_##A(const float *x, float *v, const float *zeros, long n, long H, long W,       \
                    long C, long p0, long p1, int nt) {                                                 \
    static const float B[A][A] = WINO_BT_##A;                                                   \
    const long m = A - 2, TH = (H + m - 1) / m, TW = (W + m - 1) / m, L = p1 - p0;             \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                                \
    for (long p = p0; p < p1; ++p) {                                                            \
        long b = p / (TH * TW), r = p % (TH * TW), th = r / TW, tw = r % TW;                    \
        const float *d[A][A];                                                                   \
        for (int i = 0; i < A; ++i) {                                                           \
            long yy = m * th - 1 + i;                                                           \
            for (int j = 0; j < A; ++j) {                                                       \
                long xx = m * tw - 1 + j;                                                       \
                d[i][j] = (yy < 0 || yy >= H || xx < 0 || xx >= W)                              \
                              ? zeros : x + ((b * H + yy) * W + xx) * C;                        \
            }                                                                                   \
        }                                                                                       \
        float *o[A * A];                                                                        \
        for (int k = 0; k < A * A; ++k) o[k] = v + ((long)k * L + (p - p0)) * C;                \
        _Pragma("GCC ivdep")                                                                    \
        for (long c = 0; c < C; ++c) {                                                          \
            float t[A][A];                                                                      \
            _Pragma("GCC unroll 8")                                                             \
            for (int i = 0; i < A; ++i)                                                         \
                _Pragma("GCC unroll 8")                                                         \
                for (int j = 0; j < A; ++j) {                                                   \
                    float s = 0.0f;                                                             \
                    _Pragma("GCC unroll 8")                                                     \
                    for (int k = 0; k < A; ++k)                                                 \
                        if (B[i][k] != 0.0f) s += B[i][k] * d[k][j][c];                         \
                    t[i][j] = s;                                                                \
                }                                                                               \
            _Pragma("GCC unroll 8")                                                             \
            for (int i = 0; i < A; ++i)                                                         \
                _Pragma("GCC unroll 8")                                                         \
                for (int j = 0; j < A; ++j) {                                                   \
                    float s = 0.0f;                                                             \
                    _Pragma("GCC unroll 8")                                                     \
                    for (int k = 0; k < A; ++k)                                                 \
                        if (B[j][k] != 0.0f) s += t[i][k] * B[j][k];                            \
                    o[i * A + j][c] = s;                                                        \
                }                                                                               \
        }                                                                                       \
    }                                                                                           \
}                                                                                               \
                                                                                                \
void wino_output_##A(const float *mm, const float *bias, const float *res, int relu, float *y, \
                     long n, long H, long W, long Co, long p0, long p1, int nt) {               \
    static const float T[A - 2][A] = WINO_AT_##A;                                               \
    const long m = A - 2, TH = (H + m - 1) / m, TW = (W + m - 1) / m, L = p1 - p0;             \
    _Pragma("omp parallel num_threads(nt)")                                                     \
    {                                                                                           \
    float *scratch = malloc(sizeof(float) * (A - 2) * A * Co);                                  \
    _Pragma("omp for schedule(static)")                                                         \
    for (long p = p0; p < p1; ++p) {                                                            \
        long b = p / (TH * TW), r = p % (TH * TW), th = r / TW, tw = r % TW;                    \
        const float *s[A * A];                                                                  \
        for (int k = 0; k < A * A; ++k) s[k] = mm + ((long)k * L + (p - p0)) * Co;              \
        /* column pass: t[i][l][:] = sum_k T[i][k] * s[k][l][:], kept in a per-thread scratch */ \
        _Pragma("GCC unroll 8")                                                                 \
        for (int i = 0; i < A - 2; ++i)                                                         \
            _Pragma("GCC unroll 8")                                                             \
            for (int l = 0; l < A; ++l) {                                                       \
                float *restrict t = scratch + (i * A + l) * Co;                                 \
                _Pragma("GCC ivdep")                                                            \
                for (long c = 0; c < Co; ++c) {                                                 \
                    float acc = 0.0f;                                                           \
                    _Pragma("GCC unroll 8")                                                     \
                    for (int k = 0; k < A; ++k)                                                 \
                        if (T[i][k] != 0.0f) acc += T[i][k] * s[k * A + l][c];                  \
                    t[c] = acc;                                                                 \
                }                                                                               \
            }                                                                                   \
        /* row pass + bias (+ residual) (+ ReLU), straight into the NHWC output */             \
        long rows = H - m * th < m ? H - m * th : m, cols = W - m * tw < m ? W - m * tw : m;    \
        for (int i = 0; i < rows; ++i)                                                          \
            for (int j = 0; j < cols; ++j) {                                                    \
                long off = ((b * H + m * th + i) * W + m * tw + j) * Co;                        \
                float *restrict out = y + off;                                                  \
                const float *t = scratch + i * A * Co;                                          \
                float cf[A];                                                                    \
                for (int l = 0; l < A; ++l) cf[l] = T[j][l];                                    \
                _Pragma("GCC ivdep")                                                            \
                for (long c = 0; c < Co; ++c) {                                                 \
                    float acc = bias[c];                                                        \
                    _Pragma("GCC unroll 8")                                                     \
                    for (int l = 0; l < A; ++l) acc += cf[l] * t[l * Co + c];                   \
                    out[c] = acc;                                                               \
                }                                                                               \
                if (res) {                                                                      \
                    const float *restrict rr = res + off;                                       \
                    _Pragma("GCC ivdep")                                                        \
                    for (long c = 0; c < Co; ++c) out[c] += rr[c];                              \
                }                                                                               \
                if (relu) {                                                                     \
                    _Pragma("GCC ivdep")                                                        \
                    for (long c = 0; c < Co; ++c) out[c] = out[c] > 0.0f ? out[c] : 0.0f;       \
                }                                                                               \
            }                                                                                   \
    }                                                                                           \
    free(scratch);                                                                              \
    }                                                                                           \
}

DEFINE_WINOGRAD(4)
DEFINE_WINOGRAD(6)
