"""The demo's second use case: post-acute care need, predicted at admission. The same pipeline,
registry, predictor image and CDS service as the readmission model, with its own label,
features, gates, card (on ``encounter-start``, suggesting an early discharge-planning consult)
and daily worklist."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from hospital_mlops.cli.demo_story import demo_promote
from hospital_mlops.cli.exit_codes import EXIT_GATE_FAILED
from hospital_mlops.cli.pipeline import print_run_summary, run_demo_pipeline
from hospital_mlops.cli.serving import EXIT_NOT_READY

USE_CASE = "post_acute_at_admission"


def demo_post_acute(out: Path, port_base: int) -> int:
    from hospital_mlops.inference.batch import score_census
    from hospital_mlops.use_case import load_use_case

    use_case = load_use_case(use_case=USE_CASE)
    print(f"\n=== The second use case: {use_case.title} ===", flush=True)
    summary = run_demo_pipeline(out, USE_CASE)
    print_run_summary(summary)
    if summary["status"] != "succeeded":
        return EXIT_GATE_FAILED
    model = summary["model"]
    name, version = str(model["name"]), int(model["version"])
    demo_promote(name, version)
    worklist = score_census(name, "champion", out, out / f"worklist-{name}-{int(time.time())}")
    print(
        f"\nThe daily worklist (batch): the top {worklist['listed']} of {worklist['census']} "
        f"admissions by {name} version {version}, with reasons:"
    )
    print(f"  {worklist['out']}/worklist.html (self-contained), worklist.csv, worklist.json")
    print(f"  again, through the KFP batch pipeline: hmlops batch pipeline run --model "
          f"{name}@champion --store {out}")  # fmt: skip
    return _admission_card(name, out, port_base)


def _admission_card(name: str, out: Path, port_base: int) -> int:
    """The same predictor image serving this model, and the CDS service's encounter-start card."""
    from hospital_mlops.cli.serving import demo_cds_card
    from serving.readiness import NotReady, wait_until_ready

    log_dir = out / "serve-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_file = log_dir / "post-acute-predictor.log"
    port = port_base + 5
    argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
            "--model", f"{name}@champion", "--port", str(port)]  # fmt: skip
    with log_file.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=os.environ)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log_file, 240)
        print(f"\n{name}@champion served by the same predictor image on port {port}")
        demo_cds_card(
            f"http://127.0.0.1:{port_base}",  # the readmission predictor (stopped): not asked
            port_base + 6,
            log_dir,
            hook="encounter-start",
            use_case_predictors={USE_CASE: f"http://127.0.0.1:{port}"},
        )
    except NotReady as exc:
        print(f"hmlops: refused: {exc}", file=sys.stderr)
        return EXIT_NOT_READY
    finally:
        process.terminate()
        process.wait(timeout=30)
    return 0
