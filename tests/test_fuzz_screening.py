"""Fuzz: screen a few hundred mutated DICOM and PNG files (tests/fuzzgen.py) with the tiny real model pack.

Asserts what issue 9 asks: the run never crashes, every generated file gets exactly one image row, and
no file broken by construction (rescale slope 0 / NaN / inf, Bits Stored 1, junk or huge frame counts,
Rows/Columns lies, PNG IHDR size edits, empty files) gets a probability.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import TINY_PACK_ID
from fuzzgen import BROKEN, generate

from asdesk.report import ScreeningCsv
from asdesk.tasks import EngineCache, screen_folder

FUZZ_FILES = 300


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, generate(folder, FUZZ_FILES, seed=9, max_source_bytes=1 << 20)


def test_the_generator_is_seeded_and_covers_every_class(corpus, tmp_path):
    folder, written = corpus
    again = generate(tmp_path / "again", 40, seed=9, max_source_bytes=1 << 20)
    for name in again:
        assert (tmp_path / "again" / name).read_bytes() == (folder / name).read_bytes()
    assert set(written.values()) >= BROKEN | {"flip", "truncate"}


def test_fuzzed_folder_every_file_one_row_and_no_broken_file_scored(corpus, tiny_pack, tmp_path):
    folder, written = corpus
    csv_path = tmp_path / "fuzz.csv"
    started = time.perf_counter()
    summary = screen_folder(folder, csv_path, model_id=TINY_PACK_ID, engines=EngineCache([tiny_pack.path.parent]),
                            batch_size=32)
    elapsed = time.perf_counter() - started
    rows = ScreeningCsv.read_rows(csv_path)
    image_rows = [row for row in rows if row["row_kind"] == "image"]
    per_file = Counter(Path(row["file"]).name for row in image_rows)
    assert set(per_file) == set(written)                          # no file without a row, no stray row
    assert max(per_file.values()) == 1                             # no file with two (2,000 frames claimed...)
    scored_broken = [row["file"] for row in image_rows
                     if written[Path(row["file"]).name] in BROKEN and row["probability"]
                     and math.isfinite(float(row["probability"]))]
    assert scored_broken == []
    for row in image_rows:                                         # every error names its file
        if row["status"] == "error":
            assert Path(row["file"]).name in row["error"], row["error"]
        else:
            assert row["status"] in ("result", "skipped", "refused")
    assert summary.failed and summary.n_errors >= sum(1 for k in written.values() if k in BROKEN)
    statuses = Counter(row["status"] for row in image_rows)
    print(f"fuzz: {len(written)} files, {dict(statuses)}, {summary.n_study_rows} study rows, {elapsed:.1f} s")
    # resume: nothing is retried, nothing is added
    again = screen_folder(folder, csv_path, model_id=TINY_PACK_ID, engines=EngineCache([tiny_pack.path.parent]))
    assert again.n_done == again.n_errors == again.n_not_images == again.n_study_rows == 0
    assert len(ScreeningCsv.read_rows(csv_path)) == len(rows)
