"""The ring-allreduce cost model of ``plan --estimate`` against closed forms worked by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hvdtrain.cluster import estimate as est
from hvdtrain.commands import main
from hvdtrain.errors import ConfigError

GB = est.Link(gbit_s=8.0, latency_us=0.0)  # exactly 1e9 bytes/s, no latency


def test_ring_closed_form() -> None:
    # 2(n−1)/n · s/B: 1 GB over 2 ranks at 1 GB/s takes 1 s; over 4 ranks 1.5 s
    assert est.ring_allreduce_s(1e9, 2, GB) == pytest.approx(1.0)
    assert est.ring_allreduce_s(1e9, 4, GB) == pytest.approx(1.5)
    # latency only: 2(n−1)·α
    assert est.ring_allreduce_s(0, 8, est.Link(8.0, 10.0)) == pytest.approx(14 * 10e-6)
    assert est.ring_allreduce_s(1e9, 1, GB) == 0.0  # one rank sends nothing


def test_hierarchy_reduces_to_the_ring_at_either_edge() -> None:
    intra, inter = est.Link(80.0, 5.0), est.Link(10.0, 50.0)
    s = 3e8
    # one rank per host: only the inter-host ring
    assert est.hierarchical_allreduce_s(s, est.Layout(4, 1), intra, inter) == pytest.approx(
        est.ring_allreduce_s(s, 4, inter))
    # one host: reduce-scatter + all-gather halves = the ring over the host's ranks
    assert est.hierarchical_allreduce_s(s, est.Layout(1, 8), intra, inter) == pytest.approx(
        est.ring_allreduce_s(s, 8, intra))


def test_hierarchy_by_hand() -> None:
    # 2 hosts × 4 ranks, intra 1 GB/s no latency, inter 0.5 GB/s and 100 µs, s = 1 GB:
    # 2 × (3/4 × 1 s) + (2·1/2 × 2 s + 2 × 100 µs) = 1.5 + 2.0002
    inter = est.Link(4.0, 100.0)
    got = est.hierarchical_allreduce_s(1e9, est.Layout(2, 4), GB, inter)
    assert got == pytest.approx(3.5002)
    assert est.algorithm_for(est.Layout(2, 4)) == "hierarchical"
    assert est.algorithm_for(est.Layout(1, 4)) == "ring"
    assert est.algorithm_for(est.Layout(1, 1)) == "none"


def test_fusion_buffers_each_pay_the_latency() -> None:
    mib = 1024 * 1024
    assert est.fused_buffers(150 * mib, 64 * mib) == [64 * mib, 64 * mib, 22 * mib]
    assert est.fused_buffers(10 * mib, 0) == [10 * mib]
    link = est.Link(8.0, 1000.0)  # 1 GB/s, 1 ms
    parameters = 150 * mib // 4  # 150 MiB of fp32 gradients
    e = est.estimate(parameters, 1.0, est.Layout(2, 1), inter=link, fusion_bytes=64 * mib)
    assert e.buffers == 3
    assert e.comm_s == pytest.approx(150 * mib / 1e9 + 3 * 2 * 1e-3)


def test_step_share_efficiency_and_overlap() -> None:
    # 2 hosts × 1 rank, 250M parameters = 1 GB fp32 at 1 GB/s: comm 1 s, compute 3 s
    e = est.estimate(250_000_000, 3.0, est.Layout(2, 1), inter=GB, fusion_bytes=0)
    assert e.comm_s == pytest.approx(1.0)
    assert e.step_s == pytest.approx(4.0)
    assert e.comm_share == pytest.approx(0.25)
    assert e.efficiency == pytest.approx(0.75)
    # backward = 2/3 × 3 s = 2 s > 1 s of comm: all of it hides
    assert e.step_overlapped_s == pytest.approx(3.0)
    assert e.efficiency_overlapped == pytest.approx(1.0)
    # only part hides when comm outlasts the backward pass
    e = est.estimate(250_000_000, 0.75, est.Layout(2, 1), inter=GB, fusion_bytes=0)
    assert e.step_overlapped_s == pytest.approx(0.75 + 1.0 - 0.5)


def test_fp16_halves_the_bytes_not_the_latency() -> None:
    link = est.Link(8.0, 500.0)
    fp32 = est.estimate(250_000_000, 1.0, est.Layout(2, 1), inter=link, fusion_bytes=0)
    fp16 = est.estimate(250_000_000, 1.0, est.Layout(2, 1), inter=link,
                        compression="fp16", fusion_bytes=0)
    assert fp16.gradient_bytes * 2 == fp32.gradient_bytes
    assert fp32.comm_s == pytest.approx(1.0 + 2 * 500e-6)
    assert fp16.comm_s == pytest.approx(0.5 + 2 * 500e-6)
    gain = est.fp16_gain(250_000_000, 1.0, est.Layout(2, 1), inter=link, fusion_bytes=0)
    assert gain == pytest.approx(fp32.step_s / fp16.step_s)


def test_one_rank_has_no_communication() -> None:
    e = est.estimate(1_000_000, 0.1, est.Layout(1, 1))
    assert (e.comm_s, e.efficiency, e.algorithm) == (0.0, 1.0, "none")


def test_parameter_counts_without_a_framework() -> None:
    assert est.resnet_parameters((3, 4, 23, 3)) == 44_549_160  # torchvision's resnet101
    assert est.resnet_parameters((3, 4, 6, 3)) == 25_557_032  # resnet50
    assert est.model_parameters("resnet101") == 44_549_160
    assert est.model_parameters("bench-mlp") == 128 * 1024 + 1024 + 1024 * 1024 + 1024 + 1025
    assert est.model_parameters("44.5M") == 44_500_000
    assert est.model_parameters("1200") == 1200
    with pytest.raises(ConfigError, match="not a count nor a known model"):
        est.model_parameters("resnet9000")


@pytest.mark.parametrize("bad", [
    {"parameters": 0}, {"compute_s": 0.0}, {"layout": est.Layout(0, 1)},
    {"inter": est.Link(0.0, 1.0)}, {"fusion_bytes": -1}, {"backward_fraction": 1.5},
])
def test_bad_inputs_are_config_errors(bad: dict[str, object]) -> None:
    args: dict[str, object] = {"parameters": 1000, "compute_s": 0.1,
                               "layout": est.Layout(2, 1), **bad}
    with pytest.raises(ConfigError):
        est.estimate(**args)  # type: ignore[arg-type]


def test_fit_ring_recovers_bandwidth_and_latency() -> None:
    truth = est.Link(gbit_s=1.0, latency_us=200.0)
    points = [(s, est.ring_allreduce_s(s, 2, truth)) for s in (1e6, 16e6, 64e6)]
    fitted = est.fit_ring(points, 2)
    assert fitted.gbit_s == pytest.approx(1.0)
    assert fitted.latency_us == pytest.approx(200.0)
    with pytest.raises(ConfigError):
        est.fit_ring([(1e6, 0.01)], 2)


def test_link_profile_from_a_bench_result_or_figures(tmp_path: Path) -> None:
    truth = est.Link(gbit_s=10.0, latency_us=50.0)
    bench = {"ranks": 2, "link": "2 namespace hosts, tc-shaped to 10gbit", "rows": [
        {"dtype": "float32", "compression": compression, "bytes": s,
         "hvdtrain": {"seconds": est.ring_allreduce_s(s, 2, truth) * factor}}
        for s in (1 << 20, 16 << 20) for compression, factor in (("none", 1), ("fp16", 0.6))]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(bench))
    links = est.read_link_profile(path)
    assert list(links) == ["inter"]
    assert links["inter"].gbit_s == pytest.approx(10.0)
    path.write_text(json.dumps({"intra": {"gbit_s": 40, "latency_us": 2}}))
    assert est.read_link_profile(path) == {"intra": est.Link(40.0, 2.0)}
    path.write_text(json.dumps({"inter": {"gbit_s": 40}}))
    with pytest.raises(ConfigError, match="latency_us"):
        est.read_link_profile(path)


def test_plan_estimate_cli() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["plan", "--hosts", "a:4,b:4", "--estimate", "--params",
                                  "resnet101", "--compute-ms", "450", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["parameters"] == 44_549_160
    assert out["plan"]["none"]["algorithm"] == "hierarchical"
    assert out["plan"]["none"]["ranks"] == 8 and out["plan"]["none"]["hosts"] == 2
    assert out["fp16_gain"] > 1
    assert [e["ranks"] for e in out["resnet101"]["at_scale"]] == [8, 64, 512]
    assert out["resnet101"]["published_efficiency"] == {"512": 0.9}
    # the published 90 % lies between the no-overlap and the overlapped prediction
    at512 = out["resnet101"]["at_scale"][-1]
    assert at512["efficiency"] <= 0.9 <= at512["efficiency_overlapped"]
    text = runner.invoke(main, ["plan", "-np", "2", "--estimate", "--params", "1M",
                                "--compute-ms", "10"])
    assert text.exit_code == 0, text.output
    assert "fp16 gain" in text.output and "published" in text.output
    missing = runner.invoke(main, ["plan", "-np", "2", "--estimate"])
    assert missing.exit_code != 0 and "--compute-ms" in missing.output


def test_plan_estimate_loads_no_ml_framework() -> None:
    code = ("import sys\nfrom click.testing import CliRunner\nfrom hvdtrain.commands import main\n"
            "r = CliRunner().invoke(main, ['plan', '-np', '2', '--estimate', '--params', "
            "'resnet50', '--compute-ms', '100'])\nassert r.exit_code == 0, r.output\n"
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'tensorflow', 'horovod', 'keras', 'numpy', 'matplotlib')])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
