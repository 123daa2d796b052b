"""Splits: stratified counts with documented rounding, seeds, k-fold, errors, save/load."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import pytest

from hemacnn.data.manifest import Entry
from hemacnn.data.splits import Splits, load_splits, make_splits, save_splits
from hemacnn.errors import HemacnnError

THREE = ["BLA", "LYT", "NGS"]


def listing_entries(root: Path) -> list[Entry]:
    """Every .jpg under root as an 'ok' entry (class = first folder), without a scan."""
    out = []
    for p in sorted(root.rglob("*.jpg")):
        rel = p.relative_to(root).as_posix()
        out.append(Entry(rel, rel.split("/")[0], hashlib.sha1(rel.encode()).hexdigest(),
                         250, 250, "ok"))
    return out


def fake_entries(counts: dict[str, int], status: str = "ok") -> list[Entry]:
    return [Entry(f"{c}/{c}_{i:05d}.jpg", c, f"{c}{i}", 250, 250, status)
            for c, n in counts.items() for i in range(n)]


def _set(items):
    return {p for p, _ in items}


def test_sample_three_classes_exact_counts(sample_root: Path) -> None:
    # Hand-computed, round half up: BLA 330 -> test 33, val round(297*0.2=59.4)=59;
    # LYT 345 -> test round(34.5)=35, val 310*0.2=62; NGS 317 -> test round(31.7)=32,
    # val 285*0.2=57.
    s = make_splits(listing_entries(sample_root), THREE, seed=0)
    assert s.classes == THREE
    assert s.counts() == {
        "train": {"BLA": 238, "LYT": 248, "NGS": 228},
        "val": {"BLA": 59, "LYT": 62, "NGS": 57},
        "test": {"BLA": 33, "LYT": 35, "NGS": 32},
    }
    tr, va, te = _set(s.train), _set(s.val), _set(s.test)
    assert not (tr & va or tr & te or va & te)
    assert len(tr | va | te) == 330 + 345 + 317
    assert all(label == p.split("/")[0] for p, label in s.train + s.val + s.test)


def test_round_half_up_not_bankers() -> None:
    # 25 * 0.1 = 2.5 -> 3 (Python's round() would give 2); 15 * 0.1 -> 2; rest 22*0.2=4.4 -> 4.
    s = make_splits(fake_entries({"A": 25, "B": 15}), ["A", "B"])
    assert s.counts()["test"] == {"A": 3, "B": 2}
    assert s.counts()["val"] == {"A": 4, "B": 3}  # 13 * 0.2 = 2.6 -> 3


def test_tiny_class_keeps_one_image_per_split() -> None:
    s = make_splits(fake_entries({"A": 3, "B": 100}), ["A", "B"])
    assert {k: v["A"] for k, v in s.counts().items()} == {"train": 1, "val": 1, "test": 1}


def test_default_four_classes_on_sample_names_ngb(sample_root: Path) -> None:
    with pytest.raises(HemacnnError) as err:
        make_splits(listing_entries(sample_root), root=str(sample_root))
    assert str(err.value) == (
        "class NGB has 1 usable image; at least 3 are needed to split train/val/test — "
        "drop it with 'data.classes=[BLA,LYT,NGS]', leave out every class this small with "
        "data.rare_classes=drop, or add images")


def test_missing_class_lists_present_ones(sample_root: Path) -> None:
    with pytest.raises(HemacnnError, match=r"class XYZ not found in .*BM_cytomorphology_data; "
                       r"classes present: ART, BLA, EOS, LYT, MON, NGB, NGS, NIF, PMO"):
        make_splits(listing_entries(sample_root), ["BLA", "XYZ"], root=str(sample_root))


def test_unusable_entries_never_enter_splits() -> None:
    entries = fake_entries({"A": 20, "B": 20})
    bad = [Entry("A/dup.jpg", "A", "x", 250, 250, "duplicate"),
           Entry("A/bad.jpg", "A", "y", 250, 250, "suspicious"),
           Entry("B/zero.jpg", "B", "z", 0, 0, "unreadable")]
    ok_conv = [Entry("B/grey.png", "B", "w", 250, 250, "converted")]
    s = make_splits(entries + bad + ok_conv, ["A", "B"])
    paths = _set(s.train + s.val + s.test)
    assert not paths & {"A/dup.jpg", "A/bad.jpg", "B/zero.jpg"}
    assert "B/grey.png" in paths


def test_class_with_only_unusable_files_is_named_as_rejected() -> None:
    entries = fake_entries({"A": 20}) + fake_entries({"B": 5}, status="suspicious")
    with pytest.raises(HemacnnError, match=r"class B has no usable image .*\(5 suspicious\)"):
        make_splits(entries, ["A", "B"])


def test_any_folder_names_work_and_order_is_kept() -> None:
    s = make_splits(fake_entries({"zebra": 10, "apple": 10}), ["zebra", "apple"])
    assert s.classes == ["zebra", "apple"]


def test_seed_reproducible_and_different_seed_differs(sample_root: Path) -> None:
    entries = listing_entries(sample_root)
    a = make_splits(entries, THREE, seed=7)
    b = make_splits(list(reversed(entries)), THREE, seed=7)  # input order must not matter
    c = make_splits(entries, THREE, seed=8)
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert _set(a.test) != _set(c.test)
    assert a.counts() == c.counts()


def test_class_draw_independent_of_other_classes(sample_root: Path) -> None:
    entries = listing_entries(sample_root)
    a = make_splits(entries, ["BLA", "LYT"], seed=3)
    b = make_splits(entries, ["NGS", "BLA", "EOS"], seed=3)

    def bla(items):
        return [p for p, label in items if label == "BLA"]

    assert bla(a.test) == bla(b.test) and bla(a.val) == bla(b.val)


def test_kfold_test_folds_partition_each_class(sample_root: Path) -> None:
    entries = listing_entries(sample_root)
    folds = [make_splits(entries, THREE, folds=5, fold=i, seed=1) for i in range(5)]
    tests = [_set(f.test) for f in folds]
    everything = set().union(*tests)
    assert sum(len(t) for t in tests) == len(everything) == 330 + 345 + 317
    for code, n in {"BLA": 330, "LYT": 345, "NGS": 317}.items():
        per_fold = [Counter(label for _, label in f.test)[code] for f in folds]
        assert sum(per_fold) == n and max(per_fold) - min(per_fold) <= 1
    for f in folds:
        assert not (_set(f.train) | _set(f.val)) & _set(f.test)
        assert len(f.train) + len(f.val) + len(f.test) == len(everything)
        assert f.folds == 5 and f.meta()["fold"] == f.fold


@pytest.mark.parametrize("folds,fold", [(1, 0), (5, 5), (5, -1)])
def test_kfold_bad_arguments(folds: int, fold: int) -> None:
    with pytest.raises(HemacnnError, match="k-fold needs folds >= 2"):
        make_splits(fake_entries({"A": 20, "B": 20}), ["A", "B"], folds=folds, fold=fold)


def test_kfold_class_smaller_than_k() -> None:
    with pytest.raises(HemacnnError, match="class B has 4 usable images; at least 5"):
        make_splits(fake_entries({"A": 20, "B": 4}), ["A", "B"], folds=5)


@pytest.mark.parametrize("kw", [{"test_fraction": 0.0}, {"val_fraction": 1.0},
                                {"test_fraction": -0.1}])
def test_bad_fractions(kw: dict) -> None:
    with pytest.raises(HemacnnError, match="must be between 0 and 1"):
        make_splits(fake_entries({"A": 20}), ["A"], **kw)


def test_duplicate_and_empty_class_selection() -> None:
    with pytest.raises(HemacnnError, match="listed twice"):
        make_splits(fake_entries({"A": 20}), ["A", "A"])
    with pytest.raises(HemacnnError, match="no classes selected"):
        make_splits(fake_entries({"A": 20}), [])


def test_save_load_round_trip(tmp_path: Path) -> None:
    s = make_splits(fake_entries({"B,x": 12, "A": 30}), ["B,x", "A"], seed=4, folds=3, fold=2)
    save_splits(s, tmp_path / "splits")
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == [
        "splits.json", "test.csv", "train.csv", "val.csv"]
    assert (tmp_path / "splits" / "train.csv").read_text().startswith("path,class\n")
    t = load_splits(tmp_path / "splits")
    assert isinstance(t, Splits)
    assert (t.train, t.val, t.test, t.classes) == (s.train, s.val, s.test, s.classes)
    assert (t.seed, t.folds, t.fold, t.val_fraction) == (4, 3, 2, 0.2)


def test_load_splits_errors(tmp_path: Path) -> None:
    with pytest.raises(HemacnnError, match="no saved splits in .*splits.json missing"):
        load_splits(tmp_path / "nowhere")
    s = make_splits(fake_entries({"A": 10, "B": 10}), ["A", "B"])
    save_splits(s, tmp_path / "s")
    (tmp_path / "s" / "val.csv").write_text("path,class\nA/x.jpg,Q\n")
    with pytest.raises(HemacnnError, match=r"val.csv line 2: expected path,class with a class"):
        load_splits(tmp_path / "s")
    (tmp_path / "s" / "val.csv").write_text("file,label\n")
    with pytest.raises(HemacnnError, match="is not a split file"):
        load_splits(tmp_path / "s")
    (tmp_path / "s" / "splits.json").write_text("{not json")
    with pytest.raises(HemacnnError, match="is not a valid splits file"):
        load_splits(tmp_path / "s")


def test_save_splits_unwritable_location(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    s = make_splits(fake_entries({"A": 10}), ["A"])
    with pytest.raises(HemacnnError, match="cannot create folder .*file.txt/splits"):
        save_splits(s, blocker / "splits")


def test_class_whose_files_are_all_rejected_says_so() -> None:
    entries = fake_entries({"BLA": 20, "NGS": 20}) + [
        Entry(f"LYT/LYT_{i}.jpg", "LYT", f"l{i}", 0, 0, "unreadable",
              "truncated JPEG (image file is truncated)") for i in range(6)]
    with pytest.raises(HemacnnError) as err:
        make_splits(entries, ["BLA", "LYT"], root="/data")
    msg = str(err.value)
    assert "not found" not in msg, msg
    assert "class LYT has no usable image in /data: all 6 files were rejected" in msg
    assert "6 unreadable" in msg and "hemacnn scan" in msg


def _suggested_classes(msg: str) -> list[str] | None:
    import re

    m = re.search(r"data\.classes=\[([^\]]*)\]", msg)
    return m.group(1).split(",") if m else None


@pytest.mark.parametrize(("counts", "asked"), [
    ({"BLA": 50, "NGB": 1}, ["BLA", "NGB"]),
    ({"BLA": 50, "LYT": 50, "NGB": 1}, ["BLA", "LYT", "NGB"]),
    ({"BLA": 50, "LYT": 2, "NGB": 1, "NGS": 40}, ["BLA", "LYT", "NGB", "NGS"]),
    ({"BLA": 50, "NGB": 1, "EOS": 9}, ["BLA", "NGB"]),
])
def test_a_too_small_class_suggests_only_what_works(counts, asked) -> None:
    entries = fake_entries(counts)
    with pytest.raises(HemacnnError) as err:
        make_splits(entries, asked)
    suggestion = _suggested_classes(str(err.value))
    if suggestion is not None:  # whatever is suggested must then work
        make_splits(entries, suggestion)
    if asked == ["BLA", "NGB"]:
        assert "data.classes=[BLA]" not in str(err.value)


def test_all_classes_and_rare_class_switch(tmp_path: Path) -> None:
    entries = fake_entries({"neutrophil": 40, "platelet": 2, "eosinophil": 30})
    with pytest.raises(HemacnnError, match="class platelet has 2 usable images; at least 3"):
        make_splits(entries, "all")
    s = make_splits(entries, "all", rare_classes="drop")
    assert s.classes == ["eosinophil", "neutrophil"]  # sorted; platelet left out
    assert s.extra["dropped_classes"] == {"platelet": 2}
    assert "platelet" not in {c for _, c in s.train + s.val + s.test}
    save_splits(s, tmp_path / "s")  # the note survives a save and load
    assert load_splits(tmp_path / "s").extra["dropped_classes"] == {"platelet": 2}


def test_min_per_split_is_kept_or_the_class_dropped() -> None:
    entries = fake_entries({"A": 7, "B": 9, "C": 100})
    s = make_splits(entries, ["A", "B", "C"], min_per_split=3, rare_classes="drop")
    assert s.classes == ["B", "C"] and s.extra["dropped_classes"] == {"A": 7}
    counts = s.counts()
    assert {k: v["B"] for k, v in counts.items()} == {"train": 3, "val": 3, "test": 3}
    assert min(counts[k]["C"] for k in counts) >= 3
    with pytest.raises(HemacnnError, match=r"only 1 class\(es\) keep at least 15 .* A, B"):
        make_splits(entries, ["A", "B", "C"], min_per_split=5, rare_classes="drop")


def test_holdout_folds_share_one_test_split_and_rotate_validation() -> None:
    entries = fake_entries({"A": 31, "B": 50, "C": 4})
    plain = make_splits(entries, ["A", "B", "C"], seed=3)
    folds = [make_splits(entries, ["A", "B", "C"], seed=3, folds=3, fold=i,
                         fold_test="holdout") for i in range(3)]
    for f in folds:  # the plain split's test draw, the same for every fold
        assert _set(f.test) == _set(plain.test)
        assert not _set(f.train) & _set(f.val) and not (_set(f.train) | _set(f.val)) & _set(f.test)
        assert len(f.train) + len(f.val) + len(f.test) == 85
        assert min(f.counts()["val"].values()) >= 1 and min(f.counts()["train"].values()) >= 1
    vals = [_set(f.val) for f in folds]
    assert sum(len(v) for v in vals) == len(set().union(*vals)) == 85 - len(plain.test)
    with pytest.raises(HemacnnError, match="class C has 4 usable images; at least 5"):
        make_splits(entries, ["A", "C"], folds=4, fold=0, fold_test="holdout")


def test_train_fraction_keeps_val_and_test_and_nests(tmp_path: Path) -> None:
    entries = fake_entries({"A": 101, "B": 43, "C": 7})
    full = make_splits(entries, ["A", "B", "C"], seed=2)
    half = make_splits(entries, ["A", "B", "C"], seed=2, train_fraction=0.5)
    quarter = make_splits(entries, ["A", "B", "C"], seed=2, train_fraction=0.25)
    for s in (half, quarter):  # validation and test are the whole-split ones
        assert (s.val, s.test) == (full.val, full.test)
    n_full, n_half, n_q = (s.counts()["train"] for s in (full, half, quarter))
    assert n_full == {"A": 73, "B": 31, "C": 5}
    assert n_half == {"A": 37, "B": 16, "C": 3}  # half up: 36.5 -> 37, 15.5 -> 16, 2.5 -> 3
    assert n_q == {"A": 18, "B": 8, "C": 1}
    assert _set(quarter.train) < _set(half.train) < _set(full.train)
    assert [x for x in full.train if x in set(half.train)] == half.train  # order kept
    assert half.extra["train_fraction"] == 0.5
    assert half.extra["train_unused"] == sum(n_full.values()) - sum(n_half.values())
    save_splits(half, tmp_path / "s")
    assert load_splits(tmp_path / "s").train == half.train
    folds = make_splits(entries, ["A", "B"], seed=2, folds=3, fold=1, fold_test="holdout",
                        train_fraction=0.5)
    whole = make_splits(entries, ["A", "B"], seed=2, folds=3, fold=1, fold_test="holdout")
    assert (folds.val, folds.test) == (whole.val, whole.test)
    assert _set(folds.train) < _set(whole.train)
    for bad in (0.0, 1.5):
        with pytest.raises(HemacnnError, match="train_fraction must be above 0 and at most 1"):
            make_splits(entries, ["A", "B"], train_fraction=bad)
