"""A bounded soak on loopback: good, bad and abandoned requests to every public model, over HTTP and gRPC, from
`--concurrency` clients for `--minutes` in all, split across `--presets` (one server each).

    python -m benchmarks.soak --minutes 20 --concurrency 7

Per preset it reports requests by outcome; good requests lost (a good request that did not come back with its
outputs: must be 0); how often and how long good requests were refused as busy before they were served (a refused
request is retried, as a client that must not give up would: jittered back-off capped at `MAX_BACKOFF_S`, for up to
`--patience` seconds); the proportional set size (PSS) of the server and of its python-backend stubs, and the
/dev/shm regions they map, after a warm phase, every `--sample-seconds` and at the end (growth over the whole run and
over its second half: a pool that has reached its size stops growing, a leak does not), with the stubs that grew
most; whether the server is still ready; and that a cancelled request stops its denoising loop (objectclear_unet's
execution count over the seconds after a gRPC client cancels a long request). Writes outputs/soak.json and prints the
BENCHMARKS.md rows.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import skimage.data
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from server.launcher import TritonServer

MAX_BACKOFF_S = 4.0  # waits double from 0.25 s up to this, so a refused client keeps its chances


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


PHOTO = skimage.data.chelsea()[::2, ::2].copy()  # 226x150
MASK = np.zeros(PHOTO.shape[:2], np.uint8)
MASK[40:110, 60:170] = 255


def tensors(kind: str, rng: random.Random) -> tuple[str, dict]:
    """(model, inputs as name -> (array, datatype)) for one request of `kind`: good or bad (an INVALID_ARG case)."""
    image, mask = (np.array([png(PHOTO)], np.object_), "BYTES"), (np.array([png(MASK)], np.object_), "BYTES")
    text = lambda s: (np.array([s.encode()], np.object_), "BYTES")  # noqa: E731
    int32 = lambda v: (np.array([v], np.int32), "INT32")  # noqa: E731
    fp32 = lambda v: (np.array([v], np.float32), "FP32")  # noqa: E731
    seed = (np.array([rng.randrange(1000)], np.int64), "INT64")
    good = [
        ("objectclear_inpaint", dict(IMAGE=image, MASK=mask, SEED=seed, STEPS=int32(2))),
        ("remove_object", dict(IMAGE=image, PROMPT=text("a cat"), SEED=seed, STEPS=int32(2))),
        ("sam3_segment", dict(IMAGE=image, PROMPT=text("the cat's ears and nose, " * 4))),
        ("flux_generate", dict(PROMPT=text("a red bicycle"), SEED=seed, WIDTH=int32(256), HEIGHT=int32(256),
                               STEPS=int32(2))),
        ("flux_fill_inpaint", dict(IMAGE=image, MASK=mask, SEED=seed, STEPS=int32(2))),
    ]
    bad = [
        ("objectclear_inpaint", dict(IMAGE=(np.array([b"not an image"], np.object_), "BYTES"), MASK=mask)),
        ("remove_object", dict(IMAGE=image, PROMPT=text(""))),
        ("sam3_segment", dict(IMAGE=image, PROMPT=text("a cat"), SCORE_THRESHOLD=fp32(float("nan")))),
        ("flux_generate", dict(PROMPT=text("x" * 5000))),
        ("flux_fill_inpaint", dict(IMAGE=image, MASK=(np.array([png(MASK[:10, :10])], np.object_), "BYTES"))),
    ]
    return rng.choice(good if kind == "good" else bad)


def triton_inputs(module, named: dict) -> list:
    out = []
    for name, (value, datatype) in named.items():
        tensor = module.InferInput(name, list(value.shape), datatype)
        tensor.set_data_from_numpy(value)
        out.append(tensor)
    return out


class Soak:
    def __init__(self, server: TritonServer, patience_s: float):
        self.server, self.patience_s = server, patience_s
        self.outcomes: Counter = Counter()
        self.most_refusals, self.longest_wait_s = 0, 0.0
        self.lock = threading.Lock()

    def clear(self) -> None:
        with self.lock:
            self.outcomes.clear()
            self.most_refusals, self.longest_wait_s = 0, 0.0

    def count(self, outcome: str) -> None:
        with self.lock:
            self.outcomes[outcome] += 1

    def worker(self, deadline: float, seed: int) -> None:
        rng = random.Random(seed)
        while time.monotonic() < deadline:
            kind = rng.choices(["good", "bad", "abandoned"], weights=[70, 15, 15])[0]
            protocol = rng.choice(["http", "grpc"])
            try:
                getattr(self, kind)(protocol, rng)
            except Exception as error:  # noqa: BLE001 -- counted, and reported
                self.count(f"{kind} {protocol}: client exception {type(error).__name__}: {str(error)[:80]}")

    def client(self, protocol: str):
        if protocol == "http":
            return httpclient.InferenceServerClient(self.server.http_url, network_timeout=600)
        return grpcclient.InferenceServerClient(self.server.grpc_url)

    def good(self, protocol: str, rng: random.Random) -> None:
        model, named = tensors("good", rng)
        module = httpclient if protocol == "http" else grpcclient
        started, refusals = time.monotonic(), 0
        while True:
            try:
                with self.client(protocol) as client:
                    result = client.infer(model, triton_inputs(module, named))
                first = result.as_numpy({"sam3_segment": "SCORES"}.get(model, "IMAGE"))
                assert first is not None
                self.count(f"good {protocol}: served" + (" after a refusal" if refusals else ""))
                if refusals:
                    self.refused_then_served(refusals, time.monotonic() - started)
                return
            except InferenceServerException as error:
                busy = str(error.status()) in ("503", "StatusCode.UNAVAILABLE")
                if busy and time.monotonic() - started < self.patience_s:
                    time.sleep(rng.uniform(0.5, 1.0) * min(MAX_BACKOFF_S, 0.25 * 2 ** refusals))
                    refusals += 1
                    continue
                self.count(f"good {protocol}: LOST ({error.status()}: {error.message()[:80]})")
                return

    def refused_then_served(self, refusals: int, seconds: float) -> None:
        with self.lock:
            self.most_refusals = max(self.most_refusals, refusals)
            self.longest_wait_s = max(self.longest_wait_s, seconds)

    def bad(self, protocol: str, rng: random.Random) -> None:
        model, named = tensors("bad", rng)
        module = httpclient if protocol == "http" else grpcclient
        try:
            with self.client(protocol) as client:
                client.infer(model, triton_inputs(module, named))
            self.count(f"bad {protocol}: SERVED (should be refused)")
        except InferenceServerException as error:
            status = str(error.status())
            if status in ("400", "StatusCode.INVALID_ARGUMENT"):
                self.count(f"bad {protocol}: INVALID_ARG")
            elif status in ("503", "StatusCode.UNAVAILABLE"):
                self.count(f"bad {protocol}: refused as busy")
            else:
                self.count(f"bad {protocol}: {status}")

    def abandoned(self, protocol: str, rng: random.Random) -> None:
        """The client leaves mid-request: gRPC cancels its call; HTTP drops the connection at a short timeout."""
        model, named = tensors("good", rng)
        leave_after = rng.uniform(0.2, 1.5)
        if protocol == "grpc":
            done = threading.Event()
            with grpcclient.InferenceServerClient(self.server.grpc_url) as client:
                call = client.async_infer(model, triton_inputs(grpcclient, named), callback=lambda *_, **__: done.set())
                finished = done.wait(leave_after)
                if not finished:
                    call.cancel()
            self.count(f"abandoned grpc: {'finished first' if finished else 'cancelled'}")
        else:
            try:
                with httpclient.InferenceServerClient(self.server.http_url, network_timeout=leave_after) as client:
                    client.infer(model, triton_inputs(httpclient, named))
                self.count("abandoned http: finished first")
            except Exception:  # noqa: BLE001 -- the timeout is the point
                self.count("abandoned http: connection dropped")


# -- memory -----------------------------------------------------------------------------------------------------------
def processes(server: TritonServer) -> dict[str, list[int]]:
    """{"server": [pid], "stubs": [pids]}: the tritonserver process and its python-backend stubs."""
    stubs = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parent = int(stat.rsplit(")", 1)[1].split()[1])
                if parent == server.process.pid:
                    stubs.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue
    return {"server": [server.process.pid], "stubs": stubs}


def pss_mib(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        return int(re.search(r"^Pss:\s+(\d+) kB", text, re.M).group(1)) / 1024
    except (OSError, AttributeError):
        return 0.0


def stub_identity(pid: int) -> tuple[str, str]:
    """(model instance name, its /dev/shm region) from a stub's command line (e.g. flux_vae_encoder_0_0)."""
    try:
        fields = [f.decode() for f in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        return fields[8], fields[2]
    except (OSError, IndexError):
        return str(pid), ""


def allocated_mib(path: str) -> float:
    try:
        return os.stat(path).st_blocks * 512 / 2 ** 20
    except OSError:
        return 0.0


def shm_mib(pids: list[int]) -> float:
    """What the /dev/shm files these processes map hold (allocated blocks), each file once."""
    files = set()
    for pid in pids:
        try:
            files |= set(re.findall(r"(/dev/shm/\S+)", Path(f"/proc/{pid}/maps").read_text()))
        except OSError:
            continue
    return sum(allocated_mib(f) for f in files)


TOTALS = ("server_pss_mib", "stubs_pss_mib", "dev_shm_mib")


def memory(server: TritonServer) -> dict:
    """The totals, and each stub's PSS and /dev/shm region by model instance: which process grew, and in what, tells
    a pool reaching its mark from a leak."""
    pids = processes(server)
    stubs = {pid: stub_identity(pid) for pid in pids["stubs"]}
    pss = {name: pss_mib(pid) for pid, (name, _) in stubs.items()}
    return {"server_pss_mib": round(pss_mib(server.process.pid), 1), "stubs_pss_mib": round(sum(pss.values()), 1),
            "stubs": len(stubs), "dev_shm_mib": round(shm_mib(pids["server"] + pids["stubs"]), 1),
            "stub_pss_mib": {name: round(mib, 1) for name, mib in sorted(pss.items())},
            "stub_shm_mib": {name: allocated_mib(f"/dev/shm/{region}") for name, region in sorted(stubs.values())}}


# -- cancellation -----------------------------------------------------------------------------------------------------
def unet_executions(server: TritonServer) -> int:
    with httpclient.InferenceServerClient(server.http_url) as client:
        stats = client.get_inference_statistics("objectclear_unet")["model_stats"][0]
    return int(stats["execution_count"])


def cancellation(server: TritonServer) -> dict:
    """A 100-step request, cancelled by its gRPC client once its loop runs: UNet executions after the cancel."""
    named = dict(IMAGE=(np.array([png(PHOTO)], np.object_), "BYTES"), MASK=(np.array([png(MASK)], np.object_), "BYTES"),
                 STEPS=(np.array([100], np.int32), "INT32"))
    before = unet_executions(server)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        call = client.async_infer("objectclear_inpaint", triton_inputs(grpcclient, named),
                                  callback=lambda *_, **__: None)
        deadline = time.monotonic() + 120
        while unet_executions(server) < before + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        call.cancel()
        cancelled_at = unet_executions(server)
        samples = []
        for _ in range(6):
            time.sleep(0.5)
            samples.append(unet_executions(server) - cancelled_at)
    return {"steps_run_before_cancel": cancelled_at - before, "executions_after_cancel_every_0_5_s": samples,
            "stopped": samples[-1] == samples[-3] and samples[-1] <= 2}


def load(soak: Soak, seconds: float, concurrency: int, seed: int) -> float:
    """`concurrency` clients for `seconds`; returns the time it took (requests under way finish)."""
    started = time.monotonic()
    workers = [threading.Thread(target=soak.worker, args=(started + seconds, seed + i)) for i in range(concurrency)]
    [w.start() for w in workers]
    [w.join() for w in workers]
    return time.monotonic() - started


def sample_memory(server: TritonServer, every_s: float, stop: threading.Event, samples: list) -> None:
    started = time.monotonic()
    while not stop.wait(every_s):
        samples.append({"s": round(time.monotonic() - started), **memory(server)})


def growth_percent(before: dict, after: dict) -> dict:
    return {k: round(100 * (after[k] - before[k]) / before[k], 1) for k in TOTALS if before[k]}


def largest_growth(before: dict, after: dict, key: str, n: int = 5) -> list:
    """The n stubs whose `key` (stub_pss_mib, stub_shm_mib) grew most: [name, MiB before, MiB after]."""
    def growth(name: str) -> float:
        return after[key][name] - before[key].get(name, 0)
    return [[name, before[key].get(name), after[key][name]] for name in sorted(after[key], key=growth)[::-1][:n]]


def run_preset(preset: str, seconds: float, concurrency: int, seed: int, warm_seconds: float, warm_concurrency: int,
               sample_seconds: float, patience_s: float) -> dict:
    server = TritonServer(preset=preset)
    server.start(timeout=900)  # a loaded shared machine takes minutes to load the ~20 models
    try:
        soak = Soak(server, patience_s)
        # What the processes hold after a load is its high-water mark: ONNX Runtime's arenas keep the largest batch
        # each network has run, the python backend's /dev/shm pools the most tensors in flight at once. Admission
        # control bounds both, by instance counts and queue sizes; the warm phase saturates those bounds, so that
        # growth afterwards is a leak rather than a mark not yet reached.
        load(soak, warm_seconds, warm_concurrency, seed * 100)
        before = memory(server)
        soak.clear()
        samples, stop = [], threading.Event()
        sampler = threading.Thread(target=sample_memory, args=(server, sample_seconds, stop, samples))
        sampler.start()
        elapsed = load(soak, seconds, concurrency, seed * 1000)
        stop.set()
        sampler.join()
        time.sleep(2)  # cancelled requests unwinding
        after = memory(server)
        halfway = min(samples, key=lambda m: abs(m["s"] - elapsed / 2), default=before)
        cancelled = cancellation(server)
        with httpclient.InferenceServerClient(server.http_url) as client:
            ready = client.is_server_ready()
    finally:
        server.stop()
    lost = sum(n for outcome, n in soak.outcomes.items() if "LOST" in outcome or outcome.startswith("good")
               and "exception" in outcome)
    return {"preset": preset, "seconds": round(elapsed), "concurrency": concurrency,
            "requests": sum(soak.outcomes.values()), "outcomes": dict(sorted(soak.outcomes.items())),
            "good_lost": lost, "most_refusals_before_served": soak.most_refusals,
            "longest_wait_before_served_s": round(soak.longest_wait_s, 1),
            "memory_before": before, "memory_halfway": halfway, "memory_after": after, "memory_samples": samples,
            "growth_percent": growth_percent(before, after),
            "growth_second_half_percent": growth_percent(halfway, after),
            "largest_growth_mib": {key: largest_growth(before, after, key) for key in ("stub_pss_mib", "stub_shm_mib")},
            "cancellation": cancelled, "server_ready_after": ready}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="load time in all, split across the presets")
    parser.add_argument("--concurrency", type=int, default=7, help="clients (6-8 in the issue)")
    parser.add_argument("--presets", nargs="+", default=["balanced", "ultra_fast", "low_memory", "quality"])
    parser.add_argument("--warm-seconds", type=float, default=180.0,
                        help="load before the first memory sample: first-call allocations and the pools reaching their "
                             "high-water mark are not growth")
    parser.add_argument("--warm-concurrency", type=int,
                        help="clients in the warm phase (default twice --concurrency: every model's queue full)")
    parser.add_argument("--sample-seconds", type=float, default=30.0, help="memory sampled this often under load")
    parser.add_argument("--patience", type=float, default=600.0,
                        help="seconds a good request is retried while refused as busy (the queue timeout is 300 s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/soak.json"))
    args = parser.parse_args(argv)
    seconds = 60 * args.minutes / len(args.presets)
    report = []
    for i, preset in enumerate(args.presets):
        report.append(run_preset(preset, seconds, args.concurrency, args.seed + i, args.warm_seconds,
                                 args.warm_concurrency or 2 * args.concurrency, args.sample_seconds, args.patience))
        print(json.dumps(report[-1]), flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
    for r in report:
        m0, m1, g, h = r["memory_before"], r["memory_after"], r["growth_percent"], r["growth_second_half_percent"]
        row = [r["preset"], r["seconds"], r["requests"], r["good_lost"],
               f"{r['most_refusals_before_served']} / {r['longest_wait_before_served_s']} s"]
        row += [f"{m0[k]:.0f} -> {m1[k]:.0f} ({g.get(k, 0):+.1f}%; {h.get(k, 0):+.1f}%)" for k in TOTALS]
        ready = "yes" if r["server_ready_after"] else "**no**"
        row += [r["cancellation"]["executions_after_cancel_every_0_5_s"], ready]
        print("| " + " | ".join(map(str, row)) + " |")
    return 0 if all(r["good_lost"] == 0 and r["server_ready_after"] for r in report) else 1


if __name__ == "__main__":
    raise SystemExit(main())
