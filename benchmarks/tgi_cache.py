"""The growth-model fit in new processes with the compiled-program cache off, on and empty, on and filled.

Run ``.venv/bin/python benchmarks/tgi_cache.py [--lesions 19180] [--seed 0]``. Simulates the
``tgi_scale.py`` data (the same in each process: same seed) and runs ``TGIModel(baseline_observation="drop").fit`` in three fresh Python
processes one after the other: ``LESIONATLAS_CACHE_DIR=off``, then a new empty cache folder (the fit
compiles and stores), then the same folder (it loads). Each process turns the cache on the way the
commands do (``lesionatlas.cli._compilation_cache``) and reports its wall and CPU seconds, phase seconds
and population table; the script checks that the three tables are identical. Results go to
``benchmarks/out/tgi_cache.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tgi_scale import cohort_parser, machine

OUT = Path(__file__).resolve().parent / "out"

_CHILD = """
import json, resource, sys, time, warnings
from lesionatlas.cli import _compilation_cache
_compilation_cache()
from lesionatlas.tgi import TGIModel
sys.path.insert(0, sys.argv[1])
from tgi_scale import simulate
_, cohort = simulate(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
wall, cpu = time.perf_counter(), time.process_time()
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    fit = TGIModel(baseline_observation="drop").fit(cohort, seed=0)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "phase_seconds": fit.diagnostics["phase_seconds"],
                  "population": fit.population.to_csv(index=False)}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = cohort_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)

    runs = []
    data = [str(Path(__file__).resolve().parent), str(args.lesions), str(args.seed), str(args.max_scans)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cache"
        for name, setting in (("off", "off"), ("on, empty", str(folder)), ("on, filled", str(folder))):
            env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "LESIONATLAS_CACHE"))}
            env["LESIONATLAS_CACHE_DIR"] = setting
            done = subprocess.run([sys.executable, "-c", _CHILD, *data], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
            result = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append({"cache": name, **result})
            print(f"cache {name}: {result['wall']:.1f} s wall, {result['cpu']:.1f} s CPU, "
                  f"phases {result['phase_seconds']}", flush=True)
    identical = all(run["population"] == runs[0]["population"] for run in runs)
    print("population tables identical:", identical)
    OUT.mkdir(exist_ok=True)
    (OUT / "tgi_cache.json").write_text(json.dumps({"args": vars(args), "machine": machine(), "identical": identical,
                                                    "runs": runs}, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
