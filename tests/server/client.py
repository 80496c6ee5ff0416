"""HTTP checks for tests/test_server.sh (python3 standard library only).

Each subcommand exits 0 when its check holds, 1 (with a reason on stderr)
when it does not. Usage: client.py COMMAND ARGS... (see the functions below).
"""
import base64
import http.client
import json
import struct
import sys
import threading
import time
import urllib.parse
import zlib

TIMEOUT = 60

DETECT_KEYS = ["success", "message", "results", "local_detections", "global_detections",
               "processing_time"]
RESULTS_KEYS = ["image_size", "mode", "total_local_detections", "total_global_detections"]
DET_KEYS = ["bbox", "confidence", "class_name", "artifacts"]
ART_KEYS = ["class_id", "type", "detection_method", "bbox_area"]


def fail(msg):
    print("client.py: " + msg, file=sys.stderr)
    sys.exit(1)


def f32(x):
    """The float32 a printed number stands for (servers print float32 values)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def multipart(fields):
    """fields: list of (name, filename or None, bytes). Returns (body, content type)."""
    boundary = "----hadmtest%08x" % (zlib.crc32(repr(len(fields)).encode()) & 0xffffffff)
    out = []
    for name, filename, data in fields:
        disp = 'form-data; name="%s"' % name
        if filename is not None:
            disp += '; filename="%s"' % filename
        out.append(b"--" + boundary.encode() + b"\r\n")
        out.append(("Content-Disposition: %s\r\n" % disp).encode())
        if filename is not None:
            out.append(b"Content-Type: application/octet-stream\r\n")
        out.append(b"\r\n" + data + b"\r\n")
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out), "multipart/form-data; boundary=" + boundary


def request(url, method, path, body=None, headers=None, conn=None):
    """Returns (status, headers dict lower-case, body bytes)."""
    u = urllib.parse.urlparse(url)
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    hdrs = {k.lower(): v for k, v in r.getheaders()}
    if own:
        conn.close()
    return r.status, hdrs, data


def ordered(data):
    return json.loads(data, object_pairs_hook=lambda kv: kv)


def check_order(resp):
    """The detect response's fields, in the order of DESIGN.md."""
    top = ordered(resp)
    keys = [k for k, _ in top]
    if keys != DETECT_KEYS:
        fail("top-level fields %s, expected %s" % (keys, DETECT_KEYS))
    d = dict(top)
    if [k for k, _ in d["results"]] != RESULTS_KEYS:
        fail("results fields %s" % [k for k, _ in d["results"]])
    for lst in ("local_detections", "global_detections"):
        for det in d[lst]:
            if [k for k, _ in det] != DET_KEYS:
                fail("detection fields %s" % [k for k, _ in det])
            if [k for k, _ in dict(det)["artifacts"]] != ART_KEYS:
                fail("artifacts fields %s" % [k for k, _ in dict(det)["artifacts"]])


def dets_key(resp):
    """What must be identical between two answers for the same image."""
    d = json.loads(resp) if isinstance(resp, (bytes, str)) else resp
    def norm(lst):
        return [([f32(v) for v in x["bbox"]], f32(x["confidence"]), x["class_name"],
                 x["artifacts"]["class_id"], x["artifacts"]["type"],
                 x["artifacts"]["detection_method"]) for x in lst]
    return (d["success"], d["results"]["image_size"], d["results"]["mode"],
            d["results"]["total_local_detections"], d["results"]["total_global_detections"],
            norm(d["local_detections"]), norm(d["global_detections"]))


def cmd_order(path):
    check_order(open(path, "rb").read())


def cmd_same(a, b):
    ka, kb = dets_key(open(a, "rb").read()), dets_key(open(b, "rb").read())
    if ka != kb:
        fail("responses differ:\n%s\n%s" % (ka, kb))


def cmd_field(path, expr, expected):
    """Checks one value: expr is a python expression on `d` (the JSON)."""
    d = json.load(open(path))
    got = eval(expr, {"d": d})
    if str(got) != expected:
        fail("%s = %r, expected %s" % (expr, got, expected))


def cmd_cli(server_resp, cli_out, mode):
    """Server detect response equals `hadm detect --format json` on the same image."""
    s = json.load(open(server_resp))
    c = json.load(open(cli_out))
    if isinstance(c, list):
        c = c[0]
    if s["results"]["image_size"] != [c["width"], c["height"]]:
        fail("image size %s vs %s" % (s["results"]["image_size"], [c["width"], c["height"]]))
    for lst in (["local_detections"] if mode == "local" else ["global_detections"] if mode == "global"
                else ["local_detections", "global_detections"]):
        a = [([f32(v) for v in x["bbox"]], f32(x["confidence"]), x["artifacts"]["class_id"], x["class_name"])
             for x in s[lst]]
        b = [([f32(v) for v in x["bbox"]], f32(x["confidence"]), x["class_id"], x["class_name"])
             for x in c[lst]]
        if a != b:
            fail("%s differ from hadm detect:\n server %s\n cli    %s" % (lst, a[:3], b[:3]))


def cmd_png_header(w, h, out):
    """A PNG whose header claims w x h (valid signature, IHDR and CRC), no real data."""
    ihdr = struct.pack(">IIBBBBB", int(w), int(h), 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    idat = zlib.compress(b"\0" * 64)
    chunk += struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    chunk += struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))
    open(out, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk)


def cmd_batch(url, img, img2, corrupt, text, api_path="/detect/batch"):
    """Multipart batch with a corrupt and a non-image among good ones."""
    files = [("file", "a.jpg", open(img, "rb").read()), ("file", "bad.jpg", open(corrupt, "rb").read()),
             ("file", "b.jpg", open(img2, "rb").read()), ("file", "notes.txt", open(text, "rb").read())]
    body, ct = multipart(files + [("mode", None, b"local")])
    st, _, data = request(url, "POST", api_path, body, {"Content-Type": ct})
    if st != 200:
        fail("batch status %d: %s" % (st, data[:300]))
    res = json.loads(data)["batch_results"]
    names = [r["filename"] for r in res]
    if names != ["a.jpg", "bad.jpg", "b.jpg", "notes.txt"]:
        fail("batch order/filenames %s" % names)
    ok = [r["result"]["success"] for r in res]
    if ok != [True, False, True, False]:
        fail("batch success flags %s" % ok)
    for r in res:
        if r["result"]["success"]:
            check_order(json.dumps(r["result"]).encode())
        elif not r["result"].get("detail"):
            fail("failed entry without detail: %s" % r)
    # each good entry equals the single-image answer
    for i, path in ((0, img), (2, img2)):
        body1, ct1 = multipart([("file", "x.jpg", open(path, "rb").read())])
        st1, _, one = request(url, "POST", "/api/v1/detect?mode=local", body1, {"Content-Type": ct1})
        if st1 != 200 or dets_key(one) != dets_key(res[i]["result"]):
            fail("batch entry %d differs from the single request" % i)
    # the same batch as JSON
    imgs = [{"filename": n, "image_base64": base64.b64encode(d).decode()} for _, n, d in files]
    st, _, data2 = request(url, "POST", api_path, json.dumps({"images": imgs, "mode": "local"}),
                           {"Content-Type": "application/json"})
    res2 = json.loads(data2)["batch_results"] if st == 200 else None
    if not res2 or [dets_key(r["result"]) if r["result"]["success"] else None for r in res2] != \
            [dets_key(r["result"]) if r["result"]["success"] else None for r in res]:
        fail("JSON batch differs from multipart batch (status %d)" % st)


def cmd_kserve(url, img, ref_resp, model):
    """KServe v2 infer (JSON base64, binary extension with and without the length
    prefix, binary outputs) against a /api/v1/detect answer for the same model."""
    raw = open(img, "rb").read()
    ref = json.load(open(ref_resp))
    lst = ref["local_detections"] if model == "hadm-l" else ref["global_detections"]
    want = ([f32(v) for x in lst for v in x["bbox"]], [f32(x["confidence"]) for x in lst],
            [x["artifacts"]["class_id"] for x in lst], [x["class_name"] for x in lst])
    path = "/v2/models/%s/infer" % model

    def outputs_json(data):
        o = {t["name"]: t for t in json.loads(data)["outputs"]}
        return ([f32(v) for v in o["boxes"]["data"]], [f32(v) for v in o["scores"]["data"]],
                o["class_ids"]["data"], o["class_names"]["data"])

    req = {"id": "req-7", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                      "data": [base64.b64encode(raw).decode()]}]}
    st, _, data = request(url, "POST", path, json.dumps(req), {"Content-Type": "application/json"})
    if st != 200 or outputs_json(data) != want or json.loads(data).get("id") != "req-7":
        fail("v2 JSON infer: status %d, %s" % (st, data[:300]))
    for prefix in (b"", struct.pack("<I", len(raw))):
        part = prefix + raw
        head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(part)}}]}).encode()
        st, _, data = request(url, "POST", path, head + part,
                              {"Content-Type": "application/octet-stream",
                               "Inference-Header-Content-Length": str(len(head))})
        if st != 200 or outputs_json(data) != want:
            fail("v2 binary infer (prefix %d bytes): status %d %s" % (len(prefix), st, data[:200]))
    head = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "parameters": {"binary_data_output": True}}).encode()
    st, hdrs, data = request(url, "POST", path, head + raw, {"Inference-Header-Content-Length": str(len(head))})
    n = int(hdrs.get("inference-header-content-length", "-1"))
    if st != 200 or n <= 0:
        fail("v2 binary output: status %d, header %s" % (st, n))
    meta, off, got = json.loads(data[:n]), n, {}
    for t in meta["outputs"]:
        size = t["parameters"]["binary_data_size"]
        got[t["name"]] = data[off:off + size]
        off += size
    boxes = [f32(v) for v in struct.unpack("<%df" % (len(got["boxes"]) // 4), got["boxes"])]
    ids = list(struct.unpack("<%di" % (len(got["class_ids"]) // 4), got["class_ids"]))
    if off != len(data) or boxes != want[0] or ids != want[2]:
        fail("v2 binary output content differs")
    # errors
    for body, hdr, code in ((b"{", {}, 400), (json.dumps({"inputs": []}), {}, 400),
                            (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                                     "data": [base64.b64encode(b"hello").decode()]}]}), {}, 415)):
        st, _, data = request(url, "POST", path, body, hdr)
        if st != code or "error" not in json.loads(data):
            fail("v2 bad request: status %d, expected %d: %s" % (st, code, data[:200]))


def cmd_concurrency(url, good, corrupt, text, huge, clients, per_client):
    """N clients x M requests mixed good/bad: every request gets exactly one answer
    with the expected status; good answers equal the single-request answer."""
    kinds = [("good", open(good, "rb").read(), 200), ("corrupt", open(corrupt, "rb").read(), 400),
             ("text", open(text, "rb").read(), 415), ("huge", open(huge, "rb").read(), 422),
             ("good", open(good, "rb").read(), 200)]
    body, ct = multipart([("file", "g.jpg", kinds[0][1])])
    st, _, ref = request(url, "POST", "/api/v1/detect?mode=local", body, {"Content-Type": ct})
    if st != 200:
        fail("reference request: %d" % st)
    ref_key = dets_key(ref)
    lock = threading.Lock()
    results = []
    clients, per_client = int(clients), int(per_client)

    def client(cid):
        u = urllib.parse.urlparse(url)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
        for i in range(per_client):
            name, data, want = kinds[(cid + i) % len(kinds)]
            b, c = multipart([("file", name, data)])
            try:
                st, _, resp = request(url, "POST", "/api/v1/detect?mode=local", b, {"Content-Type": c}, conn)
            except Exception as e:  # a dropped request is a failure
                conn.close()
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
                st, resp = -1, repr(e).encode()
            with lock:
                results.append((cid, i, name, want, st, resp))
        conn.close()

    t0 = time.time()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(int(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = int(clients) * int(per_client)
    bad = [r for r in results if r[4] != r[3]]
    if len(results) != total:
        fail("%d answers for %d requests" % (len(results), total))
    if bad:
        fail("%d wrong statuses, e.g. %s" % (len(bad), [(r[2], r[3], r[4], r[5][:120]) for r in bad[:3]]))
    for r in results:
        if r[3] == 200 and dets_key(r[5]) != ref_key:
            fail("a concurrent answer differs from the single-request answer")
        if r[3] != 200 and json.loads(r[5]).get("success") is not False:
            fail("error answer without success=false: %s" % r[5][:200])
    print("concurrency: %d requests in %.2f s, all answered as expected" % (total, time.time() - t0))


def cmd_chunked(url, path, nbytes):
    """Streams nbytes with chunked encoding (no Content-Length); prints the status."""
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=TIMEOUT)
    conn.putrequest("POST", path)
    conn.putheader("Transfer-Encoding", "chunked")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    block = b"\xff" * 65536
    sent = 0
    try:
        while sent < int(nbytes):
            conn.send(b"%x\r\n%s\r\n" % (len(block), block))
            sent += len(block)
        conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server may stop reading once it has answered
    r = conn.getresponse()
    print(r.status)
    r.read()


def cmd_post_status(url, path, file, repeat="1"):
    """POSTs a file as multipart (no Expect: 100-continue) and prints the
    statuses; refusals decided from the headers must still reach the client."""
    body, ct = multipart([("file", "x.jpg", open(file, "rb").read())])
    print(" ".join(str(request(url, "POST", path, body, {"Content-Type": ct})[0]) for _ in range(int(repeat))))


if __name__ == "__main__":
    cmds = {name[4:].replace("_", "-"): f for name, f in globals().items() if name.startswith("cmd_")}
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        fail("commands: " + ", ".join(sorted(cmds)))
    cmds[sys.argv[1]](*sys.argv[2:])
