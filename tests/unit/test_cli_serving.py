"""The serving commands' argument handling: deploy render, ports, model references."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hospital_mlops.cli.main import main
from hospital_mlops.cli.serving import ServeUsageError, parse_model


def test_deploy_render_writes_an_overlay_pinned_to_the_version(tmp_path, capsys) -> None:
    out = tmp_path / "overlay"
    code = main(
        ["deploy", "render", "--model", "readmission-30d", "--version", "7",
         "--stage", "canary", "--out", str(out),
         "--image", "registry.example/serving@sha256:" + "ab" * 32]
    )  # fmt: skip
    assert code == 0
    assert f"kubectl apply -k {out}" in capsys.readouterr().out
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert "readmission-30d@7" in (out / "kustomization.yaml").read_text()
    assert kustomization["kind"] == "Kustomization"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "0", "--stage", "canary"], "version"),
        (["--version", "3", "--stage", "canary", "--image", "repo/img:latest"], "image"),
        (["--version", "3", "--stage", "production"], "pinned by digest"),  # the default tag
    ],
)
def test_deploy_render_refuses_with_the_field_named(args, message, tmp_path, capsys) -> None:
    code = main(
        ["deploy", "render", "--model", "readmission-30d", "--out", str(tmp_path / "o"), *args]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_deploy_render_dry_run_with_a_tag_says_so(tmp_path, capsys) -> None:
    out = tmp_path / "dry"
    argv = ["deploy", "render", "--model", "readmission-30d", "--version", "7",
            "--stage", "production", "--out", str(out), "--allow-unpinned-image"]  # fmt: skip
    assert main(argv) == 0
    assert "not for a cluster" in (out / "kustomization.yaml").read_text()


def test_serve_refuses_ports_out_of_range(capsys) -> None:
    assert main(["serve", "--port-base", "65534"]) == 2
    assert "ports must be within 1024–65535" in capsys.readouterr().err


def test_model_references(tmp_path: Path) -> None:
    assert parse_model("readmission-30d@champion") == ("readmission-30d", "champion")
    assert parse_model("readmission-30d@3") == ("readmission-30d", "3")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text("{}")
    assert parse_model(str(bundle)) == (str(bundle), "path")
    for bad in ("readmission-30d", "@champion", str(tmp_path)):
        with pytest.raises(ServeUsageError, match="NAME@ALIAS"):
            parse_model(bad)
