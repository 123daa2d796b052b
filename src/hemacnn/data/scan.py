"""Scan a dataset folder: find every image, decode it fully in parallel, give it one verdict.

Layout: the class is the first folder level under the root, at any depth below it (Matek's
``CLASS/0001-1000/CLASS_00001.jpg`` and a flat ``CLASS/*.jpg`` both work). Each file is read
once; its SHA-1 and its pixels come from the same bytes, so the scan costs one read and one
decode per file. No torch import here: ``hemacnn scan`` must start in a fraction of a second.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hemacnn.atomic import ensure_writable_dir, write_json
from hemacnn.classes import CLASSES, MATEK_IMAGE_SIZE, PAPER_TOTAL, class_name, is_matek_set
from hemacnn.data.corruption import detect_corruption
from hemacnn.data.images import FORMATS_BY_EXTENSION, ImageDecodeError, decode_bytes
from hemacnn.data.manifest import Entry, read_manifest, write_manifest
from hemacnn.data.parallel import default_workers, file_lock, run_chunks
from hemacnn.data.paths import dataset_cache_dir
from hemacnn.errors import HemacnnError

SCANNER_VERSION = 1
"""Bump when a verdict rule changes: cached manifests from older scanners are then rebuilt."""

PRIORITY = ("unreadable", "suspicious", "duplicate", "converted", "unusual-size")
"""File statuses from worst to mildest; a file takes the worst one, its detail lists them all."""

IGNORED_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX", "@eaDir"})
"""Operating-system litter that is never data (hidden names starting with '.' also skipped)."""

_JPEG = frozenset({"JPEG", "MPO"})
_MAX_CHUNK = 64  # files per worker task: few round trips, yet a smooth progress bar


@dataclass
class ScanResult:
    """What a scan found: one entry per image file, plus problems that concern no single file."""

    root: Path
    entries: list[Entry]
    problems: list[dict[str, str]]
    class_counts: dict[str, int]
    usual_size: tuple[int, int] | None
    looks_like_matek: bool
    seconds: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every image file found (whatever its status)."""
        return len(self.entries)

    @property
    def usable_counts(self) -> dict[str, int]:
        """Per class, the files that may enter training (what a split gets)."""
        counts = Counter(e.label for e in self.entries if e.usable)
        return {c: counts.get(c, 0) for c in self.class_counts}

    @property
    def rejected_counts(self) -> dict[str, int]:
        """Per class, the files training loses (unreadable, suspicious, duplicate)."""
        usable = self.usable_counts
        return {c: n - usable[c] for c, n in self.class_counts.items()}


def require_usable(result: ScanResult) -> None:
    """Raise when not one image of the scan can be used: the folder cannot be trained on."""
    if not any(result.usable_counts.values()):
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(result.status_counts.items()))
        raise HemacnnError(f"no usable image in {result.root}: all {result.total} files were "
                           f"rejected ({kinds}); see the problems listed above")


@dataclass
class _Listing:
    files: list[tuple[str, str]]  # (relative POSIX path, class), sorted by path
    problems: list[dict[str, str]]
    classes: list[str]


def _ignored(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_NAMES


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in FORMATS_BY_EXTENSION


def _check_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise HemacnnError(f"data folder {path} does not exist; give the folder that holds one "
                           "sub-folder per class (e.g. BM_cytomorphology_data)")
    if not path.is_dir():
        raise HemacnnError(f"data root {path} is a file, not a folder; give the folder that "
                           "holds one sub-folder per class")
    return path.resolve()


def _list_files(root: Path) -> _Listing:
    """Every image file under root with its class; litter, loose files and empty classes noted."""
    files: list[tuple[str, str]] = []
    problems: list[dict[str, str]] = []
    classes: list[str] = []
    loose: list[str] = []
    try:
        top = sorted(os.scandir(root), key=lambda d: d.name)
    except OSError as exc:
        raise HemacnnError(f"cannot list data folder {root}: {exc.strerror or exc}") from None
    for child in top:
        if _ignored(child.name):
            continue
        if child.is_dir():
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(child.path):
                dirnames[:] = sorted(d for d in dirnames if not _ignored(d))
                rel_dir = Path(dirpath).relative_to(root).as_posix()
                for name in sorted(filenames):
                    if _ignored(name):
                        continue
                    rel = f"{rel_dir}/{name}"
                    if _is_image(name):
                        found.append(rel)
                    else:
                        problems.append({"path": rel, "kind": "skipped",
                                         "detail": "not an image extension "
                                         f"({', '.join(sorted(FORMATS_BY_EXTENSION))}); ignored"})
            classes.append(child.name)
            if found:
                files.extend((rel, child.name) for rel in found)
            else:
                problems.append({"path": child.name, "kind": "empty-class",
                                 "detail": f"class folder {child.name} holds no images; "
                                 "it is left out (add images or remove the folder)"})
        elif child.is_file() and _is_image(child.name):
            loose.append(child.name)
    if loose and not files:
        # A folder of images with no class sub-folders: the folder itself is the one class.
        classes = [root.name]
        files = [(name, root.name) for name in loose]
        problems = [p for p in problems if p["kind"] != "empty-class"]
    else:
        problems.extend({"path": name, "kind": "no-class-folder",
                         "detail": "image directly in the data root, outside any class folder; "
                         "ignored (move it into its class folder)"} for name in loose)
    if not files:
        raise HemacnnError(f"no image files ({', '.join(sorted(FORMATS_BY_EXTENSION))}) found "
                           f"under {root}; give the folder that holds one sub-folder per class")
    files.sort()
    return _Listing(files, problems, classes)


def check_file(root: str, rel: str) -> tuple[str, int, int, list[tuple[str, str]]]:
    """Read one file once, hash and fully decode those bytes; (sha1, w, h, [(status, detail)])."""
    try:
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return "", 0, 0, [("unreadable", f"cannot read file ({exc.strerror or exc})")]
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        img = decode_bytes(data, os.path.splitext(rel)[1])
    except ImageDecodeError as exc:
        return sha1, 0, 0, [("unreadable", str(exc))]
    found: list[tuple[str, str]] = []
    # The block-grid signatures of lost picture data belong to JPEG; other formats carry
    # checksums (PNG) or no compression at all, and their damage makes the decoder fail.
    if img.format in _JPEG:
        bad, detail = detect_corruption(img.image, img.quant_step)
        if bad:
            found.append(("suspicious", detail))
    if img.conversion:
        found.append(("converted", img.conversion))
    return sha1, img.width, img.height, found


def _check_chunk(root: str, task: tuple[int, list[str]]) -> tuple[int, list]:
    """One worker task: (chunk index, the checks of its files)."""
    index, rels = task
    return index, [check_file(root, rel) for rel in rels]


def _run_checks(root: Path, rels: list[str], workers: int,
                progress: bool) -> list[tuple[str, int, int, list]]:
    """check_file over all files, in worker processes when more than one is asked for."""
    n = len(rels)
    chunk = max(1, min(_MAX_CHUNK, -(-n // (workers * 8))))
    chunks = [(i, rels[i:i + chunk]) for i in range(0, n, chunk)]
    job = functools.partial(_check_chunk, str(root))
    results = dict(run_chunks(job, chunks, workers, label="scanning", total=n,
                              progress=progress, count=lambda res: len(res[1])))
    return [r for i in sorted(results) for r in results[i]]


def scan_dataset(root: str | os.PathLike, workers: int | None = None,
                 progress: bool = True) -> ScanResult:
    """Find, decode and check every image under root; one verdict per file."""
    start = time.perf_counter()
    root_path = _check_root(root)
    listing = _list_files(root_path)
    rels = [rel for rel, _ in listing.files]
    n_workers = max(1, workers if workers is not None else default_workers())
    checks = _run_checks(root_path, rels, n_workers, progress)

    matek = is_matek_set(listing.classes)
    sizes = Counter((w, h) for _, w, h, _ in checks if w)
    usual = MATEK_IMAGE_SIZE if matek else (sizes.most_common(1)[0][0] if sizes else None)
    first_copy: dict[str, tuple[str, str]] = {}
    entries: list[Entry] = []
    problems: list[dict[str, str]] = []
    for (rel, label), (sha1, w, h, found) in zip(listing.files, checks, strict=True):
        found = list(found)
        if w and usual and (w, h) != usual:
            found.append(("unusual-size", f"{w}x{h} px, usual size {usual[0]}x{usual[1]}"))
        if w:  # only decodable files: every empty file would otherwise 'duplicate' the first
            if sha1 in first_copy:
                orig, orig_label = first_copy[sha1]
                labels = (f"classes {orig_label} and {label} differ"
                          if orig_label != label else f"both class {label}")
                found.append(("duplicate", f"{rel} has the same content as {orig} ({labels}); "
                              "the first copy is kept"))
            else:
                first_copy[sha1] = (rel, label)
        found.sort(key=lambda f: PRIORITY.index(f[0]))
        status = found[0][0] if found else "ok"
        detail = found[0][1] if len(found) == 1 else "; ".join(f"{s}: {d}" for s, d in found)
        entries.append(Entry(rel, label, sha1, w, h, status, detail))
        if found:
            problems.append({"path": rel, "kind": status, "detail": detail})
    counts = Counter(e.label for e in entries)
    class_counts = {c: counts.get(c, 0) for c in sorted(set(listing.classes) | set(counts))}
    return ScanResult(
        root=root_path, entries=entries, problems=problems + listing.problems,
        class_counts=class_counts, usual_size=usual, looks_like_matek=matek,
        seconds=time.perf_counter() - start,
        status_counts=dict(Counter(e.status for e in entries)),
    )


def default_manifest_path(root: str | os.PathLike) -> Path:
    """Where `hemacnn scan` writes the manifest when no --out is given."""
    return dataset_cache_dir(root) / "manifest.csv"


def listing_fingerprint(root: str | os.PathLike) -> str:
    """Cheap identity of a data folder: relative paths, sizes and mtimes (stat only, no reads)."""
    root_path = _check_root(root)
    h = hashlib.sha1(f"hemacnn-scan-{SCANNER_VERSION}\n{root_path}\n".encode())
    for rel, _ in _list_files(root_path).files:
        st = os.stat(root_path / rel)
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _saved_entries(manifest: Path, stamp: Path, fingerprint: str) -> list[Entry] | None:
    """The cached manifest when its saved fingerprint matches, else None."""
    try:
        saved = json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None
    if saved != fingerprint or not manifest.is_file():
        return None
    try:
        return read_manifest(manifest)
    except HemacnnError:
        return None  # damaged cache file: rebuild it


def load_or_scan(root: str | os.PathLike, workers: int | None = None,
                 progress: bool = True) -> list[Entry]:
    """Manifest entries for root: reuse the cached manifest while the listing is unchanged."""
    manifest = default_manifest_path(root)
    stamp = manifest.with_suffix(".fingerprint.json")
    fingerprint = listing_fingerprint(root)
    entries = _saved_entries(manifest, stamp, fingerprint)
    if entries is not None:
        return entries
    # One scanner per data root at a time (e.g. several DDP ranks on one node).
    with file_lock(ensure_writable_dir(manifest.parent) / ".scan.lock"):
        entries = _saved_entries(manifest, stamp, fingerprint)  # another process may have won
        if entries is not None:
            return entries
        result = scan_dataset(root, workers=workers, progress=progress)
        write_manifest(result.entries, manifest)
        write_json(stamp, {"fingerprint": fingerprint, "scanner_version": SCANNER_VERSION,
                           "root": str(result.root), "files": result.total})
    return result.entries


def scan_report_json(result: ScanResult) -> dict:
    """The --json report: total, per-class usable count, rejected count and percent, problems.

    ``count`` is what training can use; ``percent`` is its share of all usable images.
    """
    usable = result.usable_counts
    rejected = result.rejected_counts
    total = sum(usable.values())
    return {
        "total": result.total,
        "usable": total,
        "classes": {c: {"count": n, "rejected": rejected[c],
                        "percent": round(100.0 * n / total, 2) if total else 0.0}
                    for c, n in usable.items()},
        "problems": [dict(p) for p in result.problems],
        "root": str(result.root),
        "statuses": result.status_counts,
        "usual_size": list(result.usual_size) if result.usual_size else None,
    }


def scan_report_text(result: ScanResult, manifest_path: str | os.PathLike | None = None,
                     max_paths: int = 20) -> str:
    """Table-1-style class counts, then the problems grouped by kind, then the manifest path."""
    # lazy: rich ~50 ms (importtime, measured under load); only the scan's table needs it
    from rich.console import Console
    from rich.table import Table

    total = result.total
    usable = result.usable_counts
    rejected = result.rejected_counts
    n_usable = sum(usable.values())
    table = Table(title=f"{total:,} images in {result.root}", title_justify="left")
    table.add_column("Code")
    table.add_column("Class")
    table.add_column("Usable", justify="right")
    table.add_column("Rejected", justify="right")
    table.add_column("% of usable", justify="right")
    if result.looks_like_matek:
        table.add_column("Paper images", justify="right")
        table.add_column("Paper %", justify="right")
    for code, n in usable.items():
        # Matek's names only for a Matek folder: elsewhere a code means what its owner meant.
        name = class_name(code, result.looks_like_matek)
        row = [code, name if name != code else "", f"{n:,}",
               f"{rejected[code]:,}", f"{100.0 * n / n_usable:.2f}" if n_usable else "-"]
        if result.looks_like_matek:
            paper = CLASSES[code].paper_count
            row += [f"{paper:,}", f"{100.0 * paper / PAPER_TOTAL:.2f}"]
        table.add_row(*row)
    buf = io.StringIO()
    console = Console(file=buf, width=100, no_color=True, highlight=False)
    console.print(table)
    lines = [buf.getvalue().rstrip()]
    if result.looks_like_matek:
        lines.append(f"Paper: Whitehead & Ramirez Table 1, the full Matek et al. 2021 dataset "
                     f"({PAPER_TOTAL:,} images, 21 classes).")
    lines.append("")
    kinds = Counter(p["kind"] for p in result.problems)
    if not kinds:
        lines.append("Problems: none; every image decoded cleanly.")
    else:
        lines.append(f"Problems ({sum(kinds.values())}):")
        for kind in [*PRIORITY, *sorted(set(kinds) - set(PRIORITY))]:
            if kind not in kinds:
                continue
            lines.append(f"  {kind}: {kinds[kind]}")
            shown = list(iter_problems(result, kind))
            for p in shown[:max_paths]:
                lines.append(f"    {p['path']}: {p['detail']}")
            if len(shown) > max_paths:
                lines.append(f"    ... and {len(shown) - max_paths} more (all in --json and "
                             "the manifest)")
    lines.append("")
    lines.append(f"Usable for training: {n_usable:,} of {total:,} images "
                 f"(scanned in {result.seconds:.1f} s).")
    if manifest_path is not None:
        lines.append(f"Manifest written to {manifest_path}")
    return "\n".join(lines)


def iter_problems(result: ScanResult, kind: str) -> Iterator[dict[str, str]]:
    """The problems of one kind, in path order."""
    return (p for p in result.problems if p["kind"] == kind)
