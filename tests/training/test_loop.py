import json
import logging

import numpy as np
import pytest
import torch
from patch_factories import write_published
from tiny import TinyMatcher, narrow_rrlnet

from geomatch.errors import InputError, OutputExistsError
from geomatch.models.base import MatcherConfig
from geomatch.models.checkpoint import load_checkpoint
from geomatch.models.factory import build_matcher
from geomatch.training.augment import AugmentConfig
from geomatch.training.datasets import load_dataset
from geomatch.training.evaluate import evaluate
from geomatch.training.loop import TrainConfig, draw_batches, make_optimizer, select_validation, train


def test_narrow_rrlnet_learns_in_two_epochs(tmp_path):
    root = write_published(tmp_path / "ds", "dir", n_train=224, n_test=64, tests=("a", "b"))
    result = train(narrow_rrlnet(), str(root), out_dir=tmp_path / "run", epochs=2, batch_size=32, lr=2e-3,
                   device="cpu", validate_initial=True, progress=False)
    fprs = [h["val_fpr95"] for h in result.history]
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert min(fprs[1:]) < fprs[0] - 0.3, fprs  # untrained ~0.9; trained well below
    assert result.best_val_fpr95 == min(fprs[1:])
    for name in ("best.pt", "last.pt", "resume.pt", "metrics.jsonl", "curves.png", "run.json"):
        assert (tmp_path / "run" / name).is_file(), name
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    rec = json.loads(lines[-1])
    assert rec["epoch"] == 2 and set(rec["head_losses"]) == set(narrow_rrlnet().HEADS) and rec["pairs_per_s"] > 0
    _, meta = load_checkpoint(result.best_path)
    assert meta["architecture"] == "rrlnet" and meta["training"]["epoch"] == result.best_epoch
    # The best checkpoint evaluates on every test subset.
    report = evaluate("rrlnet", weights=result.best_path, dataset=str(root), device="cpu")
    assert set(report["subsets"]) == {"a", "b"}
    assert report["mean_fpr95"] == pytest.approx(np.mean([r["fpr95"] for r in report["subsets"].values()]))


def _tiny_run(root, out, epochs, lr=1e-2, **kw):
    torch.manual_seed(0)
    model = TinyMatcher(MatcherConfig(patch_size=32))
    return model, train(model, str(root), out_dir=out, epochs=epochs, batch_size=8, lr=lr, device="cpu",
                        progress=False, **kw)


def test_resume_continues_from_the_saved_epoch_and_matches_an_uninterrupted_run(tmp_path, caplog):
    root = write_published(tmp_path / "ds", "os", n_train=64, n_test=32)
    full, _ = _tiny_run(root, tmp_path / "full", 2)
    _, first = _tiny_run(root, tmp_path / "cut", 1)
    assert first.epochs_done == 1
    with caplog.at_level(logging.INFO, logger="geomatch.training.loop"):
        resumed, second = _tiny_run(root, tmp_path / "cut", 2, resume=True)
    assert "resuming" in caplog.text and "from epoch 2 of 2" in caplog.text
    assert [h["epoch"] for h in second.history] == [1, 2]
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), k  # same batches, augmentation and optimizer state as without the interruption


def test_resume_trains_at_the_learning_rate_it_is_given(tmp_path):
    import shutil

    root = write_published(tmp_path / "ds", "os", n_train=64, n_test=32)
    full, _ = _tiny_run(root, tmp_path / "full", 2)
    _tiny_run(root, tmp_path / "a", 1)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    slow, _ = _tiny_run(root, tmp_path / "b", 2, lr=1e-4, resume=True)
    same, _ = _tiny_run(root, tmp_path / "a", 2, resume=True)  # the run's own 1e-2
    assert all(torch.equal(a, b) for a, b in zip(full.state_dict().values(), same.state_dict().values(), strict=True))
    moved = [(a - b).abs().max().item() for a, b in zip(full.state_dict().values(), slow.state_dict().values(),
                                                          strict=True) if a.is_floating_point()]
    assert max(moved) > 1e-3  # a hundredth of the rate for the second epoch: other weights
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["lr"] for line in lines] == [1e-2, 1e-4]


def test_existing_run_needs_overwrite_or_resume(tmp_path):
    root = write_published(tmp_path / "ds", "os", n_train=32, n_test=16)
    _tiny_run(root, tmp_path / "run", 1)
    with pytest.raises(OutputExistsError, match="--resume"):
        _tiny_run(root, tmp_path / "run", 1)
    _tiny_run(root, tmp_path / "run", 1, overwrite=True)
    with pytest.raises(InputError, match="nothing to resume"):
        _tiny_run(root, tmp_path / "other", 1, resume=True)
    with pytest.raises(InputError, match="batch_size"):
        torch.manual_seed(0)
        train(TinyMatcher(MatcherConfig(patch_size=32)), str(root), out_dir=tmp_path / "run", epochs=2,
              batch_size=4, device="cpu", progress=False, resume=True)


def test_selection_clean_never_uses_tests_and_seed_reproduces_the_seed(tmp_path, caplog):
    os_root = write_published(tmp_path / "os", "os", n_train=40, n_test=16)
    ds = load_dataset("os", os_root)
    train_rows, val, desc = select_validation(ds, TrainConfig(selection="clean", val_fraction=0.25))
    assert list(val) == ["val"] and len(val["val"]) == 10 and len(train_rows) == 30
    assert val["val"].path.name == "os_train_image.npy"
    _, val, desc = select_validation(ds, TrainConfig(selection="seed"))
    assert val["os_test"] is ds.tests["os_test"] and "seed" in desc

    vn = write_published(tmp_path / "vn", "vis-nir", n_train=40, n_test=16, val_data=16)
    _, val, _ = select_validation(load_dataset("vis-nir", vn), TrainConfig(selection="seed"))
    assert list(val) == ["val_data"] and val["val_data"].blocks == 8
    (vn / "val_data.npy").unlink()
    with caplog.at_level(logging.WARNING):
        _, val, _ = select_validation(load_dataset("vis-nir", vn), TrainConfig(selection="seed"))
    assert set(val) == {"field", "forest"} and "no val_data.npy" in caplog.text


def test_sampling_and_optimizers_follow_the_seed():
    batches = draw_batches(np.random.default_rng(0), 20, 8, 30)
    assert all(len(set(b.tolist())) == 8 for b in batches)  # distinct within a batch
    assert len({tuple(sorted(b.tolist())) for b in batches}) > 1
    flat = np.concatenate(batches)
    assert np.bincount(flat, minlength=20).max() > 8  # rows recur across iterations (with replacement)
    nadam = make_optimizer(build_matcher("rrlnet", width=0.125), 2e-4)
    assert isinstance(nadam, torch.optim.NAdam)
    assert nadam.defaults["eps"] == 1e-7 and nadam.defaults["momentum_decay"] == 0.004
    adam = make_optimizer(TinyMatcher(), 2e-4)
    assert type(adam) is torch.optim.Adam and adam.defaults["eps"] == 1e-7


def test_no_augment_config_and_bad_options(tmp_path):
    root = write_published(tmp_path / "ds", "os", n_train=32, n_test=16)
    _, res = _tiny_run(root, tmp_path / "run", 1, augment=AugmentConfig(photometric=False, geometric=False),
                       max_iters_per_epoch=2)
    assert res.history[0]["iterations"] == 2
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["augment"]["photometric"] is False and run["optimizer"] == "Adam"
    with pytest.raises(InputError, match="--selection"):
        _tiny_run(root, tmp_path / "x", 1, selection="test")


def test_init_weights_starts_from_a_checkpoint(tmp_path):
    root = write_published(tmp_path / "ds", "dir", n_train=64, n_test=32, tests=("a",))
    first = train(narrow_rrlnet(), str(root), out_dir=tmp_path / "a", epochs=1, batch_size=32, lr=2e-3,
                  device="cpu", progress=False, max_iters_per_epoch=1)
    state, meta = load_checkpoint(first.last_path)
    width = meta["width"]
    cfg = TrainConfig(model="rrlnet", dataset=str(root), out_dir=str(tmp_path / "b"), width=width,
                      init_weights=str(first.last_path), epochs=1, device="cpu", progress=False)
    from geomatch.training.loop import _build_model

    start = _build_model("rrlnet", cfg, meta["patch_size"])
    for key, value in start.state_dict().items():
        assert torch.equal(value.float(), state[key].float()), key


def test_init_weights_from_a_pruned_checkpoint_restores_the_training_form(tmp_path):
    from geomatch.models.checkpoint import checkpoint_metadata, save_checkpoint
    from geomatch.models.factory import build_for_finetuning

    trained = narrow_rrlnet()
    pruned = trained.prune()
    path = tmp_path / "pruned.pt"
    save_checkpoint(pruned, path, metadata=checkpoint_metadata(pruned))
    model = build_for_finetuning("rrlnet", path, width=trained.width)
    assert model.training and not model.pruned
    assert set(model.state_dict()) == set(trained.state_dict())
    for key, value in pruned.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    p = trained.config.patch_size
    pair = (torch.rand(2, 1, p, p), torch.rand(2, 1, p, p))
    assert set(model(*pair)) == set(trained.train()(*pair))
