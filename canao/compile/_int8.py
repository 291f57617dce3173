"""Integer matmuls kept in integers through import, and proof read from the built code.

TVM's ONNX importer turns ``MatMulInteger(x_u8, w_s8, x_zero_point)`` into
``matmul(astype(x, i32) - astype(zp, i32), astype(w, i32))``: both operands widened to int32
before the product, a form no x86 dot-product instruction matches, so int8-dynamic models ran
int32 arithmetic (slower than fp32). :func:`integer_matmuls` rewrites it, exactly, into

    matmul(x_u8, w_s8, out_dtype=i32) - zp * colsum(w)

(``sum_k (x - zp) w = sum_k x w - zp sum_k w``): a u8 x s8 -> i32 matmul, the pattern
MetaSchedule's x86 rules tensorise (``dot_16x4_vnni`` with AVX-512 VNNI, ``dot_16x4_avx512``
with AVX-512 alone, and an AVX2 one: canao's own, :mod:`canao.compile._x86`). The
column sums cost ``K x N`` additions per call against ``M x K x N`` multiply-adds.

Whether the build really used a dot-product instruction is read from the library's assembly
(:func:`dot_product_instructions`), not assumed from the target.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tvm
from tvm import relax, te
from tvm.relax.dpl import is_op, rewrite_call, wildcard

# u8 x s8 dot-product instructions on x86: VNNI's fused multiply-add of four byte pairs,
# and the AVX-512BW / AVX2 pair (vpmaddubsw: u8 x s8 -> s16 pairs, vpmaddwd: -> i32).
DOT_PRODUCT = ("vpdpbusd", "vpmaddubsw")
INT8_KERNEL = "canao_int8_matmul"  # the packed matmuls' name prefix (task names carry it)


def integer_matmuls(mod: tvm.IRModule, lanes: int = 0) -> tuple[tvm.IRModule, int]:
    """``mod`` with every imported ``MatMulInteger`` (u8 activations, s8 weights, no weight
    zero point) computed as a u8 x s8 -> i32 matmul; and how many were rewritten.

    With ``lanes`` (the target's dot-product intrinsic, :func:`canao.compile._x86.int8_intrinsic`)
    the weight is packed ``[N / lanes, K / 4, lanes, 4]`` in the graph and multiplied by
    :func:`packed_matmul`, the form the intrinsic tensorises; a shape it does not divide keeps
    the plain matmul.
    """
    x, zp, w = wildcard(), wildcard(), wildcard()
    widened = is_op("relax.matmul")(
        is_op("relax.subtract")(is_op("relax.astype")(x), is_op("relax.astype")(zp)),
        is_op("relax.astype")(w))
    count = 0
    kernels: dict[tuple[int, int, int, int], tvm.ir.GlobalVar] = {}

    def rewrite(expr: relax.Expr, matched: dict[Any, relax.Expr]) -> relax.Expr:
        nonlocal count
        a, z, b = matched[x], matched[zp], matched[w]
        if (_dtype(a), _dtype(z), _dtype(b)) != ("uint8", "uint8", "int8"):
            return expr
        count += 1
        a_shape, b_shape = _static_shape(a), _static_shape(b)
        if (lanes and a_shape and b_shape and len(b_shape) == 2 and b_shape[0] % 4 == 0
                and b_shape[1] % lanes == 0):
            lead, (k, n) = a_shape[:-1], b_shape
            m = int(np.prod(lead))
            key = (m, k, n, lanes)
            if key not in kernels:
                kernels[key] = builder.add_func(packed_matmul(*key), f"{INT8_KERNEL}_{m}x{k}x{n}_{lanes}")
            packed = relax.op.permute_dims(relax.op.reshape(b, (k // 4, 4, n // lanes, lanes)),
                                           [2, 0, 3, 1])
            flat = relax.op.call_tir(kernels[key], relax.Tuple([relax.op.reshape(a, (m, k)), packed]),
                                     relax.TensorType((m, n), "int32"))
            product = relax.op.reshape(flat, (*lead, n))
        else:
            product = relax.op.matmul(a, b, out_dtype="int32")
        colsum = relax.op.sum(relax.op.astype(b, "int32"), axis=[-2])
        return relax.op.subtract(product, relax.op.multiply(relax.op.astype(z, "int32"), colsum))

    builder = relax.BlockBuilder(mod)  # holds the packed kernels, typed for call_tir
    rewritten = {gv: rewrite_call(widened, rewrite, func) for gv, func in mod.functions_items()
                 if isinstance(func, relax.Function)}
    out = builder.get()
    for gv, func in rewritten.items():
        out[gv] = func
    return out, count


TRANSFORM_PARAMS = "main_transform_params"


def lift_weight_transforms(mod: tvm.IRModule) -> tvm.IRModule:
    """Move what depends on the weights alone (packing, column sums) out of ``main`` into
    :data:`TRANSFORM_PARAMS`, which :class:`canao.runtime.CompiledModel` runs once when it
    loads the library: the stored parameters stay exactly the model's, and no call repeats
    the work. ``main`` then takes the input and the transformed parameters."""
    mod = tvm.IRModule(mod.functions, attrs=mod.attrs)
    mod["main"] = mod["main"].with_attr("num_input", 1)
    return relax.transform.LiftTransformParams()(mod)


def packed_matmul(m: int, k: int, n: int, lanes: int) -> tvm.tirx.PrimFunc:
    """``C[m, n] = sum_k A[m, k] * B[n // L, k // 4, n % L, k % 4]``: u8 x s8 -> i32."""
    a = te.placeholder((m, k), "uint8", name="A")
    b = te.placeholder((n // lanes, k // 4, lanes, 4), "int8", name="B")
    r = te.reduce_axis((0, k), name="k")
    c = te.compute((m, n), lambda i, j: te.sum(
        a[i, r].astype("int32") * b[j // lanes, r // 4, j % lanes, r % 4].astype("int32"), axis=r),
        name="C")
    return te.create_prim_func([a, b, c]).with_attr("global_symbol", f"int8_matmul_{m}x{k}x{n}")


def _dtype(expr: relax.Expr) -> str:
    return str(getattr(expr.ty, "dtype", ""))


def _static_shape(expr: relax.Expr) -> list[int] | None:
    """The shape when every dimension is a known integer, else None."""
    dims = getattr(getattr(expr.ty, "shape", None), "values", None)
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return [int(d) for d in dims]


def dot_product_instructions(executable: Any) -> dict[str, int]:
    """Occurrences of each u8 x s8 dot-product instruction in a built library's assembly.

    Read from the LLVM module TVM generated (``inspect_source("asm")``), so a build for a CPU
    this machine lacks (``mcpu: znver4`` on an AVX2 host) can be checked too.
    """
    asm = "".join(m.inspect_source("asm") for m in executable.mod.imports if m.kind == "llvm")
    return {ins: asm.count(ins) for ins in DOT_PRODUCT}


def schedule_int8_kernels(mod: tvm.IRModule, intrinsic: str, lanes: int) -> tvm.IRModule:
    """Give each packed int8 matmul a fixed tensorised schedule, measuring nothing: columns
    in tiles of ``lanes`` (one tile a parallel task), the reduction in steps of four, the
    innermost tile on the dot-product ``intrinsic``. A build that tunes replaces it with a
    measured schedule; one that does not (the untuned rung, a build for a CPU this machine
    cannot run) still computes in integers on the dot-product instruction rather than in
    TVM's scalar default."""
    out = tvm.IRModule(mod.functions, attrs=mod.attrs)
    for gv, func in mod.functions_items():
        if not gv.name_hint.startswith(INT8_KERNEL) or not isinstance(func, tvm.tirx.PrimFunc):
            continue
        sch = tvm.s_tir.Schedule(func)
        block = sch.get_sblock("C")
        i, j, k = sch.get_loops(block)
        j_tile, j_lane = sch.split(j, factors=[None, lanes])
        k_step, k_lane = sch.split(k, factors=[None, 4])
        sch.reorder(j_tile, i, k_step, j_lane, k_lane)
        sch.parallel(j_tile)
        init = sch.decompose_reduction(block, k_step)
        sch.vectorize(sch.get_loops(init)[-1])
        sch.tensorize(j_lane, intrinsic)
        out[gv] = sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return out
