"""LoraProfilerCallback on a real transformers.Trainer with a tiny PEFT model: the report holds the
loop's steps and the floor, and training is exactly what it is without the callback."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments  # noqa: E402

from lora_profiler.integrations import replay  # noqa: E402
from lora_profiler.integrations.hf import LoraProfilerCallback, window_plan  # noqa: E402

_DOC_TEST = Path(__file__).with_name("test_format_doc.py")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine two threads wait on each other for
    seconds per step; both runs of a comparison use the same setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Tokens(torch.utils.data.Dataset):
    """Random token sequences, made in code (labels = inputs: causal LM)."""

    def __init__(self, n=64, seq=16, vocab=128):
        self.ids = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_peft_model():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
                         attention_dropout=0.1)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj"])
    return get_peft_model(LlamaForCausalLM(config), lora)


class MetricsTrainer(Trainer):
    """Keeps per-batch metrics from compute_loss, as TRL's trainers do (``_metrics``): a floor
    replay through compute_loss must not leave its batches' metrics behind."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._metrics = {"train": {"loss_seen": []}}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        self._metrics["train"]["loss_seen"].append(float(loss.detach()))
        self.batches_seen = getattr(self, "batches_seen", 0) + 1
        return loss


def train(tmp_path, callback=None, max_steps=12, trainer_class=Trainer, **overrides):
    args = dict(output_dir=str(tmp_path / "trainer"), max_steps=max_steps, per_device_train_batch_size=4,
                gradient_accumulation_steps=2, learning_rate=1e-3, max_grad_norm=1.0, logging_steps=1,
                use_cpu=True, report_to=[], save_strategy="no", dataloader_num_workers=0, disable_tqdm=True)
    args.update(overrides)
    trainer = trainer_class(model=tiny_peft_model(), args=TrainingArguments(**args), train_dataset=Tokens(),
                            callbacks=[callback] if callback else None)
    trainer.train()
    return trainer


def assert_same_training(a, b):
    """Weights, optimizer state, LR schedule, loss curve and RNG: bitwise the same."""
    pa, pb = dict(a.model.named_parameters()), dict(b.model.named_parameters())
    assert pa.keys() == pb.keys()
    assert all(torch.equal(pa[k], pb[k]) for k in pa), [k for k in pa if not torch.equal(pa[k], pb[k])][:3]
    assert all(pa[k].requires_grad == pb[k].requires_grad for k in pa)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["state"].keys() == sb["state"].keys() and sa["state"]
    for k in sa["state"]:
        for name, v in sa["state"][k].items():
            assert torch.equal(v, sb["state"][k][name]) if isinstance(v, torch.Tensor) else v == sb["state"][k][name]
    assert a.lr_scheduler.state_dict() == b.lr_scheduler.state_dict()
    curve = [(h.get("loss"), h.get("grad_norm"), h.get("learning_rate")) for h in a.state.log_history]
    assert curve == [(h.get("loss"), h.get("grad_norm"), h.get("learning_rate")) for h in b.state.log_history]
    assert len([c for c in curve if c[0] is not None]) == a.state.global_step
    assert all(m.training == n.training for m, n in zip(a.model.modules(), b.model.modules()))
    assert all(p.grad is None for p in a.model.parameters())


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """The same training with and without the callback (GA 2, dropout, clipping, logging every step)."""
    tmp = tmp_path_factory.mktemp("cb")
    cb = LoraProfilerCallback(out=tmp / "run", start_step=1, steps=4, block=2, profile_steps=1,
                              figures=False, verbose=False)
    with_cb = train(tmp, cb)
    without = train(tmp)
    after_rng = torch.get_rng_state()
    return cb, with_cb, without, tmp / "run", after_rng


def test_training_is_identical_with_the_callback(observed):
    cb, with_cb, without, _, _ = observed
    assert_same_training(with_cb, without)
    # nothing of the callback is left on the trainer or the model
    assert "compute_loss" not in vars(with_cb) and "training_step" not in vars(with_cb)
    assert "backward" not in vars(with_cb.accelerator)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in with_cb.model.modules()
                   if type(m).__module__.startswith("torch.nn"))


def test_report_holds_the_loop_steps_and_the_floor(observed):
    cb, trainer, _, out, _ = observed
    facts = json.loads((out / "facts.json").read_text())
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file()
    assert facts["workload"]["source"] == "trainer" and facts["adapters"]["source"] == "peft"
    lora, frozen = facts["modes"]["lora"], facts["modes"]["frozen"]
    assert lora["status"] == "ok" and frozen["status"] == "ok", (lora["error"], frozen["error"])
    assert lora["step_time_s"]["n"] == 4 and frozen["step_time_s"]["n"] == 4
    assert lora["phase_time_s"]["optimizer"] > 0 and frozen["phase_time_s"]["optimizer"] == 0
    assert frozen["phase_time_s"]["backward"] > 0  # the floor runs backward through the network
    assert lora["trainable_params"] == trainer.model.get_nb_trainable_parameters()[0]
    assert frozen["trainable_params"] == 0
    assert lora["saved_activations"]["total_bytes"] > frozen["saved_activations"]["total_bytes"] > 0
    tr = facts["trainer"]
    # the timed steps are the loop's own: global steps after the warm-up, as planned
    assert tr["window"]["plan"] == [k for k, _ in window_plan(4, 2, 1)]
    assert tr["window"]["timed_steps"] == [3, 4, 6, 7] and tr["window"]["profiled_steps"] == [9]
    assert tr["settings"]["gradient_accumulation_steps"] == 2 and tr["micro_steps"] == 2
    assert tr["settings"]["precision"] == "fp32" and tr["settings"]["max_grad_norm"] == 1.0
    assert all(s >= p for s, p in zip(tr["step_time_s"]["samples"], lora["step_time_s"]["samples"]))
    causes = tr["causes"]
    assert causes["grad_clip"]["n"] == 4 and causes["grad_clip"]["seconds"] > 0
    assert causes["data_wait"]["seconds"] > 0 and causes["logging"]["logging_steps_seen"] >= 1
    for mode in ("lora", "frozen"):
        [trace] = facts["modes"][mode]["trace_files"]
        assert trace.startswith(f"tb/{mode}/") and (out / trace).is_file()
    att = report["attribution"]
    assert att is not None and att["rounds"] == 1 and att["overhead_s"] is not None
    assert facts["calibration"]["cost_us"]["op_top"] > 0 and "notes" not in att
    assert att["causes"]["lora_A"]["seconds"] > 0 and att["causes"]["lora_B"]["seconds"] > 0
    assert att["adapter_launches"] > 0
    # two forward and two backward scopes per profiled step (gradient accumulation), summed
    assert att["profiler"]["unexplained"]["lora"]["forward"]["rounds"] == 1
    assert "## The Trainer's loop (Trainer)" in (out / "report.md").read_text()


def test_callback_facts_are_documented(observed):
    spec = importlib.util.spec_from_file_location("format_doc", _DOC_TEST)
    doc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(doc)
    out = observed[3]
    facts = json.loads((out / "facts.json").read_text())
    report = json.loads((out / "report.json").read_text())
    (fdoc, fopt), (top, top_opt), (att, att_opt), *_ = doc.blocks()
    doc._check(facts, fdoc, fopt)
    doc._check({k: v for k, v in report.items() if k not in facts or k in ("kind", "version")}, top, top_opt)
    doc._check({"attribution": report["attribution"]}, att, att_opt)


def test_bf16_autocast_and_gradient_checkpointing(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=1, steps=2, block=2, profile_steps=1,
                              calibrate=False, report=False, verbose=False)
    kw = dict(bf16=True, gradient_checkpointing=True, max_steps=8)
    assert_same_training(train(tmp_path, cb, **kw), train(tmp_path, **kw))
    facts = cb.facts
    st = facts["trainer"]["settings"]
    assert st["precision"] == "bf16" and st["gradient_checkpointing"] is True
    assert facts["modes"]["frozen"]["status"] == "ok", facts["modes"]["frozen"]["error"]
    assert facts["modes"]["lora"]["step_time_s"]["n"] == 2 and facts["modes"]["frozen"]["step_time_s"]["n"] == 2
    assert facts["trainer"]["floor"]["problems"] == []


def test_trainer_state_kept_by_compute_loss_is_restored(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=1, steps=2, block=2, profile_steps=1,
                              calibrate=False, report=False, verbose=False)
    a = train(tmp_path, cb, max_steps=8, trainer_class=MetricsTrainer)
    b = train(tmp_path, max_steps=8, trainer_class=MetricsTrainer)
    assert_same_training(a, b)
    assert a._metrics == b._metrics and len(a._metrics["train"]["loss_seen"]) == 16
    assert a.batches_seen == b.batches_seen == 16  # attributes a replay set are put back too
    assert cb.facts["modes"]["frozen"]["status"] == "ok"


@pytest.mark.slow
def test_torch_compile(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=0, steps=1, block=1, profile_steps=1,
                              calibrate=False, figures=False, verbose=False)
    assert_same_training(train(tmp_path, cb, max_steps=5, torch_compile=True),
                         train(tmp_path, max_steps=5, torch_compile=True))
    facts = cb.facts
    assert facts["trainer"]["settings"]["torch_compile"] is True
    assert facts["modes"]["lora"]["step_time_s"]["n"] == 1 and facts["modes"]["frozen"]["status"] == "ok"
    assert any("torch.compile" in line for line in facts["trainer"]["not_measured"])
    assert cb.report["attribution"] is not None  # phases and ops traced, without adapter scopes


def test_full_fine_tuning_on_a_copy(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=1, steps=2, block=2, profile_steps=1, full=True,
                              calibrate=False, figures=False, verbose=False)
    assert_same_training(train(tmp_path, cb), train(tmp_path))
    full = cb.facts["modes"]["full"]
    assert full["status"] == "ok" and full["step_time_s"]["n"] == 2
    assert full["trainable_params"] + cb.facts["modes"]["lora"]["trainable_params"] == \
        cb.facts["workload"]["total_params"]
    assert cb.facts["trainer"]["full"]["optimizer_class"] == "AdamW"
    assert cb.facts["trainer"]["floor"]["problems"] == []  # the copy's weights train; the loop's do not
    assert cb.report["attribution"]["vs_full"] is not None


def test_full_says_so_when_memory_is_short(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "available_bytes", lambda device: 1024)
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=0, steps=1, block=1, profile_steps=0, full=True,
                              calibrate=False, report=False, verbose=False)
    train(tmp_path, cb, max_steps=4)
    full = cb.facts["modes"]["full"]
    assert full["status"] == "skipped" and "not enough free memory" in full["error"]
    assert any("not enough free memory" in line for line in cb.facts["trainer"]["not_measured"])
    assert cb.facts["modes"]["frozen"]["status"] == "ok"


def test_training_that_ends_inside_the_window(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=1, steps=6, block=2, profile_steps=1,
                              calibrate=False, report=False, verbose=False)
    train(tmp_path, cb, max_steps=5)
    tr = cb.facts["trainer"]
    assert tr["window"]["complete"] is False and tr["window"]["timed_steps"] == [3, 4]
    assert any("before the observed window was complete" in n for n in cb.facts["workload"]["notes"])
    assert cb.facts["modes"]["frozen"]["step_time_s"]["n"] == 2


def test_training_that_ends_inside_a_round(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=1, steps=4, block=3, profile_steps=1,
                              calibrate=False, report=False, verbose=False)
    train(tmp_path, cb, max_steps=4)  # steps 1 setup, 2 switch, 3 timed; the round's other steps never come
    assert cb.facts["modes"]["lora"]["step_time_s"]["n"] == 1
    assert cb.facts["modes"]["frozen"]["step_time_s"]["n"] == 1  # the pending step was replayed at the end


def test_callback_failure_leaves_training_alone(tmp_path, monkeypatch):
    from lora_profiler.integrations import hf

    def broken(trainer, micros):
        raise KeyError("a bug in the callback")
    monkeypatch.setattr(hf, "prepared", broken)
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=1, steps=2, block=2, profile_steps=0,
                              calibrate=False, report=False, verbose=False)
    a = train(tmp_path, cb, max_steps=6)
    assert_same_training(a, train(tmp_path, max_steps=6))
    assert cb.state == "off" and "training_step" not in vars(a)


def test_window_after_the_end_writes_nothing(tmp_path):
    cb = LoraProfilerCallback(out=tmp_path / "run", start_step=50, steps=2, verbose=False)
    trainer = train(tmp_path, cb, max_steps=3)
    assert cb.facts is None and not (tmp_path / "run" / "facts.json").exists()
    assert "training_step" not in vars(trainer)


def test_refuses_a_used_folder(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "facts.json").write_text("{}")
    with pytest.raises(ValueError, match="not empty"):
        LoraProfilerCallback(out=tmp_path / "used")
    with pytest.raises(ValueError, match="steps >= 1"):
        LoraProfilerCallback(out=tmp_path / "new", steps=0)


def test_window_plan():
    plan = window_plan(5, 2, 2)
    assert [k for k, _ in plan].count("timed") == 5 and plan[0] == ("setup", -1)
    assert [k for k, _ in plan].count("profiled") == 2
    kinds = [k for k, _ in plan]
    assert all(kinds[i + 1] == "profiled" for i, k in enumerate(kinds) if k == "profile_warmup")
