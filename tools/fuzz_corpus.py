#!/usr/bin/env python3
"""Writes the text seeds of fuzz/corpus/ (base64, request, kserve) and the .pth
seeds (pth). Run from the repository root after fuzz_make_corpus has written
the images (the request seeds embed fuzz/corpus/image/*). Standard library only."""
import base64
import json
import os
import struct
import zipfile
import zlib

C = "fuzz/corpus"
KEY = "X-API-Key: fuzz-key"


def img(name):
    with open(f"{C}/image/{name}", "rb") as f:
        return f.read()


def write(target, name, data):
    if isinstance(data, str):
        data = data.encode()
    with open(f"{C}/{target}/{name}", "wb") as f:
        f.write(data)


def request(route, query, headers, body):
    """The harness layout: route byte, query line, header lines, empty line, body."""
    head = bytes([route]) + query.encode() + b"\n"
    head += b"".join(h.encode() + b"\n" for h in headers) + b"\n"
    return head + body


def multipart(boundary, parts):
    out = b""
    for name, filename, ctype, data in parts:
        out += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"".encode()
        if filename is not None:
            out += f"; filename=\"{filename}\"".encode()
        out += b"\r\n"
        if ctype:
            out += f"Content-Type: {ctype}\r\n".encode()
        out += b"\r\n" + data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


def huge_png_header():
    ihdr = struct.pack(">IIBBBBB", 5000, 5000, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


def request_seeds():
    jpg, png, webp = img("base.jpg"), img("grey1.png"), img("lossy.webp")
    b64 = base64.b64encode(png).decode()
    mp = "multipart/form-data; boundary=XyZ"
    write("request", "multipart-file", request(0, "mode=local", [KEY, f"Content-Type: {mp}"],
          multipart("XyZ", [("file", "a.jpg", "image/jpeg", jpg), ("mode", None, None, b"both")])))
    write("request", "multipart-image-bearer", request(2, "", ["Authorization: Bearer fuzz-key",
          f"Content-Type: {mp}"], multipart("XyZ", [("image", "b.png", "image/png", png)])))
    write("request", "urlencoded", request(1, "api_key=fuzz-key", ["Content-Type: application/x-www-form-urlencoded"],
          b"mode=global&file=" + b64.replace("+", "%2B").replace("/", "%2F").encode()))
    write("request", "raw-body", request(0, "mode=both", [KEY, "Content-Type: image/webp"], webp))
    write("request", "huge-header", request(0, "", [KEY, "Content-Type: image/png"], huge_png_header()))
    write("request", "base64-json", request(3, "", [KEY, "Content-Type: application/json"],
          json.dumps({"image_base64": "data:image/png;base64," + b64, "mode": "local"}).encode()))
    write("request", "batch-json", request(4, "", [KEY, "Content-Type: application/json"],
          json.dumps({"images": [{"filename": "a.png", "image_base64": b64},
                                 {"filename": "bad", "image_base64": "!!"}, {"filename": 3}],
                      "mode": "global"}).encode()))
    write("request", "batch-multipart", request(4, "mode=local", [KEY, f"Content-Type: {mp}"],
          multipart("XyZ", [("files", "a.jpg", "image/jpeg", jpg), ("file", "b.png", "image/png", png),
                            ("file", "c.txt", "text/plain", b"not an image")])))
    write("request", "no-key", request(0, "", ["Content-Type: image/png"], png))


def kserve_seeds():
    png = img("grey1.png")
    b64 = base64.b64encode(png).decode()
    js = "Content-Type: application/json"
    write("kserve", "bytes-json", request(0, "", [KEY, js], json.dumps({
        "id": "r1", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [b64]}],
        "parameters": {"binary_data_output": True}}).encode()))
    write("kserve", "uint8-json", request(1, "", [KEY, js], json.dumps({
        "inputs": [{"name": "image", "shape": [len(png)], "datatype": "UINT8", "data": [[*png]]}]}).encode()))
    for name, blob in (("binary", png), ("binary-triton", struct.pack("<I", len(png)) + png)):
        head = json.dumps({"inputs": [{"name": "other", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": 3}},
                                      {"name": "image", "shape": [1], "datatype": "BYTES",
                                       "parameters": {"binary_data_size": len(blob)}}],
                           "outputs": [{"name": "boxes", "parameters": {"binary_data": True}}]}).encode()
        write("kserve", name, request(0, "", [KEY, "Content-Type: application/octet-stream",
              f"Inference-Header-Content-Length: {len(head)}"], head + b"abc" + blob))
    write("kserve", "unknown-model", request(2, "", [KEY, js], b"{\"inputs\": []}"))


def base64_seeds():
    for i, s in enumerate(["aGVsbG8gd29ybGQ=", "data:image/png;base64,iVBORw0KGgo=", "-_-_ AB\r\nCD==",
                           "QQ", "QUI=", "local", "both", ""]):
        write("base64", f"s{i}", s)


def pth_seeds():
    src = "tests/data/ckpt-small.pth"
    with open(src, "rb") as f:
        write("pth", "ckpt-small.pth", f.read())
    with zipfile.ZipFile(src) as z:
        write("pth", "ckpt-small.pkl", z.read("archive/data.pkl"))


if __name__ == "__main__":
    for t in ("base64", "request", "kserve", "pth"):
        os.makedirs(f"{C}/{t}", exist_ok=True)
    request_seeds()
    kserve_seeds()
    base64_seeds()
    pth_seeds()
