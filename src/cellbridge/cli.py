"""Command line: ``cellbridge {demo,simulate,integrate,evaluate,cluster,gene-activity,links,embed,transfer,report}``.

The CLI only parses arguments, calls :mod:`cellbridge.workflows` and prints; no logic of its own.
Before any input is read it checks every output location (``--out``, ``--save-model``,
``--report``); errors are printed as one line naming the CLI flags (no traceback), exit code 2;
Ctrl-C / SIGTERM exit with 130 / 143 and leave no partial output.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import sys
import warnings

from . import __version__
from ._errors import CellBridgeError, CellBridgeInputError
from ._utils import Terminated, check_output, limit_threads, progress_enabled, signals_raise, to_json

#: How an input file is named on the command line (see :func:`cellbridge.io.read`).
INPUTS_HELP = (".h5ad; .h5mu (FILE.h5mu:MODALITY picks a modality, default the one named after the flag, "
               "e.g. rna); 10x .h5 or mtx folder (FILE:FEATURE_TYPE, e.g. multiome.h5:Peaks; default the "
               "flag's feature type: Gene Expression, Peaks, Antibody Capture); scMDC .h5 (X1 / X2); .mtx")

EXAMPLES = """examples:
  cellbridge demo
  cellbridge simulate --out-dir example
  cellbridge cluster --rna example/rna.h5ad --adt example/adt.h5ad --out example/clusters.h5mu
  cellbridge integrate --rna rna.h5ad --atac peaks.h5ad --genome-annotation mm10_genes.bed --out result.h5mu
  cellbridge integrate --rna rna.h5ad --adt adt.h5ad --out result.h5mu --preset reference --epochs 200
  cellbridge integrate --rna multiome.h5 --atac multiome.h5 --genome-annotation hg38 --out result.h5mu
  cellbridge cluster --rna cite.h5mu --adt cite.h5mu:prot --layer-adt counts --out clusters.h5mu
  cellbridge evaluate result.h5mu --label cell_type --paired
  cellbridge cluster --rna rna.h5ad --adt adt.h5ad --out clusters.h5mu --n-clusters 8
  cellbridge gene-activity --peaks atac.h5ad --annotation hg38 --out gam.h5ad
  cellbridge links --result result.h5mu --peaks atac.h5ad --annotation mm10_genes.bed --out links.tsv
  cellbridge integrate --rna rna.h5ad --adt adt.h5ad --out result.h5mu --save-model model
  cellbridge embed --model model --rna new_rna.h5ad --out new_rna_embedded.h5ad
  cellbridge transfer --reference result.h5mu:rna --query new_rna_embedded.h5ad --label cell_type --out labels.tsv
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_common(p: argparse.ArgumentParser, *, out_required: bool = True, seed: bool = True,
                out_help: str = "output file (.h5mu / .h5ad)") -> None:
    p.add_argument("--out", required=out_required, help=out_help)
    p.add_argument("--overwrite", action="store_true", help="replace --out (and other outputs) if they exist")
    if seed:
        p.add_argument("--seed", type=int, default=0)
    _add_run_options(p)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="use at most N CPU threads (torch, BLAS, numba, neighbour search; default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines (warnings and errors only)")


def _add_accelerator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                   help="device for the model (auto: CUDA when available, else CPU)")


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("--report", metavar="DIR",
                   help="also write the run report (index.html, report.md, PNGs) into this folder (new or empty)")


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted training from its checkpoint (in --save-model, else OUT.checkpoint)")
    p.add_argument("--checkpoint-every", type=int, metavar="EPOCHS",
                   help="also checkpoint the training state every this many epochs (default: by time only)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, metavar="MINUTES",
                   help="checkpoint the training state every this many minutes (default 10; always on Ctrl-C)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellbridge", description="Single-cell multi-omics integration.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cellbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="integrate the built-in simulated example and print metrics")
    p.add_argument("--n-cells", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=30)
    _add_accelerator(p)
    _add_report(p)
    _add_common(p, out_required=False)

    p = sub.add_parser("simulate", help="write the built-in simulated example (paired RNA, ATAC, ADT)")
    p.add_argument("--out-dir", required=True, help="folder for rna.h5ad, atac.h5ad, adt.h5ad, genes.bed")
    p.add_argument("--n-cells", type=int, default=1000)
    p.add_argument("--n-types", type=int, default=6, help="number of simulated cell types")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    _add_run_options(p)

    p = sub.add_parser("integrate", help="BiCLUM: integrate unpaired RNA with ATAC or ADT",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rna", required=True, metavar="FILE[:MODALITY]", help=f"scRNA-seq counts: {INPUTS_HELP}")
    other = p.add_mutually_exclusive_group(required=True)
    other.add_argument("--atac", metavar="FILE[:MODALITY]",
                       help="ATAC peak counts (cells x peaks); the same 10x Multiome .h5 as --rna gives its Peaks")
    other.add_argument("--fragments", help="10x fragments.tsv.gz (needs --cells)")
    other.add_argument("--gene-activity", metavar="FILE[:MODALITY]", help="precomputed gene activity (cells x genes)")
    other.add_argument("--adt", metavar="FILE[:MODALITY]",
                       help="ADT / surface protein counts; a 10x CITE-seq .h5 gives its Antibody Capture")
    p.add_argument("--cells", metavar="FILE[:MODALITY]",
                   help="file whose obs_names are the ATAC barcodes (with --fragments)")
    p.add_argument("--genome-annotation", help="BED/GTF/GFF3 file or hg38/hg19/mm10 (with --atac/--fragments)")
    p.add_argument("--preset", default="default", choices=["default", "reference"])
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's)")
    p.add_argument("--max-time", type=float, help="stop training after this many seconds")
    p.add_argument("--layer-rna", help="layer of --rna holding raw counts (default: .X)")
    p.add_argument("--layer-atac", help="layer of --atac holding the peak counts (gene activity is computed from it)")
    p.add_argument("--layer-adt", help="layer of --adt holding raw counts")
    p.add_argument("--layer-gene-activity", help="layer of --gene-activity holding the values")
    p.add_argument("--layer-other", help="layer of whichever of --atac/--adt/--gene-activity is given")
    p.add_argument("--drop-peaks", action="store_true",
                   help="leave the peaks of --atac out of --out (kept by default as modality 'atac')")
    p.add_argument("--protein-map", help="TSV with columns protein, gene (with --adt; default: the built-in table)")
    p.add_argument("--save-model", help="also save the trained model to this folder (new or empty)")
    _add_checkpoint(p)
    _add_accelerator(p)
    _add_report(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="integration metrics of a result .h5mu")
    p.add_argument("result")
    p.add_argument("--label", required=True, help="obs column with cell types (in both modalities)")
    p.add_argument("--paired", action="store_true", help="cells are the same in both modalities (FOSCTTM)")
    p.add_argument("--key", help="obsm key of the embedding (default: X_biclum or X_scmdcf, whichever it has)")
    p.add_argument("--out", help="write the metrics as JSON here (.json)")
    p.add_argument("--overwrite", action="store_true")
    _add_run_options(p)

    p = sub.add_parser("cluster", help="scMDCF: joint embedding and clusters of paired RNA + ADT/ATAC")
    p.add_argument("--rna", required=True, metavar="FILE[:MODALITY]", help=f"RNA counts: {INPUTS_HELP}")
    paired = p.add_mutually_exclusive_group(required=True)
    paired.add_argument("--adt", metavar="FILE[:MODALITY]", help="ADT counts of the same cells")
    paired.add_argument("--atac", metavar="FILE[:MODALITY]", help="ATAC peak counts of the same cells")
    p.add_argument("--n-clusters", type=int, help="K (estimated when omitted)")
    p.add_argument("--pretrain-epochs", type=int, help="default: the preset's (200)")
    p.add_argument("--finetune-epochs", type=int, help="default: the preset's (200)")
    p.add_argument("--n-models", type=int, help="ensemble size (default: the preset's; 5 for default up to 5,000 cells)")
    _add_checkpoint(p)
    p.add_argument("--preset", default="default", choices=["default", "reference"])
    p.add_argument("--layer-rna", help="layer of --rna holding raw counts (default: .X)")
    p.add_argument("--layer-adt", help="layer of --adt holding raw counts")
    p.add_argument("--layer-atac", help="layer of --atac holding the peak counts")
    p.add_argument("--layer-other", help="layer of whichever of --adt/--atac is given")
    p.add_argument("--save-model", help="also save the trained model to this folder (new or empty)")
    _add_accelerator(p)
    _add_report(p)
    _add_common(p)

    p = sub.add_parser("gene-activity", help="gene activity from ATAC peaks or fragments")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--peaks", metavar="FILE[:MODALITY]", help=f"ATAC peak counts (cells x peaks): {INPUTS_HELP}")
    src.add_argument("--fragments", help="10x fragments.tsv.gz")
    p.add_argument("--cells", metavar="FILE[:MODALITY]",
                   help="file whose obs_names are the barcodes to score (with --fragments)")
    p.add_argument("--layer-peaks", help="layer of --peaks holding the counts (default: .X)")
    p.add_argument("--annotation", required=True, help="BED/GTF/GFF3 file or hg38/hg19/mm10")
    p.add_argument("--method", default="signac", choices=["signac", "promoter", "archr"])
    _add_common(p)

    p = sub.add_parser("links", help="gene-peak links through an integration (or the true pairing)")
    p.add_argument("--result", required=True, help="integrate's .h5mu (RNA and the ATAC cells' embedding)")
    p.add_argument("--peaks", required=True, help="ATAC peak counts (cells x peaks) of the result's ATAC cells")
    p.add_argument("--annotation", required=True, help="BED/GTF/GFF3 file or hg38/hg19/mm10")
    p.add_argument("--key", default="X_biclum", help="obsm key of the joint embedding")
    p.add_argument("--window", type=int, default=500_000, help="bp around each TSS (default 500,000, as Signac)")
    p.add_argument("--groupby", help="obs column: links within each of its groups (e.g. clusters)")
    p.add_argument("--paired", action="store_true", help="RNA and peaks are the same cells: use the true pairing")
    p.add_argument("--layer-peaks", help="layer of --peaks holding raw counts")
    _add_common(p)

    p = sub.add_parser("embed", help="map new cells into the joint space of a saved BiCLUM or scMDCF model",
                       description="Embed cells with a model saved by `integrate --save-model` (BiCLUM: any new "
                                   "cells of either modality) or `cluster --save-model` (scMDCF: the cells it was "
                                   "trained on). Writes the cells as .h5ad with obsm[--key] added.")
    p.add_argument("--model", required=True, help="model folder written by --save-model")
    cells = p.add_mutually_exclusive_group(required=True)
    cells.add_argument("--rna", help="RNA counts of the cells to embed (.h5ad, 10x .h5 or .mtx)")
    cells.add_argument("--gene-activity", help="gene activity of ATAC cells (a BiCLUM RNA+ATAC model)")
    cells.add_argument("--adt", help="ADT counts (a BiCLUM RNA+protein model)")
    p.add_argument("--layer", help="layer of the input holding raw counts")
    p.add_argument("--key", help="obsm key to write (default: X_biclum or X_scmdcf)")
    _add_accelerator(p)
    _add_common(p, seed=False, out_help="output .h5ad (the input cells with the embedding)")

    p = sub.add_parser("transfer", help="transfer labels from reference cells to query cells through an embedding",
                       description="k-nearest-neighbour majority vote in a joint embedding (cellbridge.tl."
                                   "transfer_labels). --reference and --query are .h5ad files or modalities of an "
                                   ".h5mu, e.g. --reference result.h5mu:rna --query result.h5mu:atac.")
    p.add_argument("--reference", required=True, help="cells with labels and the embedding (.h5ad or FILE.h5mu:MOD)")
    p.add_argument("--query", required=True, help="cells to label, with the same embedding (.h5ad or FILE.h5mu:MOD)")
    p.add_argument("--label", required=True, help="obs column of the reference with the labels")
    p.add_argument("--key", default="X_biclum", help="obsm key of the joint embedding (both sides)")
    p.add_argument("--k", type=_positive_int, default=5, help="neighbours that vote (default 5)")
    _add_common(p, seed=False, out_help="output table (.tsv): cell, predicted, confidence (and observed)")

    p = sub.add_parser("report", help="write the run report (HTML page, PNGs, report.md) of a result .h5mu")
    p.add_argument("result", help="a result .h5mu (of integrate or cluster)")
    p.add_argument("--out", "--report", dest="report", required=True, metavar="DIR",
                   help="report folder (new or empty)")
    p.add_argument("--label", help="obs column of the cell types (default: cell_type when present)")
    p.add_argument("--cluster", help="obs column of the clusters (default: a column ending in _cluster)")
    p.add_argument("--key", help="obsm key of the joint embedding (default: X_biclum or X_scmdcf)")
    p.add_argument("--metrics", help="JSON file of metrics to show (e.g. from evaluate --out)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty report folder")
    _add_run_options(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command_parser = _subparser(parser, args.command)
    quiet = getattr(args, "quiet", False)
    try:
        with _cli_logging(quiet), _cli_warnings(), progress_enabled(not quiet), signals_raise():
            _check_outputs(args)
            _check_accelerator(getattr(args, "accelerator", "auto"))
            with limit_threads(getattr(args, "threads", None)):
                result = _dispatch(args)
    except (CellBridgeError, OSError) as err:
        print(f"cellbridge {args.command}: error: {cli_message(str(err), command_parser)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        note = f" {cli_message(str(err), command_parser)}" if str(err) else ""
        print(f"cellbridge {args.command}: interrupted; no partial output is left.{note}", file=sys.stderr)
        return 130
    except Terminated as err:
        print(f"cellbridge {args.command}: terminated by a signal; no partial output is left.", file=sys.stderr)
        return int(err.code)
    if isinstance(result, dict):
        print(to_json(result))
    return 0


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[command]


@contextlib.contextmanager
def _cli_logging(quiet: bool):
    """Log lines of the ``cellbridge`` logger only, to stderr (the root logger is left alone)."""
    log = logging.getLogger("cellbridge")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    saved = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]


@contextlib.contextmanager
def _cli_warnings():
    """Hide the libraries' deprecation notices about their own future behaviour (nothing a CLI user
    can act on); CellBridge's warnings about the data stay."""
    with warnings.catch_warnings():
        for module in ("mudata", "anndata"):
            warnings.filterwarnings("ignore", category=FutureWarning, module=rf"{module}(\.|$)")
        yield


#: What each command writes to ``--out``: (file ending, what it is).
OUT_TYPES = {"integrate": ".h5mu", "cluster": ".h5mu", "demo": ".h5mu", "gene-activity": ".h5ad", "embed": ".h5ad",
             "evaluate": ".json", "links": ".tsv", "transfer": ".tsv"}
#: Output folders (argparse destination -> flag).
OUT_DIRS = {"save_model": "--save-model", "report": "--report"}


def _check_outputs(args: argparse.Namespace) -> None:
    """Check every output location of the command before any input is read."""
    from .io import check_suffix

    overwrite = getattr(args, "overwrite", False)
    checks = []
    if getattr(args, "out", None):
        checks.append(("--out", args.out, "file", overwrite))
    for dest, flag in OUT_DIRS.items():
        if getattr(args, dest, None):
            resume = dest == "save_model" and getattr(args, "resume", False)  # the folder holds the checkpoint
            checks.append((flag, getattr(args, dest), "dir", overwrite or resume))
    if args.command == "simulate":  # its four files are checked by workflows.simulate before simulating
        checks.append(("--out-dir", args.out_dir, "dir", True))
    for flag, path, kind, ok_to_replace in checks:
        try:
            if flag == "--out" and args.command in OUT_TYPES:
                check_suffix(path, OUT_TYPES[args.command])
            check_output(path, overwrite=ok_to_replace, kind=kind)
        except (CellBridgeInputError, FileExistsError) as err:
            raise type(err)(f"{flag} {err}") from None


def _check_accelerator(name: str) -> None:
    if name in ("auto", "cpu"):
        return
    import torch

    found = torch.cuda.is_available() if name == "cuda" else torch.backends.mps.is_available()
    if not found:
        raise CellBridgeInputError(f"--accelerator {name}: no {name.upper()} device is available on this machine; "
                                   "use --accelerator auto or cpu.")


#: API keyword -> CLI flag(s) where the names differ; any other ``a_b`` becomes ``--a-b`` when the
#: command has that flag.
API_FLAGS = {
    "overwrite": ("--overwrite",), "max_epochs": ("--epochs",), "model_dir": ("--save-model",),
    "annotation": ("--genome-annotation", "--annotation"), "cells": ("--cells",), "label_key": ("--label",),
    "use_rep": ("--key",), "protein_map": ("--protein-map",),
}
#: ``layer=...`` of the named object -> the command's layer flag.
LAYER_FLAGS = {
    "rna": ("--layer-rna", "--layer"), "other": ("--layer-other", "--layer"),
    "atac": ("--layer-atac", "--layer-peaks", "--layer-other", "--layer"),
    "peaks": ("--layer-peaks", "--layer-atac", "--layer"),
    "gene_activity": ("--layer-gene-activity", "--layer-other", "--layer"),
    "adt": ("--layer-adt", "--layer-other", "--layer"), "protein": ("--layer-adt", "--layer-other", "--layer"),
}


def cli_message(message: str, parser: argparse.ArgumentParser) -> str:
    """An error message of the Python API in the words of the command line: `` `overwrite=True` ``
    becomes ``--overwrite``, `` `layer="counts"` `` about `` `rna.X` `` becomes ``--layer-rna counts``,
    `` `protein_map` `` becomes ``--protein-map`` (only flags that ``parser`` has)."""
    flags = {opt for action in parser._actions for opt in action.option_strings}
    objects = [m for m in re.findall(r"`(\w+)(?:\.[^`]*)?`", message) if m in LAYER_FLAGS]

    def flag_for(kw: str) -> str | None:
        if kw == "layer":
            candidates = LAYER_FLAGS.get(objects[0], ()) if objects else ("--layer",)
        else:
            candidates = API_FLAGS.get(kw, ("--" + kw.replace("_", "-"),))
        return next((c for c in candidates if c in flags), None)

    def leave_out(m: re.Match) -> str:
        flag = flag_for(m["kw"])
        return f"{'L' if m['verb'][0].isupper() else 'l'}eave out {flag}" if flag else m[0]

    def with_value(m: re.Match) -> str:
        flag = flag_for(m["kw"])
        if flag is None:
            return m[0]
        value = m["value"]
        return flag if value == "True" else f"{flag} {value.strip(chr(34) + chr(39))}"

    def bare(m: re.Match) -> str:
        kw = m["kw"]
        flag = flag_for(kw) if ("_" in kw or kw in API_FLAGS) else None
        return flag or m[0]

    if "--overwrite" in flags:  # also written without backticks
        message = re.sub(r"(?<![`\w])overwrite=True(?![`\w])", "--overwrite", message)
    message = re.sub(r"(?P<verb>(?:[Pp]ass|[Uu]se) )`(?P<kw>[a-z]\w*)=(?:None|False)`", leave_out, message)
    message = re.sub(r"`(?P<kw>[a-z]\w*)=(?P<value>[^`]+)`", with_value, message)
    return re.sub(r"`(?P<kw>[a-z]\w*)`", bare, message)


def _checkpoint_options(args: argparse.Namespace) -> dict:
    """``integrate`` / ``cluster``: the checkpoint options of the training."""
    from .models.training import check_checkpoint_options

    minutes = args.checkpoint_minutes
    if not minutes > 0:
        raise CellBridgeInputError(f"--checkpoint-minutes must be above 0, got {minutes!r}.")
    check_checkpoint_options(args.checkpoint_every, 60.0 * minutes)
    return {"resume": args.resume, "checkpoint_every": args.checkpoint_every, "checkpoint_seconds": 60.0 * minutes}


def _dispatch(args: argparse.Namespace):
    from . import workflows

    progress = not getattr(args, "quiet", False)
    if args.command == "demo":
        return workflows.demo(n_cells=args.n_cells, epochs=args.epochs, seed=args.seed, out=args.out,
                              overwrite=args.overwrite, progress=progress, report=args.report,
                              accelerator=args.accelerator)
    if args.command == "integrate":
        workflows.integrate(
            args.rna, args.out, atac=args.atac, fragments=args.fragments, cells=args.cells,
            gene_activity=args.gene_activity, adt=args.adt, annotation=args.genome_annotation,
            preset=args.preset, epochs=args.epochs, max_time=args.max_time, seed=args.seed,
            layer_rna=args.layer_rna, layer_atac=args.layer_atac, layer_adt=args.layer_adt,
            layer_gene_activity=args.layer_gene_activity, layer_other=args.layer_other,
            keep_peaks=not args.drop_peaks, overwrite=args.overwrite, model_dir=args.save_model, progress=progress, report=args.report, protein_map=args.protein_map,
            accelerator=args.accelerator, **_checkpoint_options(args),
        )
        return {"written": args.out, **({"report": args.report} if args.report else {})}
    if args.command == "evaluate":
        return workflows.evaluate(args.result, label=args.label, paired=args.paired, key=args.key,
                                  out=args.out, overwrite=args.overwrite)
    if args.command == "cluster":
        return workflows.cluster(args.rna, args.out, adt=args.adt, atac=args.atac, n_clusters=args.n_clusters,
                                 preset=args.preset, seed=args.seed, pretrain_epochs=args.pretrain_epochs,
                                 finetune_epochs=args.finetune_epochs, layer_rna=args.layer_rna,
                                 layer_adt=args.layer_adt, layer_atac=args.layer_atac,
                                 layer_other=args.layer_other, n_models=args.n_models,
                                 overwrite=args.overwrite, progress=progress, report=args.report,
                                 model_dir=args.save_model, accelerator=args.accelerator,
                                 **_checkpoint_options(args))
    if args.command == "simulate":
        return workflows.simulate(args.out_dir, n_cells=args.n_cells, n_types=args.n_types, seed=args.seed,
                                  overwrite=args.overwrite)
    if args.command == "links":
        return workflows.links(args.result, args.peaks, args.annotation, args.out, key=args.key, window=args.window,
                               groupby=args.groupby, paired=args.paired, layer_peaks=args.layer_peaks,
                               seed=args.seed, overwrite=args.overwrite)
    if args.command == "embed":
        kind, path = next((k, v) for k, v in (("rna", args.rna), ("gene_activity", args.gene_activity),
                                              ("adt", args.adt)) if v)
        return workflows.embed(args.model, path, args.out, modality=kind, layer=args.layer, key_added=args.key,
                               overwrite=args.overwrite, accelerator=args.accelerator)
    if args.command == "transfer":
        return workflows.transfer(args.reference, args.query, args.out, label=args.label, key=args.key, k=args.k,
                                  overwrite=args.overwrite)
    if args.command == "report":
        return workflows.report_file(args.result, args.report, label=args.label, cluster=args.cluster, key=args.key,
                                     metrics=args.metrics, overwrite=args.overwrite)
    return workflows.gene_activity_file(peaks=args.peaks, fragments=args.fragments, cells=args.cells,
                                        annotation=args.annotation, method=args.method, out=args.out,
                                        layer_peaks=args.layer_peaks, overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
