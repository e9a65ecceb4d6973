"""Ray executor: shards as Ray tasks over workers that each keep one model replica (one GPU each where there are GPUs).

A task writes its shard atomically; a worker killed mid-shard leaves nothing behind and Ray retries the task,
so no row is lost or duplicated. Ray is optional (`pip install patchlab[ray]`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .errors import PatchlabError


def run_ray(
    work: Callable[[dict, object, str, str], str],
    config: dict,
    shards: Sequence,
    out: str,
    address: str | None,
    device: str,
    run_id: str = "",
    retries: int = 3,
) -> list[str]:
    """Run `work(config, shard, out, run_id)` (the runner's `compute_shard`) for every shard on a Ray cluster
    (`address`, or a local one) and wait for all."""
    try:
        import ray
    except ImportError as e:
        raise PatchlabError("the Ray executor needs ray", 'install it with: pip install "patchlab[ray]"') from e
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        env = {k: v for k, v in os.environ.items() if k in ("PATCHLAB_FAULT", "PATCHLAB_CACHE", "HF_HUB_OFFLINE")}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        gpus = 1 if device.startswith("cuda") else 0
        task = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=retries, retry_exceptions=False)(work)
        pending = [task.remote(config, s, out, run_id) for s in shards]
        done = []
        with tqdm(total=len(pending), desc="shards (ray)", unit="shard") as bar:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done += ray.get(ready)
                bar.update(len(ready))
        return done
    finally:
        if started:
            ray.shutdown()
