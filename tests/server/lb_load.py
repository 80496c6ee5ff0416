"""Load driver for tests/test_nginx.sh (python3 standard library only).

  lb_load.py load URL IMAGE REQUESTS CLIENTS PROGRESS_FILE
      REQUESTS detect requests (mode=local) from CLIENTS threads through URL.
      A client retries a request answered 502 or 503 after the Retry-After it
      was given (a missing Retry-After is counted as an error), and after
      0.5 s when the connection itself fails; any other status is final.
      Every 200 must equal the reference answer taken before the load.
      Writes the number of finished requests to PROGRESS_FILE as it goes,
      prints the accounting, exits 0 only when every request got exactly one
      final 200 (lost = 0) and every answer was right.
  lb_load.py too-large URL PATH NBYTES
      Sends only the headers of a POST claiming NBYTES; prints the status.
"""
import http.client
import json
import os
import socket
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from client import dets_key, fail, multipart  # noqa: E402

PATH = "/api/v1/detect?mode=local"
REQUEST_DEADLINE_S = 300  # a request still without a 200 by then is lost
RETRY_AFTER_CAP_S = 10


class Tally:
    def __init__(self, progress_file):
        self.lock = threading.Lock()
        self.progress_file = progress_file
        self.by_status = {}
        self.transport_errors = 0
        self.retried = 0            # requests that needed more than one attempt
        self.no_retry_after = 0     # 502/503 answers without Retry-After
        self.final_200 = 0
        self.wrong = []             # (request, reason)
        self.lost = []              # (request, statuses seen)
        self.latency = []           # seconds from first attempt to final 200
        self.done = 0

    def attempt(self, status):
        with self.lock:
            self.by_status[status] = self.by_status.get(status, 0) + 1

    def finish(self, rid, statuses, ok, reason, seconds):
        with self.lock:
            if len(statuses) > 1:
                self.retried += 1
            if ok:
                self.final_200 += 1
                self.latency.append(seconds)
            elif reason:
                self.wrong.append((rid, reason))
            else:
                self.lost.append((rid, statuses))
            self.done += 1
            tmp = self.progress_file + ".tmp"
            with open(tmp, "w") as f:
                f.write("%d\n" % self.done)
            os.replace(tmp, self.progress_file)


def retry_after(headers):
    try:
        return min(max(float(headers.get("retry-after", "")), 0.0), RETRY_AFTER_CAP_S)
    except ValueError:
        return None


def one_request(rid, conn_box, url, body, ctype, ref_key, tally):
    """Runs request rid to its final answer, retrying as a client should."""
    u = urllib.parse.urlparse(url)
    statuses, t0 = [], time.time()
    while time.time() - t0 < REQUEST_DEADLINE_S:
        if conn_box[0] is None:
            conn_box[0] = http.client.HTTPConnection(u.hostname, u.port, timeout=REQUEST_DEADLINE_S)
        try:
            conn_box[0].request("POST", PATH, body=body, headers={"Content-Type": ctype})
            r = conn_box[0].getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
        except (OSError, http.client.HTTPException) as e:
            conn_box[0].close()
            conn_box[0] = None
            statuses.append("conn:" + type(e).__name__)
            with tally.lock:
                tally.transport_errors += 1
            time.sleep(0.5)
            continue
        statuses.append(r.status)
        tally.attempt(r.status)
        if r.status == 200:
            ok = dets_key(data) == ref_key
            tally.finish(rid, statuses, ok, None if ok else "200 differs from the reference", time.time() - t0)
            return
        if r.status in (502, 503):
            wait = retry_after(hdrs)
            if wait is None:
                with tally.lock:
                    tally.no_retry_after += 1
                wait = 1.0
            time.sleep(wait)
            continue
        tally.finish(rid, statuses, False, "final %d: %s" % (r.status, data[:160]), 0)
        return
    tally.finish(rid, statuses, False, None, 0)


def cmd_load(url, image, requests, clients, progress_file):
    requests, clients = int(requests), int(clients)
    body, ctype = multipart([("file", os.path.basename(image), open(image, "rb").read())])
    u = urllib.parse.urlparse(url)
    ref = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    ref.request("POST", PATH, body=body, headers={"Content-Type": ctype})
    r = ref.getresponse()
    ref_body = r.read()
    ref.close()
    if r.status != 200:
        fail("reference request answered %d" % r.status)
    ref_key = dets_key(ref_body)
    tally = Tally(progress_file)
    next_id = [0]
    id_lock = threading.Lock()

    def client():
        conn_box = [None]
        while True:
            with id_lock:
                rid = next_id[0]
                if rid >= requests:
                    break
                next_id[0] += 1
            one_request(rid, conn_box, url, body, ctype, ref_key, tally)
        if conn_box[0] is not None:
            conn_box[0].close()

    t0 = time.time()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.time() - t0
    print_accounting(tally, requests, clients, wall)
    if tally.lost or tally.wrong or tally.no_retry_after or tally.final_200 != requests:
        sys.exit(1)


def print_accounting(t, requests, clients, wall):
    lat = sorted(t.latency)
    pct = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan"))
    print("accounting: %d requests sent by %d clients in %.1f s (%.1f/s)"
          % (requests, clients, wall, requests / wall if wall > 0 else 0))
    print("  attempts answered, by status: %s; connection failures: %d"
          % (json.dumps({str(k): v for k, v in sorted(t.by_status.items())}), t.transport_errors))
    print("  requests retried by the client: %d; 502/503 without Retry-After: %d"
          % (t.retried, t.no_retry_after))
    print("  final 200: %d, wrong answers: %d, lost: %d" % (t.final_200, len(t.wrong), len(t.lost)))
    print("  latency of a request to its final 200: p50 %.3f s, p99 %.3f s, max %.3f s"
          % (pct(0.5), pct(0.99), lat[-1] if lat else float("nan")))
    for rid, why in t.wrong[:5]:
        print("  wrong: request %d: %s" % (rid, why))
    for rid, seen in t.lost[:5]:
        print("  lost: request %d, attempts %s" % (rid, seen))


def cmd_too_large(url, path, nbytes):
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    s.sendall(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
               % (path, u.hostname, int(nbytes))).encode())
    resp = b""
    while b"\r\n" not in resp:
        chunk = s.recv(4096)
        if not chunk:
            break
        resp += chunk
    s.close()
    print(resp.split(b" ")[1].decode() if resp.count(b" ") else "none")


if __name__ == "__main__":
    cmds = {"load": cmd_load, "too-large": cmd_too_large}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        fail("commands: " + ", ".join(sorted(cmds)))
    cmds[sys.argv[1]](*sys.argv[2:])
