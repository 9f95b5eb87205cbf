"""A native decoder crash (the process dies: no Python exception to catch) loses no row and cannot stop a
screening for ever: the resumed run records the file that was being decoded as an error row."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO, TINY_PACK_ID

from asdesk.report import ScreeningCsv
from asdesk.tasks import EngineCache, screen_folder

SAMPLE = REPO / "resources" / "samples" / "knee-kl3-9023348L.png"

CRASHING_RUN = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import asdesk.tasks.screening as screening
    from asdesk.tasks import EngineCache, screen_folder

    real_read = screening.read_item

    def read_or_die(item):
        if Path(item.path).name == "b-poison.png":
            os._exit(134)  # what a segmentation fault in a native decoder does to the process
        return real_read(item)

    screening.read_item = read_or_die
    screen_folder(sys.argv[1], sys.argv[2], model_id=sys.argv[4], engines=EngineCache([sys.argv[3]]), batch_size=1)
""")


def test_a_file_that_kills_the_process_gets_an_error_row_on_resume(tmp_path, tiny_pack):
    folder = tmp_path / "scans"
    folder.mkdir()
    for name in ("a-good.png", "b-poison.png", "c-good.png"):
        shutil.copyfile(SAMPLE, folder / name)
    csv_path = tmp_path / "screen.csv"
    crashed = subprocess.run([sys.executable, "-c", CRASHING_RUN, str(folder), str(csv_path),
                              str(tiny_pack.path.parent), TINY_PACK_ID],
                             capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert crashed.returncode == 134, crashed.stderr[-2000:]
    assert [Path(r["file"]).name for r in ScreeningCsv.read_rows(csv_path)] == ["a-good.png"]
    assert (tmp_path / ".screen.csv.decoding").read_text().startswith(str(folder / "b-poison.png"))

    summary = screen_folder(folder, csv_path, model_id=TINY_PACK_ID, engines=EngineCache([tiny_pack.path.parent]))
    rows = {Path(r["file"]).name: r for r in ScreeningCsv.read_rows(csv_path)}
    assert set(rows) == {"a-good.png", "b-poison.png", "c-good.png"}
    assert rows["b-poison.png"]["status"] == "error" and "crash in a native decoder" in rows["b-poison.png"]["error"]
    assert rows["c-good.png"]["status"] in ("result", "refused")
    assert summary.n_errors == 1 and summary.failed
    assert not (tmp_path / ".screen.csv.decoding").exists()
    # asked explicitly, the file is tried again (here it decodes: the crash was simulated)
    again = screen_folder(folder, csv_path, model_id=TINY_PACK_ID, engines=EngineCache([tiny_pack.path.parent]),
                          retry_errors=True)
    assert again.n_done == 1
