/* Multiply-add throughput of one core, in float32 GFLOP/s: the "peak" that benchmarks/kernels.py
 * compares the kernels with. benchmarks/kernels.py builds it (cc -O2 -march=native) and runs one
 * copy per thread at once, so the figure holds with every core busy.
 *
 *   cc -O2 -march=native -o fma_peak benchmarks/fma_peak.c && ./fma_peak
 *
 * Twelve independent chains acc = acc * m + a, each 8 lanes wide (256-bit vectors; where the CPU
 * has 512-bit units, wider vectors can only match or beat this), so the loop is bound by the
 * multiply-add units, not by their latency. The chains start from different values so that the
 * compiler cannot merge them. Prints one number: GFLOP/s (2 flops per lane per multiply-add). */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

#define CHAINS 12  /* c0 ... c11 below */

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static float chains(long iters) {
    const __m256 m = _mm256_set1_ps(0.9999f), a = _mm256_set1_ps(1e-4f);
    __m256 c0 = _mm256_set1_ps(1), c1 = _mm256_set1_ps(2), c2 = _mm256_set1_ps(3), c3 = _mm256_set1_ps(4);
    __m256 c4 = _mm256_set1_ps(5), c5 = _mm256_set1_ps(6), c6 = _mm256_set1_ps(7), c7 = _mm256_set1_ps(8);
    __m256 c8 = _mm256_set1_ps(9), c9 = _mm256_set1_ps(10), c10 = _mm256_set1_ps(11), c11 = _mm256_set1_ps(12);
    for (long i = 0; i < iters; i++) {
        c0 = _mm256_fmadd_ps(c0, m, a); c1 = _mm256_fmadd_ps(c1, m, a); c2 = _mm256_fmadd_ps(c2, m, a);
        c3 = _mm256_fmadd_ps(c3, m, a); c4 = _mm256_fmadd_ps(c4, m, a); c5 = _mm256_fmadd_ps(c5, m, a);
        c6 = _mm256_fmadd_ps(c6, m, a); c7 = _mm256_fmadd_ps(c7, m, a); c8 = _mm256_fmadd_ps(c8, m, a);
        c9 = _mm256_fmadd_ps(c9, m, a); c10 = _mm256_fmadd_ps(c10, m, a); c11 = _mm256_fmadd_ps(c11, m, a);
    }
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)),
                             _mm256_add_ps(_mm256_add_ps(c4, c5), _mm256_add_ps(c6, c7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(c8, c9), _mm256_add_ps(c10, c11)));
    float out[8];
    _mm256_storeu_ps(out, s);
    return out[0] + out[7];  /* used, so the loop is not removed */
}

int main(void) {
    long iters = 100000000;
    double best = 0;
    float sink = 0;
    for (int r = 0; r < 3; r++) {
        double t = seconds();
        sink += chains(iters);
        double rate = 2.0 * 8 * CHAINS * iters / (seconds() - t) / 1e9;
        if (rate > best) best = rate;
    }
    printf("%.1f\n", best);
    return sink == 12345.0f;  /* never true; keeps sink alive */
}
