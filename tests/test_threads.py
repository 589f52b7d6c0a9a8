"""Shards of a batch on threads of their own (numpygpt.training.threads) compute what the model
computes on the whole batch: the same loss, gradients and dropout masks, to float rounding."""
import io
import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from numpygpt import kernels
from numpygpt.config import preset
from numpygpt.data import Dataset
from numpygpt.model import GPT
from numpygpt.training import threads
from numpygpt.training.dist import RankRows
from numpygpt.training.settings import TrainConfig
from numpygpt.training.threads import ThreadShards, shard_count
from numpygpt.training.trainer import Trainer

CONFIG = preset("tiny").with_(vocab_size=61, dropout=0.1, dtype="float64")


def batch(rows, seed=0):
    ids = np.random.default_rng(seed).integers(0, CONFIG.vocab_size, size=(rows, CONFIG.block_size + 1))
    x, y = ids[:, :-1], ids[:, 1:].copy()
    y[1, 3:40] = -1   # rows with uncounted targets weigh less in the mean
    return x, y


def whole_and_sharded(rows, shards, dropout_rng):
    """(loss, grads, generator) of the whole batch on one model, and the same of its shards."""
    results = []
    for n in (1, shards):
        model = GPT(CONFIG, seed=3)
        runner = model if n == 1 else ThreadShards(model, n)
        rng = dropout_rng()
        loss = runner.loss(*batch(rows), rng)
        runner.backward(0.5)
        results.append((loss, model.params.grad.copy(), rng))
    return results


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("dropout", [False, True])
def test_shards_give_the_whole_batchs_loss_and_gradients(shards, dropout):
    (loss, grad, rng), (shard_loss, shard_grad, shard_rng) = whole_and_sharded(
        6, shards, lambda: np.random.default_rng(7) if dropout else None)
    assert shard_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(shard_grad, grad, rtol=1e-10, atol=1e-14)
    if dropout:  # the generator advanced as one process's does: the next step draws alike
        assert shard_rng.integers(0, 2 ** 63) == rng.integers(0, 2 ** 63)


def test_shards_within_a_rank_draw_that_ranks_masks():
    """Under mpiexec a rank's shards are numbered within its rows of the global batch."""
    (loss, grad, _), (shard_loss, shard_grad, _) = whole_and_sharded(
        4, 2, lambda: RankRows(np.random.default_rng(7), 1))
    assert shard_loss == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(shard_grad, grad, rtol=1e-10, atol=1e-14)


def test_backward_accumulates_into_the_models_gradients():
    """Two micro-batches add up on the model, not only the last one (gradient accumulation)."""
    model, twin = GPT(CONFIG, seed=3), GPT(CONFIG, seed=3)
    shards = ThreadShards(twin, 2)
    for seed in (1, 2):
        model.loss(*batch(4, seed))
        model.backward(0.5)
        shards.loss(*batch(4, seed))
        shards.backward(0.5)
    shards.close()
    np.testing.assert_allclose(twin.params.grad, model.params.grad, rtol=1e-10, atol=1e-14)


def test_a_replica_shares_the_weights_and_keeps_its_own_gradients():
    model = GPT(CONFIG, seed=3)
    replica = model.replica()
    model.params.data[:5] += 1.0
    np.testing.assert_array_equal(replica.params.data, model.params.data)
    replica.loss(*batch(2))
    replica.backward()
    assert not model.params.grad.any() and replica.params.grad.any()


def test_a_batch_that_does_not_split_evenly_is_refused():
    shards = ThreadShards(GPT(CONFIG), 2)
    with pytest.raises(ValueError, match="3 rows"):
        shards.loss(*batch(3))
    shards.close()


def test_shard_count_follows_the_blas_threads_and_the_batch(monkeypatch):
    model = GPT(CONFIG)
    with threadpool_limits(limits=2, user_api="blas"):
        assert shard_count(model, 8) == 2
        assert shard_count(model, 7) == 1        # 2 does not divide 7
    with threadpool_limits(limits=1, user_api="blas"):
        assert shard_count(model, 8) == 1        # one core (a rank's share under mpiexec)
    with threadpool_limits(limits=2, user_api="blas"):
        monkeypatch.setattr(threads, "MAX_PARAMETERS", model.num_parameters() - 1)
        assert shard_count(model, 8) == 1        # too large to pay for a second gradient buffer


def test_a_shard_thread_takes_the_kernels_one_thread_copy(monkeypatch):
    """Above PARALLEL_MIN_SIZE a kernel splits over the cores, except on a thread that said it
    runs one shard: that thread's calls take the one-thread copy; other threads are unchanged."""
    calls = []
    for variant in ("parallel", "one_thread"):
        compiled = getattr(kernels.add_bias, variant)
        monkeypatch.setattr(kernels.add_bias, variant,
                            lambda *args, variant=variant, compiled=compiled: (calls.append(variant), compiled(*args)))
    x, bias = np.zeros((kernels.PARALLEL_MIN_SIZE // 64, 64), np.float32), np.ones(64, np.float32)

    def shard():
        kernels.run_on_calling_thread_only()
        kernels.add_bias(x, bias)
    thread = threading.Thread(target=shard)
    thread.start()
    thread.join()
    kernels.add_bias(x, bias)
    assert calls == ["one_thread", "parallel"]
    np.testing.assert_array_equal(x, 2.0)


def test_training_on_shards_follows_the_whole_batch(tmp_path, gpt2_dir):
    """The trainer's losses and evaluations with its batches on 2 shards match those on one
    model, dropout on."""
    tokens = np.random.default_rng(0).integers(0, CONFIG.vocab_size, size=2000).astype(np.uint16)
    dataset = Dataset(train=tokens[:1600], val=tokens[1600:], tokenizer_dir=gpt2_dir, name="random",
                      val_bytes=400)
    config = TrainConfig(steps=3, batch_size=4, block_size=32, warmup_steps=1, eval_interval=3,
                         eval_iters=2, log_interval=1, sample_tokens=0)
    runs = []
    for shards in (1, 2):
        trainer = Trainer(GPT(CONFIG, seed=1), dataset, config, tmp_path / str(shards), checkpoints=False,
                          stream=io.StringIO(), shards=shards)
        evaluation = trainer.run()
        runs.append([entry["loss"] for entry in trainer.history] + [evaluation["val_loss"]])
    assert len(runs[0]) == 4
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-10)


def test_the_trainer_cuts_batches_on_its_own(tmp_path, gpt2_dir):
    tokens = np.zeros(100, dtype=np.uint16)
    dataset = Dataset(train=tokens, val=tokens, tokenizer_dir=gpt2_dir, name="zeros", val_bytes=100)
    with threadpool_limits(limits=2, user_api="blas"):
        trainer = Trainer(GPT(CONFIG), dataset, TrainConfig(batch_size=4, block_size=32), tmp_path)
    assert isinstance(trainer.runner, ThreadShards) and trainer.shards == 2
