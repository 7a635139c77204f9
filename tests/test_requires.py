"""A missing requirement skips a test locally and fails it under CI=true (tests/requires.py, conftest.py).

Each case runs pytest in a subprocess on a two-test file that uses the real ``shared_data`` fixture
(pointed at a folder that does not exist) and the real ``@requires`` marker.
"""
from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

PROBE = '''
from tests.requires import requires

def test_reads_shared_data(shared_data):
    assert shared_data.is_dir()

@requires(False, "the frobnicator package is not installed (make install-lite)")
def test_needs_a_package():
    raise AssertionError("the requires marker must stop this test before its body runs")
'''


def run_probe(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env.update(PYTHONPATH=str(REPO), ANON_SHARED_DATA=str(tmp_path / "no_shared_here"))
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-c", str(REPO / "pyproject.toml"), "--rootdir", str(REPO), str(probe)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_missing_requirements_skip_with_the_reason_outside_ci(tmp_path):
    proc = run_probe(tmp_path, "false")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 skipped" in proc.stdout
    assert "no_shared_here is absent" in proc.stdout and "frobnicator package is not installed" in proc.stdout


def test_missing_requirements_fail_under_ci(tmp_path):
    proc = run_probe(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "skipped" not in proc.stdout and "2 error" in proc.stdout
    for reason in ("real-data sample folder", "the frobnicator package is not installed"):
        assert f"CI=true, so this is a failure, not a skip: {reason}" in proc.stdout
    assert "no_shared_here is absent" in proc.stdout
