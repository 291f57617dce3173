"""u8 x s8 -> i32 dot-product tensor intrinsics for x86, and the design space that uses them.

Each computes ``C[L] += A[4] . B[L, 4]`` (``L`` int32 outputs, four u8 x s8 products summed
into each), with the weights packed ``[N / L, K / 4, L, 4]`` so one vector load takes a tile:

* ``vpdpbusd`` (AVX-512 VNNI), ``L = 16``: the four products and the sum in one instruction;
* ``vpmaddubsw`` + ``vpmaddwd`` (AVX-512BW), ``L = 16``;
* ``vpmaddubsw`` + ``vpmaddwd`` (AVX2), ``L = 8``: MetaSchedule has no integer rule for AVX2.

``vpmaddubsw`` adds two products into a *saturating* int16 lane: exact when
``255 * |w| * 2 <= 32767``, which canao's int8-dynamic weights (``[-63, 63]``,
:data:`canao.compress.deploy.DYNAMIC_QMAX`) keep; every trial's parity check against the
reference logits would catch a saturated sum.

TVM 0.27 ships VNNI and AVX-512 intrinsics of its own, but they pass ``<16 x i32>`` operands
to ``llvm.x86.avx512.vpdpbusd.512``, whose LLVM signature now takes ``<64 x i8>``: every
schedule using them fails LLVM's verifier. These are written against today's signatures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tvm.s_tir import TensorIntrin
from tvm.s_tir import meta_schedule as ms
from tvm.script import tirx as T


def _intrinsic(lanes: int, kind: str, madd_ub: str = "", madd_wd: str = "") -> Any:
    """One side of an intrinsic at ``lanes`` int32 outputs (``kind`` is read when the script
    is parsed): ``desc``, the computation a tensorised block must match; ``vnni``, one
    ``vpdpbusd``; ``pairs``, ``vpmaddubsw`` (u8 x s8 pairs -> saturating s16, ``madd_ub``)
    then ``vpmaddwd`` (s16 pairs -> i32, ``madd_wd``)."""
    n_bytes, n_words = 4 * lanes, 2 * lanes

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (4,), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, 4), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:4], B[0:lanes, 0:4])
            T.writes(C[0:lanes])
            if kind == "desc":
                for i in T.serial(0, lanes):
                    for k in T.serial(0, 4):
                        with T.sblock("update"):
                            vi, vk = T.axis.remap("SR", [i, k])
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")
            elif kind == "vnni":
                word = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")  # four activations
                C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                    C.vload([0], dtype=f"int32x{lanes}"),
                    T.reinterpret(T.broadcast(word, lanes), dtype=f"uint8x{n_bytes}"),
                    B.vload([0, 0], dtype=f"int8x{n_bytes}"), dtype=f"int32x{lanes}")
            else:
                word = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
                pairs = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(madd_ub),
                    T.reinterpret(T.broadcast(word, lanes), dtype=f"uint8x{n_bytes}"),
                    B.vload([0, 0], dtype=f"int8x{n_bytes}"), dtype=f"int16x{n_words}")
                C[T.ramp(T.int32(0), 1, lanes)] += T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id(madd_wd), pairs, T.broadcast(T.int16(1), n_words),
                    dtype=f"int32x{lanes}")
    return func


# name, LLVM feature that enables it, lanes; the first a target has is used
INTRINSICS = (
    ("canao_dot_16x4_vnni", "avx512vnni", 16, _intrinsic(16, "vnni")),
    ("canao_dot_16x4_avx512bw", "avx512bw", 16, _intrinsic(
        16, "pairs", "llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")),
    ("canao_dot_8x4_avx2", "avx2", 8, _intrinsic(
        8, "pairs", "llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd")),
)
for _name, _feature, _lanes, _impl in INTRINSICS:
    TensorIntrin.register(_name, _intrinsic(_lanes, "desc"), _impl, override=True)


def int8_intrinsic(features: Sequence[str]) -> tuple[str, int] | None:
    """The dot-product intrinsic (name, lanes) for a target's LLVM features, if any."""
    for name, feature, lanes, _ in INTRINSICS:
        if feature in features:
            return name, lanes
    return None


def int8_space(intrinsic: str) -> Any:
    """MetaSchedule's CPU design space for a packed integer matmul: its tiling tensorised
    with ``intrinsic``, and no vectorising of the loops around it (the intrinsic is the
    vector code; vectorising its surrounding loops too fails in lowering)."""
    rules = [r for r in ms.ScheduleRule.create("llvm")
             if type(r).__name__ not in ("MultiLevelTiling", "ParallelizeVectorizeUnroll")]
    rules[-1:-1] = [
        ms.schedule_rule.MultiLevelTilingWithIntrin(
            intrinsic, structure="SSRSRS", tile_binds=None, max_innermost_factor=64,
            vector_load_lens=None, reuse_read=None,
            reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2], scope="global")),
        ms.schedule_rule.ParallelizeVectorizeUnroll(
            max_jobs_per_core=16, max_vectorize_extent=0, unroll_max_steps=[0, 16, 64, 512],
            unroll_explicit=True)]
    postprocs = [*ms.Postproc.create("llvm"), ms.postproc.RewriteTensorize(vectorize_init_loop=True)]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs=postprocs,
                                             mutator_probs="llvm")
