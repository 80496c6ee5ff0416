"""Load and soak client for tests/test_soak.sh (python3 standard library only).

  soak.py URL KEY IMG CORRUPT SECONDS [WORKERS]

1. Measures capacity: good detect requests from 2 closed-loop clients (--max-batch 2) for a
   few seconds (requests/s).
2. Offers twice that rate of engine work, open loop, for SECONDS: WORKERS threads each keep
   a schedule of arrival times and send late when behind. The mix, in a fixed
   pattern: 70% good images, 10% corrupt images (400), 10% bodies over the
   size limit (413), 10% without the API key (401). One request per connection, so every
   request can get at most one response; each must get exactly one.
3. Samples the server's RSS from /metrics every second.
Prints the accounting and a JSON line `SOAK {...}` for the shell to assert on.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

MIX = [("good", 70), ("corrupt", 10), ("huge", 10), ("unauthorised", 10)]
# Arrival n is of kind PATTERN[n % 10]: the MIX proportions, spread so that a
# short run sees every kind.
PATTERN = ["good", "huge", "good", "good", "unauthorised", "good", "corrupt", "good", "good", "good"]
TIMEOUT = 120


class Target:
    def __init__(self, url, key, img, corrupt):
        u = urllib.parse.urlparse(url)
        self.host, self.port, self.key = u.hostname, u.port, key
        self.bodies = {"good": open(img, "rb").read(), "corrupt": open(corrupt, "rb").read(),
                       "huge": b"\xff\xd8" + b"\0" * (2 << 20), "unauthorised": open(img, "rb").read()}

    def send(self, kind):
        """Returns (status or None, seconds, headers, body)."""
        headers = {"Content-Type": "image/jpeg", "Connection": "close"}
        if kind != "unauthorised":
            headers["X-API-Key"] = self.key
        t0 = time.time()
        try:
            c = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
            c.request("POST", "/api/v1/detect?mode=local", body=self.bodies[kind], headers=headers)
            r = c.getresponse()
            body = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            c.close()
            return r.status, time.time() - t0, hdrs, body
        except (OSError, http.client.HTTPException) as e:
            return None, time.time() - t0, {}, repr(e).encode()

    def metrics(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=30)
        c.request("GET", "/metrics", headers={"X-API-Key": self.key})
        text = c.getresponse().read().decode()
        c.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def capacity(t, seconds=4.0, clients=2):
    done = []
    stop = time.time() + seconds

    def loop():
        while time.time() < stop:
            st, dt, _, _ = t.send("good")
            if st == 200:
                done.append(dt)

    th = [threading.Thread(target=loop) for _ in range(clients)]
    t0 = time.time()
    for x in th:
        x.start()
    for x in th:
        x.join()
    return max(len(done), 1) / (time.time() - t0)


def soak(t, seconds, rate, workers):
    results = []
    lock = threading.Lock()
    t_start = time.time() + 0.2

    def worker(k):
        i = 0
        while True:
            due = t_start + (k + i * workers) / rate
            if due > t_start + seconds:
                return
            wait = due - time.time()
            if wait > 0:
                time.sleep(wait)
            kind = PATTERN[(k + i * workers) % len(PATTERN)]
            st, dt, hdrs, body = t.send(kind)
            with lock:
                results.append((kind, st, dt, hdrs.get("retry-after"), body[:200]))
            i += 1

    th = [threading.Thread(target=worker, args=(k,)) for k in range(workers)]
    for x in th:
        x.start()
    rss = []
    while any(x.is_alive() for x in th):
        try:
            rss.append((time.time() - t_start, t.metrics().get("hadm_process_resident_memory_bytes", 0)))
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(1.0)
    for x in th:
        x.join()
    return results, rss


def pct(values, q):
    if not values:
        return 0.0
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def main():
    url, key, img, corrupt, seconds = sys.argv[1:6]
    workers = int(sys.argv[6]) if len(sys.argv) > 6 else 48
    seconds = float(seconds)
    t = Target(url, key, img, corrupt)
    cap = capacity(t)
    # Good and corrupt images need the engine (80% of arrivals); the rest are
    # answered from the headers. Twice the capacity is for the former.
    rate = 2 * cap / 0.8
    m0 = t.metrics()
    results, rss = soak(t, seconds, rate, workers)
    m1 = t.metrics()

    by_status, by_kind = {}, {}
    lost, bad_503 = [], 0
    for kind, st, dt, retry, body in results:
        key_ = str(st) if st is not None else "none"
        by_status[key_] = by_status.get(key_, 0) + 1
        by_kind.setdefault(kind, {}).setdefault(key_, 0)
        by_kind[kind][key_] += 1
        if st is None:
            lost.append(body.decode("utf-8", "replace"))
        if st == 503 and (retry is None or b"queue full" not in body):
            bad_503 += 1
    route = 'hadm_http_requests_total{route="/api/v1/detect",status="%s"}'
    server = {s: int(m1.get(route % s, 0) - m0.get(route % s, 0)) for s in by_status if s != "none"}
    rejected = int(m1.get("hadm_queue_rejected_total", 0) - m0.get("hadm_queue_rejected_total", 0))
    ok_lat = [dt for _, st, dt, _, _ in results if st == 200]
    third = max(1, len(rss) // 3)
    first = [v for _, v in rss[:third]]
    last = [v for _, v in rss[-third:]]
    summary = {
        "capacity_rps": round(cap, 2), "offered_rps": round(rate, 2), "seconds": seconds,
        "workers": workers, "sent": len(results), "by_status": by_status, "by_kind": by_kind,
        "server_by_status": server, "lost": len(lost), "lost_detail": lost[:3],
        "bad_503": bad_503, "server_queue_rejected": rejected,
        "p50_ok_s": round(pct(ok_lat, 0.50), 4), "p99_ok_s": round(pct(ok_lat, 0.99), 4),
        "max_ok_s": round(max(ok_lat) if ok_lat else 0, 4),
        "rss_samples": len(rss), "rss_first_max_mib": round(max(first) / 2**20, 1) if first else 0,
        "rss_last_max_mib": round(max(last) / 2**20, 1) if last else 0,
    }
    print("capacity %.2f req/s (good images, 2 clients); offered %.2f req/s for %.0f s with %d workers"
          % (cap, rate, seconds, workers))
    print("sent %d; responses by status %s; lost %d" % (len(results), json.dumps(by_status, sort_keys=True),
                                                        len(lost)))
    for kind, _ in MIX:
        print("  %-12s %s" % (kind, json.dumps(by_kind.get(kind, {}), sort_keys=True)))
    print("server counted %s; queue-full rejections %d; 503 without 'queue full' + Retry-After: %d"
          % (json.dumps(server, sort_keys=True), rejected, bad_503))
    print("accepted (200) latency: p50 %.3f s, p99 %.3f s, max %.3f s"
          % (summary["p50_ok_s"], summary["p99_ok_s"], summary["max_ok_s"]))
    print("RSS: %d samples, max of the first third %.1f MiB, of the last third %.1f MiB"
          % (len(rss), summary["rss_first_max_mib"], summary["rss_last_max_mib"]))
    print("SOAK " + json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
