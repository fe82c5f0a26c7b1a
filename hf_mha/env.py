"""`mha-ft env`: versions and devices, and which of the shipped Accelerate launch configs can run on this machine,
and why not (the attention backends say it themselves: `hf_mha.attention.mha.backend_status`). `environment()`
is also saved in every run folder as env.json."""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from importlib import resources
from pathlib import Path
from typing import Any


def environment() -> dict[str, Any]:
    """Versions and devices, written into every run folder (env.json) and printed by `mha-ft env`."""
    import accelerate
    import datasets
    import peft
    import torch
    import transformers

    from .speedups import cpu_bf16_units, precision_summary

    info: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "datasets": datasets.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] or ["cpu"],
        "cpu_bf16": cpu_bf16_units(),
        "train.bf16 auto": precision_summary(),
    }
    try:
        from importlib.metadata import version

        info["mha-ft"] = version("mha-ft")
    except Exception:  # running from a source tree that is not installed
        info["mha-ft"] = None
    return info


def launch_configs_dir() -> Path:
    return Path(str(resources.files("hf_mha.recipes") / "accelerate"))


def launch_config_status() -> dict[str, tuple[bool, str]]:
    """{config name: (runs here, reason)} for every shipped accelerate config."""
    import torch
    import torch.distributed as dist
    from accelerate.commands.config.config_args import load_config_from_file

    gpus = torch.cuda.device_count()
    status = {}
    for path in sorted(launch_configs_dir().glob("*.yaml")):
        config = load_config_from_file(str(path))
        kind = str(config.distributed_type).rsplit(".", 1)[-1]
        needs_gpus = 0 if config.use_cpu else (config.num_processes if kind != "NO" else 1)
        if config.num_machines > 1:
            ok, why = False, f"needs {config.num_machines} machines (run it on a cluster, see slurm_multi_node.sbatch)"
        elif config.use_cpu:
            ok = dist.is_available() and dist.is_gloo_available()
            why = "gloo backend available" if ok else "torch built without gloo"
        elif gpus == 0:
            ok, why = False, "needs CUDA GPUs; none here"
        elif kind == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
            ok, why = False, "needs `pip install deepspeed`"
        elif config.mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
            ok, why = False, "needs bf16 (Ampere or newer); set mixed_precision: fp16"
        elif gpus < min(needs_gpus, 2) or (kind == "NO" and gpus < 1):
            ok, why = False, f"needs {needs_gpus} GPUs, have {gpus}"
        else:
            ok = True
            why = f"{min(gpus, needs_gpus)} of {gpus} GPUs" + (f" (set num_processes: {gpus})" if gpus != needs_gpus else "")
        status[path.name] = (ok, why)
    return status
