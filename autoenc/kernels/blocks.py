"""Register-block helpers: the vectors that the fast convolution kernels sum their blocks in.

The kernels sum blocks of output pixels x channels (or patch elements x channels) in registers. How
many float32 numbers a vector register holds is :data:`LANES`: 16 where the code is compiled for
AVX-512, else 8 (AVX2); the kernels size their blocks by it. Three kinds of helper, from the plainest:

- tuples of 8 scalars (:func:`load8`, :func:`fma8`, :func:`store8`, ...): LLVM keeps each tuple in
  one vector register and its SLP vectoriser (turned on in config.py) packs the scalar
  multiply-adds into one vector instruction;
- :func:`store_vector` (``storev``), written as LLVM IR: a tuple of 8 or 16, or a Vec, stored as one
  vector (with ReLU: max(v, 0)). LLVM turned a loop of scalar stores into lane extractions;
- :class:`Vec`, one LLVM vector value of LANES numbers (:func:`vloadL`, :func:`vfmaL`,
  :func:`vstoreL`; the last two take any width), of 8 (:func:`vload8`), or of 16 in every build
  (:func:`vload16`, :func:`vload16_first`, :func:`vload_pair16`, :func:`vfmav`, the pairwise sums
  :func:`vpairs16` ... :func:`vpairs2`), which a loop carries in one register (two with AVX2).

Beside them, :func:`prefetch_span` asks the CPU for cache lines a kernel will read soon (the next
sample's input, where the hardware prefetcher did not keep up). Indices are unsigned where that lets
LLVM see neighbouring loads as one vector load. Every helper is tiny; under NUMBA_DISABLE_JIT=1
plain Python stands in for the LLVM ones (prefetch_span does nothing there).
"""
import numba
import numba.extending
import numpy as np
from llvmlite import ir

from autoenc.kernels.config import FASTMATH, njit


def vector_lanes():
    """float32 numbers per vector register in the code Numba generates: 16 when LLVM, set up for
    Numba's target (NUMBA_CPU_NAME and NUMBA_CPU_FEATURES, else this CPU), emits a 16-float vector
    operation in one 512-bit register, else 8. A probe of a few microseconds: one tiny LLVM module,
    no Numba compile. A Numba cache entry is keyed by the same CPU name and features, so a cached
    kernel was compiled for the lanes chosen here."""
    try:
        import llvmlite.binding as ll
        from numba.core import codegen
        codegen.initialize_llvm()
        cpu = numba.config.CPU_NAME or ll.get_host_cpu_name()
        features = numba.config.CPU_FEATURES
        if features is None:
            features = codegen.get_host_cpu_features()
        tm = ll.Target.from_default_triple().create_target_machine(cpu=cpu, features=features, opt=2)
        ir = ("define void @probe(ptr %p) {\n  %v = load <16 x float>, ptr %p\n  %w = fmul <16 x float> %v, %v\n"
              "  store <16 x float> %w, ptr %p\n  ret void\n}")
        return 16 if "zmm" in tm.emit_assembly(ll.parse_assembly(ir)) else 8
    except Exception:   # no LLVM to ask (a non-x86 or unusual build): the block width that always works
        return 8


# Read once at import: a global constant to the kernels (Numba freezes it when compiling them).
LANES = vector_lanes()

_U1, _U2, _U3, _U4, _U5, _U6, _U7 = (np.uint64(q) for q in range(1, 8))


@njit()
def load8(a, k):
    """The tuple (a[k], ..., a[k+7]) of a 1-D array."""
    # unsigned indices: no negative-index wraparound, so LLVM sees 8 neighbouring loads (one vector load)
    u = np.uint64(k)
    return (a[u], a[u + _U1], a[u + _U2], a[u + _U3], a[u + _U4], a[u + _U5], a[u + _U6], a[u + _U7])


# --- stores through LLVM IR (Numba intrinsics) ----------------------------------------------------

def _lane(q):
    return ir.Constant(ir.IntType(32), q)


def _tuple_to_vector(context, builder, tup, tty, dtype):
    """The n-tuple value tup (numba type tty) as an LLVM <n x dtype> vector."""
    vec = ir.Constant(ir.VectorType(context.get_value_type(dtype), tty.count), ir.Undefined)
    for q in range(tty.count):
        lane = context.cast(builder, builder.extract_value(tup, q), tty.dtype, dtype)
        vec = builder.insert_element(vec, lane, _lane(q))
    return vec


def _llvm_fma(builder, vty):
    """The declaration of llvm.fma on LLVM vectors of type vty, in the module being built."""
    name = f"llvm.fma.v{vty.count}f{64 if isinstance(vty.element, ir.DoubleType) else 32}"
    return builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vty, [vty] * 3), name)


def _splat_fma(builder, s, v, acc):
    """llvm.fma(splat(s), v, acc) on LLVM vectors v and acc: acc + s * v, each lane rounded once."""
    vty = v.type
    one = builder.insert_element(ir.Constant(vty, ir.Undefined), s, _lane(0))
    splat = builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(ir.IntType(32), vty.count), [0] * vty.count))
    return builder.call(_llvm_fma(builder, vty), [splat, v, acc])


@numba.extending.intrinsic
def store_vector(typingctx, out, k, v, relu):
    """out[k:k+n] = v, or max(v, 0) when relu (v where not 0 > v, as Python's max(v, 0) keeps -0.0
    and NaN), for an n-tuple v of floats or a Vec of out's dtype and a 1-D C-contiguous out: one vector
    store, no bounds check.
    LLVM turns a loop of scalar stores from a 16-wide block into hundreds of lane extractions."""
    if not (isinstance(out, numba.types.Array) and out.ndim == 1 and out.layout == "C"
            and isinstance(out.dtype, numba.types.Float) and isinstance(v, (numba.types.UniTuple, Vec))
            and isinstance(v.dtype, numba.types.Float) and isinstance(k, numba.types.Integer)
            and isinstance(relu, numba.types.Boolean)):
        return None
    if isinstance(v, Vec) and v.dtype != out.dtype:
        return None
    n, dtype = (v.lanes if isinstance(v, Vec) else v.count), out.dtype

    def codegen(context, builder, signature, args):
        out_a, k_i, v_t, relu_b = args
        vec = v_t if isinstance(v, Vec) else _tuple_to_vector(context, builder, v_t, v, dtype)
        zero = ir.Constant(vec.type, [ir.Constant(vec.type.element, 0.0)] * n)
        vec = builder.select(relu_b, builder.select(builder.fcmp_ordered(">", zero, vec), zero, vec), vec)
        data = context.make_array(out)(context, builder, out_a).data
        ptr = builder.bitcast(builder.gep(data, [k_i]), vec.type.as_pointer())
        builder.store(vec, ptr, align=dtype.bitwidth // 8)
        return context.get_dummy_value()
    return numba.types.none(out, k, v, relu), codegen


def _store_vector_py(out, k, v, relu):
    for q in range(len(v)):
        out[k + q] = max(v[q], 0) if relu else v[q]


storev = _store_vector_py if numba.config.DISABLE_JIT else store_vector


@njit()
def at(a, k):
    """a[k] for k >= 0, without the check for negative indices (which blocks vectorisation)."""
    return a[np.uint64(k)]


@njit(fastmath=FASTMATH)
def fma8(acc, a, v):
    """acc + a * v over 8-tuples (a scalar): one vector multiply-add once vectorised."""
    return (acc[0] + a * v[0], acc[1] + a * v[1], acc[2] + a * v[2], acc[3] + a * v[3],
            acc[4] + a * v[4], acc[5] + a * v[5], acc[6] + a * v[6], acc[7] + a * v[7])


@njit()
def add8(a, b):
    """a + b over 8-tuples."""
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3], a[4] + b[4], a[5] + b[5], a[6] + b[6], a[7] + b[7])


@njit()
def where_positive8(v, y, zero):
    """v[q] where y[q] > 0, else zero, over 8-tuples."""
    return (v[0] if y[0] > 0 else zero, v[1] if y[1] > 0 else zero, v[2] if y[2] > 0 else zero,
            v[3] if y[3] > 0 else zero, v[4] if y[4] > 0 else zero, v[5] if y[5] > 0 else zero,
            v[6] if y[6] > 0 else zero, v[7] if y[7] > 0 else zero)


@njit()
def take_greater8(v, k, b, kb):
    """Over 8-tuples, lane by lane: (b where b > v else v, kb where b > v else k); kb is a scalar. One
    step of a running maximum and its index (strict: the first maximum stays, a NaN never wins)."""
    return ((b[0] if b[0] > v[0] else v[0], b[1] if b[1] > v[1] else v[1], b[2] if b[2] > v[2] else v[2],
             b[3] if b[3] > v[3] else v[3], b[4] if b[4] > v[4] else v[4], b[5] if b[5] > v[5] else v[5],
             b[6] if b[6] > v[6] else v[6], b[7] if b[7] > v[7] else v[7]),
            (kb if b[0] > v[0] else k[0], kb if b[1] > v[1] else k[1], kb if b[2] > v[2] else k[2],
             kb if b[3] > v[3] else k[3], kb if b[4] > v[4] else k[4], kb if b[5] > v[5] else k[5],
             kb if b[6] > v[6] else k[6], kb if b[7] > v[7] else k[7]))


@njit()
def where_won8(d, a, ka, p, zero):
    """Over 8-tuples, lane by lane: zero + d where a == ka (the scalar index of the winner) and p > 0,
    else zero: a max pooling's gradient at one window element, masked by a ReLU (zero + d, as the
    scatter-add from zero gives: +0 for a -0)."""
    return (zero + d[0] if a[0] == ka and p[0] > 0 else zero, zero + d[1] if a[1] == ka and p[1] > 0 else zero,
            zero + d[2] if a[2] == ka and p[2] > 0 else zero, zero + d[3] if a[3] == ka and p[3] > 0 else zero,
            zero + d[4] if a[4] == ka and p[4] > 0 else zero, zero + d[5] if a[5] == ka and p[5] > 0 else zero,
            zero + d[6] if a[6] == ka and p[6] > 0 else zero, zero + d[7] if a[7] == ka and p[7] > 0 else zero)


@njit()
def store8(out, k, v, relu):
    """out[k:k+8] = v, or max(v, 0) when relu."""
    o = out[k:k + 8]
    for q in range(8):
        o[q] = max(v[q], 0) if relu else v[q]


@njit()
def copy1d(a, out):
    """out[:] = a, for 1-D arrays (a loop from 0: LLVM sees non-negative indices and vectorises)."""
    for k in range(out.size):
        out[k] = a[k]


@njit()
def next_pixel(r, c, x0, oh, ow, dx, rjump, sjump):
    """Step (row r, column c) to the next output pixel in raster order, across samples, and x0 to
    the start of its patch in flat xp. rjump = sh*rstride - ow*dx and sjump = (hp - oh*sh)*rstride
    are the extra moves at the end of a row and of a sample. Branch-free (selects only), so that
    a loop calling it stays one basic block and its accumulators stay in vector registers."""
    c += 1
    row_end = c == ow
    x0 += dx + (rjump if row_end else 0)
    c = 0 if row_end else c
    r += 1 if row_end else 0
    sample_end = r == oh
    x0 += sjump if sample_end else 0
    r = 0 if sample_end else r
    return r, c, x0


@njit()
def after_segment(r, c, x0, seg, oh, ow, rjump, sjump):
    """(r, c, x0) past ``seg`` pixels along one output row from column c, x0 already moved on by
    seg*dx: at the row's end, the first pixel of the next row (and of the next sample), as
    :func:`next_pixel` would step there. A block looping over a row's pixels with x0 += dx then has
    no chain of selects from one pixel to the next (with LLVM vectors for accumulators, that chain
    bound the loop)."""
    c += seg
    if c == ow:
        c = 0
        r += 1
        x0 += rjump
        if r == oh:
            r = 0
            x0 += sjump
    return r, c, x0


# --- LANES-wide vectors as LLVM vector values ----------------------------------------------------
#
# A tuple of 16 float32 carried around a loop is 16 scalars to LLVM, which its SLP vectoriser packs
# into vector registers again at every use. That works for 8-tuples, but this CPU's LLVM target
# prefers 256-bit vectors, so 16-tuples come out as pairs of 8-wide operations shuffled through the
# stack at every loop turn. A Vec is instead one LLVM vector value, <LANES x float>: a loop carries
# it in one register (one zmm with AVX-512), and vfmaL is one llvm.fma, fused in every build.
# Under NUMBA_DISABLE_JIT=1 the same three helpers work on small NumPy arrays.


class Vec(numba.types.Type):
    """Numba type of LANES numbers of one dtype held in one LLVM vector value."""

    def __init__(self, dtype, lanes):
        self.dtype, self.lanes = dtype, lanes
        super().__init__(name=f"Vec({dtype}, {lanes})")


@numba.extending.register_model(Vec)
class _VecModel(numba.extending.models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def _vec_pointer(context, builder, arrty, arr, k, vty):
    """Pointer to arr[k] (no bounds check, as the tuple helpers), as a pointer to an LLVM vector."""
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.bitcast(builder.gep(data, [k], inbounds=True), vty.as_pointer())


def _vector_load(lanes):
    """An intrinsic (a, k) -> a[k : k + lanes] as one Vec of ``lanes`` numbers (no bounds check)."""
    @numba.extending.intrinsic
    def vload(typingctx, a, k):
        if not (isinstance(a, numba.types.Array) and isinstance(k, numba.types.Integer)):
            return None
        vt = Vec(a.dtype, lanes)

        def codegen(context, builder, sig, args):
            vty = context.get_value_type(vt)
            align = context.get_abi_sizeof(context.get_data_type(a.dtype))
            return builder.load(_vec_pointer(context, builder, sig.args[0], args[0], args[1], vty), align=align)
        return vt(a, k), codegen
    return vload


_vload, _vload16, _vload8 = _vector_load(LANES), _vector_load(16), _vector_load(8)


@numba.extending.intrinsic
def _vload16_first(typingctx, a, k, count):
    if not (isinstance(a, numba.types.Array) and isinstance(k, numba.types.Integer)
            and isinstance(count, numba.types.Integer)):
        return None
    vt = Vec(a.dtype, 16)

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(vt)
        ptr = _vec_pointer(context, builder, sig.args[0], args[0], args[1], vty)
        i32 = ir.IntType(32)
        n = builder.trunc(args[2], i32) if args[2].type.width > 32 else args[2]
        lanes = ir.VectorType(i32, 16)
        splat = builder.shuffle_vector(builder.insert_element(ir.Constant(lanes, ir.Undefined), n, _lane(0)),
                                       ir.Constant(lanes, ir.Undefined), ir.Constant(lanes, [0] * 16))
        mask = builder.icmp_unsigned("<", ir.Constant(lanes, list(range(16))), splat)
        name = f"llvm.masked.load.v16f{64 if isinstance(vty.element, ir.DoubleType) else 32}.p0"
        fn = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(vty, [ptr.type, i32, mask.type, vty]), name)
        align = context.get_abi_sizeof(context.get_data_type(a.dtype))
        return builder.call(fn, [ptr, ir.Constant(i32, align), mask, ir.Constant(vty, None)])
    return vt(a, k, count), codegen


def _halves(g):
    """Lane indices (lo, hi) into the 32 lanes of two 16-lane vectors X, Y that hold 16/g groups of g
    lanes each (one group per pixel): the first and the second halves of each group, X's groups then Y's."""
    lo = [src + q * g + l for src in (0, 16) for q in range(16 // g) for l in range(g // 2)]
    return lo, [i + g // 2 for i in lo]


def _pair_sums(g):
    """An intrinsic (X, Y) -> lo + hi, lanes as :func:`_halves` (two shuffles and one vector add)."""
    lo, hi = _halves(g)

    @numba.extending.intrinsic
    def pair_sums(typingctx, x, y):
        if not (isinstance(x, Vec) and x == y and x.lanes == 16):
            return None

        def codegen(context, builder, sig, args):
            idx = ir.VectorType(ir.IntType(32), 16)
            return builder.fadd(builder.shuffle_vector(args[0], args[1], ir.Constant(idx, lo)),
                                builder.shuffle_vector(args[0], args[1], ir.Constant(idx, hi)))
        return x(x, y), codegen
    return pair_sums


_pairs16, _pairs8, _pairs4, _pairs2 = (_pair_sums(g) for g in (16, 8, 4, 2))


@numba.extending.intrinsic
def _vload_pair16(typingctx, a, k):
    if not (isinstance(a, numba.types.Array) and isinstance(k, numba.types.Integer)):
        return None
    vt = Vec(a.dtype, 16)

    def codegen(context, builder, sig, args):
        two = ir.VectorType(context.get_value_type(a.dtype), 2)
        align = context.get_abi_sizeof(context.get_data_type(a.dtype))
        pair = builder.load(_vec_pointer(context, builder, sig.args[0], args[0], args[1], two), align=align)
        return builder.shuffle_vector(pair, ir.Constant(two, ir.Undefined),
                                      ir.Constant(ir.VectorType(ir.IntType(32), 16), [0, 1] * 8))
    return vt(a, k), codegen


@numba.extending.intrinsic
def _vstore(typingctx, a, k, v):
    if not (isinstance(a, numba.types.Array) and isinstance(k, numba.types.Integer) and isinstance(v, Vec)):
        return None

    def codegen(context, builder, sig, args):
        vty = context.get_value_type(v)
        align = context.get_abi_sizeof(context.get_data_type(a.dtype))
        builder.store(args[2], _vec_pointer(context, builder, sig.args[0], args[0], args[1], vty), align=align)
        return context.get_dummy_value()
    return numba.types.none(a, k, v), codegen


@numba.extending.intrinsic
def _vfma(typingctx, acc, p, v):
    if not (isinstance(acc, Vec) and acc == v and isinstance(p, (numba.types.Float, numba.types.Integer))):
        return None

    def codegen(context, builder, sig, args):
        a, s, x = args
        return _splat_fma(builder, context.cast(builder, s, sig.args[1], acc.dtype), x, a)
    return acc(acc, p, v), codegen


@numba.extending.intrinsic
def _vfmav(typingctx, acc, a, v):
    if not (isinstance(acc, Vec) and acc == a and acc == v):
        return None

    def codegen(context, builder, sig, args):
        s, x, y = args
        return builder.call(_llvm_fma(builder, s.type), [x, y, s])
    return acc(acc, a, v), codegen


@numba.extending.intrinsic
def _vtuple(typingctx, v):
    if not isinstance(v, Vec):
        return None
    tt = numba.types.UniTuple(v.dtype, v.lanes)

    def codegen(context, builder, sig, args):
        out = context.get_constant_undef(tt)
        for q in range(v.lanes):
            out = builder.insert_value(out, builder.extract_element(args[0], _lane(q)), q)
        return out
    return tt(v), codegen


@numba.extending.intrinsic
def _prefetch(typingctx, a, k):
    if not (isinstance(a, numba.types.Array) and isinstance(k, numba.types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        i8p = ir.IntType(8).as_pointer()
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), i8p)
        i32 = ir.IntType(32)
        fn = builder.module.globals.get("llvm.prefetch.p0") or ir.Function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return numba.types.none(a, k), codegen


def _prefetch_span(a, lo, hi):
    """Ask the CPU to bring a[lo:hi] (clipped to a, 1-D) into its cache, one request per 64 bytes;
    reads nothing, changes nothing (under NUMBA_DISABLE_JIT=1 it does nothing)."""
    step = max(1, 64 // a.itemsize)
    for k in range(max(lo, 0), min(hi, a.size), step):
        _prefetch(a, k)


prefetch_span = (lambda a, lo, hi: None) if numba.config.DISABLE_JIT else njit()(_prefetch_span)


if numba.config.DISABLE_JIT:
    def vload16(a, k):
        """a[k : k + 16], as one vector."""
        return a[k:k + 16].copy()

    def vload16_first(a, k, count):
        """a[k : k + count] and 16 - count zeros, as one vector; a[k + count:] is not read."""
        v = np.zeros(16, a.dtype)
        v[:count] = a[k:k + count]
        return v

    def vfmav(acc, a, v):
        """acc + a * v, lane by lane, one fused multiply-add each."""
        return acc + a * v

    def _py_pair_sums(g):
        lo, hi = _halves(g)
        return lambda x, y: np.concatenate((x, y))[lo] + np.concatenate((x, y))[hi]

    vpairs16, vpairs8, vpairs4, vpairs2 = (_py_pair_sums(g) for g in (16, 8, 4, 2))

    def vtuple(v):
        """The lanes of v as a tuple."""
        return tuple(v)

    def vload_pair16(a, k):
        """(a[k], a[k+1]) 8 times over, as one vector."""
        return np.tile(a[k:k + 2], 8)

    def vloadL(a, k):
        """a[k : k + LANES], as one vector."""
        return a[k:k + LANES].copy()

    def vload8(a, k):
        """a[k : k + 8], as one vector of 8."""
        return a[k:k + 8].copy()

    def vstoreL(a, k, v):
        """a[k : k + len(v)] = v."""
        a[k:k + len(v)] = v

    def vfmaL(acc, p, v):
        """acc + p * v (p a scalar), one fused multiply-add per lane."""
        return acc + p * v
else:
    @njit()
    def vload16(a, k):
        """a[k : k + 16], as one vector."""
        return _vload16(a, k)

    @njit()
    def vload16_first(a, k, count):
        """a[k : k + count] and 16 - count zeros, as one vector (a masked load: a[k + count:] is not read)."""
        return _vload16_first(a, k, count)

    @njit()
    def vfmav(acc, a, v):
        """acc + a * v, lane by lane, one fused multiply-add each."""
        return _vfmav(acc, a, v)

    @njit()
    def vpairs16(x, y):
        """Two pixels' 16 partial sums (x, y) folded once: lane l < 8 is x[l] + x[l+8], lane 8 + l is y[l] + y[l+8]."""
        return _pairs16(x, y)

    @njit()
    def vpairs8(x, y):
        """Four pixels' 8 partial sums (two each in x, y) folded to 4: each pixel's s[l] + s[l+4], l < 4."""
        return _pairs8(x, y)

    @njit()
    def vpairs4(x, y):
        """Eight pixels' 4 partial sums (four each in x, y) folded to 2: each pixel's s[l] + s[l+2], l < 2."""
        return _pairs4(x, y)

    @njit()
    def vpairs2(x, y):
        """Sixteen pixels' 2 partial sums (eight each in x, y) added: lane p is pixel p's s[0] + s[1]."""
        return _pairs2(x, y)

    @njit()
    def vtuple(v):
        """The lanes of v as a tuple."""
        return _vtuple(v)

    @njit()
    def vload_pair16(a, k):
        """(a[k], a[k+1]) 8 times over, as one vector (one 64-bit broadcast load)."""
        return _vload_pair16(a, k)

    @njit()
    def vloadL(a, k):
        """a[k : k + LANES], as one vector."""
        return _vload(a, k)

    @njit()
    def vload8(a, k):
        """a[k : k + 8], as one vector of 8 (a 256-bit register in every build)."""
        return _vload8(a, k)

    @njit()
    def vstoreL(a, k, v):
        """a[k : k + LANES] = v (a[k : k + 8] for a vector of 8)."""
        _vstore(a, k, v)

    @njit()
    def vfmaL(acc, p, v):
        """acc + p * v (p a scalar), one fused multiply-add per lane."""
        return _vfma(acc, p, v)
