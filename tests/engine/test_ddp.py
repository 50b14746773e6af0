"""Distributed training (torchrun, gloo on CPU): 2 processes reproduce 1 process with the same global batch.

The 2-process job is this file run under ``python -m torch.distributed.run --standalone`` (a free
port is chosen by torchrun, so parallel pytest workers do not collide); :func:`_worker` runs in
each process and leaves per-rank records, which the test compares with single-process runs made
in the pytest process.

Tolerances. Each rank computes the loss and gradients of its half of every global batch and the
gradients are averaged with an all-reduce, so the same sums are taken in another order: per-step
losses and first-step gradients agree to float32 rounding (relative 1e-5 / 1e-4 here), not bitwise.
The weights after a few AdamW steps agree to ~1e-6 except for parameters whose true gradient is
zero (biases right before a normalisation layer): their gradient is float noise (~1e-10), which Adam
divides by its own magnitude into steps of +-lr, different in the two runs. So the weights are
compared as a whole (the update difference relative to the update), and the two ranks of one run
must hold bitwise-equal weights. The supervised method's decoder prompts are drawn per micro-batch
from its rows (a rank's share draws other jitters than the whole batch), so the CLI comparison
uses ``decoder_weight: 0``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from medsam_kit.engine.augment import AugmentParams, SpatialAugment
from medsam_kit.engine.distributed import DistInfo, ShardSampler, shard

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the torchrun workers import the recording method from the neighbour test
    sys.path.insert(0, str(HERE))

from test_trainer_unlabeled import RecordingMethod, prepared_ssl, ssl_config  # noqa: E402

__all__ = ["prepared_ssl"]  # the fixture, shared with test_trainer_unlabeled.py

TRAIN = {"steps": 3, "batch_size": 4, "unlabeled_batch_size": 2, "val_every": 3}


def test_shards_cover_the_global_batch_in_order():
    assert shard(4, DistInfo(0, 2, 0), "train.batch_size") == (0, 2)
    assert shard(4, DistInfo(1, 2, 1), "train.batch_size") == (2, 2)
    assert shard(3, DistInfo(0, 1, 0), "train.batch_size") == (0, 3)
    with pytest.raises(ValueError, match=r"train.batch_size is 5, which 2 processes .* multiple of 2"):
        shard(5, DistInfo(1, 2, 1), "train.batch_size")
    ranks = [list(ShardSampler(1, 3, 4, start, 2)) for start in (0, 2)]
    assert ranks == [[4, 5, 8, 9], [6, 7, 10, 11]] and len(ShardSampler(1, 3, 4, 2, 2)) == 4
    assert list(ShardSampler(2, 4, 3, 0, 3)) == list(range(6, 12))  # one process: the plain range


def test_augment_shares_get_the_single_process_warps():
    params = AugmentParams(probability=0.9, flip=0.5, rot90=True, rotate_deg=20, scale=(0.8, 1.25), translate=0.1)
    augment = SpatialAugment(params, pad_value=0.1, seed=3)
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(4, 2, 32, 32, generator=generator),
             "label": torch.randint(0, 4, (4, 32, 32), generator=generator)}
    whole = augment(batch, 7)
    assert torch.equal(augment(batch, 7, 0, 4)["image"], whole["image"])
    shares = [augment({k: v[s : s + 2] for k, v in batch.items()}, 7, s, 4) for s in (0, 2)]
    for key in ("image", "label"):
        torch.testing.assert_close(torch.cat([s[key] for s in shares]), whole[key], rtol=0, atol=1e-6)
    assert not torch.equal(whole["image"], batch["image"])


def _worker(spec_path: str) -> None:
    """One torchrun process: a full run, an interrupted + resumed run, an uneven batch through the CLI.

    The process group is created here once and shared by the runs: a gloo group re-created in the
    same process can read the previous group's addresses from torchrun's store (a race), and a
    group that exists already is what the Trainer uses when embedded in a distributed script. The
    Trainer creating and destroying its own group is the CLI test below.
    """
    import torch.distributed as dist

    from medsam_kit.cli.main import main
    from medsam_kit.engine.trainer import Trainer

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    out, rank = Path(spec["out"]), int(os.environ["RANK"])
    config = ssl_config(spec["prepared"], **spec["train"])
    dist.init_process_group("gloo")
    results = {}
    for name, run, kwargs in (("full", "full", {}), ("first", "split", {"stop_at": 1}),
                              ("resumed", "split", {"resume": True})):
        method = RecordingMethod(record_path=str(out / f"{name}_rank{rank}.pt"))
        result = Trainer(config, out / run, method=method, tensorboard=False).fit(**kwargs)
        results[name] = {"losses": result.losses, "validations": result.validations,
                         "best": [result.best_val_dice, result.best_step], "step": result.step}
    results["odd_batch_exit_code"] = main(["train", "--config", spec["odd_config"], "--out", str(out / "odd")])
    results["helpers"] = _collective_helpers(rank)
    (out / f"results_rank{rank}.json").write_text(json.dumps(results), encoding="utf-8")
    dist.destroy_process_group()


def _collective_helpers(rank: int) -> dict:
    """average_gradients with gradients missing on some / all ranks; average_logs with mismatched keys."""
    from medsam_kit.engine.distributed import average_gradients, average_logs

    info = DistInfo(rank, 2, rank)
    params = [torch.nn.Parameter(torch.zeros(3)) for _ in range(3)]
    params[0].grad = torch.full((3,), 2.0 + rank)  # both ranks: mean 2.5
    if rank == 0:
        params[1].grad = torch.full((3,), 4.0)  # rank 1 has none (e.g. no prompt on its share): mean 2
    average_gradients(params, info, bucket_bytes=8)  # tiny buckets: several all-reduces
    out = {"grads": [None if p.grad is None else p.grad.tolist() for p in params],
           "logs": average_logs({"loss": 1.0 + rank, "n": 4.0}, info, torch.device("cpu"))}
    try:
        average_logs({"loss": 1.0, f"key{rank}": 0.0}, info, torch.device("cpu"))
    except RuntimeError as exc:
        out["mismatch"] = str(exc)
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def _update_mismatch(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor) -> float:
    """``|a - b| / |b - start|``: how far two runs' weight updates differ, relative to the update."""
    return float((a - b).norm() / (b - start).norm())


def _cli_config(prepared, tmp_path: Path, **train) -> Path:
    """A supervised config file (decoder loss weight 0: see the module docstring)."""
    config = {"name": "cli", "data": {"prepared": str(prepared)}, "optim": {"lr": 1e-3, "warmup_steps": 2},
              "train": {"steps": 2, "batch_size": 4, "val_every": 0, "device": "cpu", **train},
              "method": {"name": "supervised", "decoder_weight": 0.0}}
    path = tmp_path / f"cli_{train.get('batch_size', 4)}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` on CPU (a free port each time), output captured."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return subprocess.run(command, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)


def test_two_processes_match_one_process(prepared_ssl, tmp_path):
    from medsam_kit.engine.trainer import Trainer

    out = tmp_path / "ddp"
    out.mkdir()
    spec = {"out": str(out), "prepared": str(prepared_ssl), "train": TRAIN,
            "odd_config": str(_cli_config(prepared_ssl, tmp_path, batch_size=3))}
    (tmp_path / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
    job = _torchrun(str(Path(__file__).resolve()), str(tmp_path / "spec.json"))
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]

    # the same global batches in one process (here)
    reference = RecordingMethod()
    initial = Trainer(ssl_config(prepared_ssl, **TRAIN), tmp_path / "init", method=RecordingMethod(),
                      tensorboard=False)
    initial.setup()
    start = _flat(initial.model)
    trainer = Trainer(ssl_config(prepared_ssl, **TRAIN), tmp_path / "single", method=reference, tensorboard=False)
    single = trainer.fit()
    records = [torch.load(out / f"full_rank{r}.pt", weights_only=False) for r in (0, 1)]
    results = [json.loads((out / f"results_rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]

    # every rank: setup once, then loss / after_step per step (after_step on every rank)
    for rank, record in enumerate(records):
        assert record["setup_info"]["rank"] == rank and record["setup_info"]["world_size"] == 2
        assert record["calls"] == [("setup",), ("loss", 0), ("after_step", 1), ("loss", 1), ("after_step", 2),
                                   ("loss", 2), ("after_step", 3)]
    # the two shares of each global micro-batch are exactly the single-process batch (labeled, augmented,
    # and unlabeled), in rank order
    for m, ref in enumerate(reference.batches):
        shares = [record["batches"][m] for record in records]
        assert [s["image"].shape[0] for s in shares] == [2, 2] and [s["u_image"].shape[0] for s in shares] == [1, 1]
        for key in ("image", "u_image"):
            torch.testing.assert_close(torch.cat([s[key] for s in shares]), ref[key], rtol=0, atol=1e-6)
        assert torch.equal(torch.cat([s["label"] for s in shares]), ref["label"])
        assert shares[0]["u_case_id"] + shares[1]["u_case_id"] == ref["u_case_id"]
        assert torch.equal(torch.cat([s["u_origin"] for s in shares]), ref["u_origin"])

    # losses (rank means) and the first step's averaged gradients: as in one process up to summation order
    assert results[0]["full"]["losses"] == results[1]["full"]["losses"]
    torch.testing.assert_close(torch.tensor(results[0]["full"]["losses"]), torch.tensor(single.losses),
                               rtol=1e-5, atol=0)
    grads = records[0]["first_grads"]
    assert torch.equal(grads, records[1]["first_grads"])
    torch.testing.assert_close(grads, reference.first_grads, rtol=1e-3, atol=1e-5 * float(grads.abs().max()))
    # weights: identical on the two ranks; updates as in one process (module docstring)
    assert torch.equal(records[0]["weights"], records[1]["weights"])
    assert records[0]["scale"] == records[1]["scale"] == pytest.approx(reference.scale.item(), abs=1e-6)
    # measured 0.002; two single-process runs on other batches (foreground_probability 0.3) differ by 0.64
    mismatch = _update_mismatch(records[0]["weights"], _flat(trainer.model), start)
    assert mismatch < 1e-2, mismatch

    # rank 0 alone wrote the run folder and validated; rank 1 got its validation results
    metrics = _metrics(out / "full")
    assert [r["step"] for r in metrics if r["kind"] == "train"] == [1, 2, 3]
    assert [r["step"] for r in metrics if r["kind"] == "val"] == [3]
    assert [r["loss"] for r in metrics if r["kind"] == "train"] == pytest.approx(results[0]["full"]["losses"])
    assert results[1]["full"]["validations"] == results[0]["full"]["validations"] != []
    assert results[1]["full"]["best"] == results[0]["full"]["best"]
    assert results[0]["full"]["best"] == [pytest.approx(single.best_val_dice, abs=1e-3), 3]
    for name in ("config.yaml", "split.json", "progress.png", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / "full" / name).is_file(), name

    # distributed resume: the interrupted + resumed 2-process run equals the uninterrupted one
    split_losses = results[0]["first"]["losses"] + results[0]["resumed"]["losses"]
    torch.testing.assert_close(torch.tensor(split_losses), torch.tensor(results[0]["full"]["losses"]),
                               rtol=0, atol=1e-6)
    resumed = [torch.load(out / f"resumed_rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert resumed[0]["after_steps"] == resumed[1]["after_steps"] == 3
    torch.testing.assert_close(resumed[0]["weights"], records[0]["weights"], rtol=0, atol=1e-6)
    assert torch.equal(resumed[0]["weights"], resumed[1]["weights"])

    # gradient / log averaging helpers
    for rank, result in enumerate(results):
        helpers = result["helpers"]
        assert helpers["grads"] == [[2.5] * 3, [2.0] * 3, None]
        assert helpers["logs"] == {"loss": 1.5, "n": 4.0}
        assert f"rank {rank} logged keys" in helpers["mismatch"]

    # an uneven global batch: a one-line error and exit code 2 from the CLI, on every rank
    assert results[0]["odd_batch_exit_code"] == results[1]["odd_batch_exit_code"] == 2
    assert job.stderr.count("train.batch_size is 3, which 2 processes (WORLD_SIZE) cannot share evenly") == 2


def test_torchrun_module_entry_point(prepared_ssl, tmp_path):
    """``torchrun -m medsam_kit train`` unchanged: the Trainer creates and destroys its own process group."""
    from medsam_kit.engine.config import load_config
    from medsam_kit.engine.trainer import Trainer

    config = _cli_config(prepared_ssl, tmp_path)
    job = _torchrun("-m", "medsam_kit", "train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
    assert job.stdout.count("trained steps 0..2 of cli") == 1  # rank 0 reports
    single = Trainer(load_config(config), tmp_path / "single", tensorboard=False).fit()
    metrics = [r for r in _metrics(tmp_path / "run") if r["kind"] == "train"]
    assert [r["step"] for r in metrics] == [1, 2]
    torch.testing.assert_close(torch.tensor([r["loss"] for r in metrics]), torch.tensor(single.losses),
                               rtol=1e-5, atol=0)
    torch.testing.assert_close(torch.tensor([r["coarse_loss"] for r in metrics]),
                               torch.tensor([r["coarse_loss"] for r in _metrics(tmp_path / "single")
                                             if r["kind"] == "train"]), rtol=1e-5, atol=0)
    assert len(list((tmp_path / "run" / "tensorboard").glob("events.*"))) == 1  # one writer: rank 0


def _flat(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters()])


if __name__ == "__main__":
    _worker(sys.argv[1])
