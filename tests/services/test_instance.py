"""Instance ids in the data dir: one per live process, taken back by the next process after it ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from chinwag.services.instance import claim_instance_id

ROOT = Path(__file__).resolve().parents[2]


def test_live_holders_get_different_ids_and_a_freed_id_is_taken_back(tmp_path: Path) -> None:
    with claim_instance_id(tmp_path) as first, claim_instance_id(tmp_path) as second:
        assert first != second
    with claim_instance_id(tmp_path) as again:
        assert again == first  # the lowest free file, with the id it keeps


def test_a_process_killed_holding_an_id_frees_it(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from chinwag.services.instance import claim_instance_id\n"
        "with claim_instance_id(Path(sys.argv[1])) as instance_id:\n"
        "    print(instance_id, flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert result.returncode == -9
    dead_id = result.stdout.strip()
    assert dead_id
    with claim_instance_id(tmp_path) as instance_id:
        assert instance_id == dead_id
