"""The ``hemacnn`` command: a thin layer that parses arguments and calls one library function.

Heavy imports (torch, Lightning) happen inside each command so ``hemacnn --help`` and
``hemacnn scan`` start fast. A :class:`~hemacnn.errors.HemacnnError` becomes one
``error: ...`` line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from hemacnn import __version__
from hemacnn.errors import HemacnnError
from hemacnn.rundir import RunDir

THP_ENV = "THP_MEM_ALLOC_ENABLE"


def _cmd_scan(args: argparse.Namespace) -> int:
    from hemacnn.data.manifest import write_manifest
    from hemacnn.data.scan import (
        default_manifest_path,
        require_usable,
        scan_dataset,
        scan_report_json,
        scan_report_text,
    )

    if args.out:  # an unwritable --out should fail before a long scan, not after it
        from hemacnn.atomic import check_creatable

        check_creatable(Path(args.out).parent)
    result = scan_dataset(args.data_dir, workers=args.workers, progress=not args.json)
    out = Path(args.out) if args.out else default_manifest_path(result.root)
    write_manifest(result.entries, out)
    if args.json:
        print(json.dumps(scan_report_json(result)))
    else:
        print(scan_report_text(result, manifest_path=out))
    require_usable(result)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from hemacnn.models import models_table

    print(models_table())
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from hemacnn.training.train import train

    if args.resume and args.config:
        raise HemacnnError("give either CONFIG or --resume RUN_DIR, not both")
    if not args.resume and not args.config:
        raise HemacnnError("give a config file (e.g. configs/quick.yaml) or --resume RUN_DIR")
    run_dir = train(args.config, overrides=args.overrides, out=args.out, resume=args.resume,
                    progress=not args.no_progress, command=args.command_line,
                    verbose=args.verbose)
    test = RunDir(run_dir).test_metrics
    if test.is_file():  # absent on DDP worker ranks, which only train
        from hemacnn.evaluation.evaluate import format_evaluation

        print(format_evaluation(json.loads(test.read_text())))
    print(f"run folder: {run_dir}")
    return 0


def _cmd_adapt(args: argparse.Namespace) -> int:
    from hemacnn.training.adapt import AdaptRecipe, adapt, format_adaptation

    recipe = AdaptRecipe(steps=args.steps, lr=args.lr, replay=args.replay, l2sp=args.l2sp,
                         bn=args.bn, augment=args.augment, seed=args.seed)
    out, record = adapt(args.run_dir, args.labels, args.out, class_map=args.class_map,
                        domain=args.domain, recipe=recipe, progress=not args.no_progress,
                        command=args.command_line)
    print(format_adaptation(out, record))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from hemacnn.evaluation.evaluate import evaluate_run, format_evaluation

    result = evaluate_run(args.run_dir, data=args.data, split=args.split, tta=args.tta,
                          out=args.out, class_map=args.class_map, adapt_bn=args.adapt_bn,
                          precision=args.precision)
    print(json.dumps(result) if args.json else format_evaluation(result))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from hemacnn.evaluation.report import write_report

    paths = write_report(args.run_dirs, out=args.out, class_map=args.class_map)
    for p in paths:
        print(f"wrote {p}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from hemacnn.evaluation.report import compare_runs

    print(compare_runs(args.run_dirs))
    return 0


CLASS_MAP_HELP = ("another dataset's folder names -> the model's classes (a YAML file, or a "
                  "shipped map: matek-pbc)")


def _precision_arg(p: argparse.ArgumentParser) -> None:
    """``--precision``, the same on every command that computes probabilities."""
    # The choices are hemacnn.inference.engine.PRECISIONS (importing it here would load torch
    # for every command; a test holds the two equal).
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"],
                   help="fp32 (default: the same numbers on every machine, checkpoint or ONNX "
                   "export); bf16: bf16 autocast, faster where the hardware has it; auto: bf16 "
                   "where native. What ran is recorded with the results")


def _cmd_predict(args: argparse.Namespace) -> int:
    from hemacnn.inference.predict import run_predict

    review = {} if args.review_below is None else {"review_below": args.review_below}
    text, n_classified = run_predict(
        args.model, args.inputs, out=args.out, as_json=args.json, tta=args.tta,
        with_differential=args.differential, batch_size=args.batch_size,
        precision=args.precision, progress=not args.json, class_map=args.class_map,
        adapt_bn=args.adapt_bn, **review)
    print(text)
    if n_classified == 0:
        raise HemacnnError("no input file could be classified (see each file's status above)")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from hemacnn.doctor import Status, format_checks, run_checks

    checks = run_checks()
    print(format_checks(checks))
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from hemacnn.demo import run_demo

    run_demo(out=args.out, overrides=args.overrides, progress=not args.no_progress,
             command=args.command_line)
    return 0


# --- combine runs: ensemble and cross-validation ----------------------------------------
def _cmd_ensemble(args: argparse.Namespace) -> int:
    from hemacnn.evaluation.ensemble import format_ensemble, make_ensemble

    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise HemacnnError(f"--weights {args.weights!r} is not a comma-separated list of "
                               "numbers (e.g. --weights 1,1,2)") from None
    print(format_ensemble(make_ensemble(args.run_dirs, args.out, weights, tta=args.tta,
                                               command=args.command_line)))
    return 0


def _report_only(args: argparse.Namespace, first: str, write) -> bool:
    """`--report DIR`: only rewrite DIR's summary (nothing may be given to run)."""
    if not args.report:
        return False
    if getattr(args, first) or args.overrides:
        raise HemacnnError(f"give either {first.upper()} or --report DIR, not both")
    write(args.report)
    return True


def _engine_args(p: argparse.ArgumentParser, unit: str, out_default: str) -> None:
    """The options `cv` and `sweep` share: overrides, --out, the Optuna engine, --report."""
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help=f"dotted overrides for every {unit} (e.g. data.root=/path)")
    p.add_argument("--out", metavar="DIR", help=f"output folder (default: {out_default})")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help=f"{unit}s trained at once on this machine (default 1)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL shared by several "
                   "machines (default: sqlite file DIR/study.db)")
    p.add_argument("--grace", type=int, default=120, metavar="S",
                   help=f"seconds without a heartbeat after which another worker takes over a "
                   f"dead worker's {unit} (default 120; workers on one storage should agree)")
    p.add_argument("--report", metavar="DIR", help="only (re)write DIR's summary and figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")


def _cmd_cv(args: argparse.Namespace) -> int:
    from hemacnn.studies.cv import run_cv, write_cv_summary

    def write(folder: str) -> None:
        for path in write_cv_summary(folder):
            print(f"wrote {path}")

    if _report_only(args, "config", write):
        return 0
    if not args.config or args.folds is None:
        raise HemacnnError("give a config file and --folds K (e.g. hemacnn cv configs/fast.yaml "
                           "--folds 5 data.root=DIR), or --report DIR")
    run_cv(args.config, args.folds, out=args.out, overrides=args.overrides,
           workers=args.workers, storage=args.storage, progress=not args.no_progress,
           ensemble=args.ensemble, grace_s=args.grace, command=args.command_line)
    return 0


def _add_combining_commands(sub: argparse._SubParsersAction) -> None:
    cv = sub.add_parser("cv", help="k-fold cross-validation of a config (mean ± sd)",
                        description="Train fold i of K as DIR/runs/fold<i>/ (config with "
                        "data.folds=K data.fold=i) on the same engine as `hemacnn sweep` "
                        "(finished folds are skipped, killed ones resume, several workers or "
                        "machines share the work), then write DIR/summary.{md,csv,json} with "
                        "mean ± sd of every headline metric and per-class F1.")
    cv.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    _engine_args(cv, "fold", "cv/<config>-<K>fold")
    cv.add_argument("--folds", type=int, metavar="K", help="number of folds (Matek used 5)")
    cv.add_argument("--ensemble", action="store_true", help="also average the fold models "
                    "into DIR/ensemble (tested on a common test split with "
                    "data.fold_test=holdout)")
    cv.set_defaults(func=_cmd_cv)


    en = sub.add_parser("ensemble", help="average several runs' probabilities into one model",
                        description="Write a folder that averages the class probabilities of "
                        "RUN... (optionally weighted) and that evaluate, report, compare, "
                        "predict and export accept like a run; it is tested at once on the "
                        "images no member trained or validated on, beside each member.")
    en.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    en.add_argument("--out", required=True, metavar="DIR", help="the ensemble folder to write")
    en.add_argument("--weights", metavar="W1,W2,...",
                    help="one non-negative weight per run (default: equal); normalised")
    en.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                    help="test with the 8 dihedral views averaged, the ensemble and each member "
                    "alike (default: as the members' own tests, recipe.test_tta)")
    en.set_defaults(func=_cmd_ensemble)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from hemacnn.studies import run_study, sweep_report

    if args.report and args.study and not args.overrides:
        sweep_report(args.report, args.study)  # re-read the study file's claims, then report
        return 0
    if _report_only(args, "study", sweep_report):
        return 0
    if not args.study:
        raise HemacnnError("give a study file (e.g. configs/studies/optimizers.yaml) "
                           "or --report DIR")
    run_study(args.study, out=args.out, profile=args.profile, overrides=args.overrides,
              workers=args.workers, storage=args.storage, progress=not args.no_progress,
              seeds=args.seeds, grace_s=args.grace, command=args.command_line)
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("sweep", help="run one of the paper's studies (a grid of runs)",
                       description="Run every point of STUDY.yaml as a run folder "
                       "DIR/runs/<point>/ (finished points are skipped, killed ones resume), "
                       "then write DIR/summary.csv, summary.md and figures. Several sweeps "
                       "on one --storage share the work. `sweep STUDY.yaml --report DIR` "
                       "re-reads the study file's claims and settings into DIR/study.json "
                       "before rewriting the summary (nothing trains).")
    w.add_argument("study", nargs="?", metavar="STUDY.yaml")
    _engine_args(w, "point", "studies/<study>-<profile>")
    w.add_argument("--profile", default="paper",
                   help="a profile of the study file (default: paper, full scale; cpu: small)")
    w.add_argument("--seeds", type=int, metavar="N",
                   help="train every point under N seeds (other initial weights and batch "
                   "order, the same split); default: the study file's `seeds`, else 1")
    w.set_defaults(func=_cmd_sweep)


# --- put a trained model to work: export, explain, serve ---
def _cmd_export(args: argparse.Namespace) -> int:
    from hemacnn.inference.export import export_model

    for kind, path in export_model(args.model, out=args.out, fmt=args.format).items():
        print(f"wrote {path}" + ("  (model card)" if kind == "card" else ""))
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from hemacnn.inference.explain import explain_files

    for line in explain_files(args.model, args.images, out=args.out, method=args.method,
                              target=args.target, precision=args.precision):
        print(line)
    return 0


class _PredictDefault:
    """Predict's review threshold, read only when ``--help`` shows it: importing
    :mod:`hemacnn.inference.predict` imports torch, which every other command would pay for."""

    def __str__(self) -> str:
        from hemacnn.inference.predict import DEFAULT_REVIEW_BELOW

        return f"{DEFAULT_REVIEW_BELOW:g}"


def _cmd_serve(args: argparse.Namespace) -> int:
    from hemacnn.serve import serve

    serve(args.model, host=args.host, port=args.port,
          review_below=None if isinstance(args.review_below, _PredictDefault)
          else args.review_below, precision=args.precision)
    return 0


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    x = sub.add_parser("export", help="export a trained model to ONNX (with its model card)",
                       description="Write MODEL as DIR/model.onnx (dynamic batch size) with "
                       "DIR/model_card.json beside it; `hemacnn predict DIR/model.onnx` runs it "
                       "with ONNX Runtime. Into the run folder (the default DIR), it also serves "
                       "predict/evaluate/serve on the run while the run's checkpoint is the one "
                       "it was made from (faster, and no torch start-up).")
    x.add_argument("model", metavar="MODEL", help="run folder or .ckpt")
    x.add_argument("--format", default="onnx", choices=["onnx"])
    x.add_argument("--out", metavar="DIR", help="output folder (default: RUN/export)")
    x.set_defaults(func=_cmd_export)

    ex = sub.add_parser("explain", help="class-activation heat maps over cell images",
                        description="Overlay a class-activation heat map (pytorch-grad-cam) on "
                        "each image, for the predicted class or --target; one PNG per image.")
    ex.add_argument("model", metavar="MODEL", help="run folder or .ckpt")
    ex.add_argument("images", nargs="+", metavar="IMAGE")
    ex.add_argument("--out", metavar="DIR", default="explain", help="folder for the PNGs")
    ex.add_argument("--method", default="gradcam",
                    help="gradcam, gradcam++, hirescam, xgradcam, layercam, eigencam, "
                    "scorecam (scorecam runs the model once per activation map: slow)")
    ex.add_argument("--target", metavar="CODE", help="class to explain (default: predicted)")
    _precision_arg(ex)
    ex.set_defaults(func=_cmd_explain)

    sv = sub.add_parser("serve", help="web page and JSON API for reviewing cells",
                        description="Serve a page where cell images are dropped, classified, "
                        "reviewed and counted, and a JSON API (OpenAPI docs at /docs).")
    sv.add_argument("model", metavar="MODEL", help="run folder, .ckpt or .onnx")
    sv.add_argument("--host", default="127.0.0.1",
                    help="address to bind (default localhost only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--review-below", type=float, default=_PredictDefault(), metavar="P",
                    help="flag a cell for review when its top probability is below P "
                    "(default: %(default)s, the same as predict)")
    _precision_arg(sv)
    sv.set_defaults(func=_cmd_serve)


def _add_adapt(sub: argparse._SubParsersAction) -> None:
    # The defaults are hemacnn.training.adapt.AdaptRecipe's (importing it here would load torch
    # for every command; a test holds the two equal).
    a = sub.add_parser("adapt", help="adapt a trained run to another laboratory's cells with a "
                       "few labelled ones",
                       description="Write a new run folder that starts from RUN's weights and "
                       "trains briefly on labelled cells: the review page's CSV (only the rows "
                       "a person confirmed or re-assigned; image paths relative to the CSV) or "
                       "a folder of class folders. Some of RUN's own training images are "
                       "replayed so that it keeps its first laboratory; the new card records "
                       "the parent, the labelled counts and the labels' hash.")
    a.add_argument("run_dir", metavar="RUN_DIR")
    a.add_argument("--labels", required=True, metavar="REVIEWED.csv|FOLDER",
                   help="the review page's downloaded CSV, or CLASS/image folders")
    a.add_argument("--out", required=True, metavar="NEW_RUN", help="the new run folder")
    a.add_argument("--class-map", metavar="MAP", help=CLASS_MAP_HELP + "; needed when the "
                   "labels' classes are not the model's codes")
    a.add_argument("--domain", metavar="NAME", help="the laboratory or stain adapted to, for "
                   "the card (default: the labels' folder name)")
    a.add_argument("--steps", type=int, default=120, help="training steps (default 120)")
    a.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate, cosine-decayed "
                   "(default 3e-4)")
    a.add_argument("--replay", type=float, default=0.5, metavar="SHARE",
                   help="share of each batch from RUN's own training images (default 0.5; "
                   "0: none)")
    a.add_argument("--l2sp", type=float, default=0.0, metavar="W",
                   help="weight of the squared distance to RUN's weights (default 0)")
    a.add_argument("--bn", default="frozen", choices=["frozen", "train"],
                   help="frozen: BatchNorm keeps RUN's statistics (default); train: they follow "
                   "the batches")
    a.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="a random dihedral view of every image (default on)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    a.set_defaults(func=_cmd_adapt)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    p = argparse.ArgumentParser(
        prog="hemacnn",
        description="Classify bone-marrow cell images with CNNs (Whitehead & Ramirez; "
        "Matek et al. 2021 dataset).",
    )
    p.add_argument("--version", action="version", version=f"hemacnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("scan", help="count classes and check every image of a dataset folder",
                       description="Decode every image under DATA_DIR (class = first folder "
                       "level), report per-class counts next to the paper's Table 1 and every "
                       "problem found, and write the manifest.")
    s.add_argument("data_dir", metavar="DATA_DIR")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    s.add_argument("--out", metavar="MANIFEST",
                   help="manifest CSV to write (default: inside the cache folder)")
    s.add_argument("--workers", type=int, default=None,
                   help="decoding processes (default: all cores)")
    s.set_defaults(func=_cmd_scan)

    m = sub.add_parser("models", help="list the registered architectures",
                       description="List every registered model with its paper input size "
                       "and parameter count.")
    m.set_defaults(func=_cmd_models)

    t = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train from CONFIG.yaml with optional dotted overrides "
                       "(data.root=/path model.width=0.5 trainer.max_epochs=3).")
    t.add_argument("config", nargs="?", metavar="CONFIG.yaml")
    t.add_argument("overrides", nargs="*", metavar="key=value")
    t.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/<config>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    t.add_argument("--no-progress", action="store_true", help="no progress bar (for logs): "
                   "plain lines, one inside each epoch every trainer.progress_seconds (60)")
    t.add_argument("--verbose", action="store_true", help="also Lightning's model summary "
                   "table and its device notices (GPU/TPU/HPU available)")
    t.set_defaults(func=_cmd_train)

    _add_adapt(sub)

    e = sub.add_parser("evaluate", help="per-class metrics of a trained run",
                       description="Evaluate a run on its test split or on another labelled "
                       "folder; writes metrics, predictions and figures into the run folder.")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--data", metavar="DIR", help="evaluate on this labelled folder instead")
    e.add_argument("--split", default="test", choices=["test", "val", "train"])
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--tta", action="store_true", help="average over the 8 dihedral transforms")
    e.add_argument("--out", metavar="DIR", help="write results here instead of the run folder")
    e.add_argument("--class-map", metavar="MAP", help=CLASS_MAP_HELP + "; scores --data in its "
                   "own classes beside the run's own test figures read the same way")
    e.add_argument("--adapt-bn", action="store_true", help="re-estimate BatchNorm statistics on "
                   "the evaluated images first (test-time adaptation to another stain/scanner)")
    _precision_arg(e)
    e.set_defaults(func=_cmd_evaluate)

    r = sub.add_parser("report", help="Markdown + HTML report beside the published figures",
                       description="Write a report comparing runs with the paper's MV3, its "
                       "VGG16 and Matek et al. 2021.")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("--out", metavar="report.md", default=None,
                   help="Markdown file to write (HTML beside it); default: in the first run")
    r.add_argument("--class-map", metavar="MAP", help="add each run's evaluations of another "
                   "dataset through this map (written by `evaluate --data DIR --class-map MAP`)")
    r.set_defaults(func=_cmd_report)

    c = sub.add_parser("compare", help="one table of the headline metrics of several runs",
                       description="Print one table of the headline metrics (accuracy, "
                       "balanced accuracy, macro F1, …) of several run folders, side by side.")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.set_defaults(func=_cmd_compare)

    pr = sub.add_parser("predict", help="classify cell images with a trained model",
                        description="Classify image files, folders (recursively) and globs "
                        "with a run folder, a .ckpt or an exported .onnx: one row per file "
                        "(class, probability of every class, review flag, status). A run folder "
                        "with a fresh `hemacnn export` runs through ONNX Runtime.")
    pr.add_argument("model", metavar="MODEL", help="run folder, .ckpt or .onnx file")
    pr.add_argument("inputs", nargs="+", metavar="PATH", help="image files, folders or globs")
    pr.add_argument("--out", metavar="FILE.csv", help="write the rows as CSV (or .json) into "
                    "a folder that exists")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--tta", action="store_true", help="average over the 8 dihedral transforms")
    # The default lives in inference.predict (DEFAULT_REVIEW_BELOW, shared with serve); importing
    # it here would load torch for every command, so the help says it and a test holds the two
    # equal.
    pr.add_argument("--review-below", type=float, default=None, metavar="P",
                    help="flag a cell for review when its top probability is below P "
                    "(default: 0.7, as in serve; a cell with a warning is always flagged)")
    pr.add_argument("--differential", action="store_true",
                    help="differential count of all inputs as one patient's cells (written "
                    "beside --out as <stem>.differential.csv/.json)")
    pr.add_argument("--batch-size", type=int, default=64, metavar="N")
    _precision_arg(pr)
    pr.add_argument("--class-map", metavar="MAP", help=CLASS_MAP_HELP + "; each file's truth "
                    "is its folder's name: adds truth and correct columns and a summary line")
    pr.add_argument("--adapt-bn", action="store_true", help="re-estimate BatchNorm statistics "
                    "on the input images first (test-time adaptation; not for .onnx)")
    pr.set_defaults(func=_cmd_predict)
    d = sub.add_parser("demo", help="the whole job on the real sample shipped with hemacnn",
                       description="Scan the demo sample inside the package (135 real Matek "
                       "images of BLA, LYT, NGS; CC BY 4.0), train the quick model, evaluate it "
                       "and write the report; prints where the report is. About a minute on "
                       "2 CPU cores. Optional key=value overrides as for train.")
    d.add_argument("overrides", nargs="*", metavar="key=value")
    d.add_argument("--out", metavar="RUN_DIR", help="run folder (default: runs/demo-<time>)")
    d.add_argument("--no-progress", action="store_true", help="no progress bars (for logs)")
    d.set_defaults(func=_cmd_demo)

    dr = sub.add_parser("doctor", help="check the installation (torch/torchvision pairing, "
                        "CPU/GPU, optional extras, test tools)",
                        description="Report Python, torch and torchvision (and whether the two "
                        "pair), the CUDA/CPU build, what the CPU supports (native bf16, AVX2, "
                        "AVX-512, AMX), the optional extras and the tools the tests use "
                        "(chromium, PostgreSQL). Exits 1 when something needed is broken, with "
                        "the command that fixes it.")
    dr.set_defaults(func=_cmd_doctor)

    _add_sweep(sub)
    _add_combining_commands(sub)
    _add_model_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hemacnn`` console script."""
    # PyTorch's CPU allocator hands every tensor of 2 MiB or more back to the kernel when it is
    # freed, so each training step faults its activations in again, 4 KiB at a time: on a CPU
    # that was 43% of a study's time (system time). With this PyTorch option those tensors sit
    # on transparent huge pages (benchmarks/bench_alloc.py: MV1 1.8x faster a step, the small
    # MV3s within noise, the same numbers).
    # PyTorch reads it at the first large allocation, which comes after this line; a value the
    # user has set wins.
    os.environ.setdefault(THP_ENV, "1")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # The command as typed, recorded in run, study and cv folders (the library never reads argv).
    args.command_line = "hemacnn " + " ".join(sys.argv[1:] if argv is None else argv)
    # argparse cannot take positionals after options (`train C.yaml --out R key=value`):
    # collect such key=value overrides here instead of rejecting them.
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if getattr(args, "command", None) in ("train", "demo", "sweep", "cv") and overrides:
        args.overrides = [*args.overrides, *overrides]
        extra = [e for e in extra if e not in overrides]
    if getattr(args, "command", None) == "cv" and args.config and "=" in args.config:
        args.overrides = [args.config, *args.overrides]  # `cv --folds 3 key=value` (no config)
        args.config = None
    if getattr(args, "command", None) == "sweep" and args.study and "=" in args.study:
        args.overrides = [args.study, *args.overrides]  # `sweep --report D key=value`
        args.study = None
    if getattr(args, "command", None) == "train" and args.config and "=" in args.config:
        args.overrides = [args.config, *args.overrides]  # `train --resume R key=value`
        args.config = None
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except HemacnnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, ImportError, OSError) as exc:
        # A torch/torchvision mismatch fails at the first torchvision import, deep inside
        # whichever command ran first: one line with the fix instead of a long traceback.
        # Only on this error path, so a healthy start-up pays nothing.
        from hemacnn.doctor import broken_pairing_message  # lazy: the error path only

        message = broken_pairing_message(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
