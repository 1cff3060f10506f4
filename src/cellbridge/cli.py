"""Command line: ``cellbridge {demo,simulate,integrate,evaluate,cluster,gene-activity,links}``.

The CLI only parses arguments, calls :mod:`cellbridge.workflows` and prints; no logic of its own.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from ._errors import CellBridgeInputError
from ._utils import to_json

EXAMPLES = """examples:
  cellbridge demo
  cellbridge simulate --out-dir example
  cellbridge cluster --rna example/rna.h5ad --adt example/adt.h5ad --out example/clusters.h5mu
  cellbridge integrate --rna rna.h5ad --atac peaks.h5ad --genome-annotation mm10_genes.bed --out result.h5mu
  cellbridge integrate --rna rna.h5ad --adt adt.h5ad --out result.h5mu --preset reference --epochs 200
  cellbridge evaluate result.h5mu --label cell_type --paired
  cellbridge cluster --rna rna.h5ad --adt adt.h5ad --out clusters.h5mu --n-clusters 8
  cellbridge gene-activity --peaks atac.h5ad --annotation hg38 --out gam.h5ad
  cellbridge links --result result.h5mu --peaks atac.h5ad --annotation mm10_genes.bed --out links.tsv
"""


def _add_common(p: argparse.ArgumentParser, *, out_required: bool = True) -> None:
    p.add_argument("--out", required=out_required, help="output file (.h5mu / .h5ad)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cellbridge", description="Single-cell multi-omics integration.",
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"cellbridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="integrate the built-in simulated example and print metrics")
    p.add_argument("--n-cells", type=int, default=2000)
    p.add_argument("--epochs", type=int, default=30)
    _add_common(p, out_required=False)

    p = sub.add_parser("simulate", help="write the built-in simulated example (paired RNA, ATAC, ADT)")
    p.add_argument("--out-dir", required=True, help="folder for rna.h5ad, atac.h5ad, adt.h5ad, genes.bed")
    p.add_argument("--n-cells", type=int, default=1000)
    p.add_argument("--n-types", type=int, default=6, help="number of simulated cell types")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")

    p = sub.add_parser("integrate", help="BiCLUM: integrate unpaired RNA with ATAC or ADT",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rna", required=True, help="scRNA-seq counts (.h5ad, 10x .h5 or .mtx)")
    other = p.add_mutually_exclusive_group(required=True)
    other.add_argument("--atac", help="ATAC peak counts (cells x peaks)")
    other.add_argument("--fragments", help="10x fragments.tsv.gz (needs --cells)")
    other.add_argument("--gene-activity", help="precomputed gene activity (cells x genes)")
    other.add_argument("--adt", help="ADT / surface protein counts")
    p.add_argument("--cells", help="h5ad whose obs_names are the ATAC barcodes (with --fragments)")
    p.add_argument("--genome-annotation", help="BED/GTF/GFF3 file or hg38/hg19/mm10 (with --atac/--fragments)")
    p.add_argument("--preset", default="default", choices=["default", "reference"])
    p.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's)")
    p.add_argument("--max-time", type=float, help="stop training after this many seconds")
    p.add_argument("--layer-rna", help="layer of --rna holding raw counts")
    p.add_argument("--layer-other", help="layer of the other modality holding raw values")
    p.add_argument("--save-model", help="also save the trained model to this folder")
    _add_common(p)

    p = sub.add_parser("evaluate", help="integration metrics of a result .h5mu")
    p.add_argument("result")
    p.add_argument("--label", required=True, help="obs column with cell types (in both modalities)")
    p.add_argument("--paired", action="store_true", help="cells are the same in both modalities (FOSCTTM)")
    p.add_argument("--key", default="X_biclum", help="obsm key of the embedding")
    p.add_argument("--out", help="write the metrics as JSON here")
    p.add_argument("--overwrite", action="store_true")

    p = sub.add_parser("cluster", help="scMDCF: joint embedding and clusters of paired RNA + ADT/ATAC")
    p.add_argument("--rna", required=True)
    paired = p.add_mutually_exclusive_group(required=True)
    paired.add_argument("--adt", help="ADT counts of the same cells")
    paired.add_argument("--atac", help="ATAC peak counts of the same cells")
    p.add_argument("--n-clusters", type=int, help="K (estimated when omitted)")
    p.add_argument("--pretrain-epochs", type=int, help="default: the preset's (200)")
    p.add_argument("--finetune-epochs", type=int, help="default: the preset's (200)")
    p.add_argument("--n-models", type=int, help="ensemble size (default: the preset's; 5 for default up to 5,000 cells)")
    p.add_argument("--preset", default="default", choices=["default", "reference"])
    p.add_argument("--layer-rna")
    p.add_argument("--layer-other")
    _add_common(p)

    p = sub.add_parser("gene-activity", help="gene activity from ATAC peaks or fragments")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--peaks", help="ATAC peak counts (cells x peaks) .h5ad")
    src.add_argument("--fragments", help="10x fragments.tsv.gz")
    p.add_argument("--cells", help="h5ad whose obs_names are the barcodes to score (with --fragments)")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False) else logging.INFO,
                        format="%(levelname)s %(message)s")
    try:
        result = _dispatch(args)
    except (CellBridgeInputError, FileExistsError, FileNotFoundError) as err:
        print(f"cellbridge {args.command}: error: {err}", file=sys.stderr)
        return 2
    if isinstance(result, dict):
        print(to_json(result))
    return 0


def _dispatch(args: argparse.Namespace):
    from . import workflows

    progress = not getattr(args, "quiet", False)
    if args.command == "demo":
        return workflows.demo(n_cells=args.n_cells, epochs=args.epochs, seed=args.seed, out=args.out,
                              overwrite=args.overwrite, progress=progress)
    if args.command == "integrate":
        workflows.integrate(
            args.rna, args.out, atac=args.atac, fragments=args.fragments, cells=args.cells,
            gene_activity=args.gene_activity, adt=args.adt, annotation=args.genome_annotation,
            preset=args.preset, epochs=args.epochs, max_time=args.max_time, seed=args.seed,
            layer_rna=args.layer_rna, layer_other=args.layer_other, overwrite=args.overwrite,
            model_dir=args.save_model, progress=progress,
        )
        return {"written": args.out}
    if args.command == "evaluate":
        return workflows.evaluate(args.result, label=args.label, paired=args.paired, key=args.key,
                                  out=args.out, overwrite=args.overwrite)
    if args.command == "cluster":
        return workflows.cluster(args.rna, args.out, adt=args.adt, atac=args.atac, n_clusters=args.n_clusters,
                                 preset=args.preset, seed=args.seed, pretrain_epochs=args.pretrain_epochs,
                                 finetune_epochs=args.finetune_epochs, layer_rna=args.layer_rna,
                                 layer_other=args.layer_other, n_models=args.n_models,
                                 overwrite=args.overwrite, progress=progress)
    if args.command == "simulate":
        return workflows.simulate(args.out_dir, n_cells=args.n_cells, n_types=args.n_types, seed=args.seed,
                                  overwrite=args.overwrite)
    if args.command == "links":
        return workflows.links(args.result, args.peaks, args.annotation, args.out, key=args.key, window=args.window,
                               groupby=args.groupby, paired=args.paired, layer_peaks=args.layer_peaks,
                               seed=args.seed, overwrite=args.overwrite)
    return workflows.gene_activity_file(peaks=args.peaks, fragments=args.fragments, cells=args.cells,
                                        annotation=args.annotation, method=args.method, out=args.out,
                                        overwrite=args.overwrite)


if __name__ == "__main__":
    sys.exit(main())
