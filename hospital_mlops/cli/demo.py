"""``hmlops demo``: the bundled dataset end to end (the pipeline, demo sign-offs and promotion,
the local servers asked, the monitoring and rollout story, the governance packet)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from hospital_mlops import artifacts
from hospital_mlops.cli import serving as cli_serving
from hospital_mlops.cli.demo_story import demo_promote
from hospital_mlops.cli.exit_codes import EXIT_GATE_FAILED
from hospital_mlops.cli.pipeline import print_run_summary, run_demo_pipeline

if TYPE_CHECKING:
    from hospital_mlops.cli.demo_story import CommandRunner


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser(
        "demo", help="the bundled dataset end to end: pipeline, registry, then serve and ask"
    )
    demo.add_argument("--port-base", type=int, default=8080, help="ports for the local servers")
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument(
        "--no-story", action="store_true", help="skip the monitoring and rollout story"
    )
    demo.add_argument(
        "--readmission-only",
        action="store_true",
        help="skip the second use case (post-acute care need at admission)",
    )
    demo.add_argument(
        "--story-pace", choices=["demo", "quick"], default="demo",
        help="the story's compressed time: 30-second windows, or 10-second ones (the tests')",
    )  # fmt: skip


def demo(
    out: Path,
    hmlops: CommandRunner,
    serve_port: int = 8080,
    story: bool = True,
    pace: str = "demo",
    use_cases: bool = True,
) -> int:
    """The demo; ``hmlops`` runs the story's commands (main.py hands in its ``run_captured``)."""
    print(
        "hospital-mlops demo: the bundled UCI Diabetes 130-US extract through the Kubeflow "
        "pipeline (kfp.local): data layers, then train → evaluate → gate → register in MLflow, "
        "with the labelled DEMO tokenization key.",
        flush=True,
    )
    summary = run_demo_pipeline(out)
    print_run_summary(summary)
    run_dir = out / "runs" / summary["run_id"]
    print()
    print("Open:")
    print(f"  gate reports (self-contained HTML): {run_dir / 'gates'}/*.html")
    print(f"  run summary (JSON):                 {summary['lineage_path']}")
    if summary.get("final_artifact_sha256"):
        print(
            f"  published feature snapshot:         "
            f"{out / 'published' / 'features' / summary['final_artifact_sha256']}"
        )
    evidence = {e["name"]: e["path"] for e in summary.get("evidence", [])}
    if artifacts.VALIDATION_REPORT_HTML in evidence:
        print(f"  validation report (HTML):           {evidence[artifacts.VALIDATION_REPORT_HTML]}")
        print(f"  model card + HTI-1 attributes:      {evidence[artifacts.MODEL_CARD_HTML]}")
    print(f"  lineage:  hmlops lineage {summary['run_id']} --out {out}")
    print(f"  compiled pipeline IR:  hmlops pipeline compile --out {out / 'data_pipeline.yaml'}")
    if summary["status"] != "succeeded":
        return EXIT_GATE_FAILED
    model = summary["model"]
    demo_promote(model["name"], int(model["version"]))
    print(f"  registry:  hmlops registry show --model {model['name']}")
    served = cli_serving.demo_round_trip(f"{model['name']}@champion", out, port_base=serve_port)
    if served != 0:
        return served
    if story:
        from hospital_mlops.cli.demo_story import PACES, run_story

        told = run_story(
            hmlops, model["name"], int(model["version"]), out, out, serve_port, PACES[pace]
        )
        if told != 0:
            return told
    _demo_packet(model["name"], int(model["version"]), out)
    if use_cases:
        from hospital_mlops.cli.demo_use_case import demo_post_acute

        return demo_post_acute(out, serve_port)
    return 0


def _demo_packet(name: str, version: int, out: Path) -> None:
    """The review board's packet for the champion, as `hmlops governance packet` writes it."""
    from hospital_mlops.governance.packet import PacketRequest, build_packet

    path = out / f"governance-{name}-v{version}.zip"
    packet = build_packet(PacketRequest(name, version, path, out))
    print(f"\n=== The governance packet of {name} version {version} ===")
    print(f"{path}: {len(packet.files)} files with their sha256 (index.html opens first)")
    print("what a review board would chase before go-live (the demo's own gaps):")
    for item in packet.missing:
        print(f"  - {item}")
    print(f"  verify it later: hmlops governance verify {path}")
