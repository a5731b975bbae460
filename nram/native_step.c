/* One soft NRAM timestep and its backward, on the CPU, in plain C.

   nram/native.py compiles this file on first use (with -DREAL=float or -DREAL=double) and
   calls it through ctypes. nram/machine.py holds the same step in PyTorch: the reference these
   functions are tested against, and the path on CUDA. The formulas and their order follow
   nram/machine.py and nram/gates.py line for line.

   Layout: value-major with the batch innermost, as nram/machine.py stores it: memory
   [M, M, B], registers [R, M, B], weights [K, S, B] (K = R + Q sources, S choice slots), slot
   inputs "mixed" [S, M, B], sources [K, M, B]. Every array is contiguous, so row v of value k
   is the B numbers from (k * M + v) * B on. A call handles the examples [begin, end) in tiles
   of TILE: each tile runs the whole step while its rows are in the cache, and every inner loop
   runs over the tile's examples, which the compiler vectorises.

   Sources are the registers 0..R-1, then the gate outputs R..R+Q-1. An input slot of gate i
   sees sources 0..R+i-1 and a register slot sees all K; slots are numbered gate by gate, so
   the slots that see a source are a suffix of 0..S-1. */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef REAL
#define REAL float
#endif

#define TILE 64

/* Gate codes: the indices of nram.gates.GATE_NAMES. */
enum { READ, ZERO, ONE, TWO, INC, ADD, SUB, DEC, LT, LE, EQ, MIN, MAX, WRITE };

typedef struct {
    long M, R, Q, S, K;    /* values, registers, gates, slots, sources */
    long B;                /* batch size: the distance between two rows */
    const int *gate;       /* [Q] gate codes, in paper order */
    const int *first_slot; /* [Q] each gate's first input slot */
} Circuit;

typedef REAL *restrict Lanes;        /* one row of a tile: n examples */
typedef const REAL *restrict CLanes;

static inline void lanes_fma(int n, Lanes y, CLanes a, CLanes x) { for (int b = 0; b < n; ++b) y[b] += a[b] * x[b]; }
static inline void lanes_mul(int n, Lanes y, CLanes a, CLanes x) { for (int b = 0; b < n; ++b) y[b] = a[b] * x[b]; }
static inline void lanes_add(int n, Lanes y, CLanes x) { for (int b = 0; b < n; ++b) y[b] += x[b]; }
static inline void lanes_copy(int n, Lanes y, CLanes x) { memcpy(y, x, n * sizeof(REAL)); }
static inline void lanes_zero(int n, Lanes y) { memset(y, 0, n * sizeof(REAL)); }

/* The widest vector register the compiler targets (GCC and Clang vector extensions); a tile's
   row of TILE examples is WIDE_PER_ROW of them. Loops that sum into a few rows keep those sums
   in Wide variables, so that they stay in registers: summing into memory made them store-bound. */
#if defined(__AVX512F__)
typedef REAL Wide __attribute__((vector_size(64)));
#elif defined(__AVX__)
typedef REAL Wide __attribute__((vector_size(32)));
#else
typedef REAL Wide __attribute__((vector_size(16)));
#endif
enum { PER_WIDE = sizeof(Wide) / sizeof(REAL), WIDE_PER_ROW = TILE / PER_WIDE,
       DENSE_BLOCK = WIDE_PER_ROW >= 8 ? 1 : 16 / WIDE_PER_ROW,  /* rows summed at once: <= 16 registers */
       MIX_BLOCK = WIDE_PER_ROW >= 8 ? 1 : 12 / WIDE_PER_ROW };

static inline Wide wide_load(const REAL *x) { Wide w; memcpy(&w, x, sizeof w); return w; }

/* Row v of value k of a [*, M, B] array, from example b0 on. */
static inline REAL *value_row(const Circuit *c, const REAL *base, long k, long v, long b0) {
    return (REAL *)base + (k * c->M + v) * c->B + b0;
}

/* weights[j, s], from example b0 on. */
static inline const REAL *weight_row(const Circuit *c, const REAL *weights, long j, long s, long b0) {
    return weights + (j * c->S + s) * c->B + b0;
}

static int is_constant(int gate) { return gate == ZERO || gate == ONE || gate == TWO || gate == WRITE; }

static long constant_value(int gate, long M) { return gate == ONE ? 1 % M : gate == TWO ? 2 % M : 0; }

static int arity(int gate) {
    if (gate == ZERO || gate == ONE || gate == TWO) return 0;
    return (gate == READ || gate == INC || gate == DEC) ? 1 : 2;
}

static inline long wrap(long v, long M) { return ((v % M) + M) % M; }

/* nram.gates.RESCALED_GATES: their output's total is a product of totals, which compounds
   float rounding, so the step divides it by its total (1 up to rounding). */
static int rescaled(int gate) { return gate == READ || gate == ADD || gate == SUB || gate == MIN || gate == MAX; }

/* out[v] /= sum_v out[v], for every lane. */
static void rescale(long M, long B, int n, REAL *out) {
    REAL total[TILE];
    lanes_zero(n, total);
    for (long v = 0; v < M; ++v) lanes_add(n, total, out + v * B);
    for (int b = 0; b < n; ++b) total[b] = 1 / total[b];
    for (long v = 0; v < M; ++v)
        for (int b = 0; b < n; ++b) out[v * B + b] *= total[b];
}

/* The backward of rescale at a total of 1, in place: g[v] -= sum_u g[u] y[u], y its output. */
static void rescale_backward(long M, long B, int n, const REAL *y, REAL *g) {
    REAL dot[TILE];
    lanes_zero(n, dot);
    for (long v = 0; v < M; ++v) lanes_fma(n, dot, g + v * B, y + v * B);
    for (long v = 0; v < M; ++v)
        for (int b = 0; b < n; ++b) g[v * B + b] -= dot[b];
}

/* ----------------------------------------------------------------------------- forward -- */

/* Which pass of a slot's sum adds source j (see mix_slot): 0 the registers, 1 the constant
   gates' one-hot outputs, 2 the other gates' outputs. */
static inline int mixing_pass(const Circuit *c, long j) {
    return j < c->R ? 0 : is_constant(c->gate[j - c->R]) ? 1 : 2;
}

/* Values v0 .. v0 + values - 1 of slot s's input (see mix_slot), for a tile of `wides` whole
   Wide vectors per row, summed in registers. */
static inline __attribute__((always_inline)) void mix_values(const Circuit *c, int wides, long b0,
                                                              const REAL *weights, REAL *mixed,
                                                              const REAL *sources, long s, long seen, long v0,
                                                              int values) {
    long R = c->R;
    Wide sum[MIX_BLOCK][WIDE_PER_ROW];
    for (int i = 0; i < values; ++i)
        for (int l = 0; l < wides; ++l) sum[i][l] = (Wide){0};
    for (int pass = 0; pass < 3; ++pass)
        for (long j = 0; j < seen; ++j) {
            if (mixing_pass(c, j) != pass) continue;
            const REAL *w = weight_row(c, weights, j, s, b0);
            if (pass == 1) {  /* i runs over the block (not computed) so that sum stays in registers */
                long value = constant_value(c->gate[j - R], c->M);
                for (int i = 0; i < values; ++i)
                    if (v0 + i == value)
                        for (int l = 0; l < wides; ++l) sum[i][l] += wide_load(w + l * PER_WIDE);
                continue;
            }
            for (int l = 0; l < wides; ++l) {
                Wide weight = wide_load(w + l * PER_WIDE);
                for (int i = 0; i < values; ++i)
                    sum[i][l] += weight * wide_load(value_row(c, sources, j, v0 + i, b0) + l * PER_WIDE);
            }
        }
    for (int i = 0; i < values; ++i) memcpy(value_row(c, mixed, s, v0 + i, b0), sum[i], wides * sizeof(Wide));
}

/* Slot s's input: mixed[s] = sum_j weights[j, s] source_j over the first `seen` sources (its
   options). The sum runs over the registers, then the constant gates' one-hot outputs (WRITE's
   is 0: it adds its weight at that value only), then the other gates' outputs, each in circuit
   order: the order in which earlier releases added each source into every slot as it was made,
   so every float is as before. */
static void mix_slot(const Circuit *c, int n, long b0, const REAL *weights, REAL *mixed, const REAL *sources,
                     long s, long seen) {
    long M = c->M, R = c->R;
    for (long v0 = 0; v0 < M; v0 += MIX_BLOCK) {
        int values = M - v0 < MIX_BLOCK ? (int)(M - v0) : MIX_BLOCK;
        if (n == TILE && values == MIX_BLOCK)  /* constants throughout: the sums stay in registers */
            mix_values(c, WIDE_PER_ROW, b0, weights, mixed, sources, s, seen, v0, MIX_BLOCK);
        else if (n % PER_WIDE == 0)
            mix_values(c, n / PER_WIDE, b0, weights, mixed, sources, s, seen, v0, values);
        else {  /* lane by lane, in memory */
            for (int i = 0; i < values; ++i) lanes_zero(n, value_row(c, mixed, s, v0 + i, b0));
            for (int pass = 0; pass < 3; ++pass)
                for (long j = 0; j < seen; ++j) {
                    if (mixing_pass(c, j) != pass) continue;
                    const REAL *w = weight_row(c, weights, j, s, b0);
                    for (int i = 0; i < values; ++i) {
                        REAL *y = value_row(c, mixed, s, v0 + i, b0);
                        if (pass != 1) lanes_fma(n, y, w, value_row(c, sources, j, v0 + i, b0));
                        else if (v0 + i == constant_value(c->gate[j - R], M)) lanes_add(n, y, w);
                    }
                }
        }
    }
}

/* A distribution on {0, 1} with P(1) = p: [1 - p, p, 0, ...]. */
static void bernoulli(long M, long B, int n, const REAL *p, REAL *out) {
    for (int b = 0; b < n; ++b) {
        out[b] = 1 - p[b];
        out[B + b] = p[b];
    }
    for (long v = 2; v < M; ++v) lanes_zero(n, out + v * B);
}

/* The output of an arithmetic or comparison gate; a, b, out point at row 0 of their values. */
static void gate_forward(int gate, long M, long B, int n, const REAL *a, const REAL *b, REAL *out) {
    REAL p[TILE], first[TILE], second[TILE], product[TILE], previous[TILE];
    switch (gate) {
    case INC: /* out[v] = a[v - 1] */
    case DEC: /* out[v] = a[v + 1] */
        for (long v = 0; v < M; ++v) lanes_copy(n, out + v * B, a + wrap(v + (gate == INC ? -1 : 1), M) * B);
        return;
    case ADD: /* out[c] = sum_x a[x] b[c - x] */
    case SUB: /* out[c] = P(A - B = c) = sum_x b[x] a[c + x] */
        for (long v = 0; v < M; ++v) {
            REAL *y = out + v * B;
            lanes_zero(n, y);
            for (long x = 0; x < M; ++x) {
                if (gate == ADD) lanes_fma(n, y, a + x * B, b + wrap(v - x, M) * B);
                else lanes_fma(n, y, b + x * B, a + wrap(v + x, M) * B);
            }
        }
        return;
    case LT: /* p = sum_c b[c] P(A < c) */
    case LE: /* p = sum_c b[c] P(A <= c) */
        lanes_zero(n, p);
        lanes_zero(n, first);
        for (long v = 0; v < M; ++v) {
            if (gate == LE) lanes_add(n, first, a + v * B);
            lanes_fma(n, p, b + v * B, first);
            if (gate == LT) lanes_add(n, first, a + v * B);
        }
        bernoulli(M, B, n, p, out);
        return;
    case EQ: /* p = sum_v a[v] b[v] */
        lanes_zero(n, p);
        for (long v = 0; v < M; ++v) lanes_fma(n, p, a + v * B, b + v * B);
        bernoulli(M, B, n, p, out);
        return;
    case MIN: /* U(c) = P(A >= c) P(B >= c); out[c] = U(c) - U(c + 1) */
    case MAX: /* V(c) = P(A <= c) P(B <= c); out[c] = V(c) - V(c - 1) */
        lanes_zero(n, first);
        lanes_zero(n, second);
        lanes_zero(n, previous);
        for (long k = 0; k < M; ++k) {
            long v = gate == MIN ? M - 1 - k : k;
            lanes_add(n, first, a + v * B);
            lanes_add(n, second, b + v * B);
            lanes_mul(n, product, first, second);
            for (int i = 0; i < n; ++i) out[v * B + i] = product[i] - previous[i];
            lanes_copy(n, previous, product);
        }
        return;
    }
}

static void forward_tile(const Circuit *c, int n, long b0, const REAL *memory, const REAL *registers,
                         const REAL *weights, REAL *new_memory, REAL *mixed, REAL *sources) {
    long M = c->M, B = c->B, R = c->R;
    for (long j = 0; j < R; ++j)
        for (long v = 0; v < M; ++v) lanes_copy(n, value_row(c, sources, j, v, b0), value_row(c, registers, j, v, b0));
    for (long i = 0; i < c->Q; ++i) {
        if (!is_constant(c->gate[i])) continue;
        long value = constant_value(c->gate[i], M);
        for (long v = 0; v < M; ++v) {
            REAL *y = value_row(c, sources, R + i, v, b0);
            if (v == value) for (int b = 0; b < n; ++b) y[b] = 1;
            else lanes_zero(n, y);
        }
    }
    for (long i = 0; i < c->Q; ++i) {
        int gate = c->gate[i];
        for (long s = c->first_slot[i]; s < c->first_slot[i] + arity(gate); ++s)
            mix_slot(c, n, b0, weights, mixed, sources, s, R + i);
        const REAL *a = value_row(c, mixed, c->first_slot[i], 0, b0);
        const REAL *b = a + M * B;  /* the gate's second input slot */
        REAL *out = value_row(c, sources, R + i, 0, b0);
        if (gate == WRITE) {  /* memory'[k] = memory[k] + a[k] (b - memory[k]) */
            for (long k = 0; k < M; ++k)
                for (long v = 0; v < M; ++v) {
                    const REAL *old = value_row(c, memory, k, v, b0);
                    REAL *y = value_row(c, new_memory, k, v, b0);
                    for (int e = 0; e < n; ++e) y[e] = old[e] + a[k * B + e] * (b[v * B + e] - old[e]);
                }
            continue;
        }
        if (is_constant(gate)) continue;
        if (gate == READ) {  /* out[v] = sum_k a[k] memory[k, v] */
            for (long v = 0; v < M; ++v) {
                lanes_zero(n, out + v * B);
                for (long k = 0; k < M; ++k) lanes_fma(n, out + v * B, a + k * B, value_row(c, memory, k, v, b0));
            }
        } else {
            gate_forward(gate, M, B, n, a, b, out);
        }
        if (rescaled(gate)) rescale(M, B, n, out);
    }
    for (long s = c->S - R; s < c->S; ++s) mix_slot(c, n, b0, weights, mixed, sources, s, R + c->Q);
}

/* ---------------------------------------------------------------------------- backward -- */

/* d loss / d p of an output [1 - p, p, 0, ...]: g[1] - g[0]. */
static void bit_gradient(long B, int n, const REAL *g, REAL *out) {
    for (int b = 0; b < n; ++b) out[b] = -g[b] + g[B + b];
}

/* Vector-Jacobian product of an arithmetic or comparison gate: g is d loss / d out; ga, gb
   receive d loss / d a and d loss / d b (gb unused for unary gates). */
static void gate_backward(int gate, long M, long B, int n, const REAL *a, const REAL *b, const REAL *g,
                          REAL *ga, REAL *gb) {
    REAL bit[TILE], first[TILE], second[TILE], step[TILE];
    switch (gate) {
    case INC: /* ga[v] = g[v + 1] */
    case DEC: /* ga[v] = g[v - 1] */
        for (long v = 0; v < M; ++v) lanes_copy(n, ga + v * B, g + wrap(v + (gate == INC ? 1 : -1), M) * B);
        return;
    case ADD: /* ga[v] = sum_x g[v + x] b[x], gb[v] = sum_x g[v + x] a[x] */
    case SUB: /* ga[v] = sum_x g[v - x] b[x], gb[x] = sum_v g[v - x] a[v] */
        for (long v = 0; v < M; ++v) {
            lanes_zero(n, ga + v * B);
            lanes_zero(n, gb + v * B);
        }
        for (long v = 0; v < M; ++v)
            for (long x = 0; x < M; ++x) {
                if (gate == ADD) {
                    const REAL *shifted = g + wrap(v + x, M) * B;
                    lanes_fma(n, ga + v * B, shifted, b + x * B);
                    lanes_fma(n, gb + v * B, shifted, a + x * B);
                } else {
                    const REAL *shifted = g + wrap(v - x, M) * B;
                    lanes_fma(n, ga + v * B, shifted, b + x * B);
                    lanes_fma(n, gb + x * B, shifted, a + v * B);
                }
            }
        return;
    case LT: /* ga[x] = bit P(B > x), gb[c] = bit P(A < c) */
    case LE: /* ga[x] = bit P(B >= x), gb[c] = bit P(A <= c) */
        bit_gradient(B, n, g, bit);
        lanes_zero(n, first);
        for (long v = 0; v < M; ++v) {  /* prefix sums of a */
            if (gate == LE) lanes_add(n, first, a + v * B);
            lanes_mul(n, gb + v * B, bit, first);
            if (gate == LT) lanes_add(n, first, a + v * B);
        }
        lanes_zero(n, second);
        for (long v = M - 1; v >= 0; --v) {  /* suffix sums of b */
            if (gate == LE) lanes_add(n, second, b + v * B);
            lanes_mul(n, ga + v * B, bit, second);
            if (gate == LT) lanes_add(n, second, b + v * B);
        }
        return;
    case EQ:
        bit_gradient(B, n, g, bit);
        for (long v = 0; v < M; ++v) {
            lanes_mul(n, ga + v * B, bit, b + v * B);
            lanes_mul(n, gb + v * B, bit, a + v * B);
        }
        return;
    case MIN: /* F = survival functions; step[c] = g[c] - g[c - 1]; ga[x] = sum_{c <= x} step[c] F_b(c) */
    case MAX: /* F = distribution functions; step[c] = g[c] - g[c + 1]; ga[x] = sum_{c >= x} step[c] F_b(c) */
    {
        long direction = gate == MIN ? 1 : -1;  /* the order of the accumulation of ga */
        long start = gate == MIN ? 0 : M - 1;
        /* First pass, against that order: F_a into ga and F_b into gb. */
        lanes_zero(n, first);
        lanes_zero(n, second);
        for (long k = M - 1; k >= 0; --k) {
            long v = start + direction * k;
            lanes_add(n, first, a + v * B);
            lanes_add(n, second, b + v * B);
            lanes_copy(n, ga + v * B, first);
            lanes_copy(n, gb + v * B, second);
        }
        /* Second pass: each row reads its F values before it is overwritten by its gradient. */
        lanes_zero(n, first);
        lanes_zero(n, second);
        for (long k = 0; k < M; ++k) {
            long v = start + direction * k;
            const REAL *g_here = g + v * B;
            if (k == 0) lanes_copy(n, step, g_here);
            else for (int i = 0; i < n; ++i) step[i] = g_here[i] - g_here[i - direction * B];
            lanes_fma(n, first, step, gb + v * B);
            lanes_fma(n, second, step, ga + v * B);
            lanes_copy(n, ga + v * B, first);
            lanes_copy(n, gb + v * B, second);
        }
        return;
    }
    }
}

static void backward_tile(const Circuit *c, int n, long b0, const REAL *memory, const REAL *weights,
                          const REAL *mixed, const REAL *sources, const REAL *grad_new_memory,
                          const REAL *grad_new_registers, REAL *grad_memory, REAL *grad_sources,
                          REAL *grad_slots, REAL *grad_weights) {
    long M = c->M, B = c->B, R = c->R, register_slots = c->S - c->R;
    for (long r = 0; r < R; ++r)
        for (long v = 0; v < M; ++v)
            lanes_copy(n, value_row(c, grad_slots, register_slots + r, v, b0),
                       value_row(c, grad_new_registers, r, v, b0));
    for (long j = 0; j < c->K; ++j)
        for (long v = 0; v < M; ++v) {
            REAL *y = value_row(c, grad_sources, j, v, b0);
            lanes_zero(n, y);
            for (long r = 0; r < R; ++r)
                lanes_fma(n, y, weight_row(c, weights, j, register_slots + r, b0),
                          value_row(c, grad_new_registers, r, v, b0));
        }
    for (long k = 0; k < M; ++k)
        for (long v = 0; v < M; ++v)
            lanes_copy(n, value_row(c, grad_memory, k, v, b0), value_row(c, grad_new_memory, k, v, b0));

    for (long i = c->Q - 1; i >= 0; --i) {
        int gate = c->gate[i];
        long first = c->first_slot[i];
        if (arity(gate) == 0) continue;
        const REAL *a = value_row(c, mixed, first, 0, b0);
        const REAL *b = a + M * B;
        REAL *ga = value_row(c, grad_slots, first, 0, b0);
        REAL *gb = ga + M * B;
        REAL *g = value_row(c, grad_sources, R + i, 0, b0);
        if (rescaled(gate)) rescale_backward(M, B, n, value_row(c, sources, R + i, 0, b0), g);
        if (gate == WRITE) {  /* memory' = memory + a (b - memory), a the address, b the value */
            for (long k = 0; k < M; ++k) lanes_zero(n, ga + k * B), lanes_zero(n, gb + k * B);
            for (long k = 0; k < M; ++k)
                for (long v = 0; v < M; ++v) {
                    REAL *gm = value_row(c, grad_memory, k, v, b0);
                    const REAL *old = value_row(c, memory, k, v, b0);
                    for (int e = 0; e < n; ++e) {
                        ga[k * B + e] += gm[e] * (b[v * B + e] - old[e]);
                        gb[v * B + e] += a[k * B + e] * gm[e];
                        gm[e] = gm[e] - gm[e] * a[k * B + e];
                    }
                }
        } else if (gate == READ) {  /* out = a^T memory, memory as it was before WRITE */
            for (long k = 0; k < M; ++k) {
                lanes_zero(n, ga + k * B);
                for (long v = 0; v < M; ++v) {
                    REAL *gm = value_row(c, grad_memory, k, v, b0);
                    lanes_fma(n, ga + k * B, value_row(c, memory, k, v, b0), g + v * B);
                    lanes_fma(n, gm, a + k * B, g + v * B);
                }
            }
        } else {
            gate_backward(gate, M, B, n, a, b, g, ga, gb);
        }
        for (long s = first; s < first + arity(gate); ++s)
            for (long j = 0; j < R + i; ++j) {
                const REAL *w = weight_row(c, weights, j, s, b0);
                for (long v = 0; v < M; ++v)
                    lanes_fma(n, value_row(c, grad_sources, j, v, b0), w, value_row(c, grad_slots, s, v, b0));
            }
    }
    for (long j = 0; j < c->K; ++j)
        for (long s = 0; s < c->S; ++s) {
            REAL *y = (REAL *)weight_row(c, grad_weights, j, s, b0);
            lanes_zero(n, y);
            for (long v = 0; v < M; ++v)
                lanes_fma(n, y, value_row(c, sources, j, v, b0), value_row(c, grad_slots, s, v, b0));
        }
}

/* ----------------------------------------------------------------------------- entries -- */

/* The step for examples [begin, end): new_memory [M, M, B] (untouched without a WRITE gate),
   mixed [S, M, B] (every slot's input; the last R are the new registers), sources [K, M, B]. */
void nram_step_forward(long M, long B, long R, long Q, long S, const int *gate, const int *first_slot,
                       long begin, long end, const REAL *memory, const REAL *registers, const REAL *weights,
                       REAL *new_memory, REAL *mixed, REAL *sources) {
    Circuit c = {M, R, Q, S, R + Q, B, gate, first_slot};
    for (long b0 = begin; b0 < end; b0 += TILE) {
        int n = end - b0 < TILE ? (int)(end - b0) : TILE;
        forward_tile(&c, n, b0, memory, registers, weights, new_memory, mixed, sources);
    }
}

/* Its backward for examples [begin, end), from what the forward saved (memory before the step,
   weights, mixed, sources) and the gradients of its outputs: grad_memory [M, M, B],
   grad_sources [K, M, B] (the first R are the registers' gradients; a rescaled gate's row ends
   holding the gradient before its rescale), grad_weights [K, S, B]; grad_slots [S, M, B] is
   scratch. */
void nram_step_backward(long M, long B, long R, long Q, long S, const int *gate, const int *first_slot,
                        long begin, long end, const REAL *memory, const REAL *weights, const REAL *mixed,
                        const REAL *sources, const REAL *grad_new_memory, const REAL *grad_new_registers,
                        REAL *grad_memory, REAL *grad_sources, REAL *grad_slots, REAL *grad_weights) {
    Circuit c = {M, R, Q, S, R + Q, B, gate, first_slot};
    for (long b0 = begin; b0 < end; b0 += TILE) {
        int n = end - b0 < TILE ? (int)(end - b0) : TILE;
        backward_tile(&c, n, b0, memory, weights, mixed, sources, grad_new_memory, grad_new_registers,
                      grad_memory, grad_sources, grad_slots, grad_weights);
    }
}

/* ------------------------------------------------------------------ choice softmax -- */

/* e^x for x <= 0, in float, as a loop the compiler can vectorise (libm's expf is a call per
   number): x = k ln 2 + f with |f| <= ln 2 / 2, e^f by Cephes' degree-6 polynomial, 2^k put
   into the exponent bits. Relative error about 1e-7; below -87 (where float would turn
   subnormal) it returns 0, so a decisive controller's weights are exactly one-hot. */
static inline float exp_nonpositive_float(float x) {
    float underflow = x < -87.0f;
    x = underflow ? -87.0f : x;
    float k = x * 1.44269504088896341f;
    k = (k + 12582912.0f) - 12582912.0f; /* round to nearest: 1.5 * 2^23 drops the fraction */
    float f = x - k * 0.693359375f + k * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * f + 1.3981999507e-3f;
    p = p * f + 8.3334519073e-3f;
    p = p * f + 4.1665795894e-2f;
    p = p * f + 1.6666665459e-1f;
    p = p * f + 5.0000001201e-1f;
    p = p * f * f + f + 1.0f;
    union { float value; int bits; } scale = {.bits = ((int)k + 127) << 23};
    return underflow ? 0.0f : p * scale.value;
}

static inline double exp_nonpositive_double(double x) { return exp(x); }

#define exp_nonpositive(x) _Generic((x), float: exp_nonpositive_float, double: exp_nonpositive_double)(x)

/* The softmax of examples [b0, b0 + n) of rows with stride B: weights[j, s] = softmax over the
   options of slot s of its logits, 0 for j >= width[s]. logits [*, B] hold every slot's options
   one slot after another (nram.circuit.CircuitLayout). */
static void softmax_tile(long S, long K, long B, const int *width, int n, long b0, const REAL *logits,
                         REAL *weights) {
    REAL largest[TILE], total[TILE];
    long offset = 0;
    for (long s = 0; s < S; offset += width[s], ++s) {
        const REAL *z = logits + offset * B + b0;
        lanes_copy(n, largest, z);
        for (long j = 1; j < width[s]; ++j)
            for (int b = 0; b < n; ++b) largest[b] = z[j * B + b] > largest[b] ? z[j * B + b] : largest[b];
        lanes_zero(n, total);
        for (long j = 0; j < width[s]; ++j) {
            REAL *w = weights + (j * S + s) * B + b0;
            for (int b = 0; b < n; ++b) {
                w[b] = exp_nonpositive(z[j * B + b] - largest[b]);
                total[b] += w[b];
            }
        }
        for (int b = 0; b < n; ++b) total[b] = 1 / total[b];
        for (long j = 0; j < K; ++j) {
            REAL *w = weights + (j * S + s) * B + b0;
            if (j < width[s]) for (int b = 0; b < n; ++b) w[b] *= total[b];
            else lanes_zero(n, w);
        }
    }
}

/* The softmax for examples [begin, end) of logits [*, B] into weights [K, S, B]. */
void nram_choice_softmax(long S, long K, long B, const int *width, long begin, long end, const REAL *logits,
                         REAL *weights) {
    for (long b0 = begin; b0 < end; b0 += TILE)
        softmax_tile(S, K, B, width, end - b0 < TILE ? (int)(end - b0) : TILE, b0, logits, weights);
}

/* Its backward: grad_logits of slot s's options = w (g - <w, g>), for the rows of every slot. */
void nram_choice_softmax_backward(long S, long K, long B, const int *width, long begin, long end,
                                  const REAL *weights, const REAL *grad_weights, REAL *grad_logits) {
    (void)K;
    for (long b0 = begin; b0 < end; b0 += TILE) {
        int n = end - b0 < TILE ? (int)(end - b0) : TILE;
        REAL inner[TILE];
        long offset = 0;
        for (long s = 0; s < S; offset += width[s], ++s) {
            lanes_zero(n, inner);
            for (long j = 0; j < width[s]; ++j)
                lanes_fma(n, inner, weights + (j * S + s) * B + b0, grad_weights + (j * S + s) * B + b0);
            for (long j = 0; j < width[s]; ++j) {
                const REAL *w = weights + (j * S + s) * B + b0, *g = grad_weights + (j * S + s) * B + b0;
                REAL *y = grad_logits + (offset + j) * B + b0;
                for (int b = 0; b < n; ++b) y[b] = w[b] * (g[b] - inner[b]);
            }
        }
    }
}

/* -------------------------------------------------------------- inference, tile-major -- */

long nram_tile(void) { return TILE; }

/* What one thread needs to run the inference step of a tile: the tile's logits [L, TILE]
   (every slot's options, then the stop logit), its choice weights, slot inputs, sources and
   new memory. */
typedef struct {
    REAL *logits, *weights, *mixed, *sources, *new_memory;
} TileScratch;

/* Carve TileScratch and `extra` more rows of TILE out of this thread's scratch block, which is
   kept between calls, so that a call does not pay for fresh pages. Returns 0, or -1 if the
   block could not be grown. */
static int tile_scratch(const Circuit *c, long L, long extra, TileScratch *t) {
    static _Thread_local REAL *block = NULL;
    static _Thread_local size_t capacity = 0;
    long M = c->M;
    size_t needed = (size_t)TILE * (L + c->K * c->S + c->S * M + c->K * M + M * M + extra);
    if (needed > capacity) {
        free(block);
        block = malloc(sizeof(REAL) * needed);
        capacity = block == NULL ? 0 : needed;
        if (block == NULL) return -1;
    }
    t->logits = block;
    t->weights = t->logits + L * TILE;
    t->mixed = t->weights + c->K * c->S * TILE;
    t->sources = t->mixed + c->S * M * TILE;
    t->new_memory = t->sources + c->K * M * TILE;
    return 0;
}

/* One step of the n examples of a tile (c describes one tile: its row stride is TILE) from
   its logits in t->logits, the stop logit in row `stop`: the choice softmax, the gates, the
   new memory [M, M, TILE] and registers [R, M, TILE] in place, and the stop distribution's
   share of the memory added to output, whose rows (value-major [M, M, B], as nram.machine
   lays memories out) start at example b0. survival [TILE] is the probability of not having
   stopped yet; at the `last` step all of it stops. */
static void infer_tile_step(const Circuit *c, const int *width, int n, long B, long b0, long stop, int last,
                            const TileScratch *t, REAL *memory, REAL *registers, REAL *survival, REAL *output) {
    long M = c->M, R = c->R, S = c->S;
    int writes = 0;
    for (long i = 0; i < c->Q; ++i) writes |= c->gate[i] == WRITE;
    softmax_tile(S, c->K, TILE, width, n, 0, t->logits, t->weights);
    forward_tile(c, n, 0, memory, registers, t->weights, t->new_memory, t->mixed, t->sources);
    if (writes)
        for (long row = 0; row < M * M; ++row) lanes_copy(n, memory + row * TILE, t->new_memory + row * TILE);
    for (long row = 0; row < R * M; ++row) lanes_copy(n, registers + row * TILE, t->mixed + ((S - R) * M + row) * TILE);
    REAL share[TILE];
    for (int b = 0; b < n; ++b) {
        REAL f = last ? 1 : 1 / (1 + exp(-t->logits[stop * TILE + b]));
        share[b] = survival[b] * f;
        survival[b] *= 1 - f;
    }
    for (long row = 0; row < M * M; ++row) lanes_fma(n, output + row * B + b0, share, memory + row * TILE);
}

/* One soft timestep for inference on tiles [first, end) of a batch of B examples stored tile
   by tile, so that each tile's state is one block of memory: memory [tiles, M, M, TILE],
   registers [tiles, R, M, TILE], survival [tiles * TILE]; output [M, M, B]. Example b's
   logits are logits[b * stride + j] + bias[j], j <= stop (the stop logit): the controller's,
   example after example; a stride of 0 gives every example the same logits. `last`: the
   final step. flags [B, R] receive P(register = 0) for the next controller call. Returns 0,
   or -1 if scratch memory could not be allocated. */
int nram_infer_step(long M, long B, long R, long Q, long S, const int *gate, const int *first_slot,
                    const int *width, long stride, long stop, int last, long first, long end, const REAL *logits,
                    const REAL *bias, REAL *memory, REAL *registers, REAL *output, REAL *survival, REAL *flags) {
    Circuit c = {M, R, Q, S, R + Q, TILE, gate, first_slot};  /* rows of one tile */
    TileScratch t;
    if (tile_scratch(&c, stop + 1, 0, &t) != 0) return -1;
    for (long tile = first; tile < end; ++tile) {
        long b0 = tile * TILE;
        int n = B - b0 < TILE ? (int)(B - b0) : TILE;
        REAL *tile_registers = registers + tile * R * M * TILE;
        for (int b = 0; b < n; ++b)
            for (long j = 0; j <= stop; ++j) t.logits[j * TILE + b] = logits[(b0 + b) * stride + j] + bias[j];
        infer_tile_step(&c, width, n, B, b0, stop, last, &t, memory + tile * M * M * TILE, tile_registers,
                        survival + b0, output);
        for (int b = 0; b < n; ++b)
            for (long r = 0; r < R; ++r) flags[(b0 + b) * R + r] = tile_registers[r * M * TILE + b];
    }
    return 0;
}

/* out[j] = bias[j] + sum_k weight[j, k] in[k] for j in [j0, j0 + count), count <= DENSE_BLOCK,
   on all TILE lanes of rows of TILE; with relu, max(0, .). The count x TILE sums stay in vector
   registers across k, and each row of `in` is loaded once for all of them: summing in memory
   made the loop store-bound. */
static inline void dense_tile_block(long j0, int count, long columns, const REAL *weight, const REAL *bias,
                                    const REAL *in, REAL *out, int relu) {
    Wide sum[DENSE_BLOCK][WIDE_PER_ROW];
    for (int i = 0; i < count; ++i)
        for (int l = 0; l < WIDE_PER_ROW; ++l) sum[i][l] = (Wide){0} + bias[j0 + i];
    for (long k = 0; k < columns; ++k)
        for (int l = 0; l < WIDE_PER_ROW; ++l) {
            Wide x = wide_load(in + k * TILE + l * PER_WIDE);
            for (int i = 0; i < count; ++i) sum[i][l] += weight[(j0 + i) * columns + k] * x;
        }
    for (int i = 0; i < count; ++i) {
        REAL *y = out + (j0 + i) * TILE;
        memcpy(y, sum[i], sizeof sum[i]);
        if (relu) for (int b = 0; b < TILE; ++b) y[b] = y[b] < 0 ? 0 : y[b];
    }
}

/* out[j] = bias[j] + sum_k weight[j, k] in[k] for j < rows, k < columns, on all TILE lanes of
   rows of TILE; with relu, max(0, .). */
static void dense_tile(long rows, long columns, const REAL *weight, const REAL *bias, const REAL *in, REAL *out,
                       int relu) {
    long j = 0;
    for (; j + DENSE_BLOCK <= rows; j += DENSE_BLOCK)
        dense_tile_block(j, DENSE_BLOCK, columns, weight, bias, in, out, relu);
    for (; j < rows; ++j) dense_tile_block(j, 1, columns, weight, bias, in, out, relu);
}

/* A whole inference rollout of T steps with a feed-forward controller, for tiles [first, end)
   of the integer cells [B, M]: each tile runs every step while its memory [M, M, TILE] and
   registers stay in the cache, and writes sum_t p_t memory_t to its examples of output [M, M, B]. The controller
   has `layers` hidden layers (linear, then ReLU) and a linear read-out: sizes [layers + 2] =
   (R, H_1 .. H_layers, L), weight[i] [sizes[i + 1], sizes[i]] and bias[i] [sizes[i + 1]]; the
   stop logit is its last output. Every register starts at 0, so the first step's logits,
   first_logits [L], are the same for every example. Returns 0, -1 if scratch memory could not
   be allocated, or -2 if a cell holds a value outside 0..M-1. */
int nram_infer_mlp(long M, long B, long R, long Q, long S, const int *gate, const int *first_slot,
                   const int *width, long T, long layers, const long *sizes, const REAL *const *weight,
                   const REAL *const *bias, const REAL *first_logits, long first, long end, const long *cells,
                   REAL *output) {
    Circuit c = {M, R, Q, S, R + Q, TILE, gate, first_slot};  /* rows of one tile */
    long L = sizes[layers + 1], widest = 0;
    for (long i = 0; i <= layers; ++i) widest = sizes[i] > widest ? sizes[i] : widest;
    TileScratch t;
    if (tile_scratch(&c, L, M * M + R * M + 2 * widest, &t) != 0) return -1;
    REAL *memory = t.new_memory + M * M * TILE, *registers = memory + M * M * TILE;
    REAL *hidden = registers + R * M * TILE, *next = hidden + widest * TILE, survival[TILE];
    for (long tile = first; tile < end; ++tile) {
        long b0 = tile * TILE;
        int n = B - b0 < TILE ? (int)(B - b0) : TILE;
        memset(memory, 0, sizeof(REAL) * M * M * TILE);
        for (int b = 0; b < n; ++b)
            for (long k = 0; k < M; ++k) {
                long value = cells[(b0 + b) * M + k];
                if (value < 0 || value >= M) return -2;
                memory[(k * M + value) * TILE + b] = 1;
            }
        memset(registers, 0, sizeof(REAL) * R * M * TILE);
        for (long r = 0; r < R; ++r)
            for (int b = 0; b < TILE; ++b) registers[r * M * TILE + b] = 1;
        for (int b = 0; b < TILE; ++b) survival[b] = 1;
        for (long row = 0; row < M * M; ++row) lanes_zero(n, output + row * B + b0);
        for (long step = 0; step < T; ++step) {
            if (step == 0) {
                for (long j = 0; j < L; ++j)
                    for (int b = 0; b < TILE; ++b) t.logits[j * TILE + b] = first_logits[j];
            } else {
                for (long r = 0; r < R; ++r) lanes_copy(TILE, hidden + r * TILE, registers + r * M * TILE);
                for (long i = 0; i <= layers; ++i) {
                    REAL *out = i == layers ? t.logits : next;
                    dense_tile(sizes[i + 1], sizes[i], weight[i], bias[i], hidden, out, i < layers);
                    if (i < layers) { REAL *swap = hidden; hidden = next; next = swap; }
                }
            }
            infer_tile_step(&c, width, n, B, b0, L - 1, step == T - 1, &t, memory, registers, survival, output);
        }
    }
    return 0;
}

/* -------------------------------------------------------------- training, one call -- */

static REAL log_sigmoid(REAL x) { return x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)); }

/* The controller's loops below keep CHUNK outputs in registers while they sum over the inputs
   (or over the examples), and store each output once: adding into memory at every term made
   them store-bound. */
typedef REAL Vec __attribute__((vector_size(16)));  /* one SSE or NEON register (GCC, Clang) */
enum { PER_VEC = 16 / sizeof(REAL), VECS = 8, CHUNK = VECS * PER_VEC };
typedef struct { Vec v[VECS]; } Chunk;

static inline Chunk chunk_load(const REAL *x) { Chunk c; memcpy(&c, x, sizeof c); return c; }
static inline void chunk_store(REAL *y, Chunk c) { memcpy(y, &c, sizeof c); }
static inline void chunk_fma(Chunk *sum, REAL a, const REAL *x) {  /* sum += a x[0 .. CHUNK) */
    for (int i = 0; i < VECS; ++i) {
        Vec v;
        memcpy(&v, x + i * PER_VEC, sizeof v);
        sum->v[i] += a * v;
    }
}

/* A dense layer over the n examples of a tile: out_b[j] = bias[j] + sum_k in_b[k] weight_t[k, j]
   (weight_t the weight transposed, [columns, rows]), with relu max(0, .), where in_b = in + b *
   in_stride and out_b = out + b * out_stride. Each chunk of outputs runs over every example while
   its columns of weight_t stay in the L1 cache. */
static void dense_forward(long rows, long columns, int n, const REAL *weight_t, const REAL *bias, const REAL *in,
                          long in_stride, REAL *out, long out_stride, int relu) {
    long j0 = 0;
    for (; j0 + CHUNK <= rows; j0 += CHUNK)
        for (int b = 0; b < n; ++b) {
            const REAL *x = in + b * in_stride;
            REAL *y = out + b * out_stride + j0;
            Chunk sum = chunk_load(bias + j0);
            for (long k = 0; k < columns; ++k) chunk_fma(&sum, x[k], weight_t + k * rows + j0);
            chunk_store(y, sum);
            if (relu) for (int c = 0; c < CHUNK; ++c) y[c] = y[c] < 0 ? 0 : y[c];
        }
    for (; j0 < rows; ++j0)
        for (int b = 0; b < n; ++b) {
            const REAL *x = in + b * in_stride;
            REAL sum = bias[j0];
            for (long k = 0; k < columns; ++k) sum += x[k] * weight_t[k * rows + j0];
            out[b * out_stride + j0] = relu && sum < 0 ? 0 : sum;
        }
}

/* A dense layer's parameter gradients over the n examples of a tile: grad_weight[j, k] +=
   sum_b d[b, j] in_b[k] and grad_bias[j] += sum_b d[b, j], where d is [n, rows] (d loss / d out,
   example-major) and in_b = in + b * stride is example b's input [columns]. */
static void dense_parameter_backward(long rows, long columns, int n, const REAL *in, long stride, const REAL *d,
                                     REAL *grad_weight, REAL *grad_bias) {
    for (long j = 0; j < rows; ++j) {
        REAL *y = grad_weight + j * columns, bias_sum = grad_bias[j];
        for (int b = 0; b < n; ++b) bias_sum += d[b * rows + j];
        grad_bias[j] = bias_sum;
        long k0 = 0;
        for (; k0 + CHUNK <= columns; k0 += CHUNK) {
            Chunk sum = chunk_load(y + k0);
            for (int b = 0; b < n; ++b) chunk_fma(&sum, d[b * rows + j], in + b * stride + k0);
            chunk_store(y + k0, sum);
        }
        for (; k0 < columns; ++k0)
            for (int b = 0; b < n; ++b) y[k0] += d[b * rows + j] * in[b * stride + k0];
    }
}

/* A dense layer's input gradients over the n examples of a tile: d_in[b, k] = sum_j d[b, j]
   weight[j, k] (both example-major), zero where in_b[k] = 0 when `relu_in` (in is the ReLU
   output of the layer below; in_b = in + b * stride). */
static void dense_input_backward(long rows, long columns, int n, const REAL *weight, const REAL *in, long stride,
                                 const REAL *d, REAL *d_in, int relu_in) {
    long k0 = 0;
    for (; k0 + CHUNK <= columns; k0 += CHUNK)  /* weight[:, k0 .. k0 + CHUNK) stays in the L1 cache */
        for (int b = 0; b < n; ++b) {
            const REAL *g = d + b * rows, *x = in + b * stride + k0;
            REAL *y = d_in + b * columns + k0;
            Chunk sum = {{0}};
            for (long j = 0; j < rows; ++j) chunk_fma(&sum, g[j], weight + j * columns + k0);
            chunk_store(y, sum);
            if (relu_in) for (int c = 0; c < CHUNK; ++c) y[c] = x[c] > 0 ? y[c] : 0;
        }
    for (; k0 < columns; ++k0)
        for (int b = 0; b < n; ++b) {
            const REAL *g = d + b * rows;
            REAL sum = 0;
            for (long j = 0; j < rows; ++j) sum += g[j] * weight[j * columns + k0];
            d_in[b * columns + k0] = relu_in && !(in[b * stride + k0] > 0) ? 0 : sum;
        }
}

/* A whole training rollout of T steps with a feed-forward controller (laid out as for
   nram_infer_mlp), forward and backward, for the integer cells [B, M], in tiles of W = min(B,
   TILE) examples. For each example b, as nram.model.example_losses defines it:
       loss[b] = sum_t p_t sum_{i : mask[b, i]} -log max(memory_t[i, target[b, i]], eps),
   with p_t the stop distribution (nram.model.stop_distribution); output [M, M, B] receives
   sum_t p_t memory_t (value-major). The gradient of scale * sum_b loss[b] with respect to
   every weight[i] and bias[i] is added to grad_weight[i] and grad_bias[i]. Each tile keeps
   every step's state (memory, choice weights, slot inputs, sources, activations) for the
   backward, which runs the machine step's backward (backward_tile), the softmax's and the
   controller's. The machine runs lane-major, as everywhere in this file; the controller runs
   example-major, layer by layer over the tile's examples (dense_forward and its backward), so
   that its loops vectorise along a layer's rows however few examples a tile holds.
   Returns 0, -1 if scratch memory could not be allocated, or -2 (before any work) if a cell
   or a target holds a value outside 0..M-1. */
int nram_train_mlp(long M, long B, long R, long Q, long S, const int *gate, const int *first_slot,
                   const int *width, long T, long layers, const long *sizes, const REAL *const *weight,
                   const REAL *const *bias, REAL *const *grad_weight, REAL *const *grad_bias, REAL scale,
                   REAL eps, const long *cells, const long *target, const unsigned char *mask, REAL *loss,
                   REAL *output) {
    for (long i = 0; i < B * M; ++i)
        if (cells[i] < 0 || cells[i] >= M || target[i] < 0 || target[i] >= M) return -2;
    long W = B < TILE ? B : TILE;  /* the lanes of a tile: the distance between two rows */
    Circuit c = {M, R, Q, S, R + Q, W, gate, first_slot};
    long K = R + Q, L = sizes[layers + 1], A = 0, widest = 0, choices = 0, transposed = 0;
    for (long i = 0; i <= layers; ++i) A += sizes[i], transposed += sizes[i] * sizes[i + 1];
    for (long i = 0; i <= layers + 1; ++i) widest = sizes[i] > widest ? sizes[i] : widest;
    for (long s = 0; s < S; ++s) choices += width[s];
    int writes = 0;
    for (long i = 0; i < Q; ++i) writes |= gate[i] == WRITE;
    /* REALs per lane, as carved below: the memories, every step's weights, slot inputs, sources,
       activations, logits and p, f, nll, grad_stop; registers0; the backward's gradients, d and d_in */
    long lanes = (T + 1) * M * M + T * (K * S + S * M + K * M + A + L + 4) + R * M
                 + 2 * M * M + R * M + K * M + S * M + K * S + L + 2 * widest;
    size_t needed = (size_t)W * lanes + transposed;
    static _Thread_local REAL *block = NULL;  /* kept between calls, grown when a rollout needs more */
    static _Thread_local size_t capacity = 0;
    if (needed > capacity) {
        free(block);
        block = malloc(sizeof(REAL) * needed);
        capacity = block == NULL ? 0 : needed;
        if (block == NULL) return -1;
    }
    REAL *memories = block;                            /* [T + 1][M, M, W] */
    REAL *weights = memories + (T + 1) * M * M * W;    /* [T][K, S, W] */
    REAL *mixed = weights + T * K * S * W;             /* [T][S, M, W] */
    REAL *sources = mixed + T * S * M * W;             /* [T][K, M, W] */
    REAL *acts = sources + T * K * M * W;              /* [T][W, A]: flags, hidden layers; example-major */
    REAL *logits = acts + T * A * W;                   /* [T][L, W] */
    REAL *p = logits + T * L * W, *f = p + T * W, *nll = f + T * W, *grad_stop = nll + T * W;  /* [T][W] */
    REAL *registers0 = grad_stop + T * W;              /* [R, M, W] */
    REAL *grad_next = registers0 + R * M * W, *grad_memory = grad_next + M * M * W;
    REAL *grad_registers = grad_memory + M * M * W, *grad_sources = grad_registers + R * M * W;
    REAL *grad_slots = grad_sources + K * M * W, *grad_weights = grad_slots + S * M * W;
    REAL *grad_logits = grad_weights + K * S * W;      /* [L, W] */
    REAL *d = grad_logits + L * W, *d_in = d + widest * W;  /* [n, widest] each, example-major */
    REAL *weight_t[layers + 1];                        /* each weight transposed, [columns, rows] */
    weight_t[0] = d_in + widest * W;
    for (long i = 0; i <= layers; ++i) {
        if (i > 0) weight_t[i] = weight_t[i - 1] + sizes[i - 1] * sizes[i];
        for (long j = 0; j < sizes[i + 1]; ++j)
            for (long k = 0; k < sizes[i]; ++k) weight_t[i][k * sizes[i + 1] + j] = weight[i][j * sizes[i] + k];
    }
    for (long b0 = 0; b0 < B; b0 += W) {
        int n = B - b0 < W ? (int)(B - b0) : (int)W;
        memset(memories, 0, sizeof(REAL) * M * M * W);
        for (int b = 0; b < n; ++b)
            for (long k = 0; k < M; ++k) memories[(k * M + cells[(b0 + b) * M + k]) * W + b] = 1;
        memset(registers0, 0, sizeof(REAL) * R * M * W);
        for (long r = 0; r < R; ++r) for (int b = 0; b < n; ++b) registers0[r * M * W + b] = 1;

        for (long t = 0; t < T; ++t) {  /* forward */
            REAL *memory = memories + t * M * M * W, *next = memory + M * M * W;
            const REAL *registers = t == 0 ? registers0 : mixed + ((t - 1) * S + S - R) * M * W;
            REAL *step_logits = logits + t * L * W;
            REAL *step_acts = acts + t * W * A;  /* the controller, layer by layer over the tile's examples */
            for (int b = 0; b < n; ++b)
                for (long r = 0; r < R; ++r) step_acts[b * A + r] = registers[r * M * W + b];
            for (long i = 0, offset = 0; i <= layers; offset += sizes[i], ++i) {
                if (i < layers)
                    dense_forward(sizes[i + 1], sizes[i], n, weight_t[i], bias[i], step_acts + offset, A,
                                  step_acts + offset + sizes[i], A, 1);
                else
                    dense_forward(L, sizes[i], n, weight_t[i], bias[i], step_acts + offset, A, d, L, 0);
            }
            for (int b = 0; b < n; ++b)
                for (long j = 0; j < L; ++j) step_logits[j * W + b] = d[b * L + j];
            REAL *step_weights = weights + t * K * S * W;
            softmax_tile(S, K, W, width, n, 0, step_logits, step_weights);
            forward_tile(&c, n, 0, memory, registers, step_weights, next, mixed + t * S * M * W,
                         sources + t * K * M * W);
            if (!writes) for (long row = 0; row < M * M; ++row) lanes_copy(n, next + row * W, memory + row * W);
        }

        for (int b = 0; b < n; ++b) {  /* stop distribution, losses, output */
            REAL survived = 0, total = 0;
            for (long t = 0; t < T; ++t) {
                REAL s = logits[(t * L + L - 1) * W + b];
                p[t * W + b] = exp(t < T - 1 ? survived + log_sigmoid(s) : survived);
                f[t * W + b] = 1 / (1 + exp(-s));
                survived += log_sigmoid(-s);
                const REAL *memory = memories + (t + 1) * M * M * W;
                REAL cost = 0;
                for (long k = 0; k < M; ++k) {
                    if (!mask[(b0 + b) * M + k]) continue;
                    REAL likelihood = memory[(k * M + target[(b0 + b) * M + k]) * W + b];
                    cost -= log(likelihood < eps ? eps : likelihood);  /* a NaN stays NaN, as in torch */
                }
                nll[t * W + b] = cost;
                total += p[t * W + b] * cost;
            }
            loss[b0 + b] = total;
            REAL later = 0;  /* sum over t > j of (d loss / d p_t) p_t */
            for (long j = T - 1; j >= 0; --j) {
                REAL g = scale * nll[j * W + b] * p[j * W + b];
                grad_stop[j * W + b] = j < T - 1 ? g * (1 - f[j * W + b]) - f[j * W + b] * later : 0;
                later += g;
            }
        }
        for (long row = 0; row < M * M; ++row) {
            REAL *y = output + row * B + b0;
            lanes_zero(n, y);
            for (long t = 0; t < T; ++t) lanes_fma(n, y, p + t * W, memories + (t + 1) * M * M * W + row * W);
        }

        memset(grad_next, 0, sizeof(REAL) * M * M * W);  /* backward */
        memset(grad_registers, 0, sizeof(REAL) * R * M * W);
        for (long t = T - 1; t >= 0; --t) {
            const REAL *next = memories + (t + 1) * M * M * W;
            for (int b = 0; b < n; ++b)
                for (long k = 0; k < M; ++k) {
                    if (!mask[(b0 + b) * M + k]) continue;
                    long row = k * M + target[(b0 + b) * M + k];
                    REAL likelihood = next[row * W + b];
                    if (likelihood >= eps) grad_next[row * W + b] -= scale * p[t * W + b] / likelihood;
                }
            const REAL *step_weights = weights + t * K * S * W;
            backward_tile(&c, n, 0, memories + t * M * M * W, step_weights, mixed + t * S * M * W,
                          sources + t * K * M * W, grad_next, grad_registers, grad_memory, grad_sources,
                          grad_slots, grad_weights);
            nram_choice_softmax_backward(S, K, W, width, 0, n, step_weights, grad_weights, grad_logits);
            for (long j = choices; j < L; ++j) lanes_zero(n, grad_logits + j * W);
            lanes_copy(n, grad_logits + (L - 1) * W, grad_stop + t * W);
            for (long r = 0; r < R * M; ++r) lanes_copy(n, grad_registers + r * W, grad_sources + r * W);
            for (int b = 0; b < n; ++b)  /* the controller's backward, layer by layer, d example-major */
                for (long j = 0; j < L; ++j) d[b * L + j] = grad_logits[j * W + b];
            REAL *dout = d, *into = d_in;
            long offset = A;
            for (long i = layers; i >= 0; --i) {
                offset -= sizes[i];
                const REAL *in = acts + t * W * A + offset;
                dense_parameter_backward(sizes[i + 1], sizes[i], n, in, A, dout, grad_weight[i], grad_bias[i]);
                if (i > 0 || t > 0) dense_input_backward(sizes[i + 1], sizes[i], n, weight[i], in, A, dout, into, i > 0);
                REAL *swap = dout; dout = into; into = swap;
            }
            if (t > 0)  /* the controller read P(r = 0): value 0 of every register */
                for (int b = 0; b < n; ++b)
                    for (long r = 0; r < R; ++r) grad_registers[r * M * W + b] += dout[b * R + r];
            REAL *swap = grad_next; grad_next = grad_memory; grad_memory = swap;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ optimizer update -- */

#define square_root(x) _Generic((x), float: sqrtf, double: sqrt)(x)

/* One Adam step over `tensors` parameter tensors, in place: for tensor i of sizes[i] elements
   at its step count steps[i] (already advanced), with g = grad (+ weight_decay * param; negated
   when `maximize`):
       m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2,
       param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps),
   as torch.optim.Adam (Kingma and Ba 2015) computes it, its bias corrections in double. */
void nram_adam(long tensors, const long *sizes, const double *steps, REAL *const *params, const REAL *const *grads,
               REAL *const *exp_avg, REAL *const *exp_avg_sq, double lr, double beta1, double beta2, double eps,
               double weight_decay, int maximize) {
    for (long i = 0; i < tensors; ++i) {
        REAL step_size = (REAL)(lr / (1 - pow(beta1, steps[i])));
        REAL correction2_sqrt = (REAL)sqrt(1 - pow(beta2, steps[i]));
        REAL b1 = (REAL)beta1, b2 = (REAL)beta2, c1 = (REAL)(1 - beta1), c2 = (REAL)(1 - beta2);
        REAL decay = (REAL)weight_decay, epsilon = (REAL)eps;
        REAL *restrict p = params[i], *restrict m = exp_avg[i], *restrict v = exp_avg_sq[i];
        const REAL *restrict g = grads[i];
        for (long k = 0; k < sizes[i]; ++k) {
            REAL gk = maximize ? -g[k] : g[k];
            if (decay != 0) gk += decay * p[k];
            m[k] = b1 * m[k] + c1 * gk;
            v[k] = b2 * v[k] + c2 * gk * gk;
            p[k] -= step_size * m[k] / (square_root(v[k]) / correction2_sqrt + epsilon);
        }
    }
}
