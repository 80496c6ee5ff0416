#!/usr/bin/env python3
"""Server benchmarks for `hadm serve` (issue 3), each printed against a
ceiling or baseline measured in the same run:

  startup   exec -> first /health 200 and exec -> /ready 200 (both models)
  health    /health requests/s with wrk (if installed) or 4 parallel
            keep-alive Python clients
  overhead  end-to-end latency of /api/v1/detect on a 1024x768 JPEG minus the
            engine time the server reports for the same request (/metrics)
  batching  images/s through /api/v1/detect with 4 concurrent clients,
            --max-batch 4 vs --max-batch 1, tiny model

Usage: bench/serve_bench.py [--bin build/hadm] [--local M --global M]
                            [--tiny-local M] [--json] [which ...]
Models default to the golden tiny models; pass full-size ones (hadm synth
--size full) for the startup figure the issue asks for. Loopback only;
every server started here is stopped before the script exits.
"""
import argparse, http.client, json, os, re, shutil, signal, socket, statistics
import subprocess, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GOLDEN = os.environ.get("HADM_GOLDEN_DIR", os.path.join(ROOT, "..", "shared", "golden"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, binary, args, env=None):
        self.port = free_port()
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([binary, "serve", "--port", str(self.port)] + args,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=dict(os.environ, **(env or {})))

    def get(self, path, timeout=2.0):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def wait_status(self, path, want=200, limit=120.0):
        while time.monotonic() - self.t0 < limit:
            try:
                if self.get(path, 0.5)[0] == want:
                    return time.monotonic() - self.t0
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %d" % self.proc.returncode)
            time.sleep(0.001)
        raise RuntimeError("%s never answered %d" % (path, want))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def multipart(path):
    boundary = "hadmbench%d" % os.getpid()
    data = open(path, "rb").read()
    body = (("--%s\r\nContent-Disposition: form-data; name=\"file\"; filename=\"%s\"\r\n"
             "Content-Type: image/jpeg\r\n\r\n") % (boundary, os.path.basename(path))).encode()
    body += data + ("\r\n--%s--\r\n" % boundary).encode()
    return body, "multipart/form-data; boundary=" + boundary


def detect(port, body, ctype, conn=None):
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    c.request("POST", "/api/v1/detect?mode=local", body, {"Content-Type": ctype})
    r = c.getresponse()
    data = r.read()
    if r.status != 200:
        raise RuntimeError("detect: %d %s" % (r.status, data[:200]))
    return json.loads(data)


def engine_seconds_total(srv):
    """Sum of the engine-time histogram of /metrics (all models, stages)."""
    text = srv.get("/metrics")[1].decode()
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'hadm_inference_seconds_sum\{[^}]*\} ([0-9.eE+-]+)', line)
        if m:
            total += float(m.group(1))
    return total


def bench_startup(a, out):
    runs = []
    for _ in range(a.reps):
        srv = Server(a.bin, ["--local", a.local, "--global", a.glob])
        try:
            h = srv.wait_status("/health")
            r = srv.wait_status("/ready")
            runs.append((h, r))
        finally:
            srv.stop()
    out["startup"] = {"health_s": statistics.median(x[0] for x in runs),
                      "ready_s": statistics.median(x[1] for x in runs), "runs": len(runs),
                      "models": [a.local, a.glob]}


def python_rps(port, seconds, clients):
    count = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        while time.monotonic() < stop:
            c.request("GET", "/health")
            c.getresponse().read()
            count[i] += 1
        c.close()
    ts = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    return sum(count) / seconds


def wrk_rps(port, seconds):
    res = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % seconds, "http://127.0.0.1:%d/health" % port],
                         capture_output=True, text=True, timeout=seconds + 30)
    m = re.search(r"Requests/sec:\s+([0-9.]+)", res.stdout)
    return float(m.group(1)) if m else 0.0


def bench_health(a, out):
    """Requests/s on /health. The issue's target is absolute (> 20,000/s);
    the same client against a trivial Python server is no ceiling worth
    printing (it saturates far below), so none is given."""
    srv = Server(a.bin, ["--local", a.tiny_local])
    try:
        srv.wait_status("/ready")
        if shutil.which("wrk"):
            rps, tool = wrk_rps(srv.port, 3), "wrk -t2 -c32 -d3s"
        else:
            rps, tool = python_rps(srv.port, 3, 4), "4 python keep-alive clients, 3 s"
    finally:
        srv.stop()
    out["health"] = {"rps": rps, "client": tool}


def make_jpeg(binary, path, w, h):
    """A w x h test JPEG without third-party modules: a PNG written with zlib,
    re-encoded as JPEG by `hadm detect --annotate` (tiny model, any boxes
    drawn do not matter here)."""
    import struct, zlib
    rows = b"".join(b"\0" + bytes(((x * 7) % 256, (y * 3) % 256, ((x + y) * 5) % 256)[c]
                                   for x in range(w) for c in range(3)) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = os.path.join(os.path.dirname(path), "src.png")
    with open(png, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
                chunk(b"IDAT", zlib.compress(rows, 6)) + chunk(b"IEND", b""))
    outdir = os.path.join(os.path.dirname(path), "annotated")
    tiny = os.path.join(GOLDEN, "tiny-local", "model.safetensors")
    subprocess.run([binary, "detect", "--local", tiny, "--annotate", outdir, png],
                   check=True, stdout=subprocess.DEVNULL)
    made = [f for f in os.listdir(outdir) if f.lower().endswith((".jpg", ".jpeg"))]
    shutil.move(os.path.join(outdir, made[0]), path)
    return path


def bench_overhead(a, out, tmp):
    img = make_jpeg(a.bin, os.path.join(tmp, "img.jpg"), 1024, 768)
    body, ctype = multipart(img)
    srv = Server(a.bin, ["--local", a.local, "--max-batch", "1", "--warmup"])
    try:
        srv.wait_status("/ready", limit=600)
        detect(srv.port, body, ctype)   # first use: packing, primitive caches
        diffs, e2e = [], []
        for _ in range(a.reps):
            e0 = engine_seconds_total(srv)
            t0 = time.monotonic()
            detect(srv.port, body, ctype)
            t = time.monotonic() - t0
            e = engine_seconds_total(srv) - e0
            e2e.append(t)
            diffs.append(t - e)
    finally:
        srv.stop()
    out["overhead"] = {"image": "1024x768 JPEG", "end_to_end_s": statistics.median(e2e),
                       "overhead_ms": 1e3 * statistics.median(diffs), "reps": len(diffs)}


def bench_batching(a, out, tmp):
    img = os.path.join(GOLDEN, "tiny-local", "test6.jpeg")
    body, ctype = multipart(img)
    rates = {}
    for mb in (1, 4):
        srv = Server(a.bin, ["--local", a.tiny_local, "--max-batch", str(mb), "--batch-timeout-ms", "5"])
        try:
            srv.wait_status("/ready")
            detect(srv.port, body, ctype)
            n, clients = 40, 4
            done = [0] * clients

            def worker(i):
                c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=300)
                for _ in range(n // clients):
                    detect(srv.port, body, ctype, c)
                    done[i] += 1
                c.close()
            t0 = time.monotonic()
            ts = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
            [t.start() for t in ts]
            [t.join() for t in ts]
            rates[mb] = sum(done) / (time.monotonic() - t0)
        finally:
            srv.stop()
    out["batching"] = {"model": a.tiny_local, "clients": 4, "img_per_s_batch1": rates[1],
                       "img_per_s_batch4": rates[4], "gain": rates[4] / rates[1]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", default=os.path.join(ROOT, "build", "hadm"))
    p.add_argument("--local", default=os.path.join(GOLDEN, "tiny-local", "model.safetensors"))
    p.add_argument("--global", dest="glob", default=os.path.join(GOLDEN, "tiny-global", "model.safetensors"))
    p.add_argument("--tiny-local", default=os.path.join(GOLDEN, "tiny-local", "model.safetensors"))
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("which", nargs="*", default=["startup", "health", "overhead", "batching"])
    a = p.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for w in a.which:
            {"startup": lambda: bench_startup(a, out), "health": lambda: bench_health(a, out),
             "overhead": lambda: bench_overhead(a, out, tmp),
             "batching": lambda: bench_batching(a, out, tmp)}[w]()
    if a.json:
        print(json.dumps(out, indent=1))
        return
    for k, v in out.items():
        print("%-9s %s" % (k, ", ".join("%s=%s" % (x, ("%.4g" % y) if isinstance(y, float) else y)
                                         for x, y in v.items())))


if __name__ == "__main__":
    main()
