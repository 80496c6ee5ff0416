"""Misbehaving clients for tests/test_faults.sh and tests/test_security.sh
(python3 standard library only). Each command prints what it did and what it
saw, one `key=value` line per fact, and exits 0; the shell script asserts.

  abort-upload URL N            N uploads cut off after 64 KiB of a 1 MiB body
  abort-inference URL IMG N     N complete detect requests, closed unread
  idle URL                      seconds until the server closes a connection
                                that stopped mid-headers
  slowloris URL IMG NH NB SECS  NH clients dribbling headers and NB dribbling
                                bodies (a byte every 0.5 s) for SECS seconds,
                                while a normal client keeps detecting
  big-header URL BYTES / many-headers URL COUNT / many-parts URL PATH COUNT
                                one raw request; prints its status and body
"""
import http.client
import socket
import sys
import threading
import time
import urllib.parse


def addr(url):
    u = urllib.parse.urlparse(url)
    return u.hostname, u.port


def connect(url, timeout=10):
    s = socket.create_connection(addr(url), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def multipart_head(boundary, name="file", filename="x.jpg"):
    return ("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n" % (boundary, name, filename)).encode()


def detect_request(img_bytes, path="/api/v1/detect?mode=local"):
    b = "faultsboundary"
    body = multipart_head(b) + img_bytes + ("\r\n--%s--\r\n" % b).encode()
    head = ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
            "Content-Length: %d\r\n\r\n" % (path, b, len(body))).encode()
    return head + body


def abort_upload(url, n):
    for _ in range(n):
        s = connect(url)
        b = "faultsboundary"
        head = ("POST /api/v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; "
                "boundary=%s\r\nContent-Length: %d\r\n\r\n" % (b, 1 << 20)).encode()
        s.sendall(head + multipart_head(b) + b"\xff" * (64 << 10))
        time.sleep(0.05)
        s.close()
    print("injected=%d uploads closed after 64 KiB of a 1 MiB body" % n)


def abort_inference(url, img, n):
    data = detect_request(open(img, "rb").read())
    socks = []
    for _ in range(n):
        s = connect(url)
        s.sendall(data)
        socks.append(s)
    time.sleep(0.05)  # the requests are in; the answers are not yet
    for s in socks:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()  # with linger 0: a reset, as a client that crashed
    print("injected=%d complete detect requests closed before the answer" % n)


def idle(url):
    s = connect(url, timeout=120)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Partial: ")
    t0 = time.time()
    try:
        data = s.recv(4096)
    except OSError:
        data = b""
    print("closed_after_s=%.2f" % (time.time() - t0))
    print("answered=%d" % (1 if data else 0))


def dribble(url, kind, stop, result):
    """One slow client: a byte every 0.5 s; records how it ended."""
    try:
        s = connect(url, timeout=5)
        if kind == "header":
            s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n")
            payload = b"X-Slow: " + b"a" * 10000
        else:
            s.sendall(b"POST /api/v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                      b"Content-Length: 100000\r\n\r\n")
            payload = b"\xff" * 100000
        i = 0
        while not stop.is_set() and i < len(payload):
            s.sendall(payload[i:i + 1])
            i += 1
            stop.wait(0.5)
        result.append("open" if stop.is_set() else "done")
        s.close()
    except OSError:
        result.append("closed_by_server")


def timed_detect(url, img_bytes):
    host, port = addr(url)
    c = http.client.HTTPConnection(host, port, timeout=30)
    t0 = time.time()
    c.request("POST", "/api/v1/detect?mode=local", body=img_bytes, headers={"Content-Type": "image/jpeg"})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status, time.time() - t0


def slowloris(url, img, nh, nb, secs):
    img_bytes = open(img, "rb").read()
    base = [timed_detect(url, img_bytes)[1] for _ in range(2)]
    stop = threading.Event()
    results = {"header": [], "body": []}
    threads = [threading.Thread(target=dribble, args=(url, k, stop, results[k]))
               for k, n in (("header", nh), ("body", nb)) for _ in range(n)]
    for t in threads:
        t.start()
    time.sleep(1)
    statuses, lat = [], []
    t_end = time.time() + secs
    while time.time() < t_end:
        st, dt = timed_detect(url, img_bytes)
        statuses.append(st)
        lat.append(dt)
    stop.set()
    for t in threads:
        t.join()
    print("injected=%d header dribblers, %d body dribblers for %.0f s" % (nh, nb, secs))
    print("baseline_max_s=%.3f" % max(base))
    print("normal_requests=%d normal_ok=%d normal_max_s=%.3f" % (len(statuses), statuses.count(200), max(lat)))
    for k in ("header", "body"):
        print("%s_open=%d %s_closed_by_server=%d" % (k, results[k].count("open"), k,
                                                     results[k].count("closed_by_server")))


def raw_status(url, request):
    """Sends raw bytes, returns the status line's code and the body."""
    s = connect(url, timeout=30)
    s.sendall(request)
    data = b""
    while True:
        try:
            chunk = s.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, rest = data.partition(b"\r\n\r\n")
            n = [int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if n and len(rest) >= n[0]:
                break
    s.close()
    parts = data.split(b" ", 2)
    code = parts[1].decode() if len(parts) > 1 else "none"
    print(code, data.partition(b"\r\n\r\n")[2][:300].decode("utf-8", "replace"))


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "abort-upload":
        abort_upload(args[0], int(args[1]))
    elif cmd == "abort-inference":
        abort_inference(args[0], args[1], int(args[2]))
    elif cmd == "idle":
        idle(args[0])
    elif cmd == "slowloris":
        slowloris(args[0], args[1], int(args[2]), int(args[3]), float(args[4]))
    elif cmd == "big-header":
        raw_status(args[0], b"GET /health HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * int(args[1]) + b"\r\n\r\n")
    elif cmd == "many-headers":
        hs = b"".join(b"X-H%d: v\r\n" % i for i in range(int(args[1])))
        raw_status(args[0], b"GET /health HTTP/1.1\r\nHost: t\r\n" + hs + b"\r\n")
    elif cmd == "many-parts":
        b = "partsboundary"
        body = b"".join(("--%s\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\nv\r\n" % (b, i)).encode()
                        for i in range(int(args[2]))) + ("--%s--\r\n" % b).encode()
        raw_status(args[0], ("POST %s HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary=%s\r\n"
                             "Content-Length: %d\r\n\r\n" % (args[1], b, len(body))).encode() + body)
    else:
        sys.exit("faults.py: unknown command " + cmd)


if __name__ == "__main__":
    main()
