"""Probe: what the training step spends its time on, which faster optimizer keeps the bits, and
what dropout and the row gathers cost.

Five modes; each prints a provenance line, then JSON lines (1 thread)::

    python benchmarks/probes/optimizer_step.py bits      # TEA-seq, BiCLUM 20 epochs, scMDCF 60 + 60
    python benchmarks/probes/optimizer_step.py profile   # mop_snare, BiCLUM default, 4 epochs
    python benchmarks/probes/optimizer_step.py ops       # the same, torch operators, 3 epochs
    python benchmarks/probes/optimizer_step.py dropout   # torch's dropout against CellBridge's
    python benchmarks/probes/optimizer_step.py gather    # indexing against index_select

- ``bits``: trains the same seeded model with torch's per-tensor optimizer loop (``foreach=False``,
  torch's CPU default before session 10), the multi-tensor loop (``foreach=True``, CellBridge's
  now) and the fused CPU kernel (``fused=True``, BiCLUM only), by forcing these arguments on
  ``torch.optim.Adam`` / ``Adadelta``. It reports seconds and the largest
  absolute difference of the embeddings (and, for scMDCF, whether the labels agree) from the
  per-tensor run.
- ``profile``: cProfile of 4 BiCLUM training epochs on mop_snare (gene activity from the peaks).
  It prints the functions with the most own time, as fractions of the training time.
- ``ops``: ``torch.profiler`` of 3 such epochs: the torch operators with the most own CPU time,
  as fractions of the profiled total, and the path of the cellbridge it imported (run it with
  ``PYTHONPATH=OTHER_TREE/src`` to profile another commit's training).
- ``dropout``: milliseconds per forward and backward pass of torch's ``nn.Dropout`` and of
  CellBridge's (``cellbridge.models._nn.Dropout``, a uniform draw for the mask) on the feature
  encoder's (512 x 256) and the cell encoder's (256 x 256) activations. Before session 11 this
  mode timed one forward call of ``F.dropout`` and of a random mask (512 x 256 only).
- ``gather``: milliseconds per call of the three row gathers of a BiCLUM step at mop_snare's
  sizes (cell inputs, reconstruction targets with their decoded columns, feature profiles) by
  indexing and by ``index_select``, and whether both give the same values.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from _common import DATA, load_paired, print_provenance  # noqa: E402


def _emit(**record) -> None:
    print(json.dumps(record), flush=True)


def bits_mode() -> None:
    import torch

    import cellbridge as cb

    rna, adt, _ = load_paired("teaseq_pbmc")
    adam, adadelta = torch.optim.Adam, torch.optim.Adadelta

    def forced(optimizer, settings):  # the caller's other arguments, these loop settings
        return lambda *args, **kwargs: optimizer(*args, **{**kwargs, **settings})

    loops = {"per_tensor": {"foreach": False}, "foreach": {"foreach": True},
             "fused": {"foreach": False, "fused": True}}
    runs = {}
    try:
        for mode, extra in loops.items():
            torch.optim.Adam = forced(adam, extra)
            start = time.perf_counter()
            model = cb.BiCLUM(rna, adt, modality="protein", seed=0, max_epochs=20)
            model.train()
            z = np.hstack([model.get_latent(modality="rna"), model.get_latent(modality="other")])
            runs[("biclum", mode)] = (time.perf_counter() - start, z, None)
            if mode == "fused":  # no fused Adadelta / AMSGrad path to compare for scMDCF
                continue
            torch.optim.Adadelta = forced(adadelta, extra)
            start = time.perf_counter()
            model = cb.scMDCF(rna, adt, n_clusters=11, seed=0, n_models=1, pretrain_epochs=60, finetune_epochs=60)
            model.train()
            runs[("scmdcf", mode)] = (time.perf_counter() - start, np.asarray(model.get_latent()),
                                      np.asarray(model.predict_clusters()))
    finally:
        torch.optim.Adam, torch.optim.Adadelta = adam, adadelta
    for (model_name, mode), (seconds, z, labels) in runs.items():
        _, z0, labels0 = runs[(model_name, "per_tensor")]
        _emit(model=model_name, optimizer=mode, seconds=round(seconds, 2),
              max_abs_diff=float(np.abs(z - z0).max()),
              labels_equal=None if labels is None else bool((labels == labels0).all()))


def _mop_model(max_epochs: int):
    """The default BiCLUM on mop_snare's RNA and gene activity, seed 0 (untrained)."""
    import anndata as ad

    import cellbridge as cb

    rna = ad.read_h5ad(DATA / "mop_snare" / "rna.h5ad")
    gam = cb.pp.gene_activity(ad.read_h5ad(DATA / "mop_snare" / "atac.h5ad"), DATA / "annotation" / "mm10_genes.bed")
    return cb.BiCLUM(rna, gam, seed=0, max_epochs=max_epochs)


def profile_mode() -> None:
    model = _mop_model(max_epochs=4)
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    model.train()
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # {(file, line, name): (cc, nc, own time, cumulative, callers)}
    top = sorted(stats.items(), key=lambda item: -item[1][2])[:10]
    _emit(train_seconds=round(total, 2),
          top_own_time=[{"function": f"{Path(f).name}:{line}({name})", "calls": nc, "seconds": round(own, 2),
                         "fraction": round(own / total, 3)} for (f, line, name), (_, nc, own, _, _) in top])


def ops_mode() -> None:
    from torch.profiler import ProfilerActivity, profile

    model = _mop_model(max_epochs=3)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train(progress=False)
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    import cellbridge as cb  # which source tree was profiled (PYTHONPATH may point to another commit's)

    _emit(cellbridge=str(Path(cb.__file__).parent), train_seconds=round(model.train_summary_["seconds"], 2),
          top_self_cpu=[{"op": e.key, "calls": e.count, "seconds": round(e.self_cpu_time_total / 1e6, 2),
                         "fraction": round(e.self_cpu_time_total / total, 3)} for e in events[:10]])


def _ms_per_call(fn, n: int = 300) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e3


def dropout_mode() -> None:
    import torch
    from torch import nn

    from cellbridge.models._nn import Dropout

    for shape in ((512, 256), (256, 256)):
        x = torch.randn(*shape)

        def forward_backward(layer, x=x):
            def call():
                leaf = x.clone().requires_grad_()
                layer(leaf).sum().backward()
            return call

        _emit(values=list(shape), torch_dropout_ms=round(_ms_per_call(forward_backward(nn.Dropout(0.2))), 3),
              cellbridge_dropout_ms=round(_ms_per_call(forward_backward(Dropout(0.2))), 3),
              no_dropout_ms=round(_ms_per_call(forward_backward(nn.Identity())), 3))


def gather_mode() -> None:
    import torch

    gen = torch.Generator().manual_seed(0)
    n_cells, n_features, n_profile = 10_309, 4_000, 1_024  # about mop_snare's sizes
    cells, targets = torch.rand(n_cells, 50, generator=gen), torch.rand(n_cells, n_features, generator=gen)
    profiles = torch.rand(n_features, n_profile, generator=gen)
    rows = torch.randperm(n_cells, generator=gen)[:256]
    columns = torch.randperm(n_features, generator=gen)[:512].sort().values
    cases = {"cells": (lambda: cells[rows], lambda: cells.index_select(0, rows)),
             "targets": (lambda: targets[rows][:, columns],
                         lambda: targets.index_select(0, rows).index_select(1, columns)),
             "profiles": (lambda: profiles[columns], lambda: profiles.index_select(0, columns))}
    for name, (indexing, select) in cases.items():
        _emit(gather=name, indexing_ms=round(_ms_per_call(indexing), 3), index_select_ms=round(_ms_per_call(select), 3),
              equal=bool(torch.equal(indexing(), select())))


def main() -> None:
    import torch

    modes = {"bits": bits_mode, "profile": profile_mode, "dropout": dropout_mode, "gather": gather_mode,
             "ops": ops_mode}
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        raise SystemExit(__doc__)
    torch.set_num_threads(1)
    print_provenance()
    modes[sys.argv[1]]()


if __name__ == "__main__":
    main()
