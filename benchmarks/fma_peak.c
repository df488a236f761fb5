/* Multiply-add throughput of one core, in float32 GFLOP/s: the "peak" that benchmarks/kernels.py
 * compares the kernels with. benchmarks/kernels.py builds it (cc -O2 -march=native) and runs one
 * copy per thread at once, so the figure holds with every core busy.
 *
 *   cc -O2 -march=native -o fma_peak benchmarks/fma_peak.c
 *   ./fma_peak          the widest vectors this CPU has (512-bit AVX-512 where present, else 256-bit)
 *   ./fma_peak 256      256-bit vectors (AVX2 + FMA), what an AVX2 CPU or NUMBA_CPU_NAME=haswell gets
 *   ./fma_peak all      one line per width: "512 <GFLOP/s>" and "256 <GFLOP/s>"
 *
 * Twelve independent chains acc = acc * m + a, each one vector wide, so the loop is bound by the
 * multiply-add units, not by their latency (4 cycles x 2 units = 8 chains in flight at least). The
 * chains start from different values so that the compiler cannot merge them. Each width is built
 * for its own instruction set (target attributes) and run only if the CPU has it. Prints GFLOP/s
 * (2 flops per lane per multiply-add), best of 3 runs of 0.5-1 s. */
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CHAINS 12  /* c0 ... c11 below */

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* The same loop at each width: V the vector type, SET1/FMADD/ADD its intrinsics. */
#define CHAIN_LOOP(V, SET1, FMADD, ADD, STORE, LANES)                                                       \
    const V m = SET1(0.9999f), a = SET1(1e-4f);                                                           \
    V c0 = SET1(1), c1 = SET1(2), c2 = SET1(3), c3 = SET1(4), c4 = SET1(5), c5 = SET1(6);                 \
    V c6 = SET1(7), c7 = SET1(8), c8 = SET1(9), c9 = SET1(10), c10 = SET1(11), c11 = SET1(12);            \
    for (long i = 0; i < iters; i++) {                                                                    \
        c0 = FMADD(c0, m, a); c1 = FMADD(c1, m, a); c2 = FMADD(c2, m, a); c3 = FMADD(c3, m, a);           \
        c4 = FMADD(c4, m, a); c5 = FMADD(c5, m, a); c6 = FMADD(c6, m, a); c7 = FMADD(c7, m, a);           \
        c8 = FMADD(c8, m, a); c9 = FMADD(c9, m, a); c10 = FMADD(c10, m, a); c11 = FMADD(c11, m, a);       \
    }                                                                                                     \
    V s = ADD(ADD(ADD(c0, c1), ADD(c2, c3)), ADD(ADD(c4, c5), ADD(c6, c7)));                              \
    s = ADD(s, ADD(ADD(c8, c9), ADD(c10, c11)));                                                          \
    float out[LANES];                                                                                     \
    STORE(out, s);                                                                                        \
    return out[0] + out[LANES - 1]; /* used, so the loop is not removed */

__attribute__((target("avx2,fma"))) static float chains256(long iters) {
    CHAIN_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8)
}

__attribute__((target("avx512f"))) static float chains512(long iters) {
    CHAIN_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16)
}

static float sink = 0;

/* Best GFLOP/s of 3 runs at `lanes` floats per vector. */
static double rate(int lanes) {
    long iters = 100000000;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        double t = seconds();
        sink += lanes == 16 ? chains512(iters) : chains256(iters);
        double g = 2.0 * lanes * CHAINS * iters / (seconds() - t) / 1e9;
        if (g > best) best = g;
    }
    return best;
}

int main(int argc, char **argv) {
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f");
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) {
        fprintf(stderr, "fma_peak: this CPU has no AVX2 + FMA\n");
        return 2;
    }
    const char *what = argc > 1 ? argv[1] : "widest";
    if (!strcmp(what, "all")) {
        if (has512) printf("512 %.1f\n", rate(16));
        printf("256 %.1f\n", rate(8));
    } else if (!strcmp(what, "256")) {
        printf("%.1f\n", rate(8));
    } else if (!strcmp(what, "512")) {
        if (!has512) {
            fprintf(stderr, "fma_peak: this CPU has no AVX-512\n");
            return 2;
        }
        printf("%.1f\n", rate(16));
    } else if (!strcmp(what, "widest")) {
        printf("%.1f\n", rate(has512 ? 16 : 8));
    } else {
        fprintf(stderr, "usage: fma_peak [widest|512|256|all]\n");
        return 2;
    }
    return sink == 12345.0f; /* never true; keeps sink alive */
}
